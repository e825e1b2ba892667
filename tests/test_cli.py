"""The installed command line as a whole, run as a user runs it: the version, --help, a broken file in each command.

Each command has its own files (tests/README.md); this one holds what is common to them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ggufs import write_tiny_llama
from helpers import error_line, files_in, installed_command, sweep

from yarn_cli import __version__


def test_console_script_version() -> None:
    result = subprocess.run([installed_command(), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout == f"yarn-cli {__version__}\n"


def test_module_version(run_cli) -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"yarn-cli {__version__}\n")


@pytest.mark.parametrize("command", sweep([[], ["inspect"], ["convert"]]))
def test_help_teaches_with_an_example(run_cli, command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout
    if command:
        assert "Example" in result.stdout
    else:
        assert "inspect" in result.stdout and "convert" in result.stdout


# --- a broken file: one line, non-zero exit, nothing written ----------------------------------


def _broken_files(folder: Path) -> dict[str, Path]:
    tiny = write_tiny_llama(folder / "good.gguf")
    data = tiny.read_bytes()
    files = {}
    (folder / "text.gguf").write_text("hello, I am not a model\n" * 4)
    files["text"] = folder / "text.gguf"
    (folder / "trunc.gguf").write_bytes(data[:200])
    files["truncated"] = folder / "trunc.gguf"
    (folder / "v1.gguf").write_bytes(b"GGUF" + (1).to_bytes(4, "little") + data[8:])
    files["version"] = folder / "v1.gguf"
    (folder / "short.gguf").write_bytes(data[: len(data) - 1000])
    files["short"] = folder / "short.gguf"
    tiny.unlink()
    return files


@pytest.mark.parametrize(
    ("name", "expected"),
    sweep(
        [
            ("text", "is not a GGUF file (it starts with b'hell', not b'GGUF')"),
            ("truncated", "the GGUF header is truncated or corrupt"),
            ("version", "is GGUF version 1; only versions 2 and 3 are supported"),
            ("short", "is truncated: tensor 'output.weight' ends at byte"),
        ]
    ),
)
@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_broken_files(run_cli, tmp_path: Path, name: str, expected: str, command: str) -> None:
    files = _broken_files(tmp_path)
    args = [command, files[name]] + (["--factor", "2"] if command == "convert" else [])
    result = run_cli(*args)
    assert result.returncode == 1
    assert expected in error_line(result)
    assert files_in(tmp_path) == sorted(p.name for p in files.values())
