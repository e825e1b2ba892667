"""A model that a running process maps is not changed in place, unless ``--force``.

Measured: llama-cpp-python's server answered " Paris. ..." to "Complete the sentence: The capital
of France is"; after ``convert --in-place --factor 2`` of the file it served, it answered "" (no
token, no error), and undoing the change in place did not bring the answer back. The server maps
the file, and the blocks inserted in front of the data moved the weights under it. llama-server
and LM Studio map their models the same way. So before an in-place change, or the completion or
undo of an interrupted one, the processes that map the file or hold it open are looked for, and
the change is refused in one line that names them and the ways out.
"""

from __future__ import annotations

from pathlib import Path

from yarn_cli.errors import YarnCliError
from yarn_cli.files.holders import Holders, holders

SHOWN = 4  # processes named in one line; the rest are counted
NEW_FILE = "drop --in-place to write a new file (a reflink copy costs no space on XFS and btrfs)"


class InUseError(YarnCliError):
    """A running process maps the file (or holds it open) that would be changed in place."""


def check_not_in_use(path: Path, lock_fd: int | None, change: str, *, new_file_instead: bool) -> str | None:
    """Refuse ``change`` (what would move the file's data, in words) while another process uses ``path``.

    Returns a note where not every process could be checked, None where all were. ``lock_fd``: this
    process's descriptor of the file (see ``files.holders``).
    """
    if not path.is_file():  # opening it says what is wrong
        return None
    return judge(holders(path, lock_fd), path, change, new_file_instead=new_file_instead)


def judge(found: Holders, path: Path, change: str, *, new_file_instead: bool) -> str | None:
    """What ``check_not_in_use`` makes of a look at the processes: a refusal, a note, or nothing to say."""
    if not found.checked:
        return (
            f"this system cannot say whether a running process maps {path} (no /proc); if a server runs it, "
            "stop the server first: an in-place change moves the data under it"
        )
    if found.in_use:
        them = "them" if len(found.processes) > 1 else "it"
        ways_out = [f"stop {them} first", *([NEW_FILE] if new_file_instead else []), "use --force to go ahead anyway"]
        raise InUseError(
            f"{path} is in use: {_who(found)}; {change} would move the data under {them}, which would go on, without "
            f"an error, reading what then lies there: {', '.join(ways_out[:-1])}, or {ways_out[-1]}"
        )
    if found.unreadable_users:
        return (
            f"processes of {', '.join(found.unreadable_users)} could not be checked for whether they map {path}; "
            "if one of them runs this model, stop it first: an in-place change moves the data under it"
        )
    return None


def _who(found: Holders) -> str:
    if not found.processes:
        return "a process that cannot be inspected from here (another user's, or outside this container) has it open"
    named = [str(holder) for holder in found.processes[:SHOWN]]
    if len(found.processes) > SHOWN:
        named.append(f"{len(found.processes) - SHOWN} more")
    return ", ".join(named)
