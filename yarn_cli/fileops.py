"""Safe, fast file output: atomic replacement, in-kernel copies, free-space checks."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from yarn_cli.errors import OutputError

CHUNK = 64 * 1024 * 1024
# Keep this much free beyond what the output needs, so the disk is never filled to the brim.
FREE_SPACE_MARGIN = 64 * 1024 * 1024

Progress = Callable[[int], None]  # called with the number of bytes just copied

_NO_FAST_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF, errno.EPERM}


def copy_range(
    src_fd: int,
    dst_fd: int,
    src_offset: int,
    dst_offset: int,
    length: int,
    progress: Progress | None = None,
) -> str:
    """Copy ``length`` bytes between open files without passing them through Python.

    Uses ``copy_file_range`` (in-kernel, and block sharing on reflink filesystems),
    then ``pread``/``pwrite`` if the kernel or filesystem refuses. Returns the
    mechanism used.
    """
    done = 0
    method = "copy_file_range"
    if hasattr(os, "copy_file_range"):
        try:
            while done < length:
                n = os.copy_file_range(src_fd, dst_fd, min(CHUNK, length - done), src_offset + done, dst_offset + done)
                if n == 0:
                    raise OutputError(f"the input ended {length - done:,} bytes early while copying")
                done += n
                if progress:
                    progress(n)
        except OSError as exc:
            if exc.errno not in _NO_FAST_COPY:
                raise
            method = "read/write"
    else:
        method = "read/write"
    buf = bytearray(min(CHUNK, 16 * 1024 * 1024))
    view = memoryview(buf)
    while done < length:
        want = min(len(buf), length - done)
        n = os.preadv(src_fd, [view[:want]], src_offset + done)
        if n == 0:
            raise OutputError(f"the input ended {length - done:,} bytes early while copying")
        written = 0
        while written < n:
            written += os.pwrite(dst_fd, view[written:n], dst_offset + done + written)
        done += n
        if progress:
            progress(n)
    return method


def check_free_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed + FREE_SPACE_MARGIN:
        raise OutputError(
            f"not enough disk space in {directory}: the output needs {needed / 2**20:,.1f} MiB "
            f"and {free / 2**20:,.1f} MiB are free; free some space or write the output elsewhere"
        )


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: Path, *, mode: int | None = None) -> Iterator[tuple[int, Path]]:
    """Yield (fd, temporary path) to write ``path`` through a temporary file beside it.

    On success the data is fsynced and the temporary file renamed over ``path``;
    on any error, Ctrl-C included, it is removed and ``path`` is left untouched.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, _default_mode() if mode is None else mode)
        yield fd, tmp
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def link_or_copy(src: Path, dst: Path, progress: Progress | None = None) -> str:
    """Place ``src``'s content at ``dst`` atomically: a hard link where possible, else a copy."""
    with contextlib.suppress(OSError):
        if os.path.samefile(src, dst):  # linked by an earlier run already
            return "hardlink"
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.link"
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
        return "hardlink"
    except OSError:
        tmp.unlink(missing_ok=True)
    size = src.stat().st_size
    with atomic_output(dst, mode=src.stat().st_mode & 0o777) as (out_fd, _), src.open("rb") as fin:
        copy_range(fin.fileno(), out_fd, 0, 0, size, progress)
    return "copy"
