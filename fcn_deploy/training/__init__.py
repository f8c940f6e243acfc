"""PyTorch models, training data, the training loop and checkpoints. `config` and `recipes` are torch-free."""
