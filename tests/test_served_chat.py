"""``chat --server``: a one-shot reply and the REPL against a real OpenAI-compatible server, over real HTTP.

The server is llama-cpp-python's own (``llama-cpp-python[server]``) with SmolLM2, started on
127.0.0.1 by the tests; the answers are the local model's (``Paris``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import error_line
from servers import LlamaServer
from terminal import Terminal

pytestmark = pytest.mark.slow  # each test talks to a real server


@pytest.fixture(scope="module")
def server(smollm2: Path) -> Iterator[LlamaServer]:
    running = LlamaServer(smollm2, n_ctx=2048)
    yield running
    running.stop()


QUESTION = "Complete the sentence: The capital of France is"


def test_chat_one_shot_with_a_served_model(run_cli, server: LlamaServer) -> None:
    result = run_cli("chat", "--server", server.url, "-p", QUESTION, "--temp", "0", "-n", "16", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "Paris" in data["reply"] and data["mode"] == "chat"
    assert data["settings"]["server"] == server.url
    assert data["prompt_tokens"] is None  # llama-cpp-python's server streams no usage: not reported, not 0
    assert data["completion_tokens"] >= 1 and data["stopped"] in ("eos", "length")
    streamed = run_cli("chat", "--server", server.url, "-p", QUESTION, "--temp", "0", "-n", "16")
    assert streamed.returncode == 0 and streamed.stdout.strip() == data["reply"].strip()
    assert f"server: {server.url}" in streamed.stderr
    local_only = run_cli("chat", "--server", server.url, "-p", QUESTION, "-c", "4096", "--rope-scale", "2")
    assert local_only.returncode == 1
    assert "-c, --rope-scale applies to a model run here" in error_line(local_only)


def test_chat_repl_with_a_served_model(server: LlamaServer, tmp_path: Path) -> None:
    term = Terminal("--server", server.url, "--temp", "0", "-n", "16", cwd=tmp_path)
    term.expect("> ")
    term.type(QUESTION + "\r")
    assert "Paris" in term.expect("tok/s")
    term.expect("> ")
    term.type("/regen\r")
    assert "Paris" in term.expect("tok/s")
    term.expect("> ")
    term.type("/stats\r")
    assert "2 messages" in term.expect("> ")
    term.type("/exit\r")
    assert term.wait() == 0
