"""What every step of the chain shares: the artifact it returns, its parent (a file or another step), progress.

A step is a small callable named for what it makes (Polygraphy's loaders are the model); calling it returns an
Artifact, reusing the file already at its output when the parent's sha256 and the options it records match, and
rebuilding it atomically otherwise. Steps compose lazily: a parent step runs only when its child needs the file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

Progress = Callable[[str], None]


def replacing(path: Path, why: str) -> str:
    """The one line every step prints before it writes over a file that is already there (and not reusable)."""
    return f"  replacing {path} ({why})"


def replacements_only(echo: Progress | None = None) -> Progress:
    """A progress sink for a command that prints its own summary: it shows only the `replacing` lines."""
    sink = echo or to_stderr
    return lambda text: sink(text.strip()) if text.lstrip().startswith("replacing ") else None


def to_stderr(text: str) -> None:
    """The default progress sink: one line per step."""
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Artifact:
    path: Path
    reused: bool
    result: Any = None  # what the build returned (ExportReport, QuantizeResult, BuildResult); None when reused


class Step(Protocol):
    output: Path | None

    def __call__(self, scratch: Path | None = None) -> Artifact: ...


Parent = Path | Step


def resolve(parent: Parent, scratch: Path | None = None) -> Path:
    """The file a parent stands for: the path itself, or what the parent step makes (built or reused)."""
    if isinstance(parent, (str, Path)):
        return Path(parent)
    return parent(scratch).path


def plain(record: Any) -> Any:
    """A record as JSON would give it back (tuples -> lists, Paths -> str), so a stored one compares equal."""
    return json.loads(json.dumps(record, default=str))
