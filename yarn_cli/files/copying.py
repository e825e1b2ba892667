"""Copies and block moves done by the kernel: ``copy_file_range``, reflinks, ``fallocate`` ranges.

The data of a multi-gigabyte model never passes through Python; where the filesystem can share or
shift blocks, it is not copied at all.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
from collections.abc import Callable
from pathlib import Path

from yarn_cli.errors import OutputError

try:
    import fcntl
except ImportError:  # not a POSIX system: no reflinks, no file flags, and a killed run's leftovers stay
    fcntl = None  # type: ignore[assignment]

CHUNK = 64 * 1024 * 1024

Progress = Callable[[int], None]  # called with the number of bytes just copied

_NO_FAST_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF, errno.EPERM}


def copy_range(
    src_fd: int,
    dst_fd: int,
    src_offset: int,
    dst_offset: int,
    length: int,
    progress: Progress | None = None,
) -> None:
    """Copy ``length`` bytes between open files without passing them through Python.

    Uses ``copy_file_range`` (in-kernel, and block sharing on reflink filesystems),
    then ``pread``/``pwrite`` if the kernel or filesystem refuses.
    """
    done = 0
    if hasattr(os, "copy_file_range"):
        try:
            while done < length:
                n = os.copy_file_range(src_fd, dst_fd, min(CHUNK, length - done), src_offset + done, dst_offset + done)
                if n == 0:
                    raise OutputError(f"the input ended {length - done:,} bytes early while copying")
                start_writeback(dst_fd, dst_offset + done, n)
                done += n
                if progress:
                    progress(n)
        except OSError as exc:
            if exc.errno not in _NO_FAST_COPY:
                raise
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
        start_writeback(dst_fd, dst_offset + done, n)
        done += n
        if progress:
            progress(n)


_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _libc(name: str, *argtypes: type) -> Callable[..., int] | None:
    """A C library function returning int, or None where this system's libc has none by that name."""
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a just-copied range to disk, without waiting for it.

    The disk then works while the next chunk is copied, so the fsync that makes the output
    durable finds little left to write. Linux only; elsewhere (or if refused) the fsync does
    all the writing, as before.
    """
    function = _libc("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    if function is not None:
        function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


# fallocate(2) modes and the FICLONERANGE ioctl, from <linux/falloc.h> and <linux/fs.h>.
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_INSERT_RANGE = 0x20
FICLONERANGE = 0x4020940D


class Unsupported(OSError):
    """The filesystem (or the OS) cannot do this block-level operation; take the copy path."""


def shift_blocks(fd: int, offset: int, length: int) -> None:
    """Insert (``length`` > 0) or remove (< 0) whole filesystem blocks at ``offset``, in place.

    Everything after ``offset`` moves by ``length`` bytes without being copied: the
    filesystem only rewrites its extent map (ext4 and XFS).
    """
    function = _libc("fallocate", ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    if function is None:
        raise Unsupported(errno.ENOSYS, "fallocate is not available on this system")
    mode = FALLOC_FL_INSERT_RANGE if length > 0 else FALLOC_FL_COLLAPSE_RANGE
    if function(fd, mode, offset, abs(length)) != 0:
        code = ctypes.get_errno()
        if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENOTTY):
            raise Unsupported(code, os.strerror(code))
        raise OSError(code, os.strerror(code))


def clone_range(src_fd: int, dst_fd: int, src_offset: int, dst_offset: int) -> None:
    """Share the blocks of ``src`` from ``src_offset`` to its end at ``dst_offset`` of ``dst`` (reflink).

    XFS (with reflink) and btrfs do this in constant time and without using space; offsets
    must be multiples of the block size. Anywhere else it raises Unsupported.
    """
    if fcntl is None:  # not a POSIX system
        raise Unsupported(errno.ENOSYS, "no ioctl on this system")
    request = struct.pack("qQQQ", src_fd, src_offset, 0, dst_offset)  # length 0: to the end
    try:
        fcntl.ioctl(dst_fd, FICLONERANGE, request)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EBADF):
            raise Unsupported(exc.errno, exc.strerror) from None
        raise


def block_size(path: Path) -> int:
    return os.statvfs(path).f_bsize


def write_all(fd: int, data: bytes, offset: int) -> None:
    """pwrite until every byte is written (a single pwrite may write less)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
