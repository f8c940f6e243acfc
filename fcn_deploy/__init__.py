"""fcn-deploy: FCN semantic segmentation from PyTorch training to ONNX Runtime and TensorRT."""

__version__ = "0.1.0"
