"""Triton Python-backend models, copied as `model.py` into a repository's version folders (never imported here).

They run inside tritonserver's Python-backend stub, beside a copy of fcn-deploy's torch-free foundation (and, for
the network, its ONNX Runtime backend) shipped in the same folder, so the server needs no fcn-deploy install.
Tensors cross the stub through DLPack (`np.from_dlpack`, `Tensor.from_dlpack`): the stub's `as_numpy` reads
numpy 1's descriptor layout and returns empty arrays under numpy 2.
"""
