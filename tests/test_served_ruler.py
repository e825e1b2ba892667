"""``ruler --server``: the same samples against llama-cpp-python's own server with SmolLM2, over real HTTP.

The server is started on 127.0.0.1 by the tests; the tasks are noise ones (niah_single_1, fwe), so no
haystack is needed. A server that cuts prompts is a proxy in front of the real one, as Ollama cuts them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import error_line
from servers import FakeServer, LlamaServer, forward

pytestmark = pytest.mark.slow

TASKS = ("--tasks", "niah_single_1,fwe", "--lengths", "1k", "--samples", "1")
KEEP = 512  # the truncating proxy keeps the last 512 tokens of a prompt


@pytest.fixture(scope="module")
def server(smollm2: Path) -> Iterator[LlamaServer]:
    running = LlamaServer(smollm2, n_ctx=2048)
    yield running
    running.stop()


def samples(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["samples"]


def answers(path: Path) -> list[tuple[str, int, int, list[str], str, int]]:
    return sorted((s["task"], s["length"], s["index"], s["outputs"], s["output"], s["prompt_tokens"])
                  for s in samples(path))  # fmt: skip


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same samples run here, on the embedded SmolLM2: the answers a server must give."""
    folder = tmp_path_factory.mktemp("local")
    env = {k: v for k, v in os.environ.items() if k != "YARN_CLI_DEBUG"}
    result = subprocess.run(
        [sys.executable, "-m", "yarn_cli", "ruler", *TASKS, "--json", "local.json"],
        capture_output=True, text=True, cwd=folder, env=dict(env, COLUMNS="200", NO_COLOR="1"), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder / "local.json"


def test_a_served_model_gives_the_local_outputs(run_cli, server: LlamaServer, local: Path, tmp_path: Path) -> None:
    served = run_cli("ruler", "--server", server.url, *TASKS, "--json", "served.json")
    assert served.returncode == 0, served.stderr
    assert answers(tmp_path / "served.json") == answers(local)
    assert len(answers(local)) == 2
    record = json.loads((tmp_path / "served.json").read_text())
    assert record["model"]["servers"][0]["url"] == server.url
    assert record["model"]["tokenizer"] == f"server {server.url}"  # sized in the server's own tokens
    assert all(s["server_prompt_tokens"] == s["prompt_tokens"] and not s["truncated"] for s in record["samples"])
    assert record["truncated_samples"] == 0 and "truncated" not in served.stderr
    assert "RULER score (%)" in served.stdout and "niah_single_1" in served.stdout


def test_parallel_requests_give_the_same_outputs(
    run_cli, server: LlamaServer, local: Path, tmp_path: Path, smollm2: Path
) -> None:
    result = run_cli(
        "ruler", "--server", f"smol={server.url}", "--tokenizer", smollm2, *TASKS, "--parallel", "2",
        "--json", "two.json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert answers(tmp_path / "two.json") == answers(local)
    record = json.loads((tmp_path / "two.json").read_text())
    assert record["model"]["tokenizer"]["path"] == str(smollm2)
    assert {s["variant"] for s in record["samples"]} == {"smol"}


def test_a_truncating_server_is_reported_not_scored(
    run_cli, server: LlamaServer, tmp_path: Path, smollm2: Path
) -> None:
    def cut(request: Any, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.endswith("/completions") and body is not None:
            root = server.url[: -len("/v1")]
            tokens = httpx.post(f"{root}/extras/tokenize", json={"input": body["prompt"]}).json()["tokens"]
            kept = httpx.post(f"{root}/extras/detokenize", json={"tokens": tokens[-KEEP:]}).json()["text"]
            body = {**body, "prompt": kept}
        return forward(server.url, path, body)

    proxy = FakeServer(cut)
    args = (
        "ruler", "--server", f"ollama-like={proxy.url}", "--tokenizer", smollm2, "--tasks", "fwe", "--lengths", "1k",
        "--samples", "1", "--json", "cut.json",
    )  # fmt: skip
    with proxy:
        result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    warning = " ".join(result.stderr.split())
    assert "1 of 1 samples were truncated by the server (ollama-like): it saw " in warning
    assert "They are marked truncated, not scored" in warning and "num_ctx" in warning
    assert "truncated (1)" in result.stdout
    record = json.loads((tmp_path / "cut.json").read_text())
    [sample] = record["samples"]
    assert sample["truncated"] and sample["server_prompt_tokens"] <= KEEP + 2 < sample["prompt_tokens"]
    assert f"it saw {sample['server_prompt_tokens']:,} of {sample['prompt_tokens']:,} tokens sent" in warning
    assert record["summary"] == [
        {"variant": "ollama-like", "task": "fwe", "length": 1024, "score": None, "samples": 0, "truncated": 1}
    ]
    assert record["means"] == [{"variant": "ollama-like", "length": 1024, "score": None}]
    assert record["effective_context"] == {"ollama-like": None} and record["truncated_samples"] == 1

    # the same server with a larger context: the same command runs the truncated sample again
    with FakeServer(lambda r, p, b: forward(server.url, p, b), port=proxy.port):
        again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "Resuming" not in again.stderr and "truncated" not in again.stderr
    [rerun] = samples(tmp_path / "cut.json")
    assert not rerun["truncated"] and rerun["server_prompt_tokens"] == rerun["prompt_tokens"] == sample["prompt_tokens"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--compare", "none,yarn:2"], "--compare applies to a model run here, not to --server; compare servers by"),
        (["--no-reuse"], "--no-reuse applies to a model run here, not to --server"),
    ],
)
def test_local_only_options_are_refused_with_a_server(run_cli, args: list[str], expected: str) -> None:
    result = run_cli("ruler", "--server", "http://127.0.0.1:9/v1", *TASKS, *args)
    assert result.returncode == 1
    assert expected in error_line(result)
