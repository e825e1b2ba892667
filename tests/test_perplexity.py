"""Perplexity: checked against an independent log-softmax over llama.cpp's logits, real models only."""

from __future__ import annotations

import json
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from ggufs import write_tiny_llama
from helpers import assert_drawn_png, error_line, sweep
from hypothesis import given, settings
from hypothesis import strategies as st

from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.errors import InputError
from yarn_cli.evals.perplexity import PerplexitySettings, Text, plan_passes
from yarn_cli.evals.perplexity_run import run_perplexity
from yarn_cli.llama.llama_backend import LlamaBackend
from yarn_cli.llama.loader import LoadOptions
from yarn_cli.llama.scoring import LogitScorer
from yarn_cli.model import Model, open_model
from yarn_cli.rope.scaling import Method
from yarn_cli.rope.variants import parse_variants

TEXT = (Path(__file__).parent / "data" / "pride-and-prejudice-chapter-1.txt").read_text()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return open_model(write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf"))


def _run(path: Path, contexts: list[int], compare: str = "as-is", **kwargs) -> dict[tuple[str, int], float]:
    model = open_model(path)
    with LlamaBackend(model, parse_variants(compare, model.rope), LoadOptions(n_threads=2)) as backend:
        run = run_perplexity(backend, Text(path, TEXT), PerplexitySettings(contexts=contexts, **kwargs))
    return {(r.variant, r.context): r.ppl for r in run.results}


def _reference_nll(path: Path, tokens: list[int], **load) -> np.ndarray:
    """-log p(token[i+1] | ...) from llama-cpp-python's high-level logits, log-softmax in numpy."""
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(tokens) + 8, logits_all=True, verbose=False, **load)
    try:
        llm.eval(tokens)
        logits = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    finally:
        llm.close()
    top = logits.max(axis=1, keepdims=True)
    log_probs = logits - (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))
    return -log_probs[np.arange(len(tokens) - 1), tokens[1:]]


def _tokens(path: Path) -> list[int]:
    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return vocab.tokenize(TEXT.encode(), add_bos=True, special=False)  # BOS only if the model wants it
    finally:
        vocab.close()


# --- the figures ------------------------------------------------------------------------------


@pytest.mark.slow
def test_matches_an_independent_log_softmax_on_smollm2(smollm2: Path) -> None:
    contexts = [100, 300]
    ours = _run(smollm2, contexts)
    nll = _reference_nll(smollm2, _tokens(smollm2)[:300])
    for c in contexts:
        expected = float(np.exp(nll[: c - 1].mean()))
        assert ours[("as-is", c)] == pytest.approx(expected, rel=1e-3)
    assert 5 < ours[("as-is", 300)] < 60  # English prose, a small instruct model


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_block_scoring_equals_whole_batch_log_softmax(workers: int) -> None:
    """The cache-sized blocks on threads give the same numbers as one whole-batch numpy log-softmax."""
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((61, 49_152)) * 4 + 2).astype(np.float32)  # rows: not a multiple of a block
    targets = rng.integers(0, 49_152, len(logits))
    top = logits.max(axis=1)
    whole = top + np.log(np.exp(logits - top[:, None]).sum(axis=1, dtype=np.float64))
    whole -= logits[np.arange(len(logits)), targets]
    wide = logits.astype(np.float64)
    exact = np.log(np.exp(wide).sum(axis=1)) - wide[np.arange(len(wide)), targets]
    first, again = np.full(len(logits), np.nan), np.full(len(logits), np.nan)
    with LogitScorer(49_152, workers=workers) as scorer:
        scorer.score(logits, targets, first)
        scorer.score(logits, targets, again)  # the reused buffers carry nothing over from the first batch
    np.testing.assert_array_equal(first, whole)
    np.testing.assert_array_equal(again, whole)
    out = first
    np.testing.assert_allclose(out, exact, rtol=1e-6)


def test_bos_models_score_the_first_text_token_from_bos(tiny_model: Path) -> None:
    tokens = _tokens(tiny_model)
    assert tokens[0] == 1  # the tiny SentencePiece model asks for a BOS
    ours = _run(tiny_model, [64, 200])
    nll = _reference_nll(tiny_model, tokens[:200])
    for c in (64, 200):
        assert ours[("as-is", c)] == pytest.approx(float(np.exp(nll[: c - 1].mean())), rel=1e-3)


def test_one_pass_nesting_equals_a_pass_per_context(tiny_model: Path) -> None:
    # Native context 256: dynamic-yarn runs S=1 up to 256, then S=1.5 and S=2.
    contexts = [64, 256, 384, 512]
    compare = "none,yarn:2,ntk:2,dynamic-yarn"
    nested = _run(tiny_model, contexts, compare, chunks=2)
    separate = _run(tiny_model, contexts, compare, chunks=2, nested=False)
    assert nested.keys() == separate.keys()
    for key, value in nested.items():
        assert value == pytest.approx(separate[key], rel=1e-5), key
    assert nested[("dynamic-yarn", 256)] == pytest.approx(nested[("none", 256)], rel=1e-9)
    assert nested[("dynamic-yarn", 512)] == pytest.approx(nested[("yarn:2", 512)], rel=1e-9)
    assert nested[("yarn:2", 512)] != pytest.approx(nested[("none", 512)], rel=1e-4)


@pytest.mark.slow
def test_as_is_equals_none_on_an_unscaled_file(smollm2: Path) -> None:
    figures = _run(smollm2, [128, 256], "as-is,none,yarn:2")
    for c in (128, 256):
        assert figures[("as-is", c)] == figures[("none", c)]
        assert figures[("yarn:2", c)] != pytest.approx(figures[("none", c)], rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "variant"), [(Method.YARN, "yarn:2"), (Method.LINEAR, "linear:2")])
def test_a_converted_file_as_is_equals_the_runtime_variant(
    smollm2: Path, tmp_path: Path, method: Method, variant: str
) -> None:
    converted = tmp_path / "converted.gguf"
    convert_file(smollm2, ConvertRequest(method=method, factor=2.0), output=converted)
    baked = _run(converted, [128, 256])
    runtime = _run(smollm2, [128, 256], variant)
    for c in (128, 256):
        assert baked[("as-is", c)] == pytest.approx(runtime[(variant, c)], rel=1e-9)


@pytest.mark.slow
def test_sliding_windows_match_an_independent_computation(smollm2: Path) -> None:
    context, stride, span = 128, 48, 300
    ours = _run(smollm2, [context, 300], stride=stride)  # K=1 chunk of the longest context: 300 tokens
    tokens = _tokens(smollm2)[:span]
    total, count, scored_to, begin = 0.0, 0, 1, 0  # without BOS, token 0 cannot be predicted
    while True:
        end = min(begin + context, span)
        nll = _reference_nll(smollm2, tokens[begin:end])
        for i in range(max(scored_to, begin + 1), end):
            total += nll[i - begin - 1]
            count += 1
        scored_to = end
        if end >= span:
            break
        begin += stride
    assert count == span - 1
    assert ours[("as-is", context)] == pytest.approx(float(np.exp(total / count)), rel=1e-3)


# --- planning ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    contexts=st.lists(st.integers(2, 300), min_size=1, max_size=4, unique=True),
    stride_fraction=st.floats(0.01, 1.0),
    chunks=st.integers(1, 3),
    bos=st.booleans(),
)
def test_sliding_windows_score_every_token_exactly_once(
    tiny: Model, contexts: list[int], stride_fraction: float, chunks: int, bos: bool
) -> None:
    stride = max(1, min(int(min(contexts) * stride_fraction), min(contexts) - 1))
    s = PerplexitySettings(contexts=contexts, chunks=chunks, stride=stride)
    span = chunks * (max(contexts) - int(bos))
    for c in contexts:
        scored: list[int] = []
        for p in plan_passes(s, LlamaBackend(tiny, parse_variants("none", tiny.rope)), bos):
            assert p.length <= max(contexts)
            for t in p.targets:
                if t.context == c:
                    assert p.length <= c
                    # nll[j - 1] predicts window token j, which is stream token offset + j - bos
                    scored += [p.offset + j - int(bos) for j in range(t.start + 1, t.stop + 1)]
        assert sorted(scored) == list(range(0 if bos else 1, span))


def test_nested_plan_is_one_pass_per_chunk_and_scaling(tiny_model: Path) -> None:
    rope = open_model(tiny_model).rope
    s = PerplexitySettings(contexts=[128, 256, 384, 512], chunks=3)
    passes = plan_passes(
        s, LlamaBackend(open_model(tiny_model), parse_variants("none,yarn:2,dynamic-yarn", rope)), True
    )
    # none and yarn:2: one 512-token pass per chunk; dynamic-yarn: 256 (S=1), 384 (S=1.5), 512 (S=2).
    assert [p.length for p in passes] == [512] * 3 + [512] * 3 + [256] * 3 + [384] * 3 + [512] * 3
    assert [p.offset for p in passes[:3]] == [0, 511, 1022]


def test_settings_are_checked() -> None:
    for bad in (
        PerplexitySettings(contexts=[1, 64]),
        PerplexitySettings(contexts=[64], chunks=0),
        PerplexitySettings(contexts=[64, 128], stride=64),
        PerplexitySettings(contexts=[64], stride=0),
    ):
        with pytest.raises(InputError):
            bad.check()


# --- the command ------------------------------------------------------------------------------


def test_cli_table_json_and_csv(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    text = tmp_path / "book.txt"
    text.write_text(TEXT)
    result = run_cli(
        "perplexity", tiny_model, "--text", text, "--contexts", "128,384", "--compare", "none,yarn:2",
        "--chunks", "2", "--json", "run.json", "--csv", "run.csv", "--plot", "run.png",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Fatal Python error" not in result.stderr
    assert_drawn_png(tmp_path / "run.png")
    assert "none" in result.stdout and "yarn:2" in result.stdout and "384*" in result.stdout
    assert "100%" in result.stderr  # the plain progress lines of a non-terminal stderr
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["schema"] == 1
    assert record["model"]["architecture"] == "llama" and record["model"]["context_length"] == 256
    assert record["settings"]["protocol"] == "nested" and record["settings"]["chunks"] == 2
    assert record["settings"]["bos"] is True
    assert record["evaluated_tokens"] == 2 * 2 * 384
    assert record["decode_seconds"] > 0 and record["scoring_seconds"] > 0
    assert record["decode_seconds"] + record["scoring_seconds"] <= record["seconds"]
    assert {(r["variant"], r["context"]) for r in record["results"]} == {
        (v, c) for v in ("none", "yarn:2") for c in (128, 384)
    }
    for r in record["results"]:
        assert r["tokens"] == 2 * (r["context"] - 1)
        assert r["ppl"] == pytest.approx(np.exp(r["nll"]))
    rows = (tmp_path / "run.csv").read_text().splitlines()
    assert rows[0] == "variant,context,ppl,tokens,nll" and len(rows) == 5


def test_labels_say_what_they_count_and_a_footnote_only_with_a_star(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "book.txt").write_text(TEXT)
    args = ("perplexity", tiny_model, "--text", "book.txt", "--contexts")
    within = run_cli(*args, "128,256", "--compare", "none,yarn:2")
    assert within.returncode == 0, within.stderr
    assert "beyond the native context" not in within.stdout and "*" not in within.stdout
    assert "512 tokens  yarn:2, pass 2/2 (256 tokens)" in within.stderr  # the count is the run's, the label a pass
    beyond = run_cli(*args, "384", "--compare", "none")
    assert beyond.returncode == 0, beyond.stderr
    assert "384*" in beyond.stdout and "* beyond the native context (256)" in " ".join(beyond.stdout.split())


@pytest.mark.parametrize(
    ("args", "expected"),
    sweep(
        [
            (["--contexts", "64", "--text", "empty.txt"], "empty"),
            (["--contexts", "4k", "--text", "short.txt"], "need 4,095"),
            (["--contexts", "4k", "--chunks", "0", "--text", "short.txt"], "--chunks"),
            (["--contexts", "abc", "--text", "short.txt"], "cannot read 'abc'"),
            (["--contexts", "64", "--compare", "yarn:0.5", "--text", "short.txt"], "cannot read the variant"),
            (["--contexts", "64", "--stride", "64", "--text", "short.txt"], "--stride"),
            (["--contexts", "64", "--text", "missing.txt"], "no such text file"),
            (["--contexts", "64", "--text", "binary.txt"], "not UTF-8"),
            (["--contexts", "64", "--text", "."], "is a directory"),
        ]
    ),
)
def test_bad_input_is_one_clear_line(run_cli, tiny_model: Path, tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "short.txt").write_text("It is a truth universally acknowledged.")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00text")
    result = run_cli("perplexity", tiny_model, *args)
    assert result.returncode == 1
    assert expected in error_line(result)


def test_text_is_required(run_cli, tiny_model: Path) -> None:
    result = run_cli("perplexity", tiny_model, "--contexts", "64")
    assert result.returncode == 2
    assert "--text" in error_line(result)
