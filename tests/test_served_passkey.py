"""``passkey --server``: the same trials against a real OpenAI-compatible server, over real HTTP.

The server is llama-cpp-python's own (``llama-cpp-python[server]``) with SmolLM2, started on
127.0.0.1 by the tests. Truncation, dying, failing, slow and non-API servers are small
``http.server`` stand-ins, the truncating one a proxy in front of the real server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import error_line, sweep
from servers import FakeServer, LlamaServer, forward, free_port, vllm_shapes

from yarn_cli.serving.client import ServerClient

KEEP = 512  # the truncating proxy keeps the last 512 tokens, as Ollama keeps the end of a long prompt


@pytest.fixture(scope="module")
def server(smollm2: Path) -> Iterator[LlamaServer]:
    running = LlamaServer(smollm2, n_ctx=2048)
    yield running
    running.stop()


def trials(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["trials"]


def answers(path: Path) -> list[tuple[int, int, str]]:
    return sorted((t["length"], t["index"], t["output"]) for t in trials(path))


@pytest.mark.slow
def test_a_served_model_gives_the_local_answers(run_cli, server: LlamaServer, tmp_path: Path) -> None:
    served = run_cli("passkey", "--server", server.url, "--lengths", "1k", "--trials", "2", "--json", "served.json")
    assert served.returncode == 0, served.stderr
    local = run_cli("passkey", "--lengths", "1k", "--trials", "2", "--json", "local.json")
    assert local.returncode == 0, local.stderr
    assert answers(tmp_path / "served.json") == answers(tmp_path / "local.json")
    record = json.loads((tmp_path / "served.json").read_text())
    assert record["model"]["servers"][0]["url"] == server.url
    assert record["model"]["tokenizer"] == f"server {server.url}"  # sized by the server's own tokenizer
    assert all(t["server_prompt_tokens"] == t["prompt_tokens"] and not t["truncated"] for t in record["trials"])
    assert "127.0.0.1" in served.stdout and "passkey context" in served.stdout


@pytest.mark.slow
def test_parallel_requests_give_the_same_answers(run_cli, server: LlamaServer, tmp_path: Path, smollm2: Path) -> None:
    args = ("passkey", "--server", f"smol={server.url}", "--tokenizer", smollm2, "--lengths", "600", "--trials", "3")
    one = run_cli(*args, "--json", "one.json")
    four = run_cli(*args, "--parallel", "4", "--json", "four.json")
    assert one.returncode == 0 and four.returncode == 0, one.stderr + four.stderr
    assert answers(tmp_path / "one.json") == answers(tmp_path / "four.json")
    assert json.loads((tmp_path / "four.json").read_text())["model"]["tokenizer"]["path"] == str(smollm2)


@pytest.mark.slow
def test_a_server_that_refuses_a_long_prompt_names_its_context(run_cli, server: LlamaServer) -> None:
    result = run_cli("passkey", "--server", server.url, "--lengths", "3k", "--trials", "1")
    assert result.returncode == 1
    line = error_line(result)
    assert "maximum context length is 2048 tokens" in line and "start the server with a larger context" in line
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_silently_truncating_server_is_reported_not_scored(
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
        "passkey", "--server", f"ollama-like={proxy.url}", "--tokenizer", smollm2, "--lengths", "1k",
        "--trials", "2", "--json", "cut.json",
    )  # fmt: skip
    with proxy:
        result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "2 of 2 trials were truncated by the server (ollama-like)" in result.stderr
    assert "num_ctx" in result.stderr
    assert "truncated (2)" in result.stdout
    record = json.loads((tmp_path / "cut.json").read_text())
    assert all(t["truncated"] and t["server_prompt_tokens"] <= KEEP + 2 for t in record["trials"])
    assert record["summary"] == [
        {"variant": "ollama-like", "length": 1024, "accuracy": None, "trials": 0, "truncated": 2}
    ]
    assert record["passkey_context"] == {"ollama-like": None}

    # the same server with a larger context: the same command runs the truncated trials again
    with FakeServer(lambda r, p, b: forward(server.url, p, b), port=proxy.port):
        again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "Resuming" not in again.stderr and "truncated" not in again.stderr
    rerun = json.loads((tmp_path / "cut.json").read_text())
    assert [t["truncated"] for t in rerun["trials"]] == [False, False] and rerun["truncated_trials"] == 0


@pytest.mark.slow
def test_a_server_that_stops_mid_run_keeps_the_finished_trials_and_resumes(
    run_cli, server: LlamaServer, tmp_path: Path, smollm2: Path
) -> None:
    port = free_port()
    answered = []

    def two_then_gone(request: Any, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.endswith("/completions"):
            answered.append(path)
            if len(answered) == 2:  # the third request finds nothing listening
                threading_stop(proxy)
        return forward(server.url, path, body)

    args = (
        "passkey", "--server", f"http://127.0.0.1:{port}/v1", "--tokenizer", smollm2, "--lengths", "600",
        "--trials", "4", "--json", "run.json",
    )  # fmt: skip
    proxy = FakeServer(two_then_gone, port=port)
    first = run_cli(*args)
    assert first.returncode == 1
    assert f"cannot connect to http://127.0.0.1:{port}/v1" in error_line(first, status_lines=(" ", "The 2 finished"))
    assert "2 finished trials are in run.json; the same command resumes" in first.stderr
    assert len(trials(tmp_path / "run.json")) == 2
    with FakeServer(lambda r, p, b: forward(server.url, p, b), port=port) as restarted:
        second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert "Resuming run.json: 2 trials already done." in second.stderr
    assert len(trials(tmp_path / "run.json")) == 4 and restarted.requests == 2 + 1  # 2 trials and /v1/models


def threading_stop(fake: FakeServer) -> None:
    """Stop ``fake`` from inside one of its own handlers (shutdown waits for serve_forever)."""
    import threading

    threading.Thread(target=fake.stop, daemon=True).start()
    time.sleep(0.5)


@pytest.mark.parametrize(
    ("handler", "expected"),
    sweep(
        [
            (lambda r, p, b: (500, {"error": {"message": "out of memory"}}), "answered HTTP 500: out of memory"),
            (lambda r, p, b: (404, "<html>Not Found</html>"), "must be an OpenAI-compatible API"),
            (lambda r, p, b: (200, "<html>a web page</html>"), "did not answer JSON"),
            (lambda r, p, b: (401, {"error": "invalid api key"}), "set the API key in YARN_CLI_API_KEY"),
        ]
    ),
    ids=["500", "not-an-api-404", "not-json", "unauthorised"],
)
def test_a_failing_or_foreign_server_is_one_line(run_cli, handler: Any, expected: str) -> None:
    with FakeServer(handler) as fake:
        result = run_cli("passkey", "--server", fake.url, "--lengths", "600", "--trials", "1")
    assert result.returncode == 1
    assert expected in error_line(result) and "Traceback" not in result.stderr


@pytest.mark.slow
def test_nothing_listening_and_a_slow_server(run_cli, server: LlamaServer, smollm2: Path) -> None:
    port = free_port()
    start = time.monotonic()
    refused = run_cli("passkey", "--server", f"http://127.0.0.1:{port}", "--lengths", "600", "--trials", "1")
    assert refused.returncode == 1
    assert f"cannot connect to http://127.0.0.1:{port}/v1" in error_line(refused)
    assert time.monotonic() - start < 60  # retried a few times with backoff, then given up

    def slow(request: Any, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.endswith("/completions"):  # answered here, late: the real server is never asked after the test
            time.sleep(5)
            return 200, {"choices": [{"text": " 1", "finish_reason": "length"}], "usage": {"prompt_tokens": 600}}
        return forward(server.url, path, body)

    with FakeServer(slow) as fake:
        late = run_cli(
            "passkey", "--server", fake.url, "--tokenizer", smollm2, "--lengths", "600", "--trials", "1",
            "--timeout", "1",
        )  # fmt: skip
    assert late.returncode == 1
    assert "did not answer within 1 s" in error_line(late) and "--timeout" in error_line(late)


@pytest.mark.parametrize(
    ("args", "expected"),
    sweep(
        [
            (["--server", "ftp://host/v1", "--lengths", "1k"], "is not an http(s) URL"),
            (["--server", "http://a:1", "--server", "http://a:1", "--lengths", "1k"], "share the label"),
            (
                ["--server", "http://a:1", "--compare", "yarn:2", "--lengths", "1k"],
                "--compare applies to a model run here",
            ),
            (["--server", "http://127.0.0.1:9"], "give --lengths"),
        ]
    ),
)
def test_bad_server_arguments(run_cli, args: list[str], expected: str) -> None:
    result = run_cli("passkey", *args)
    assert result.returncode != 0
    assert expected in error_line(result)


@pytest.mark.slow
def test_a_server_without_a_tokenizer_is_sized_by_its_own_counts(run_cli, server: LlamaServer, tmp_path: Path) -> None:
    """Ollama and LM Studio have no tokenize endpoint: sizes come from usage.prompt_tokens."""

    def no_tokenizer(request: Any, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if "tokenize" in path:
            return 404, {"detail": "Not Found"}
        return forward(server.url, path, body)

    with FakeServer(no_tokenizer) as fake:
        result = run_cli("passkey", "--server", fake.url, "--lengths", "1k", "--trials", "2", "--json", "est.json")
    assert result.returncode == 0, result.stderr
    assert "prompt sizes are estimated from the server's own token counts" in result.stderr
    record = json.loads((tmp_path / "est.json").read_text())
    assert record["model"]["tokenizer"].startswith("estimated from")
    for trial in record["trials"]:
        assert abs(trial["server_prompt_tokens"] - 1024) <= 0.03 * 1024 and not trial["truncated"]


@pytest.mark.slow
@pytest.mark.parametrize("content", ["refused", "ignored"])
def test_vllm_tokenizer_endpoints_size_the_prompts(run_cli, server: LlamaServer, tmp_path: Path, content: str) -> None:
    """vLLM's request shape; "ignored": a server answering llama-server's shape with no tokens is not believed."""
    direct = run_cli("passkey", "--server", server.url, "--lengths", "1k", "--trials", "2", "--json", "direct.json")
    assert direct.returncode == 0, direct.stderr
    with FakeServer(vllm_shapes(server.url, content=content)) as fake:
        result = run_cli("passkey", "--server", fake.url, "--lengths", "1k", "--trials", "2", "--json", "vllm.json")
    assert result.returncode == 0, result.stderr
    assert "estimated" not in result.stderr  # sized by the server's own tokenizer, not by its counts
    assert json.loads((tmp_path / "vllm.json").read_text())["model"]["tokenizer"].startswith("server")
    assert answers(tmp_path / "vllm.json") == answers(tmp_path / "direct.json")
    assert all(t["server_prompt_tokens"] == t["prompt_tokens"] == 1024 for t in trials(tmp_path / "vllm.json"))


@pytest.mark.slow
def test_vllms_context_is_read_from_its_model_list(server: LlamaServer) -> None:
    """chat's first line shows it; llama-cpp-python's own list says nothing of the context."""
    with FakeServer(vllm_shapes(server.url, max_model_len=1536)) as fake, ServerClient(fake.url) as client:
        assert client.context_size() == 1536
    with ServerClient(server.url) as client:
        assert client.context_size() is None


@pytest.mark.slow
def test_a_tokenizer_endpoint_that_fails_ends_the_run(run_cli, server: LlamaServer) -> None:
    """A 400 means "another server's request shape"; a 500 is the server's failure, not a missing tokenizer."""
    with FakeServer(vllm_shapes(server.url, fail_with=500)) as fake:
        result = run_cli("passkey", "--server", fake.url, "--lengths", "1k", "--trials", "1")
    assert result.returncode == 1
    assert "/tokenize answered HTTP 500: engine dead" in error_line(result)


@pytest.mark.slow
def test_a_tokenizer_that_does_not_count_the_text_is_one_line(run_cli, server: LlamaServer) -> None:
    """A tokenize endpoint that answers the same token whatever the text would make the filler grow forever."""

    def one_token(request: Any, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path == "/tokenize":
            return 200, {"tokens": [1]}
        return forward(server.url, path, body)

    with FakeServer(one_token) as fake:
        result = run_cli("passkey", "--server", fake.url, "--lengths", "1k", "--trials", "1", timeout=120)
    assert result.returncode == 1
    assert "it is not tokenizing the text" in error_line(result) and "Traceback" not in result.stderr
