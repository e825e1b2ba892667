"""``chat --server``: a one-shot reply and the REPL against a real OpenAI-compatible server, over real HTTP.

The server is llama-cpp-python's own (``llama-cpp-python[server]``) with SmolLM2, started on
127.0.0.1 by the tests; the answers are the local model's (``Paris``). A model without a chat
template (SmolLM2 with its template taken out, a base model) is continued as plain completion where
the server says it has none: behind stand-ins that report it as llama-server, Ollama and vLLM do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import edited_copy, error_line
from servers import (
    LLAMA_SERVER_CHATML_FALLBACK,
    OLLAMA_DEFAULT_TEMPLATE,
    VLLM_NO_TEMPLATE,
    FakeServer,
    LlamaServer,
    with_template_report,
)
from terminal import Terminal

from yarn_cli.gguf.header import read_header
from yarn_cli.serving.client import ServedTemplate, ServerClient

TEMPLATE_KEY = "tokenizer.chat_template"


@pytest.fixture(scope="module")
def server(smollm2: Path) -> Iterator[LlamaServer]:
    running = LlamaServer(smollm2, n_ctx=2048)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def smol_base(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 without its chat template, as a base model comes."""
    return edited_copy(smollm2, {TEMPLATE_KEY: None}, tmp_path_factory.mktemp("base") / "smol-base.gguf")


@pytest.fixture(scope="module")
def base_server(smol_base: Path) -> Iterator[LlamaServer]:
    running = LlamaServer(smol_base, n_ctx=2048)
    yield running
    running.stop()


QUESTION = "Complete the sentence: The capital of France is"


@pytest.mark.slow
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


@pytest.mark.slow
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


# --- the served model's chat template ------------------------------------------------------------


def models(model: str = "smol") -> tuple[int, Any]:
    return 200, {"object": "list", "data": [{"id": model, "object": "model"}]}


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ({"/props": {"chat_template": LLAMA_SERVER_CHATML_FALLBACK}}, ServedTemplate(False, "llama-server's /props")),
        ({"/props": {"chat_template": ""}}, ServedTemplate(False, "llama-server's /props")),
        ({"/props": {"chat_template": "{{ messages }}"}}, ServedTemplate(True, "llama-server's /props")),
        ({"/api/show": {"template": OLLAMA_DEFAULT_TEMPLATE}}, ServedTemplate(False, "Ollama's /api/show")),
        ({"/api/show": {"template": "{{ .System }} {{ .Prompt }}"}}, ServedTemplate(True, "Ollama's /api/show")),
        ({"/tokenize": (400, {"message": VLLM_NO_TEMPLATE})}, ServedTemplate(False, "vLLM's /tokenize")),
        ({"/tokenize": {"tokens": [1, 2], "max_model_len": 4096}}, ServedTemplate(True, "vLLM's /tokenize")),
        ({"/tokenize": {"tokens": []}}, ServedTemplate(None)),  # a body it does not know, ignored
        ({"/tokenize": (400, {"message": "body.prompt Field required"})}, ServedTemplate(None)),
        ({}, ServedTemplate(None)),  # llama-cpp-python, LM Studio: nothing says
    ],
)
def test_the_chat_template_is_read_where_the_server_says(answers: dict[str, Any], expected: ServedTemplate) -> None:
    asked: list[tuple[str, Any]] = []

    def handle(request: Any, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        asked.append((path, body))
        if path == "/v1/models":
            return models()
        answer = answers.get(path)
        if answer is None:
            return 404, {"detail": "Not Found"}
        return answer if isinstance(answer, tuple) else (200, answer)

    with FakeServer(handle) as fake, ServerClient(fake.url) as client:
        assert client.chat_template() == expected
    shown = dict(asked).get("/api/show")
    assert shown is None or shown["model"] == "smol"
    tokenized = dict(asked).get("/tokenize")
    assert tokenized is None or tokenized["messages"][0]["role"] == "user"


def local_reply(run_cli, model: Path) -> dict[str, Any]:
    result = run_cli("chat", model, "-p", QUESTION, "--temp", "0", "-n", "16", "-c", "2048", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["llama-server", "ollama", "vllm"])
def test_a_served_model_without_a_template_is_continued_as_plain_completion(
    run_cli, smol_base: Path, base_server: LlamaServer, kind: str
) -> None:
    paths: list[str] = []
    with FakeServer(with_template_report(base_server.url, kind, None, paths)) as stand_in:
        args = ("chat", "--server", stand_in.url, "-p", QUESTION, "--temp", "0", "-n", "16")
        data = json.loads(run_cli(*args, "--json").stdout)
        shown = run_cli(*args)
    local = local_reply(run_cli, smol_base)
    assert local["mode"] == "completion"
    assert (data["mode"], data["settings"]["chat_template"]) == ("completion", False)
    assert data["reply"] == local["reply"] and data["reply"].strip()  # as the same file continues it here
    assert "/v1/chat/completions" not in paths and "/v1/completions" in paths
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == data["reply"].strip()
    assert "chat template: none" in shown.stderr
    assert "Warning: the served model has no chat template" in shown.stderr
    assert "plain completion (/v1/completions)" in shown.stderr


@pytest.mark.slow
def test_a_reported_template_is_the_models_and_an_unreported_one_says_so(
    run_cli, server: LlamaServer, smollm2: Path, base_server: LlamaServer
) -> None:
    template = str(read_header(smollm2).get(TEMPLATE_KEY))
    with FakeServer(with_template_report(server.url, "llama-server", template)) as stand_in:
        result = run_cli("chat", "--server", stand_in.url, "-p", QUESTION, "--temp", "0", "-n", "16")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "context 2048, chat template: the model's" in result.stderr and "Warning" not in result.stderr
    # llama-cpp-python's own server says nothing of its template: it falls back to a llama-2 one unasked
    unreported = run_cli("chat", "--server", base_server.url, "-p", QUESTION, "--temp", "0", "-n", "4", "--json")
    data = json.loads(unreported.stdout)
    assert (data["mode"], data["settings"]["chat_template"], data["settings"]["n_ctx"]) == ("chat", None, None)
    assert data["scale"] is None  # the server's scaling is not known here
    shown = run_cli("chat", "--server", base_server.url, "-p", QUESTION, "--temp", "0", "-n", "4")
    assert "context not reported, chat template: not reported" in shown.stderr


@pytest.mark.slow
def test_the_repl_continues_a_base_model_over_the_completions_endpoint(
    base_server: LlamaServer, tmp_path: Path
) -> None:
    paths: list[str] = []
    with FakeServer(with_template_report(base_server.url, "llama-server", None, paths)) as stand_in:
        term = Terminal("--server", stand_in.url, "--temp", "0", "-n", "8", cwd=tmp_path)
        assert "chat template: none" in term.expect("> ")
        term.type("The capital of France is\r")
        term.expect("tok/s")
        term.expect("> ")
        term.type("The capital of Italy is\r")
        term.expect("tok/s")
        term.expect("> ")
        term.type("/exit\r")
        assert term.wait() == 0
    assert paths.count("/v1/completions") == 2 and "/v1/chat/completions" not in paths
