"""Atomic artifact writes: temp file in the destination folder, fsync, os.replace, fsync the folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
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


def reserve_temp(path: str | os.PathLike, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create an empty temp file beside `path` (same filesystem, so os.replace is atomic) with the usual
    permissions; returns its open descriptor and path. For writers that need a path (e.g. cv2.VideoWriter)."""
    dst = Path(path)
    if dst.is_dir():
        raise FcnDeployError(f"{dst}: is a directory; give a file path for the output")
    parent = dst.parent if str(dst.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{dst.name}.", suffix=suffix)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual permissions
    except OSError as e:
        raise FcnDeployError(f"{dst}: cannot write here ({e.strerror}); choose a writable output path") from None
    return fd, Path(tmp)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsync a finished temp file, move it onto `path`, then fsync the folder so the rename is durable."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    parent = Path(path).parent if str(Path(path).parent) else Path(".")
    with contextlib.suppress(OSError):  # not available on every filesystem
        dir_fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Yield a temp file beside `path`; it replaces `path` only if the block finishes without an exception."""
    fd, tmp = reserve_temp(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
