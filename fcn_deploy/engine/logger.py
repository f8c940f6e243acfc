"""A TensorRT logger that keeps every message: TensorRT reports why a build or deserialize failed only here."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

_log = logging.getLogger("fcn_deploy.tensorrt")

SEVERITY_NAMES = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")
_PY_LEVEL = {
    "INTERNAL_ERROR": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.DEBUG,  # TensorRT's INFO is chatty (tactic counts); show it only with -v
    "VERBOSE": logging.DEBUG,
}


@dataclass(frozen=True)
class LogRecord:
    severity: str
    message: str


class MessageStore:
    """The part that does not need TensorRT: collect records, forward to `logging`, summarise errors."""

    def __init__(self) -> None:
        self.records: list[LogRecord] = []

    def add(self, severity: str, message: str) -> None:
        self.records.append(LogRecord(severity, message))
        _log.log(_PY_LEVEL.get(severity, logging.INFO), "[TensorRT] %s: %s", severity, message)

    def errors(self) -> list[str]:
        return [r.message for r in self.records if r.severity in ("INTERNAL_ERROR", "ERROR")]

    def reason(self, limit: int = 5) -> str:
        """The last few error lines (else warnings) joined on one line, for a user-facing error."""
        lines = self.errors() or [r.message for r in self.records if r.severity == "WARNING"]
        if not lines:
            return "TensorRT logged no error; rerun with -v for its full log"
        return " | ".join(" ".join(m.split()) for m in lines[-limit:])

    def clear(self) -> None:
        self.records.clear()


def capturing_logger():
    """A trt.ILogger subclass instance whose `.store` keeps every message TensorRT sends.

    `log()` never raises: TensorRT calls it from C++ as noexcept, so an exception there would abort the process.
    Ctrl-C arriving inside the callback becomes SIGTERM (Polygraphy's approach) instead of an exception.
    """
    import tensorrt as trt

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.store = MessageStore()

        def log(self, severity, msg) -> None:
            try:
                self.store.add(str(getattr(severity, "name", severity)), str(msg))
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGTERM)
            except Exception:  # noqa: BLE001 - see docstring: never propagate into TensorRT
                pass

    return CapturingLogger()
