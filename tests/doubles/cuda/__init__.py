"""Contract double of NVIDIA's cuda-python (the `cuda.bindings.runtime` subset fcn-deploy uses). See ../README.md."""
