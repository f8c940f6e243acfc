"""Models, data, metrics and the training loop. Only `fcn`, `transfer`, `trainer` and `checkpoint` import torch."""
