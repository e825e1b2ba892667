"""The paper's NTK-by-parts and Dynamic NTK as variants, checked in the real llama.cpp against parameters set by hand.

NTK-by-parts is YaRN's blend without its temperature. llama.cpp computes YaRN's temperature
itself (``llama_context``: a run-time ``yarn_attn_factor`` is overwritten whenever ext_factor
is not 0) and multiplies in the file's ``rope.scaling.attn_factor``; so NTK-by-parts is YaRN x S
with that key at 1 / (0.1 ln S + 1). Dynamic NTK is NTK-aware with s = max(1, length / native).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFValueType
from ggufs import CONTEXT, FREQ_BASE, HEAD_DIM, write_tiny_llama
from helpers import TEXT, error_line
from logits import TINY_TOKENS, YARN, logits

from yarn_cli.errors import InputError, UnsupportedModelError
from yarn_cli.evals.perplexity import PerplexitySettings, Text
from yarn_cli.evals.perplexity_run import run_perplexity
from yarn_cli.llama.llama_backend import LlamaBackend
from yarn_cli.llama.loader import LoadOptions
from yarn_cli.model import open_model
from yarn_cli.rope.variants import parse_variant, parse_variants

ATTN = "llama.rope.scaling.attn_factor"
# YaRN's ramp runs from the pairs turning beta_fast times within L to those turning beta_slow times: with
# both far below one turn, every pair of the tiny model's 16 dimensions keeps its frequency (none is blended)
KEEP_EVERY_PAIR = {"yarn_beta_fast": 1e-6, "yarn_beta_slow": 1e-7}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("methods") / "tiny.gguf")


def variant_logits(
    path: Path, variant: str, length: int, tokens: list[int] = TINY_TOKENS, **params: object
) -> np.ndarray:
    scaling = parse_variant(variant).runtime(length, open_model(path).rope)
    assert scaling is not None
    return logits(path, tokens, CONTEXT, **scaling.as_kwargs(), **params)


def by_hand_yarn(path: Path, factor: float, **params: object) -> np.ndarray:
    """YaRN x ``factor`` over the tiny model's 256 tokens as llama.cpp's own context parameters."""
    return logits(
        path, TINY_TOKENS, CONTEXT, rope_scaling_type=YARN, rope_freq_scale=1 / factor, yarn_orig_ctx=CONTEXT, **params
    )


# --- NTK-by-parts --------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2.0, 3.5])
def test_ntk_by_parts_is_yarn_with_the_attn_factor_key_set_by_hand(tiny: Path, factor: float) -> None:
    cancel = 1 / (0.1 * math.log(factor) + 1)
    ntk_by_parts = variant_logits(tiny, f"ntk-by-parts:{factor:g}", round(factor * CONTEXT))
    assert np.array_equal(ntk_by_parts, by_hand_yarn(tiny, factor, kv_overrides={ATTN: cancel}))
    yarn = variant_logits(tiny, f"yarn:{factor:g}", round(factor * CONTEXT))
    assert np.array_equal(yarn, by_hand_yarn(tiny, factor))
    assert np.abs(ntk_by_parts - yarn).max() > 1e-2  # the temperature is gone


def test_a_run_time_yarn_attn_factor_changes_nothing_the_key_does(tiny: Path) -> None:
    """llama.cpp overwrites the yarn_attn_factor parameter under YaRN; only rope.scaling.attn_factor reaches q and k."""
    yarn = by_hand_yarn(tiny, 2.0)
    for attn in (1 / (0.1 * math.log(2) + 1), 0.5, 3.0):
        assert np.array_equal(by_hand_yarn(tiny, 2.0, yarn_attn_factor=attn), yarn)
    assert np.abs(by_hand_yarn(tiny, 2.0, kv_overrides={ATTN: 0.5}) - yarn).max() > 1e-2
    ntk_by_parts = variant_logits(tiny, "ntk-by-parts:2", 2 * CONTEXT)
    assert np.array_equal(variant_logits(tiny, "ntk-by-parts:2", 2 * CONTEXT, yarn_attn_factor=3.0), ntk_by_parts)


def test_ntk_by_parts_leaves_attention_unscaled(tiny: Path) -> None:
    """With every pair kept (no blend), NTK-by-parts is plain RoPE: q and k keep their magnitude; YaRN's do not.

    Independent of how the variant is written: llama.cpp forms the magnitude as attn_factor x the file's key x
    (0.1 ln S + 1), in float32, so it is 1 to a few ulps, not bit for bit.
    """
    plain = variant_logits(tiny, "none", CONTEXT)
    kept = variant_logits(tiny, "ntk-by-parts:4", 4 * CONTEXT, **KEEP_EVERY_PAIR)
    np.testing.assert_allclose(kept, plain, rtol=0, atol=1e-4)
    with_temperature = variant_logits(tiny, "yarn:4", 4 * CONTEXT, **KEEP_EVERY_PAIR)
    assert np.abs(with_temperature - plain).max() > 1e-2


@pytest.mark.slow
def test_ntk_by_parts_on_smollm2_equals_yarn_with_the_key(smollm2: Path) -> None:
    tokens = list(range(1000, 1128))
    rope = open_model(smollm2).rope
    scaling = parse_variant("ntk-by-parts:2").runtime(16384, rope)
    assert scaling is not None
    ours = logits(smollm2, tokens, 256, **scaling.as_kwargs())
    by_hand = logits(
        smollm2,
        tokens,
        256,
        rope_scaling_type=YARN,
        rope_freq_scale=0.5,
        yarn_orig_ctx=8192,
        kv_overrides={"llama.rope.scaling.attn_factor": 1 / (0.1 * math.log(2) + 1)},
    )
    assert np.array_equal(ours, by_hand)
    assert np.abs(ours - logits(smollm2, tokens, 256, rope_scaling_type=YARN, rope_freq_scale=0.5)).max() > 1e-2


# --- Dynamic NTK ---------------------------------------------------------------------------------


def ntk_base(factor: float) -> float:
    return FREQ_BASE * factor ** (HEAD_DIM / (HEAD_DIM - 2))


@pytest.mark.parametrize("length", [64, CONTEXT])
def test_dynamic_ntk_within_the_native_context_is_the_unscaled_model(tiny: Path, length: int) -> None:
    rope = open_model(tiny).rope
    assert parse_variant("dynamic-ntk").runtime(length, rope) == parse_variant("none").runtime(length, rope)
    assert np.array_equal(variant_logits(tiny, "dynamic-ntk", length), logits(tiny, TINY_TOKENS, CONTEXT))


@pytest.mark.parametrize("length", [300, 512, 1000])
def test_dynamic_ntk_beyond_native_is_ntk_at_length_over_native(tiny: Path, length: int) -> None:
    factor = length / CONTEXT
    dynamic = variant_logits(tiny, "dynamic-ntk", length)
    assert np.array_equal(dynamic, variant_logits(tiny, f"ntk:{factor!r}", length))
    assert np.array_equal(dynamic, logits(tiny, TINY_TOKENS, CONTEXT, rope_freq_base=ntk_base(factor)))  # by hand
    assert np.abs(dynamic - logits(tiny, TINY_TOKENS, CONTEXT)).max() > 1e-3


def test_dynamic_ntk_lengths_share_a_session_per_scaling(tiny: Path) -> None:
    model = open_model(tiny)
    backend = LlamaBackend(model, parse_variants("none,ntk:2,dynamic-ntk,dynamic-yarn", model.rope))
    lengths = [64, 128, 256, 384, 512]
    assert backend.scale_groups("dynamic-ntk", lengths) == [[64, 128, 256], [384], [512]]
    assert backend.scale_groups("dynamic-yarn", lengths) == [[64, 128, 256], [384], [512]]
    assert backend.scale_groups("ntk:2", lengths) == [lengths]


def test_dynamic_ntk_perplexity_is_none_then_ntk(tiny: Path) -> None:
    """Through perplexity's own passes: one per scaling, the native length unscaled, twice it ntk:2."""
    model = open_model(tiny)
    variants = parse_variants("none,ntk:2,dynamic-ntk,ntk-by-parts:2,yarn:2", model.rope)
    with LlamaBackend(model, variants, LoadOptions(n_threads=2)) as backend:
        run = run_perplexity(backend, Text(tiny, TEXT.read_text()), PerplexitySettings(contexts=[128, 256, 512]))
    ppl = {(r.variant, r.context): r.ppl for r in run.results}
    for context in (128, 256):
        assert ppl[("dynamic-ntk", context)] == ppl[("none", context)]
    assert ppl[("dynamic-ntk", 512)] == pytest.approx(ppl[("ntk:2", 512)], rel=1e-9)
    assert ppl[("ntk:2", 512)] != pytest.approx(ppl[("none", 512)], rel=1e-4)
    assert ppl[("ntk-by-parts:2", 512)] != pytest.approx(ppl[("yarn:2", 512)], rel=1e-4)


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["ntk-by-parts", "ntk-by-parts:1", "ntk-by-parts:0.5", "ntk-by-parts:x", "dynamic-ntk:2"]
)
def test_bad_variants_are_one_line(text: str) -> None:
    with pytest.raises(InputError, match="ntk-by-parts:S, dynamic-yarn or dynamic-ntk"):
        parse_variant(text)


def test_a_model_that_came_with_yarn_refuses_ntk_by_parts_and_dynamic_ntk(tmp_path: Path) -> None:
    trained = write_tiny_llama(
        tmp_path / "trained-yarn.gguf",
        extra={
            "llama.rope.scaling.type": ("yarn", GGUFValueType.STRING),
            "llama.rope.scaling.factor": (4.0, GGUFValueType.FLOAT32),
            "llama.rope.scaling.original_context_length": (64, GGUFValueType.UINT32),
        },
    )
    rope = open_model(trained).rope
    with pytest.raises(
        UnsupportedModelError, match=r"^--compare ntk-by-parts:2: the model came with YaRN x4 .*use yarn:S"
    ):
        parse_variants("none,ntk-by-parts:2", rope)
    with pytest.raises(
        UnsupportedModelError, match=r"^--compare dynamic-ntk: the model came with YaRN x4;.*dynamic-yarn"
    ):
        parse_variants("dynamic-ntk", rope)
    assert [v.name for v in parse_variants("yarn:2,dynamic-yarn", rope)] == ["yarn:2", "dynamic-yarn"]


def test_the_commands_take_the_new_variants_and_refuse_bad_ones(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    record = tmp_path / "ppl.json"
    compare = "none,ntk-by-parts:2,dynamic-ntk"
    ok = run_cli(
        "perplexity", tiny_model, "--text", TEXT, "--contexts", "128,512", "--compare", compare, "--json", record
    )
    assert ok.returncode == 0, ok.stderr
    rows = {(r["variant"], r["context"]): r["ppl"] for r in json.loads(record.read_text())["results"]}
    assert rows[("dynamic-ntk", 128)] == rows[("none", 128)]
    assert rows[("ntk-by-parts:2", 512)] != rows[("none", 512)]
    bad = run_cli("passkey", tiny_model, "--lengths", "128", "--compare", "ntk-by-parts:one")
    assert bad.returncode != 0
    assert error_line(bad).startswith("Error: cannot read the variant 'ntk-by-parts:one': use as-is, none,")


# --- YaRN with another attention factor (yarn:S@F) --------------------------------------------------


def test_yarn_with_an_attention_factor_is_the_key_set_by_hand(tiny: Path) -> None:
    variant = parse_variant("yarn:2@0.9")
    assert (variant.method, variant.factor, variant.attn_factor, variant.name) == ("yarn", 2.0, 0.9, "yarn:2@0.9")
    assert np.array_equal(variant_logits(tiny, "yarn:2@0.9", 512), by_hand_yarn(tiny, 2.0, kv_overrides={ATTN: 0.9}))
    assert not np.array_equal(variant_logits(tiny, "yarn:2@0.9", 512), variant_logits(tiny, "yarn:2", 512))


def test_a_file_converted_with_attn_factor_runs_as_the_variant(tiny: Path, tmp_path: Path) -> None:
    from yarn_cli.conversion import convert_variant

    written = convert_variant(str(tiny), "yarn:2@0.9", tmp_path / "out.gguf").outputs[0].path
    as_is = logits(written, TINY_TOKENS, CONTEXT)
    assert np.array_equal(as_is, variant_logits(tiny, "yarn:2@0.9", 512))


@pytest.mark.parametrize("text", ["ntk:2@0.9", "yarn:2@0", "yarn:2@x", "yarn:2@inf", "dynamic-yarn@2"])
def test_an_attention_factor_only_takes_yarn_and_a_positive_number(text: str) -> None:
    with pytest.raises(InputError, match="cannot read the variant"):
        parse_variant(text)
