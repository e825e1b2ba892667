"""Assertions shared by the command-line tests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable


def error_line(result: subprocess.CompletedProcess[str], *, status_lines: tuple[str, ...] = ()) -> str:
    """The one line a failure prints: no traceback, nothing else on stderr but known status lines."""
    assert "Traceback" not in result.stderr
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not any(line.startswith(status) for status in status_lines)
    ]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def interrupt_on_call(n: int) -> Callable[[int, int], None]:
    """A convert progress callback that raises KeyboardInterrupt (as Ctrl-C would) on its n-th call."""
    calls = 0

    def progress(done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == n:
            raise KeyboardInterrupt

    return progress
