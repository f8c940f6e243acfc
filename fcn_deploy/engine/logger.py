"""A TensorRT logger that keeps what explains a failure: TensorRT reports why a build or deserialize failed only here.

A Python `trt.ILogger` subclass receives every message, VERBOSE included (only `trt.Logger` filters by
min_severity), and a build logs one line per tactic: the store keeps WARNING and worse unless debug logging is on
(`fcn-deploy -v`), and at most MAX_RECORDS records (the newest), so a build cannot fill an 8 GB Orin's memory.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import deque
from dataclasses import dataclass

_log = logging.getLogger("fcn_deploy.tensorrt")

SEVERITY_NAMES = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")
KEPT_BY_DEFAULT = ("INTERNAL_ERROR", "ERROR", "WARNING")
MAX_RECORDS = 2000
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

    def __init__(self, verbose: bool | None = None, max_records: int = MAX_RECORDS) -> None:
        self.verbose = _log.isEnabledFor(logging.DEBUG) if verbose is None else verbose
        self.records: deque[LogRecord] = deque(maxlen=max_records)
        self.dropped = 0  # filtered out or pushed out by the cap

    def add(self, severity: str, message: str) -> None:
        if not self.verbose and severity not in KEPT_BY_DEFAULT:
            self.dropped += 1
            return
        if len(self.records) == self.records.maxlen:
            self.dropped += 1
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


def capturing_logger(verbose: bool | None = None):
    """A trt.ILogger subclass instance whose `.store` keeps TensorRT's messages (filtered and capped: see above).

    `log()` never raises: TensorRT calls it from C++ as noexcept, so an exception there would abort the process.
    Ctrl-C arriving inside the callback becomes SIGTERM (Polygraphy's approach) instead of an exception.
    """
    import tensorrt as trt

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.store = MessageStore(verbose)

        def log(self, severity, msg) -> None:
            try:
                self.store.add(str(getattr(severity, "name", severity)), str(msg))
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGTERM)
            except Exception:  # noqa: BLE001 - see docstring: never propagate into TensorRT
                pass

    return CapturingLogger()
