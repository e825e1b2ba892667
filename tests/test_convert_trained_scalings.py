"""Files that come with a scaling of their own: YaRN is extended, never replaced, and no context shrinks.

A model published with YaRN (DeepSeek, Mistral Small 3.x, gpt-oss) states its trained factor, its
original context and sometimes its own betas or attention factor. ``convert --factor S`` on it
gives S times the context the file offers, with a total factor of trained x S over the same
original context and the file's other YaRN keys kept; a context below the file's own is refused
unless asked for. Checked in the real llama.cpp on tiny models: llama, and mistral3, whose loader
reads YaRN's betas from the file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFValueType
from ggufs import write_tiny_llama
from helpers import error_line
from logits import TINY_TOKENS, logits, trained

from yarn_cli.conversion import ConvertRequest, convert_file, plan_conversion
from yarn_cli.errors import InputError, UnsupportedModelError
from yarn_cli.gguf.header import read_header
from yarn_cli.model import open_model
from yarn_cli.rope.scaling import Method
from yarn_cli.rope.variants import parse_variant, parse_variants

ORIGINAL = 64  # the tiny models' own context is 256: YaRN x4 over 64 tokens


def with_yarn(tmp_path: Path, arch: str = "llama") -> Path:
    keys = {
        f"{arch}.rope.scaling.type": ("yarn", GGUFValueType.STRING),
        f"{arch}.rope.scaling.factor": (4.0, GGUFValueType.FLOAT32),
        f"{arch}.rope.scaling.original_context_length": (ORIGINAL, GGUFValueType.UINT32),
        f"{arch}.rope.scaling.attn_factor": (1.25, GGUFValueType.FLOAT32),
    }
    if arch == "mistral3":  # its loader reads these; values that move YaRN's ramp on 16 rotary dims
        keys[f"{arch}.rope.scaling.yarn_beta_fast"] = (0.5, GGUFValueType.FLOAT32)
        keys[f"{arch}.rope.scaling.yarn_beta_slow"] = (0.01, GGUFValueType.FLOAT32)
    return write_tiny_llama(tmp_path / f"{arch}-yarn.gguf", arch=arch, extra=keys, extra_with_rope=True)


@pytest.mark.parametrize("arch", ["llama", "mistral3"])
def test_yarn_on_a_yarn_model_multiplies_its_factor_and_keeps_its_keys(tmp_path: Path, arch: str) -> None:
    model = with_yarn(tmp_path, arch)
    result = convert_file(model, ConvertRequest(factor=2.0))
    out = result.outputs[0].path
    assert (result.plan.factor, result.plan.total_factor) == (2.0, 8.0)
    header = read_header(out)
    assert header.get(f"{arch}.rope.scaling.factor") == 8.0
    assert header.get(f"{arch}.rope.scaling.original_context_length") == ORIGINAL
    assert header.get(f"{arch}.context_length") == 512  # twice the file's 256, not twice 64
    assert header.get(f"{arch}.rope.scaling.attn_factor") == 1.25
    if arch == "mistral3":
        assert header.get("mistral3.rope.scaling.yarn_beta_fast") == 0.5
    assert trained(out) == (512, pytest.approx(1 / 8))
    converted = logits(out, TINY_TOKENS, 256, yarn_beta_fast=-1.0, yarn_beta_slow=-1.0)
    runtime = result.plan.runtime
    assert runtime is not None and dict(runtime.kv_overrides)[f"{arch}.rope.scaling.factor"] == 8.0
    at_runtime = logits(model, TINY_TOKENS, 256, yarn_beta_fast=-1.0, yarn_beta_slow=-1.0, **runtime.as_kwargs())
    assert np.array_equal(converted, at_runtime)
    variant = parse_variant("yarn:2").runtime(512, open_model(model).rope)  # what passkey/perplexity run
    assert variant == runtime
    replaced = logits(model, TINY_TOKENS, 256, rope_scaling_type=2, rope_freq_scale=0.5, yarn_orig_ctx=ORIGINAL)
    assert np.abs(converted - replaced).max() > 1e-4  # what the old conversion did: x2 instead of x8


def test_context_is_measured_against_the_files_own(tmp_path: Path) -> None:
    model = open_model(with_yarn(tmp_path))
    plan = plan_conversion(model, ConvertRequest(context=1024))
    assert (plan.factor, plan.total_factor, plan.context_length) == (4.0, 16.0, 1024)
    with pytest.raises(InputError, match="--context 200 is not above the file's context 256"):
        plan_conversion(model, ConvertRequest(context=200))


def test_dynamic_yarn_keeps_a_trained_yarn_at_short_lengths(tmp_path: Path) -> None:
    rope = open_model(with_yarn(tmp_path)).rope
    dynamic = parse_variant("dynamic-yarn")
    assert dynamic.runtime(100, rope) == rope.runtime(Method.YARN, 1.0)  # the file's own x4, not unscaled
    assert dynamic.runtime(100, rope).kv_overrides == ()  # loaded as the file says
    assert dynamic.runtime(1024, rope) == parse_variant("yarn:4").runtime(1024, rope)  # x16 in all


def test_replacing_a_trained_yarn_needs_force_and_never_shortens_silently(tmp_path: Path) -> None:
    model = open_model(with_yarn(tmp_path))
    with pytest.raises(UnsupportedModelError, match=r"came with YaRN x4 .* --method yarn extends it"):
        plan_conversion(model, ConvertRequest(method=Method.NTK, factor=2.0))
    with pytest.raises(InputError, match="would lower context_length from 256 to 128"):
        plan_conversion(model, ConvertRequest(method=Method.NTK, factor=2.0, force=True))
    plan = plan_conversion(model, ConvertRequest(method=Method.NTK, factor=2.0, force=True, allow_shorter_context=True))
    assert plan.context_length == 128


def test_ntk_by_parts_on_a_yarn_model_is_refused_unless_it_replaces_it(tmp_path: Path) -> None:
    model = open_model(with_yarn(tmp_path))
    with pytest.raises(
        UnsupportedModelError,
        match=r"^--method ntk-by-parts: the model came with YaRN x4 and.*, or --force to replace it$",
    ):
        plan_conversion(model, ConvertRequest(method=Method.NTK_BY_PARTS, context=512))
    plan = plan_conversion(model, ConvertRequest(method=Method.NTK_BY_PARTS, context=512, force=True))
    assert plan.replaced == "yarn x4 (original context 64)"
    attn = plan.target[model.rope.keys.attn_factor]
    assert attn is not None and attn.value == pytest.approx(1 / (0.1 * math.log(8) + 1), rel=1e-6)  # x8 over 64


def test_ntk_by_parts_is_refused_under_deepseeks_attention_scaling(tmp_path: Path) -> None:
    """llama.cpp's temperature there is not 0.1 ln S + 1, so no attn_factor of ours cancels it, even with --force."""
    path = write_tiny_llama(
        tmp_path / "log-mul.gguf", extra={"llama.rope.scaling.yarn_log_multiplier": (0.1, GGUFValueType.FLOAT32)}
    )
    for force in (False, True):
        with pytest.raises(UnsupportedModelError, match="yarn_log_multiplier"):
            plan_conversion(open_model(path), ConvertRequest(method=Method.NTK_BY_PARTS, factor=2.0, force=force))
    with pytest.raises(UnsupportedModelError, match="yarn_log_multiplier"):
        parse_variants("ntk-by-parts:2", open_model(path).rope)


def test_longrope_replaced_only_with_force_and_a_context_that_does_not_shrink(tmp_path: Path) -> None:
    phi_like = write_tiny_llama(
        tmp_path / "phi.gguf",
        extra={
            "llama.rope.scaling.type": ("longrope", GGUFValueType.STRING),
            "llama.rope.scaling.original_context_length": (ORIGINAL, GGUFValueType.UINT32),
        },
    )
    model = open_model(phi_like)
    with pytest.raises(InputError, match="would lower context_length from 256 to 128"):
        plan_conversion(model, ConvertRequest(factor=2.0, force=True))
    assert plan_conversion(model, ConvertRequest(context=512, force=True)).context_length == 512


def test_the_command_says_what_it_does_to_a_yarn_model(run_cli, tmp_path: Path) -> None:
    model = with_yarn(tmp_path)
    dry = run_cli("convert", model, "--factor", "2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert (
        "yarn x2 on the model's own YaRN x4 (x8 over its original context 64): context_length 256 -> 512"
        in dry.stdout.replace("\n", " ")
    )
    shorter = run_cli("convert", model, "--method", "linear", "--factor", "2", "--force")
    assert "would lower context_length from 256 to 128" in error_line(shorter)
    assert "--allow-shorter-context" in error_line(shorter)
