"""Atomic artifact writes: temp file in the destination folder, fsync, os.replace, fsync the folder.

Every temp file and scratch folder carries its creator's PID (`.NAME.PID.RANDOM.tmp*` beside the destination,
`fcn-WHAT.PID.RANDOM` in the system temp dir): the next run sweeps those of dead processes (a SIGKILL leaves
them), and the CLI removes this process's own on SIGINT/SIGTERM (remove_own_temps).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from fcn_deploy.core.errors import FcnDeployError


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once at import, before any worker thread exists
    os.umask(mask)
    return mask


_UMASK = _read_umask()
_OWN: set[Path] = set()  # this process's unpublished temp files and scratch folders
_SCRATCH = re.compile(r"^fcn-[a-z0-9-]+\.(\d+)\.")


# Errors of the destination, not of the program: shown as one line naming the file.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM})


def write_error(path: str | os.PathLike, e: OSError) -> FcnDeployError:
    """The one-line error for a failed write to `path` (disk full, quota, read-only, permissions, I/O)."""
    hint = "free some space or choose another output path" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) \
        else "choose a writable output path"  # fmt: skip
    return FcnDeployError(f"{path}: cannot write it ({e.strerror or e}); it was left unchanged; {hint}")


def _temp_pattern(name: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def sweep_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temp files that a killed run left beside `path` (`.NAME.PID.RANDOM.tmp*` whose PID is gone).
    Temps of running processes are left alone. Returns what was removed."""
    dst = Path(path)
    parent = dst.parent if str(dst.parent) else Path(".")
    pattern, removed = _temp_pattern(dst.name), []
    try:
        candidates = list(parent.glob(f".{glob_escape(dst.name)}.*.tmp*"))
    except OSError:
        return removed
    for p in candidates:
        m = pattern.match(p.name)
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?[])", r"[\1]", name)


def reserve_temp(path: str | os.PathLike, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create an empty temp file beside `path` (same filesystem, so os.replace is atomic) with the usual
    permissions; returns its open descriptor and path. For writers that need a path (e.g. cv2.VideoWriter).
    The name `.NAME.PID.RANDOM.tmp...` is recognisable: the next run that writes `path` sweeps a dead run's temps."""
    dst = Path(path)
    if dst.is_dir():
        raise FcnDeployError(f"{dst}: is a directory; give a file path for the output")
    if not suffix.startswith(".tmp"):
        suffix = ".tmp" + suffix
    parent = dst.parent if str(dst.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        sweep_temps(dst)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{dst.name}.{os.getpid()}.", suffix=suffix)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual permissions
    except OSError as e:
        raise FcnDeployError(f"{dst}: cannot write here ({e.strerror}); choose a writable output path") from None
    _OWN.add(Path(tmp))
    return fd, Path(tmp)


def remove_own_temps() -> list[Path]:
    """Remove the temp files and scratch folders this process made and has not published (on SIGINT/SIGTERM,
    when a writer's own cleanup may not have run). Returns what was removed."""
    removed = []
    for p in list(_OWN):
        _OWN.discard(p)
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def sweep_scratch(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove scratch folders (`fcn-WHAT.PID.*`) that killed runs left in the temp dir; live ones stay."""
    removed = []
    base = Path(root or tempfile.gettempdir())
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith("fcn-")]
    except OSError:
        return removed
    for p in candidates:
        m = _SCRATCH.match(p.name)
        if m and not _alive(int(m.group(1))) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def scratch_dir(what: str) -> Iterator[Path]:
    """A private folder `fcn-WHAT.PID.RANDOM` in the system temp dir, removed when the block ends (also on an
    exception or Ctrl-C); one that a SIGKILL left is swept by the next run (sweep_scratch)."""
    sweep_scratch()
    path = Path(tempfile.mkdtemp(prefix=f"fcn-{what}.{os.getpid()}."))
    _OWN.add(path)
    try:
        yield path
    finally:
        _OWN.discard(path)
        shutil.rmtree(path, ignore_errors=True)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsync a finished temp file, move it onto `path`, then fsync the folder so the rename is durable.
    A failure removes the temp file and raises the one-line write error; `path` is untouched."""
    try:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _OWN.discard(Path(tmp))
        raise write_error(path, e) from None
    _OWN.discard(Path(tmp))
    parent = Path(path).parent if str(Path(path).parent) else Path(".")
    with contextlib.suppress(OSError):  # not available on every filesystem
        dir_fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Yield a temp file beside `path`; it replaces `path` only if the block finishes without an exception.
    A full disk, quota or I/O error while writing becomes one FcnDeployError naming `path`."""
    fd, tmp = reserve_temp(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        publish(tmp, path)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _OWN.discard(tmp)
        if e.errno in WRITE_ERRNOS:
            raise write_error(path, e) from None
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _OWN.discard(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
