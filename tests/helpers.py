"""Assertions and small helpers shared by the test files (tests/ is on sys.path: ``from helpers import ...``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from yarn_cli.gguf.values import Value

# a chapter of Pride and Prejudice: the text the perplexity runs score
TEXT = Path(__file__).parent / "data" / "pride-and-prejudice-chapter-1.txt"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file in a folder, with its content hash: what must not change."""
    return {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def error_line(result: subprocess.CompletedProcess[str], *, status_lines: tuple[str, ...] = ()) -> str:
    """The one line a failure prints: no traceback, nothing else on stderr but known status lines (and the plan
    line a run prints before its first prompt)."""
    assert "Traceback" not in result.stderr
    known = (*status_lines, "Plan: ")
    lines = [line for line in result.stderr.splitlines() if line.strip() and not any(line.startswith(s) for s in known)]
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


def assert_drawn_png(path: Path) -> None:
    """A complete PNG with something drawn in it (not one flat colour)."""
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert len({tuple(px) for px in pixels.reshape(-1, pixels.shape[-1])[::97]}) > 5


def expected_backend() -> str:
    """What the settings line names with the default -ngl: the first GPU's backend, else CPU."""
    from yarn_cli.llama.devices import gpus

    found = gpus()
    return found[0].backend if found else "CPU"


def installed_command() -> str:
    """The installed ``yarn-cli`` command; a source tree run with PYTHONPATH has none, and the test is skipped."""
    search = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    found = shutil.which("yarn-cli", path=search)
    if found is None:
        pytest.skip("yarn-cli is not installed as a command here (run from a source tree)")
    return found


def sweep(cases: Iterable[object], quick: int = 1) -> list[object]:
    """A parametrize list whose first ``quick`` cases stay in the quick loop and the rest are marked slow.

    For a sweep of command-line cases, each a ``python -m yarn_cli`` run: ``pytest -m "not slow"``
    still runs the check, once, and the whole suite runs every case. A case of several argument
    names is a tuple, as ``parametrize`` takes it.
    """
    return [
        case if i < quick else pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=pytest.mark.slow)
        for i, case in enumerate(cases)
    ]


def edited_copy(model: Path, edits: Mapping[str, Value | None], path: Path) -> Path:
    """A copy of ``model`` at ``path`` with header ``edits`` (None drops a key), its tensors as they are."""
    from yarn_cli.gguf.header import build_header, read_header

    header = read_header(model)
    with model.open("rb") as src, path.open("wb") as dst:
        dst.write(build_header(header, edits))
        src.seek(header.data_offset)
        shutil.copyfileobj(src, dst)
    return path
