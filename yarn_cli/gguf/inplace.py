"""Changing a GGUF header in place in constant time, with an undo record that survives a crash.

GGUF puts the tensor data right after the header, and tensor offsets are relative to the
data start. When the new header is longer or shorter than the old one by whole filesystem
blocks (``convert`` pads its record so that it is), the filesystem can insert or remove
those blocks in front of the data (``fallocate`` INSERT_RANGE / COLLAPSE_RANGE, on ext4 and
XFS): the data moves without being copied, and only the header is written.

Crash safety: before the file is touched, an undo record with the old and the new header,
the change, and a checksum of the first tensor bytes is written beside it and made durable.
It is removed only once the new header is written, fsynced and verified. Whoever finds a
record (the next ``convert`` of that file, or ``convert --recover``) looks at the file: if
the data already sits at its new place the change is completed, otherwise the original is
restored; either way the result is byte for byte one of the two files, never a mixture.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system
    fcntl = None  # type: ignore[assignment]

from yarn_cli.errors import OutputError, YarnCliError
from yarn_cli.files.checks import name_fits, name_max
from yarn_cli.files.copying import Unsupported, block_size, shift_blocks, write_all
from yarn_cli.files.faults import crash_point
from yarn_cli.files.staging import fsync_dir, write_atomically

UNDO_SUFFIX = ".yarn-cli-undo"
MAGIC = b"YARN-CLI-UNDO 1\n"
PROBE_BYTES = 64 * 1024


class RecoveryError(YarnCliError):
    """An undo record that does not match its file: nothing is guessed, the record is kept."""


@dataclass(frozen=True)
class UndoRecord:
    old_size: int
    old_header: bytes  # the file's bytes before its tensor data, before the change
    new_header: bytes  # the same after it
    offset: int  # where blocks are inserted or removed
    shift: int  # bytes inserted (> 0) or removed (< 0); 0: the header is overwritten in its place
    probe: str  # sha256 of the first tensor-data bytes

    @property
    def new_size(self) -> int:
        return self.old_size + self.shift

    def to_bytes(self) -> bytes:
        meta = {
            "old_size": self.old_size,
            "old_header_len": len(self.old_header),
            "new_header_len": len(self.new_header),
            "offset": self.offset,
            "shift": self.shift,
            "probe": self.probe,
            "sha256": hashlib.sha256(self.old_header + self.new_header).hexdigest(),
        }
        return MAGIC + json.dumps(meta).encode() + b"\n" + self.old_header + self.new_header

    @classmethod
    def from_bytes(cls, data: bytes, where: Path) -> UndoRecord:
        try:
            if not data.startswith(MAGIC):
                raise ValueError("not an undo record")
            line_end = data.index(b"\n", len(MAGIC))
            meta = json.loads(data[len(MAGIC) : line_end])
            body = data[line_end + 1 :]
            old_len, new_len = int(meta["old_header_len"]), int(meta["new_header_len"])
            if len(body) != old_len + new_len or hashlib.sha256(body).hexdigest() != meta["sha256"]:
                raise ValueError("its checksum does not match")
            return cls(
                old_size=int(meta["old_size"]),
                old_header=body[:old_len],
                new_header=body[old_len:],
                offset=int(meta["offset"]),
                shift=int(meta["shift"]),
                probe=str(meta["probe"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RecoveryError(f"{where} is damaged ({exc}); it was left in place, nothing was changed") from None


def undo_path(path: str | os.PathLike[str]) -> Path:
    """The undo record's path: beside the file itself, where ``path`` is a symbolic link to it.

    An in-place change changes the file a link points to, so every name of that file finds
    the same record.
    """
    path = in_place_target(path)
    return path.with_name(path.name + UNDO_SUFFIX)


def in_place_target(path: str | os.PathLike[str]) -> Path:
    """The file an in-place change of ``path`` changes: the one a symbolic link points to (the link stays).

    Replacing the link itself (as the copy fallback's rename would) would leave the file unchanged.
    """
    path = Path(path)
    try:
        return path.resolve() if path.is_symlink() else path
    except OSError:  # a name the system cannot look up is no link
        return path


def record_name(path: str | os.PathLike[str]) -> str:
    """The undo record as a message names it: its file name, or its whole path where it is not beside ``path``."""
    record = undo_path(path)
    return record.name if record.parent.absolute() == Path(path).absolute().parent else str(record)


def has_record(path: str | os.PathLike[str]) -> bool:
    """Whether an undo record sits beside ``path``.

    A file whose name leaves no room for the record's longer name has none: no in-place change
    of it can have written one (``rewrite_header`` refuses first).
    """
    try:
        return undo_path(path).exists()
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return False
        raise


def _check_record_fits(path: Path) -> None:
    record = undo_path(path)
    if not name_fits(record):
        raise OutputError(
            f"{path} cannot be changed in place: its name leaves no room for the undo record written beside it "
            f"({UNDO_SUFFIX} makes it {len(os.fsencode(record.name))} bytes, more than the "
            f"{name_max(path.parent)} its filesystem allows); give it a shorter name, or convert it to an OUTPUT "
            "instead of --in-place"
        )


def _probe(fd: int, offset: int) -> str:
    return hashlib.sha256(os.pread(fd, PROBE_BYTES, offset)).hexdigest()


def _write_header(fd: int, header: bytes) -> None:
    crash_point("mid-header", lambda: _write_durably(fd, header[: len(header) // 2]))
    _write_durably(fd, header)


def _write_durably(fd: int, data: bytes) -> None:
    write_all(fd, data, 0)
    os.fsync(fd)


def _save_record(path: Path, record: UndoRecord) -> None:
    """Durably, and whole or not at all: a half-written record is never taken for one."""
    write_atomically(undo_path(path), record.to_bytes(), mode=0o600)


def _drop_record(path: Path) -> None:
    record = undo_path(path)  # beside the file a link points to
    record.unlink(missing_ok=True)
    fsync_dir(record.parent)


def plan_shift(path: Path, old_data_offset: int, new_data_offset: int, data_size: int) -> tuple[int, int]:
    """(offset, shift) for moving the data by whole blocks; Unsupported when it cannot be."""
    shift = new_data_offset - old_data_offset
    size = block_size(path.parent)
    if shift % size:
        raise Unsupported(
            errno.EINVAL, f"the header changes by {shift:+,} bytes, not by whole {size:,}-byte filesystem blocks"
        )
    base = old_data_offset // size * size  # the block boundary at or below the data start
    if shift and data_size == 0:  # blocks can only be inserted or removed before the end of a file
        raise Unsupported(errno.EINVAL, "the file has no tensor data to move")
    return (base if shift >= 0 else base + shift), shift


def rewrite_header(
    path: Path, old_data_offset: int, new_header: bytes, data_size: int, verify: Callable[[], None]
) -> str:
    """Replace the header of ``path`` in place; returns how: insert-range, collapse-range or overwrite.

    Raises Unsupported, with the file untouched, where the filesystem cannot move blocks.
    If ``verify`` fails, the original is restored before the error propagates.
    """
    offset, shift = plan_shift(path, old_data_offset, len(new_header), data_size)
    _check_record_fits(path)
    with path.open("r+b") as fh:
        fd = fh.fileno()
        record = UndoRecord(
            old_size=os.fstat(fd).st_size,
            old_header=os.pread(fd, old_data_offset, 0),
            new_header=new_header,
            offset=offset,
            shift=shift,
            probe=_probe(fd, old_data_offset),
        )
        _save_record(path, record)
        crash_point("after-undo-record")
        if shift:
            try:
                shift_blocks(fd, offset, shift)
            except BaseException:
                if os.fstat(fd).st_size == record.old_size:  # refused: nothing moved
                    _drop_record(path)
                raise
            os.fsync(fd)
        crash_point("after-shift")
        _write_header(fd, new_header)
        try:
            verify()
        except BaseException:
            _restore(fd, record)
            _drop_record(path)
            raise
    _drop_record(path)
    if shift > 0:
        return "insert-range"
    return "collapse-range" if shift < 0 else "overwrite"


def _restore(fd: int, record: UndoRecord) -> None:
    if record.shift and os.fstat(fd).st_size == record.new_size:
        shift_blocks(fd, record.offset, -record.shift)
        os.fsync(fd)
    _write_durably(fd, record.old_header)


class BusyError(YarnCliError):
    """Another process is changing the file in place right now."""


@contextlib.contextmanager
def locked(path: Path, *, exclusive: bool) -> Iterator[int | None]:
    """Hold ``path`` against other processes' in-place changes: exclusively to change it, shared to read it.

    A second ``convert --in-place`` (or ``--recover``) of the same file refuses at once instead of
    interleaving its writes with the first. Advisory locks (flock): where the system has none, or
    the file does not exist, nothing is held. Yields the descriptor that holds the lock (None then).
    """
    if fcntl is None or not path.is_file():
        yield None
        return
    with path.open("rb") as fh:
        try:
            fcntl.flock(fh.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(
                f"{path} is being changed in place by another yarn-cli right now; try again when it has finished"
            ) from None
        yield fh.fileno()


def pending_change(path: str | os.PathLike[str]) -> YarnCliError | None:
    """Why the file's header cannot be trusted now (an in-place change cut short, or under way), else None."""
    if not has_record(path):
        return None
    try:
        with locked(Path(path), exclusive=False):
            pass
    except BusyError as exc:
        return exc
    return RecoveryError(
        f"an in-place change of {path} was interrupted ({record_name(path)} is beside it); "
        f"run: yarn-cli convert {path} --recover"
    )


def check_not_pending(path: str | os.PathLike[str]) -> None:
    """Refuse to read a file whose in-place change was cut short or is under way: its header may be half-written."""
    problem = pending_change(path)
    if problem is not None:
        raise problem


def recover(path: Path) -> str | None:
    """Finish or undo an interrupted in-place change; returns "completed", "restored" or None (nothing to do)."""
    record_path = undo_path(path)
    if not has_record(path):
        return None
    try:
        data = record_path.read_bytes()
    except FileNotFoundError:
        return None
    record = UndoRecord.from_bytes(data, record_path)
    with path.open("r+b") as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        head = os.pread(fd, max(len(record.old_header), len(record.new_header)), 0)
        moved = record.shift != 0 and size == record.new_size and _probe(fd, len(record.new_header)) == record.probe
        in_place = size == record.old_size and _probe(fd, len(record.old_header)) == record.probe
        if moved or (record.shift == 0 and in_place and not head.startswith(record.old_header)):
            # The data is where the new header expects it: finishing is writing that header.
            if not head.startswith(record.new_header):
                _write_durably(fd, record.new_header)
            outcome = "completed"
        elif in_place:
            if not head.startswith(record.old_header):
                _write_durably(fd, record.old_header)
            outcome = "restored"
        else:
            raise RecoveryError(
                f"{path} does not match its undo record {record_path.name} (size {size:,}, expected "
                f"{record.old_size:,} or {record.new_size:,}); both were left as they are"
            )
    _drop_record(path)
    return outcome
