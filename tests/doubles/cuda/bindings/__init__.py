"""Contract double of `cuda.bindings`; its version comes from FCN_DEPLOY_CUDA_DOUBLE_VERSION (default 12.6.2)."""

import _gpu_double

__version__ = _gpu_double.state()["cuda_python"]
