"""Whether a path can be an output, asked before any work: its name fits, its folder takes a new file,
it is no folder, device, pipe or immutable file, there is room for it, it is not one of the inputs."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
from pathlib import Path

from yarn_cli.errors import OutputError

try:
    import fcntl
except ImportError:  # not a POSIX system: no reflinks, no file flags, and a killed run's leftovers stay
    fcntl = None  # type: ignore[assignment]

# Keep this much free beyond what the output needs, so the disk is never filled to the brim.
FREE_SPACE_MARGIN = 64 * 1024 * 1024


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
RANDOM_PART = 8  # the characters tempfile adds between prefix and suffix


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
    room = name_max(path.parent) - len(suffix) - RANDOM_PART - 2  # the leading "." and the "." after the name
    if len(raw) > room:
        cut = max(room, 0)
        while 0 < cut < len(raw) and raw[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
            cut -= 1
        raw = raw[:cut]
    return f".{os.fsdecode(raw)}."
