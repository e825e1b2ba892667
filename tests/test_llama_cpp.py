"""Converted files in the real llama.cpp: what it loads, and logits against run-time scaling.

A file converted by yarn-cli must behave exactly like the unconverted file loaded
with the equivalent llama.cpp parameters: the logits are compared bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from gguf import GGUFValueType
from ggufs import CONTEXT, FREQ_BASE, HEAD_DIM, write_tiny_llama
from logits import LINEAR, TINY_TOKENS, YARN, load, logits, trained

from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.rope.scaling import Method


@pytest.mark.parametrize("factor", [2.0, 4.0, 16.0])
def test_yarn_file_loads_with_new_context_and_scale(tiny_model: Path, factor: float) -> None:
    out = convert_file(tiny_model, ConvertRequest(factor=factor)).outputs[0].path
    n_ctx_train, freq_scale = trained(out)
    assert n_ctx_train == factor * CONTEXT
    assert freq_scale == pytest.approx(1.0 / factor, rel=1e-7)


@pytest.mark.parametrize("factor", [2.0, 4.0])
def test_yarn_logits_equal_runtime_yarn(tiny_model: Path, factor: float) -> None:
    result = convert_file(tiny_model, ConvertRequest(factor=factor))
    flags = {"rope_scaling_type": YARN, "rope_freq_scale": 1.0 / factor, "yarn_orig_ctx": CONTEXT}
    runtime = result.plan.runtime  # what the evaluations load: the converted keys as overrides
    assert runtime is not None
    assert dict(runtime.kv_overrides) == {
        "llama.context_length": factor * CONTEXT,
        "llama.rope.scaling.type": "yarn",
        "llama.rope.scaling.factor": factor,
        "llama.rope.scaling.original_context_length": CONTEXT,
    }
    assert runtime.flags().startswith("--override-kv llama.context_length=int:")
    converted = logits(result.outputs[0].path, TINY_TOKENS, 256)
    plain = logits(tiny_model, TINY_TOKENS, 256)
    assert np.array_equal(converted, logits(tiny_model, TINY_TOKENS, 256, **runtime.as_kwargs()))
    assert np.array_equal(converted, logits(tiny_model, TINY_TOKENS, 256, **flags))  # llama-cli's flags, too
    assert np.abs(converted - plain).max() > 1e-3


def test_linear_logits_equal_runtime_linear(tiny_model: Path) -> None:
    result = convert_file(tiny_model, ConvertRequest(method=Method.LINEAR, factor=2.0))
    assert trained(result.outputs[0].path) == (2 * CONTEXT, 0.5)
    converted = logits(result.outputs[0].path, TINY_TOKENS, 256)
    at_runtime = logits(tiny_model, TINY_TOKENS, 256, rope_scaling_type=LINEAR, rope_freq_scale=0.5)
    assert np.array_equal(converted, at_runtime)
    assert np.abs(converted - logits(tiny_model, TINY_TOKENS, 256)).max() > 1e-3


def test_ntk_logits_equal_runtime_base(tiny_model: Path) -> None:
    result = convert_file(tiny_model, ConvertRequest(method=Method.NTK, factor=2.0))
    new_base = result.plan.freq_base
    assert new_base == pytest.approx(FREQ_BASE * 2.0 ** (HEAD_DIM / (HEAD_DIM - 2)), rel=1e-6)
    n_ctx_train, freq_scale = trained(result.outputs[0].path)
    assert (n_ctx_train, freq_scale) == (2 * CONTEXT, 1.0)
    converted = logits(result.outputs[0].path, TINY_TOKENS, 256)
    at_runtime = logits(tiny_model, TINY_TOKENS, 256, rope_freq_base=new_base)
    assert np.array_equal(converted, at_runtime)
    assert np.abs(converted - logits(tiny_model, TINY_TOKENS, 256)).max() > 1e-3


def test_undone_file_behaves_like_the_original(tiny_model: Path) -> None:
    scaled = convert_file(tiny_model, ConvertRequest(factor=4.0)).outputs[0].path
    restored = convert_file(scaled, ConvertRequest(method=Method.NONE)).outputs[0].path
    assert trained(restored) == (CONTEXT, 1.0)
    assert np.array_equal(logits(restored, TINY_TOKENS, 256), logits(tiny_model, TINY_TOKENS, 256))


@pytest.mark.slow
def test_smollm2_yarn_file_equals_runtime_yarn(smollm2: Path, tmp_path: Path) -> None:
    """The real model: SmolLM2-135M (context 8192) converted to YaRN x4 (32768)."""
    out = convert_file(smollm2, ConvertRequest(factor=4.0), output=tmp_path / "smol.yarn-4x.gguf").outputs[0].path
    assert trained(out) == (32768, 0.25)
    llm = load(smollm2, 64)
    tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 12)[:128]
    llm.close()
    converted = logits(out, tokens, 256)
    at_runtime = logits(smollm2, tokens, 256, rope_scaling_type=YARN, rope_freq_scale=0.25, yarn_orig_ctx=8192)
    assert np.array_equal(converted, at_runtime)
    assert np.abs(converted - logits(smollm2, tokens, 256)).max() > 1e-2


def last_logits(llm: llama_cpp.Llama, tokens: list[int]) -> np.ndarray:
    llm.eval(tokens)
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()


def test_a_files_own_yarn_betas_are_kept_at_run_time(tmp_path: Path) -> None:
    """mistral3 reads YaRN's betas from its file; yarn-cli loads it as llama.cpp's own tools do (-1: the file's)."""
    from yarn_cli.llama.loader import LoadOptions, load_model
    from yarn_cli.model import open_model

    trained = {
        "mistral3.rope.scaling.type": ("yarn", GGUFValueType.STRING),
        "mistral3.rope.scaling.factor": (4.0, GGUFValueType.FLOAT32),
        "mistral3.rope.scaling.original_context_length": (64, GGUFValueType.UINT32),
        "mistral3.rope.scaling.yarn_beta_fast": (0.5, GGUFValueType.FLOAT32),  # a ramp unlike 32 and 1 gives
        "mistral3.rope.scaling.yarn_beta_slow": (0.01, GGUFValueType.FLOAT32),
    }
    path = write_tiny_llama(tmp_path / "mistral3.gguf", arch="mistral3", extra=trained)
    results = {}
    llm, _ = load_model(open_model(path), LoadOptions(n_ctx=CONTEXT, n_threads=2))
    for name, params in (
        ("yarn-cli", None),
        ("the file's own", {"yarn_beta_fast": -1.0, "yarn_beta_slow": -1.0, "yarn_attn_factor": -1.0}),
        ("llama-cpp-python's defaults", {}),  # betas 32 and 1 over the file's
    ):
        if params is not None:
            llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=CONTEXT, n_threads=2, n_threads_batch=2, verbose=False, **params
            )
        try:
            results[name] = last_logits(llm, TINY_TOKENS)
        finally:
            llm.close()
    assert np.array_equal(results["yarn-cli"], results["the file's own"])
    assert np.abs(results["yarn-cli"] - results["llama-cpp-python's defaults"]).max() > 1e-4
