"""Serving past one process: Triton Inference Server model repositories, a Triton client backend, DeepStream files.

Torch-free. tritonclient (the `serve` extra) validates configs and talks to servers; the server itself is
NVIDIA's container or the tritonserver bundled in the nvidia-pytriton wheel (fcn_deploy.serving.server).
"""
