"""Assertions shared by the command-line tests."""

from __future__ import annotations

import subprocess


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
