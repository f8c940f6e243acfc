"""The user-error exception: shown as one line without a traceback. Anything else is a bug and keeps its traceback."""


class FcnDeployError(Exception):
    """Bad input or environment: the message names the file or value and how to fix it."""

    exit_code = 1


class MissingDependencyError(FcnDeployError):
    """An optional runtime (TensorRT, a GPU, PyTorch) is not installed here; exit code 3."""

    exit_code = 3
