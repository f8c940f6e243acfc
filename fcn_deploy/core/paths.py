"""One collision rule for every command, checked before anything is written.

Each command names its inputs and outputs (option name -> path). Every path is resolved (``~``, relative paths,
symlinks, hard links of existing files) and the command is refused, in one line naming both, when

* an output is one of the inputs, or lies inside an input folder, or an input lies inside an output folder;
* two outputs are the same file, or one lies inside the other.

Paths that do not exist yet are compared by their resolved names. ``None`` entries (options not given) and ``-``
(stdout) are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from fcn_deploy.core.errors import FcnDeployError

PathLike = str | os.PathLike


def _resolve(p: PathLike) -> Path:
    try:
        return Path(p).expanduser().resolve(strict=False)
    except (OSError, RuntimeError) as e:  # a symlink loop, a name too long
        raise FcnDeployError(f"{p}: cannot resolve this path ({e}); check it") from None


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and child.is_relative_to(parent)


def _entries(paths: Mapping[str, PathLike | None]) -> list[tuple[str, PathLike, Path]]:
    return [(name, p, _resolve(p)) for name, p in paths.items() if p is not None and str(p) not in ("", "-")]


def check_outputs(inputs: Mapping[str, PathLike | None], outputs: Mapping[str, PathLike | None]) -> None:
    """Raise FcnDeployError if an output would overwrite an input or another output (see the module doc)."""
    ins, outs = _entries(inputs), _entries(outputs)
    for oname, opath, o in outs:
        for iname, ipath, i in ins:
            if _same(o, i):
                raise FcnDeployError(
                    f"{oname} {opath} is the same path as {iname} {ipath}: it would be overwritten; "
                    "choose another output path"
                )
            if _inside(o, i):
                raise FcnDeployError(
                    f"{oname} {opath} is inside {iname} {ipath}: writing there could overwrite or mix with the "
                    "input; choose an output outside it"
                )
            if _inside(i, o):
                raise FcnDeployError(
                    f"{iname} {ipath} is inside {oname} {opath}: the output could overwrite it; "
                    "choose an output folder that does not hold the input"
                )
    for k, (aname, apath, a) in enumerate(outs):
        for bname, bpath, b in outs[k + 1 :]:
            if _same(a, b):
                raise FcnDeployError(
                    f"{aname} {apath} and {bname} {bpath} are the same path: one output would replace the other; "
                    "give them different paths"
                )
            if _inside(a, b) or _inside(b, a):
                inner, outer = (
                    ((aname, apath), (bname, bpath)) if _inside(a, b) else ((bname, bpath), (aname, apath))
                )
                raise FcnDeployError(
                    f"{inner[0]} {inner[1]} is inside {outer[0]} {outer[1]}: one output would mix with the other; "
                    "give them separate paths"
                )


def source_input(source: str | None) -> str | None:
    """The local path an `infer --source` reads: None for a URL, a glob's fixed leading folder, else the path."""
    if source is None or "://" in source:
        return None
    if any(c in source for c in "*?["):
        fixed = []
        for part in Path(source).parts:
            if any(c in part for c in "*?["):
                break
            fixed.append(part)
        return str(Path(*fixed)) if fixed else "."
    return source


def read_user_text(path: PathLike, what: str = "text file") -> str:
    """A user's text file (class list, split list) as UTF-8; a file in another encoding or unreadable is one line
    naming it and the offending byte."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise FcnDeployError(f"{p}: cannot read this {what} ({e.strerror}); check the path and permissions") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise FcnDeployError(
            f"{p}: {what} is not UTF-8 (byte 0x{data[e.start]:02x} on line {line}); save it as UTF-8"
        ) from None
