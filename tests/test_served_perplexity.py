"""``perplexity --server``: log-likelihoods from a real server's echo, checked against the local ones.

The server is llama-cpp-python's own, which gives prompt log-probabilities unless started with
``--logits_all false``. Its echo lines up only on models that start with a BOS token, so
the model here is SmolLM2 with ``tokenizer.ggml.add_bos_token`` set; plain SmolLM2 (no BOS) is
the server whose echo is shifted, which the run must refuse.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers import assert_drawn_png, edited_copy, error_line, sweep
from servers import FakeServer, LlamaServer, forward, vllm_shapes

from yarn_cli.gguf.values import boolean
from yarn_cli.llama.evaluation import negative_log_likelihoods, vocabulary
from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.model import open_model
from yarn_cli.serving.client import PromptScores, ServerClient
from yarn_cli.serving.served_backend import text_scores

TEXT = (Path(__file__).parent / "data" / "pride-and-prejudice-chapter-1.txt").read_text()


@pytest.fixture(scope="module")
def smol_bos(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 told to start every prompt with its BOS token (id 1), as most models do."""
    path = tmp_path_factory.mktemp("bos") / "smol-bos.gguf"
    return edited_copy(smollm2, {"tokenizer.ggml.add_bos_token": boolean(True)}, path)


@pytest.fixture(scope="module")
def server(smol_bos: Path) -> Iterator[LlamaServer]:
    running = LlamaServer(smol_bos, n_ctx=1024)
    yield running
    running.stop()


def local_nll(model: Path, tokens: list[int]) -> np.ndarray:
    llm, _ = load_model(open_model(model), LoadOptions(n_ctx=len(tokens), n_threads=2))
    try:
        return negative_log_likelihoods(llm, tokens)
    finally:
        llm.close()


@pytest.mark.slow
def test_the_servers_log_likelihoods_are_the_local_ones(server: LlamaServer, smol_bos: Path) -> None:
    with vocabulary(open_model(smol_bos)) as vocab:
        assert vocab.add_bos
        tokens = vocab.tokenize(TEXT, add_bos=False)[:300]
        window = vocab.detokenize(tokens)
    with ServerClient(server.url) as client:
        echo = client.prompt_logprobs(window)
    assert echo.prompt_tokens == len(tokens) + 1  # the text's tokens and the BOS
    assert len(echo.logprobs) == len(tokens) + 1  # this server echoes the text and the generated token
    entries = text_scores(echo, bos=True, expected=len(tokens))
    assert len(entries) == len(tokens) and entries[0] is None  # no score for the first text token here
    local = local_nll(smol_bos, [1, *tokens])  # nll[i]: token i+1 given the ones before
    served = -np.array(entries[1:], dtype=np.float64)
    np.testing.assert_allclose(served, local[1:], rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_perplexity_over_a_server_equals_the_local_figure_less_the_first_token(
    run_cli, server: LlamaServer, smol_bos: Path, tmp_path: Path
) -> None:
    (tmp_path / "book.txt").write_text(TEXT)
    args = ("perplexity", "--server", f"smol={server.url}", "--text", "book.txt", "--contexts", "128,256")
    result = run_cli(*args, "--tokenizer", smol_bos, "--chunks", "2", "--json", "run.json", "--plot", "run.png")
    assert result.returncode == 0, result.stderr
    assert "smol" in result.stdout and "counts one token fewer" in result.stderr
    assert_drawn_png(tmp_path / "run.png")
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["model"]["servers"][0] == {
        "label": "smol",
        "url": server.url,
        "model": record["model"]["servers"][0]["model"],
    }
    assert record["settings"]["bos"] is True and record["truncated"] == {}
    with vocabulary(open_model(smol_bos)) as vocab:
        stream = vocab.tokenize(TEXT, add_bos=False)
    nll = [local_nll(smol_bos, [1, *stream[k * 255 : (k + 1) * 255]]) for k in range(2)]
    for row in record["results"]:
        c = row["context"]
        expected = [x for chunk in nll for x in chunk[1 : c - 1]]  # each window: positions 1 .. c-2
        assert row["tokens"] == len(expected) == 2 * (c - 2)
        assert row["ppl"] == pytest.approx(math.exp(float(np.mean(expected))), rel=1e-3)
    by_server = run_cli(*args, "--chunks", "2", "--json", "server-tokens.json")  # cut by the server's tokenizer
    assert by_server.returncode == 0, by_server.stderr
    again = json.loads((tmp_path / "server-tokens.json").read_text())
    assert [r["ppl"] for r in again["results"]] == pytest.approx([r["ppl"] for r in record["results"]], rel=1e-6)
    with FakeServer(vllm_shapes(server.url)) as fake:  # the same server, its tokenizer asked as vLLM is
        vllm = run_cli("perplexity", "--server", fake.url, *args[3:], "--chunks", "2", "--json", "vllm.json")
    assert vllm.returncode == 0, vllm.stderr
    shaped = json.loads((tmp_path / "vllm.json").read_text())
    assert [r["ppl"] for r in shaped["results"]] == pytest.approx([r["ppl"] for r in record["results"]], rel=1e-6)


@pytest.mark.slow
def test_a_server_whose_echo_is_shifted_is_refused(run_cli, smollm2: Path, tmp_path: Path) -> None:
    """llama-cpp-python's server on a model without a BOS gives each token the next one's distribution."""
    (tmp_path / "book.txt").write_text(TEXT)
    shifted = LlamaServer(smollm2, n_ctx=1024)
    try:
        result = run_cli("perplexity", "--server", shifted.url, "--text", "book.txt", "--contexts", "128")
    finally:
        shifted.stop()
    assert result.returncode == 1
    assert "do not line up with its own generation" in error_line(result)


@pytest.mark.slow
def test_a_server_without_prompt_log_probabilities_is_one_line(run_cli, smol_bos: Path, tmp_path: Path) -> None:
    (tmp_path / "book.txt").write_text(TEXT)
    plain = LlamaServer(smol_bos, n_ctx=1024, extra=("--logits_all", "false"))
    try:
        result = run_cli("perplexity", "--server", plain.url, "--text", "book.txt", "--contexts", "128")
    finally:
        plain.stop()
    assert result.returncode == 1
    assert "gives no log-probabilities of a prompt" in (line := error_line(result)) and "--logits_all false" in line


@pytest.mark.slow
def test_a_server_that_cuts_the_window_is_reported_not_scored(
    run_cli, server: LlamaServer, smol_bos: Path, tmp_path: Path
) -> None:
    """As Ollama keeps the end of a prompt longer than num_ctx: the echo holds fewer tokens."""
    root = server.url[: -len("/v1")]

    def cut(request: Any, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.endswith("/completions") and body is not None and len(body["prompt"]) > 200:
            tokens = httpx.post(f"{root}/extras/tokenize", json={"input": body["prompt"]}).json()["tokens"]
            kept = httpx.post(f"{root}/extras/detokenize", json={"tokens": tokens[-100:]}).json()["text"]
            body = {**body, "prompt": kept}
        return forward(server.url, path, body)

    (tmp_path / "book.txt").write_text(TEXT)
    with FakeServer(cut) as proxy:
        result = run_cli(
            "perplexity", "--server", f"cut={proxy.url}", "--server", f"full={server.url}", "--tokenizer", smol_bos,
            "--text", "book.txt", "--contexts", "128,256", "--json", "run.json",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"│ cut\s+│\s+cut\s+│\s+cut\s+│", result.stdout), result.stdout  # its row: no figures
    assert "cut the prompt" in result.stderr and "not scored" in result.stderr
    record = json.loads((tmp_path / "run.json").read_text())
    assert set(record["truncated"]) == {"cut"}
    assert {r["variant"] for r in record["results"]} == {"full"}


@pytest.mark.slow
def test_a_window_whose_scores_the_server_cannot_send_is_reported_not_scored(
    run_cli, server: LlamaServer, smol_bos: Path, tmp_path: Path
) -> None:
    """vLLM answers 400 when a log-probability is -inf or NaN (JSON has no such numbers), as it did here for
    SmolLM2 unscaled at 12k tokens: that server's figures are missing, the others' are kept."""

    def non_finite(request: Any, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.endswith("/completions") and body is not None and body.get("echo") and len(body["prompt"]) > 200:
            return 400, {"error": {"message": "Out of range float values are not JSON compliant"}}
        return forward(server.url, path, body)

    (tmp_path / "book.txt").write_text(TEXT)
    with FakeServer(non_finite) as proxy:
        result = run_cli(
            "perplexity", "--server", f"broken={proxy.url}", "--server", f"full={server.url}", "--tokenizer",
            smol_bos, "--text", "book.txt", "--contexts", "128,256", "--json", "run.json",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"│ broken\s+│\s+inf/NaN\s+│\s+inf/NaN\s+│", result.stdout), result.stdout
    assert "broken not scored" in result.stderr and "-inf or NaN" in result.stderr
    record = json.loads((tmp_path / "run.json").read_text())
    assert set(record["unscored"]) == {"broken"} and record["truncated"] == {}
    assert {r["variant"] for r in record["results"]} == {"full"}


@pytest.mark.parametrize(
    ("args", "expected"),
    sweep(
        [
            (["--compare", "yarn:2"], "--compare applies to a model run here, not to --server"),
            (["--stride", "64", "-ngl", "0"], "--stride, -ngl applies to a model run here"),
            (["--timeout", "0"], "--timeout must be a positive number"),
            (["--contexts", "2"], "at least 3 tokens over a server"),
        ]
    ),
)
def test_bad_served_arguments(run_cli, tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "book.txt").write_text(TEXT)
    result = run_cli("perplexity", "--server", "http://127.0.0.1:9/v1", "--text", "book.txt", *args)
    assert result.returncode in (1, 2)
    assert expected in error_line(result)


@pytest.mark.parametrize(
    ("server", "logprobs", "prompt_tokens", "bos", "expected"),
    [
        ("llama-cpp-python, BOS model", [None, -2.0, -3.0], 3, True, [None, -2.0]),
        ("vLLM (its documented echo), BOS model", [None, -1.0, -2.0, -3.0], 3, True, [-1.0, -2.0]),
        ("llama-cpp-python, no BOS", [None, -2.0], 2, False, [None, -2.0]),
        ("a server that counts nothing", [None, -2.0, -3.0], None, True, [None, -2.0]),
    ],
)
def test_the_echo_is_read_per_server_convention(
    server: str, logprobs: list[float | None], prompt_tokens: int | None, bos: bool, expected: list[float | None]
) -> None:
    """Two text tokens sent: an echoed BOS and the generated token are not the text's."""
    echo = PromptScores(
        tokens=["?"] * len(logprobs),
        logprobs=logprobs,
        top=[None] * len(logprobs),
        prompt_tokens=prompt_tokens,
        completion_tokens=1,
    )
    assert text_scores(echo, bos=bos, expected=2) == expected
