"""``perplexity --reference``: KL divergence and top-1 agreement, checked against numpy over llama.cpp's logits."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from helpers import error_line

from yarn_cli.evals.perplexity import PerplexitySettings, Text
from yarn_cli.evals.perplexity_run import run_perplexity
from yarn_cli.llama.llama_backend import LlamaBackend
from yarn_cli.llama.loader import LoadOptions
from yarn_cli.llama.scoring import LogitScorer
from yarn_cli.model import open_model
from yarn_cli.rope.variants import parse_variants

TEXT = (Path(__file__).parent / "data" / "pride-and-prejudice-chapter-1.txt").read_text()


def _log_probs(path: Path, tokens: list[int], **load: object) -> np.ndarray:
    """llama-cpp-python's high-level logits for every position, log-softmax in float64 numpy."""
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(tokens) + 8, logits_all=True, verbose=False, **load)
    try:
        llm.eval(tokens)
        logits = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    finally:
        llm.close()
    top = logits.max(axis=1, keepdims=True)
    return logits - (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))


def _numpy_figures(path: Path, reference: str, variant: str, context: int) -> dict[str, float]:
    model = open_model(path)
    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        tokens = vocab.tokenize(TEXT.encode(), add_bos=True, special=False)[:context]
    finally:
        vocab.close()
    ref_variant, var_variant = parse_variants(f"{reference},{variant}", model.rope)
    ref = _log_probs(path, tokens, **ref_variant.runtime(context, model.rope).as_kwargs())[:-1]
    var = _log_probs(path, tokens, **var_variant.runtime(context, model.rope).as_kwargs())[:-1]
    kl = (np.exp(ref) * (ref - var)).sum(axis=1)
    return {
        "kl_divergence": float(kl.mean()),
        "kl_divergence_p99": float(np.percentile(kl, 99)),
        "top1_agreement": float((ref.argmax(axis=1) == var.argmax(axis=1)).mean()),
        "nll": float(-var[np.arange(len(var)), tokens[1:]].mean()),
    }


def _ours(path: Path, reference: str, compare: str, contexts: list[int]) -> dict[tuple[str, int], dict[str, object]]:
    model = open_model(path)
    with LlamaBackend(model, parse_variants(compare, model.rope), LoadOptions(n_threads=2)) as backend:
        run = run_perplexity(backend, Text(path, TEXT), PerplexitySettings(contexts=contexts, reference=reference))
    return {(r.variant, r.context): r.to_dict(compared=True) for r in run.results}


@pytest.mark.parametrize("model_fixture", ["tiny_model", pytest.param("smollm2", marks=pytest.mark.slow)])
def test_kl_and_top1_agreement_equal_numpy_over_llama_cpp_logits(model_fixture: str, request) -> None:
    path: Path = request.getfixturevalue(model_fixture)
    contexts = [64, 200]
    ours = _ours(path, "none", "none,yarn:2", contexts)
    for c in contexts:
        expected = _numpy_figures(path, "none", "yarn:2", c)
        got = ours[("yarn:2", c)]
        assert got["kl_divergence"] == pytest.approx(expected["kl_divergence"], rel=1e-3, abs=1e-6)
        assert got["kl_divergence_p99"] == pytest.approx(expected["kl_divergence_p99"], rel=1e-3, abs=1e-6)
        assert got["top1_agreement"] == pytest.approx(expected["top1_agreement"], abs=1e-9)
        assert got["nll"] == pytest.approx(expected["nll"], rel=1e-4)  # the variant's own figure, unchanged
        assert ours[("none", c)]["kl_divergence"] is None  # the reference is not compared with itself
    assert ours[("yarn:2", 200)]["kl_divergence"] > 0  # the scaling changes the distributions


@pytest.mark.parametrize("workers", [1, 3])
def test_block_comparison_equals_a_float64_computation(workers: int) -> None:
    rng = np.random.default_rng(11)
    ref = (rng.standard_normal((37, 4096)) * 3).astype(np.float32)
    var = (ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.3).astype(np.float32)
    var[5] = ref[5]  # identical rows: KL 0, the same top token
    targets = rng.integers(0, 4096, len(ref))
    out = (np.empty(37), np.empty(37), np.empty(37), np.empty(37, dtype=bool))
    alone = np.empty(37)
    with LogitScorer(4096, workers=workers) as scorer:
        scorer.compare(ref, var, targets, out)
        scorer.score(var, targets, alone)
    r64, v64 = ref.astype(np.float64), var.astype(np.float64)
    lr = r64 - np.log(np.exp(r64).sum(axis=1, keepdims=True))
    lv = v64 - np.log(np.exp(v64).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(out[0], -lr[np.arange(37), targets], rtol=1e-6)
    np.testing.assert_array_equal(out[1], alone)  # the variant's nll is what scoring it alone gives
    np.testing.assert_allclose(out[2], (np.exp(lr) * (lr - lv)).sum(axis=1), atol=2e-6)
    assert out[2][5] == pytest.approx(0, abs=1e-6) and out[3][5]
    np.testing.assert_array_equal(out[3], ref.argmax(axis=1) == var.argmax(axis=1))
    assert (out[2] >= 0).all()


def test_the_command_adds_the_reference_and_writes_its_figures(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    result = run_cli("perplexity", tiny_model, "--text", text, "--contexts", "64,128", "--compare", "yarn:2",
                     "--reference", "none", "--json", "r.json", "--csv", "r.csv")  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["settings"]["variants"] == ["none", "yarn:2"]  # the reference first, added to --compare
    assert record["settings"]["reference"] == "none"
    rows = {(r["variant"], r["context"]): r for r in record["results"]}
    assert rows[("none", 64)]["kl_divergence"] is None and rows[("none", 64)]["top1_agreement"] is None
    for c in (64, 128):
        row = rows[("yarn:2", c)]
        assert row["kl_divergence"] >= 0 and row["kl_divergence_p99"] >= row["kl_divergence"] * 0
        assert 0 <= row["top1_agreement"] <= 1
    with (tmp_path / "r.csv").open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["variant", "context", "ppl", "tokens", "nll", "kl_divergence", "kl_divergence_p99",
                              "top1_agreement"]  # fmt: skip
    assert float(table[-1]["kl_divergence"]) == pytest.approx(rows[("yarn:2", 128)]["kl_divergence"])
    assert "Against none, token by token" in result.stdout and "top-1 agreement" in result.stdout


def test_without_a_reference_the_record_is_as_before(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    result = run_cli("perplexity", tiny_model, "--text", text, "--contexts", "64", "--compare", "none,yarn:2",
                     "--json", "r.json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "r.json").read_text())
    assert "reference" not in record["settings"]
    assert all(set(r) == {"variant", "context", "ppl", "tokens", "nll"} for r in record["results"])
    assert "Against" not in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--reference", "yarn:0.5"], "cannot read the variant 'yarn:0.5'"),
        (["--reference", "none", "--server", "http://127.0.0.1:9/v1"], "--reference"),
    ],
)
def test_bad_references_are_one_line(run_cli, tiny_model: Path, tmp_path: Path, args: list[str], expected: str) -> None:
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    model = [] if "--server" in args else [tiny_model]
    result = run_cli("perplexity", *model, "--text", text, "--contexts", "64", *args)
    assert result.returncode != 0
    assert expected in error_line(result)


def test_the_references_own_figures_are_those_of_a_run_without_it(tiny_model: Path) -> None:
    """The reference's perplexity comes from the windows it is compared on: the figure a plain run gives."""
    compared = _ours(tiny_model, "none", "none,yarn:2", [64, 200])
    model = open_model(tiny_model)
    with LlamaBackend(model, parse_variants("none", model.rope), LoadOptions(n_threads=2)) as backend:
        plain = run_perplexity(backend, Text(tiny_model, TEXT), PerplexitySettings(contexts=[64, 200]))
    for r in plain.results:
        assert compared[("none", r.context)]["ppl"] == pytest.approx(r.ppl, rel=1e-9)
        assert compared[("none", r.context)]["tokens"] == r.tokens


def test_a_reference_whose_scaling_changes_across_the_contexts_is_refused(run_cli, tiny_model: Path,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    result = run_cli("perplexity", tiny_model, "--text", text, "--contexts", "128,512", "--compare", "yarn:2",
                     "--reference", "dynamic-yarn")  # fmt: skip
    assert result.returncode != 0
    assert "changes its scaling with the length" in error_line(result)
