"""ONNX -> TensorRT plan + manifest. TensorRT is imported lazily inside functions; everything else here is CPU code."""
