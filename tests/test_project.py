"""Project rules that must hold on every commit: CI runs the README, layering, lint."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = readme_commands()
    assert len(commands) >= 2, "the README starts with the set-up command and the test command"
    ci_lines = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci_lines[-1] == commands[1]
    assert "pytest" in commands[1] and "[test]" in commands[1]


def test_library_never_imports_the_cli_stack() -> None:
    for module in sorted((ROOT / "yarn_cli").glob("*.py")):
        if module.name == "__main__.py":  # the entry point, which starts the CLI
            continue
        tree = ast.parse(module.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0] if node.level == 0 else "")
                if node.module.startswith("yarn_cli.cli"):
                    imported.add("yarn_cli.cli")
        assert not imported & {"typer", "rich", "click", "yarn_cli.cli"}, module.name


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff_clean(args: list[str]) -> None:
    ruff = shutil.which("ruff")
    assert ruff is not None, "ruff is installed by the test extra"
    result = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
