"""Safe, fast file output: atomic replacement, in-kernel copies, free-space checks."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import glob
import os
import shutil
import signal
import stat
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from yarn_cli.errors import OutputError
from yarn_cli.gguf.faults import OUTPUTS_STAGED, crash_point

try:
    import fcntl
except ImportError:  # not a POSIX system: no reflinks, no file flags, and a killed run's leftovers stay
    fcntl = None  # type: ignore[assignment]

CHUNK = 64 * 1024 * 1024
# Keep this much free beyond what the output needs, so the disk is never filled to the brim.
FREE_SPACE_MARGIN = 64 * 1024 * 1024
PARTIAL = ".partial"  # the suffix of an output's temporary name

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


def check_free_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed + FREE_SPACE_MARGIN:
        raise OutputError(
            f"not enough disk space in {directory}: the output needs {needed / 2**20:,.1f} MiB "
            f"and {free / 2**20:,.1f} MiB are free; free some space or write the output elsewhere"
        )


def check_not_special(path: Path, what: str) -> None:
    """Refuse a device, pipe or socket as an output: yarn-cli writes files beside it and renames them over it,
    which would replace ``/dev/null`` itself (run as root), and a resumed run would read ``/dev/zero`` forever."""
    with contextlib.suppress(OSError):
        if path.exists() and not path.is_file() and not path.is_dir():
            raise OutputError(f"{what} {path} is not a regular file (a device, pipe or socket); give a file name")


FS_IOC_GETFLAGS = 0x80086601  # <linux/fs.h>
_FS_IMMUTABLE_FL = 0x10
_FS_APPEND_FL = 0x20


def check_replaceable(path: Path, what: str) -> None:
    """Refuse an existing file marked immutable or append-only (chattr +i / +a): renaming over it
    fails, and only after the new file was written. Where flags cannot be read, nothing is refused."""
    if fcntl is None:  # not a POSIX system
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4])[0]
    except OSError:
        return
    finally:
        os.close(fd)
    if flags & (_FS_IMMUTABLE_FL | _FS_APPEND_FL):
        raise OutputError(
            f"{what} {path} is marked immutable or append-only (chattr +i/+a) and cannot be replaced; "
            "clear the flag (chattr -i/-a) or choose another name"
        )


def check_writable(path: Path, option: str) -> None:
    """Fail at once, not after hours of work, where ``path`` could not be written."""
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name")
    check_not_special(path, option)
    check_replaceable(path, option)
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{option} {path}: the folder {folder} does not exist; create it first")
    try:
        fd, name = tempfile.mkstemp(prefix=temporary_prefix(path, ".check"), suffix=".check", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write in {folder} ({exc.strerror}); choose another place") from None


NAME_MAX = 255  # bytes in one file name, where the system does not say (ext4, XFS, tmpfs, btrfs)
_RANDOM_PART = 8  # the characters tempfile adds between prefix and suffix


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that ``folder``'s filesystem accepts."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def name_fits(path: Path) -> bool:
    """Whether ``path``'s last part is a name its folder's filesystem accepts."""
    return len(os.fsencode(path.name)) <= name_max(path.parent)


def check_name_fits(path: Path, what: str) -> None:
    """Refuse an output name longer than its filesystem takes, before anything is written."""
    if not name_fits(path):
        raise OutputError(
            f"{what} {path.name} is {len(os.fsencode(path.name))} bytes, more than the "
            f"{name_max(path.parent)} its filesystem allows; give a shorter OUTPUT"
        )


def same_file(a: Path, b: Path) -> bool:
    """The same file: names that resolve alike, or two names (hard links) of one file."""
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:  # one of them does not exist (and their names differ)
        return False


def temporary_prefix(path: Path, suffix: str) -> str:
    """``.<name>.`` for a temporary file beside ``path``, its name cut so that the whole temporary name fits.

    A temporary name is longer than its target's, so a target name near the filesystem's limit
    would otherwise be one yarn-cli cannot write.
    """
    raw = os.fsencode(path.name)
    room = name_max(path.parent) - len(suffix) - _RANDOM_PART - 2  # the leading "." and the "." after the name
    if len(raw) > room:
        cut = max(room, 0)
        while 0 < cut < len(raw) and raw[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
            cut -= 1
        raw = raw[:cut]
    return f".{os.fsdecode(raw)}."


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def default_mode() -> int:
    """Permissions for a new file, as the umask allows: what ``open()`` would give it."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class Staging:
    """Outputs written under temporary names beside their targets, and renamed into place together.

    Nothing appears under a target name until every output is complete and on disk: a
    conversion of a split model leaves all its splits or none.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (temporary, target)
        self._held: list[int] = []  # a lock on each temporary file: "a live run is writing this"

    def temporary(self, path: Path) -> Path:
        """A new temporary name beside ``path``, removed again unless committed.

        Its lock, held until the end, tells a later run that the file is not a leftover: what a
        killed run (SIGKILL, a power cut) left under ``path``'s temporary names is removed here.
        """
        check_not_special(path, "the output")
        remove_leftovers(path)
        while True:
            fd, name = tempfile.mkstemp(prefix=temporary_prefix(path, PARTIAL), suffix=PARTIAL, dir=path.parent)
            if fcntl is None:  # no locks (and an open file could not be renamed): nothing is held
                os.close(fd)
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                os.close(fd)
                os.unlink(name)
                raise
            if _still_named(name, fd):  # another run's sweep may have taken it between creation and lock
                break
            os.close(fd)
        if fcntl is not None:
            self._held.append(fd)
        tmp = Path(name)
        self._staged.append((tmp, path))
        return tmp

    def _release(self) -> None:
        for fd in self._held:
            os.close(fd)
        self._held.clear()

    @contextlib.contextmanager
    def output(self, path: Path, *, mode: int) -> Iterator[tuple[int, Path]]:
        """(fd, temporary path) to write ``path`` through; the data is fsynced when the block ends."""
        tmp = self.temporary(path)
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fchmod(fd, mode)
            yield fd, tmp
            os.fsync(fd)
        finally:
            os.close(fd)

    def link(self, path: Path, source: Path) -> bool:
        """Stage ``path`` as another name of ``source`` (a hard link: no data copied); False where it cannot be."""
        with contextlib.suppress(OSError):
            if os.path.samefile(path, source):  # linked by an earlier run already: nothing to do
                return True
        tmp = self.temporary(path)
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            self._staged.remove((tmp, path))
            return False
        return True

    def commit(self) -> None:
        """Rename every output into place, with Ctrl-C and SIGTERM held back until all are there."""
        crash_point(OUTPUTS_STAGED)
        blocked = {signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked) if hasattr(signal, "pthread_sigmask") else None
        try:
            for tmp, path in self._staged:
                os.replace(tmp, path)
        finally:
            if previous is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for directory in {path.parent for _, path in self._staged}:
            fsync_dir(directory)
        self._staged.clear()
        self._release()

    def discard(self) -> None:
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self._staged.clear()
        self._release()


def _still_named(name: str, fd: int) -> bool:
    try:
        return os.stat(name).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def remove_leftovers(path: Path) -> None:
    """Remove the temporary files beside ``path`` that no live run holds: what a killed run left behind."""
    if fcntl is None:
        return
    pattern = glob.escape(temporary_prefix(path, PARTIAL)) + "?" * _RANDOM_PART + PARTIAL
    for candidate in path.parent.glob(pattern):
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            # a hard link is another name of a file (a run's staged link to its input), never a leftover's data
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # refused while its run is alive
                candidate.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)


@contextlib.contextmanager
def staging() -> Iterator[Staging]:
    """A ``Staging`` committed when the block ends, and discarded on any error, Ctrl-C included."""
    stage = Staging()
    try:
        yield stage
        stage.commit()
    except BaseException:
        stage.discard()
        raise


@contextlib.contextmanager
def atomic_output(path: Path, *, mode: int) -> Iterator[tuple[int, Path]]:
    """Yield (fd, temporary path) to write ``path`` (permissions ``mode``) through a temporary file beside it.

    On success the data is fsynced and the temporary file renamed over ``path``;
    on any error, Ctrl-C included, it is removed and ``path`` is left untouched.
    """
    with staging() as stage, stage.output(path, mode=mode) as (fd, tmp):
        yield fd, tmp


def write_atomically(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """All of ``data`` at ``path``, or nothing: the one way yarn-cli writes a small file."""
    with atomic_output(path, mode=default_mode() if mode is None else mode) as (fd, _):
        write_all(fd, data, 0)


def link_or_copy(src: Path, dst: Path, stage: Staging, progress: Progress | None = None) -> str:
    """Stage ``src``'s content for ``dst``: a hard link where possible, else a copy."""
    if stage.link(dst, src):
        return "hardlink"
    size = src.stat().st_size
    with stage.output(dst, mode=src.stat().st_mode & 0o777) as (out_fd, _), src.open("rb") as fin:
        copy_range(fin.fileno(), out_fd, 0, 0, size, progress)
    return "copy"
