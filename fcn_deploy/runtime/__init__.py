"""Inference backends (ONNX Runtime, TensorRT, PyTorch) and everything around them. Never imports torch itself."""
