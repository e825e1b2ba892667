"""Outputs written whole or not at all: under temporary names beside their targets, renamed into place.

Each temporary file is locked while its run writes it, so that a later run writing the same output
removes what a killed run (SIGKILL, a power cut) left behind, and never a live run's file.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from yarn_cli.files.checks import RANDOM_PART, check_not_special, temporary_prefix
from yarn_cli.files.copying import Progress, copy_range, write_all
from yarn_cli.files.faults import OUTPUTS_STAGED, crash_point

try:
    import fcntl
except ImportError:  # not a POSIX system: no reflinks, no file flags, and a killed run's leftovers stay
    fcntl = None  # type: ignore[assignment]

PARTIAL = ".partial"  # the suffix of an output's temporary name


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

    def write(self, path: Path, data: bytes, *, mode: int | None = None) -> None:
        """Stage all of ``data`` for ``path`` (permissions ``mode``, else as the umask allows)."""
        with self.output(path, mode=default_mode() if mode is None else mode) as (fd, _):
            write_all(fd, data, 0)

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
        if self._staged:  # a staging that holds nothing (an in-place change without a Modelfile) has no such moment
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
    pattern = glob.escape(temporary_prefix(path, PARTIAL)) + "?" * RANDOM_PART + PARTIAL
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
    with staging() as stage:
        stage.write(path, data, mode=mode)


def link_or_copy(src: Path, dst: Path, stage: Staging, progress: Progress | None = None) -> str:
    """Stage ``src``'s content for ``dst``: a hard link where possible, else a copy."""
    if stage.link(dst, src):
        return "hardlink"
    size = src.stat().st_size
    with stage.output(dst, mode=src.stat().st_mode & 0o777) as (out_fd, _), src.open("rb") as fin:
        copy_range(fin.fileno(), out_fd, 0, 0, size, progress)
    return "copy"
