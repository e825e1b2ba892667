"""The running processes that map a file into memory or hold it open, asked before the file is changed in place.

A model server (llama-server, llama-cpp-python's, LM Studio) maps its model file: blocks inserted in
front of the data move the weights under it, and it goes on answering from whatever now lies
there, without an error. What a file is, is its device and inode, not its name: a process that
opened it through a hard link or a symbolic link holds the same file.

Linux says it in /proc: each process's ``maps`` (its mapped files, by device and inode) and ``fd``
(its open files). A process of another user cannot be read without root, nor can one the system
keeps from being inspected, nor one outside this container's view. For those, the kernel still
answers one question: a write lease (``F_SETLEASE``) is granted only on a file no other process
has open or mapped, whoever runs it. Where no lease can be taken (a file of another owner, a
filesystem without leases), the processes that could not be read are named by their users
instead. Where there is no /proc (macOS, Windows), nothing can be checked, and ``Holders.checked``
says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl
    import pwd
except ImportError:  # Windows: no /proc either, so neither is ever asked
    fcntl = None  # type: ignore[assignment]
    pwd = None  # type: ignore[assignment]

PROC = Path("/proc")
_KERNEL_THREAD = 0x00200000  # PF_KTHREAD in /proc/PID/stat's flags: no memory map, no files of its own
_NOT_FILES = ("socket:", "pipe:", "anon_inode:")  # what an fd link names when it is no file
_F_SETSIG = 10  # <fcntl.h>: the signal a lease break sends (its default, SIGIO, would end this process)
_SIGURG = 23  # ignored unless a handler is set, which yarn-cli never does


@dataclass(frozen=True)
class Holder:
    """A process using the file: ``maps`` it into memory, or only holds it open."""

    pid: int
    program: str
    maps: bool

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.program}) {'maps it' if self.maps else 'has it open'}"


@dataclass(frozen=True)
class Holders:
    """What a look at the running processes found about one file."""

    processes: list[Holder] = field(default_factory=list)  # the ones it could name
    unnamed: bool = False  # and some process it could not read uses it too (the kernel said so)
    unreadable_users: list[str] = field(default_factory=list)  # could not be read, and nothing says whether they use it
    checked: bool = True  # False: this system offers no way to look (no /proc)

    @property
    def in_use(self) -> bool:
        return bool(self.processes) or self.unnamed


def holders(path: str | os.PathLike[str], own_fd: int | None = None) -> Holders:
    """The other processes that map ``path``'s file or hold it open; this one is left out (it holds the lock).

    ``own_fd``, this process's one open file of it (its lock's), lets the kernel say whether any other
    process, readable or not, has the file open: see the module's docstring.
    """
    if not (PROC / "self" / "maps").exists():
        return Holders(checked=False)
    target = os.stat(path)
    me = os.getpid()
    found: list[Holder] = []
    unreadable: set[int] = set()
    for pid in _pids():
        if pid == me:
            continue
        try:
            if _kernel_thread(pid):
                continue
            maps = _maps(pid, target)
            if maps or _open_fds(pid, target):
                found.append(Holder(pid, _program(pid), maps))
        except PermissionError:
            with contextlib.suppress(OSError):
                unreadable.add(os.stat(PROC / str(pid)).st_uid)
        except (FileNotFoundError, ProcessLookupError):  # it ended while it was being read
            continue
    others = _others_hold(own_fd, target) if own_fd is not None else None
    if others is not None:  # the kernel's answer covers every process: nothing is left unknown
        return Holders(found, unnamed=others and not found)
    return Holders(found, unreadable_users=sorted(_user_name(uid) for uid in unreadable))


def _pids() -> Iterator[int]:
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            yield int(entry.name)


def _kernel_thread(pid: int) -> bool:
    stat = (PROC / str(pid) / "stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after the program name, which may hold spaces and ")"
    return bool(int(fields[6]) & _KERNEL_THREAD)


def _maps(pid: int, target: os.stat_result) -> bool:
    """Whether ``pid`` maps the file: a line of its maps with the file's inode, on the file's device.

    Where a filesystem reports one device in maps and another to stat (btrfs subvolumes,
    overlayfs), the mapped name is asked instead.
    """
    with open(PROC / str(pid) / "maps", encoding="utf-8", errors="surrogateescape") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) < 5 or int(parts[4]) != target.st_ino:
                continue
            major, minor = (int(n, 16) for n in parts[3].split(":"))
            if os.makedev(major, minor) == target.st_dev:
                return True
            if len(parts) == 6 and _same(parts[5].rstrip("\n"), target):
                return True
    return False


def _open_fds(pid: int, target: os.stat_result) -> list[int]:
    fds = PROC / str(pid) / "fd"
    found = []
    for fd in os.listdir(fds):
        link = fds / fd
        with contextlib.suppress(OSError):  # closed meanwhile: stat says so below
            if os.readlink(link).startswith(_NOT_FILES):
                continue
        if _same(link, target):
            found.append(int(fd))
    return found


def _same(path: str | Path, target: os.stat_result) -> bool:
    try:
        info = os.stat(path)
    except OSError:  # gone, or a name that no longer leads to a file (deleted, renamed)
        return False
    return (info.st_dev, info.st_ino) == (target.st_dev, target.st_ino)


def _others_hold(own_fd: int, target: os.stat_result) -> bool | None:
    """Whether any other open file of the inode exists, in any process: a write lease is refused then.

    None where the kernel cannot say: this process holds the file elsewhere too (a header still
    mapped), it does not own the file, or the filesystem takes no leases.
    """
    if fcntl is None:
        return None
    me = os.getpid()
    try:
        if _maps(me, target) or _open_fds(me, target) != [own_fd]:
            return None
    except OSError:
        return None
    try:
        fcntl.fcntl(own_fd, _F_SETSIG, _SIGURG)  # another open() in the instant the lease is held signals that
        fcntl.fcntl(own_fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError as exc:
        return True if exc.errno in (errno.EAGAIN, errno.EBUSY) else None
    fcntl.fcntl(own_fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return False


def _program(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip() or "?"
    except OSError:
        return "?"


def _user_name(uid: int) -> str:
    if pwd is None:
        return str(uid)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
