"""``yarn-cli chat`` on a pseudo-terminal, driven as a person at a keyboard would drive it."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path


class Terminal:
    """Drive ``yarn-cli chat`` on a pseudo-terminal, as a person at a keyboard would."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the CLI
            os.chdir(cwd)
            os.environ["NO_COLOR"] = "1"
            os.execvp(sys.executable, [sys.executable, "-m", "yarn_cli", "chat", *args])
        self.buffer = b""
        self.pos = 0

    def expect(self, marker: str, timeout: float = 120) -> str:
        end = time.monotonic() + timeout
        needle = marker.encode()
        while time.monotonic() < end:
            found = self.buffer.find(needle, self.pos)
            if found >= 0:
                seen = self.buffer[self.pos : found].decode(errors="replace")
                self.pos = found + len(needle)
                return seen
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.buffer += os.read(self.fd, 65536)
                except OSError:
                    break
        raise AssertionError(f"never saw {marker!r}; screen so far:\n{self.buffer.decode(errors='replace')}")

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            if select.select([self.fd], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    self.buffer += os.read(self.fd, 65536)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("the REPL did not exit")
