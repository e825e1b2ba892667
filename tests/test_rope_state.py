"""A model's RoPE state on real files, and the variants derived from it in the real llama.cpp.

A file yarn-cli converted keeps what it was in its undo record; every run-time variant
(``none``, ``ntk:S``, ``yarn:S``...) is taken over that original state, so the converted file
must give the same logits as the file it came from, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ggufs import CONTEXT, FREQ_BASE, HEAD_DIM
from logits import TINY_TOKENS, logits

from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.model import open_model
from yarn_cli.rope.scaling import Method
from yarn_cli.rope.variants import parse_variant

CONVERSIONS = {
    "ntk:2": ConvertRequest(method=Method.NTK, factor=2.0),
    "linear:2": ConvertRequest(method=Method.LINEAR, factor=2.0),
    "yarn:4": ConvertRequest(method=Method.YARN, factor=4.0),
}
VARIANTS = ["none", "ntk:2", "yarn:2", "linear:2", "dynamic-yarn"]
LENGTH = 2 * CONTEXT  # the length the variants are sized for: dynamic-yarn is YaRN x2 there


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model and one file per conversion of it."""
    from ggufs import write_tiny_llama

    folder = tmp_path_factory.mktemp("converted")
    original = write_tiny_llama(folder / "tiny.gguf")
    files = {"original": original}
    for name, request in CONVERSIONS.items():
        files[name] = convert_file(original, request, output=folder / f"{name.replace(':', '-')}.gguf").outputs[0].path
    return files


def variant_logits(path: Path, variant: str) -> np.ndarray:
    rope = open_model(path).rope
    scaling = parse_variant(variant).runtime(LENGTH, rope)
    assert scaling is not None
    return logits(path, TINY_TOKENS, CONTEXT, **scaling.as_kwargs())


def test_an_unconverted_file_is_its_own_original(tiny_model: Path) -> None:
    rope = open_model(tiny_model).rope
    assert not rope.converted and not rope.is_scaled
    assert rope.current == rope.original
    assert (rope.trained_context, rope.original.freq_base, rope.dims) == (CONTEXT, FREQ_BASE, HEAD_DIM)


@pytest.mark.parametrize("conversion", list(CONVERSIONS))
def test_a_converted_file_knows_its_original_state(converted: dict[str, Path], conversion: str) -> None:
    rope = open_model(converted[conversion]).rope
    assert rope.converted and rope.is_scaled
    assert rope.current.context_length == CONVERSIONS[conversion].factor * CONTEXT
    assert rope.original == open_model(converted["original"]).rope.current
    assert rope.trained_context == CONTEXT
    assert rope.unconverted().current == rope.original


@pytest.mark.parametrize("conversion", list(CONVERSIONS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_of_a_converted_file_equal_those_of_the_original(
    converted: dict[str, Path], conversion: str, variant: str
) -> None:
    on_original = variant_logits(converted["original"], variant)
    on_converted = variant_logits(converted[conversion], variant)
    assert np.array_equal(on_converted, on_original)


def test_the_variants_compared_are_really_different(converted: dict[str, Path]) -> None:
    """So the equalities above could fail: each variant changes the logits, and so does each conversion as-is."""
    original = converted["original"]
    results = {v: variant_logits(original, v) for v in VARIANTS}
    for i, a in enumerate(VARIANTS):
        for b in VARIANTS[i + 1 :]:
            if {a, b} != {"yarn:2", "dynamic-yarn"}:  # the same scaling at twice the original context
                assert np.abs(results[a] - results[b]).max() > 1e-4, (a, b)
    assert np.array_equal(results["yarn:2"], results["dynamic-yarn"])
    for conversion in CONVERSIONS:
        as_is = logits(converted[conversion], TINY_TOKENS, CONTEXT)
        assert np.abs(as_is - results["none"]).max() > 1e-4, conversion


def test_auto_yarn_only_stretches_an_unscaled_file(converted: dict[str, Path]) -> None:
    assert open_model(converted["original"]).rope.auto_factor(4 * CONTEXT) == 4.0
    assert open_model(converted["original"]).rope.auto_factor(CONTEXT) is None
    for conversion in CONVERSIONS:
        assert open_model(converted[conversion]).rope.auto_factor(8 * CONTEXT) is None


@pytest.mark.slow
def test_yarn_on_a_converted_smollm2_keeps_the_trained_context(smollm2: Path, tmp_path: Path) -> None:
    """YaRN's ramp depends on L: on SmolLM2 (64 dims, base 1e5) L = 16384 moves it, so the raised context must not leak.

    The tiny model's 16 dimensions give the same ramp for L = 256 and 512, which is why this runs on SmolLM2.
    """
    linear = convert_file(smollm2, CONVERSIONS["linear:2"], output=tmp_path / "smol.linear-2x.gguf").outputs[0].path
    tokens = list(range(1000, 1128))
    yarn2 = parse_variant("yarn:2")
    scaling = yarn2.runtime(16384, open_model(linear).rope)
    assert scaling is not None and dict(scaling.kv_overrides)["llama.rope.scaling.original_context_length"] == 8192
    on_converted = logits(linear, tokens, 256, **scaling.as_kwargs())
    reference = yarn2.runtime(16384, open_model(smollm2).rope)
    assert reference is not None
    assert np.array_equal(on_converted, logits(smollm2, tokens, 256, **reference.as_kwargs()))
    leaked = {**scaling.as_kwargs(), "yarn_orig_ctx": 16384}  # the raised context as L
    assert np.abs(logits(linear, tokens, 256, **leaked) - on_converted).max() > 1e-3
