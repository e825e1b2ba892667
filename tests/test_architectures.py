"""Every common RoPE architecture, and the scalings real files of it carry, through the real llama.cpp.

Each case is a tiny random-weight model of one architecture (``archs.write_tiny``), plain or with
the scaling its real files ship: Llama 3's ``rope_freqs``, Gemma 3's linear x8, Phi-3-128k's
longrope factor tensors, the YaRN of Mistral Small 3.x, DeepSeek (with ``yarn_log_multiplier``)
and gpt-oss. Each is converted with YaRN, linear and NTK x2 and checked in llama.cpp: the context
and scaling it reads back, a context that never shrinks, logits equal to the run-time scaling
yarn-cli's evaluations use, what llama.cpp's own run-time flags do on sliding-window layers, and
an undo that gives the original file back byte for byte.
"""

from __future__ import annotations

import filecmp
import re
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from archs import SLIDING_WINDOW, write_tiny
from gguf import GGUFValueType
from logits import load, logits

from yarn_cli.conversion import ConvertRequest, convert_file, plan_conversion
from yarn_cli.errors import InputError, UnsupportedModelError
from yarn_cli.gguf.header import read_header
from yarn_cli.model import open_model, summary
from yarn_cli.rope.architectures import WindowScaling, window_scaling
from yarn_cli.rope.scaling import Method
from yarn_cli.rope.variants import parse_variant

CONTEXT = 256
ORIGINAL = 64  # trained scalings: x4 over 64 tokens
TOKENS = list(range(3, 3 + 120))  # several times the 32-token sliding window
U32, F32, STR = GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.STRING
FACTORS = np.array([1.0, 1.0, 1.0, 1.5, 2.0, 4.0, 8.0, 8.0], dtype=np.float32)  # one per rotary pair


def yarn_keys(arch: str, factor: float = 4.0, **more: tuple[object, GGUFValueType]) -> dict:
    return {
        f"{arch}.rope.scaling.type": ("yarn", STR),
        f"{arch}.rope.scaling.factor": (factor, F32),
        f"{arch}.rope.scaling.original_context_length": (ORIGINAL, U32),
        **{f"{arch}.rope.scaling.{k}": v for k, v in more.items()},
    }


@dataclass(frozen=True)
class Case:
    arch: str
    extra: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)
    trained_yarn: float | None = None  # the YaRN factor the file comes with
    refused: str | None = None  # why every conversion needs --force

    def write(self, directory: Path) -> Path:
        return write_tiny(directory / "model.gguf", self.arch, extra=self.extra, tensors=self.tensors)


CASES = {
    "llama": Case("llama"),
    "llama-rope-freqs": Case("llama", tensors={"rope_freqs.weight": FACTORS}),
    "qwen2": Case("qwen2"),
    "qwen3": Case("qwen3"),
    "qwen3moe": Case("qwen3moe"),
    "mistral3-yarn": Case(
        "mistral3",
        yarn_keys("mistral3", yarn_beta_fast=(8.0, F32), yarn_beta_slow=(0.5, F32), yarn_log_multiplier=(0.1, F32)),
        trained_yarn=4.0,
    ),
    "gemma2": Case("gemma2"),
    "gemma3-linear": Case(
        "gemma3",
        {"gemma3.rope.scaling.type": ("linear", STR), "gemma3.rope.scaling.factor": (8.0, F32)},
        refused="trained with linear RoPE scaling x8",
    ),
    "phi3": Case("phi3"),
    "phi3-longrope": Case(
        "phi3",
        {
            "phi3.rope.scaling.attn_factor": (1.19, F32),
            "phi3.rope.scaling.original_context_length": (ORIGINAL, U32),
        },
        {"rope_factors_long.weight": FACTORS, "rope_factors_short.weight": np.ones(8, dtype=np.float32)},
        refused="longrope scaling",
    ),
    "deepseek2-yarn": Case(
        "deepseek2", yarn_keys("deepseek2", yarn_log_multiplier=(0.1, F32), attn_factor=(1.1, F32)), trained_yarn=4.0
    ),
    "gpt-oss-yarn": Case("gpt-oss", yarn_keys("gpt-oss"), trained_yarn=4.0),
    "olmo2": Case("olmo2"),
    "granite": Case("granite"),
    "cohere2": Case("cohere2"),
}
METHODS = (Method.YARN, Method.LINEAR, Method.NTK)


def read_back(path: Path) -> tuple[int, float, str]:
    """(n_ctx_train, freq_scale_train, scaling type) as llama.cpp loaded the file."""
    llm = load(path, CONTEXT)
    try:
        model = llm.model
        ctx_train = llama_cpp.llama_model_n_ctx_train(model)
        scale = llama_cpp.llama_model_rope_freq_scale_train(model)
        kind = llm.metadata.get(f"{llm.metadata['general.architecture']}.rope.scaling.type", "none")
        return ctx_train, scale, kind
    finally:
        llm.close()


@pytest.mark.parametrize("method", METHODS, ids=[m.value for m in METHODS])
@pytest.mark.parametrize("name", list(CASES))
def test_conversion_in_llama_cpp(tmp_path: Path, name: str, method: Method) -> None:
    case = CASES[name]
    model = case.write(tmp_path)
    original_bytes = model.read_bytes()
    request = ConvertRequest(method=method, factor=2.0)
    if case.refused or (case.trained_yarn and method != Method.YARN):
        reason = case.refused or f"came with YaRN x{case.trained_yarn:g}"
        with pytest.raises(UnsupportedModelError, match=reason):
            convert_file(model, request)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]  # nothing written
        assert model.read_bytes() == original_bytes
        return

    result = convert_file(model, request)
    plan, out = result.plan, result.outputs[0].path
    total = 2.0 * (case.trained_yarn or 1.0)
    assert plan.context_length == 2 * CONTEXT  # twice what the file offered, never less

    # what llama.cpp reads from the converted file
    ctx_train, scale, kind = read_back(out)
    assert ctx_train == 2 * CONTEXT
    if method == Method.NTK:
        assert (scale, kind) == (pytest.approx(1 / (case.trained_yarn or 1.0)), "yarn" if case.trained_yarn else "none")
    else:
        assert (scale, kind) == (pytest.approx(1 / total), method.value)
    info = summary(open_model(out))
    assert info["context_length"] == 2 * CONTEXT
    assert info["scaling"]["type"] == ("none" if method == Method.NTK else method.value)

    # the converted file runs exactly like the run-time scaling the evaluations load
    converted = logits(out, TOKENS, CONTEXT)
    runtime = parse_variant(f"{method.value}:2").runtime(2 * CONTEXT, open_model(model).rope)
    assert runtime == plan.runtime
    assert np.array_equal(converted, logits(model, TOKENS, CONTEXT, **runtime.as_kwargs()))
    assert np.abs(converted - logits(model, TOKENS, CONTEXT)).max() > 1e-4  # and the scaling did something

    # the file's own trained keys are kept by a YaRN extension
    if case.trained_yarn:
        header = read_header(out)
        kept = {k: v for k, (v, _) in case.extra.items() if not k.endswith((".scaling.factor", "context_length"))}
        assert len(kept) >= 1 and {k: header.get(k) for k in kept} == pytest.approx(kept)

    # undo: the original, byte for byte
    undone = convert_file(out, ConvertRequest(method=Method.NONE), output=tmp_path / "undone.gguf")
    assert filecmp.cmp(undone.outputs[0].path, model, shallow=False)


@pytest.mark.parametrize("name", ["llama", "qwen3", "gemma2", "gemma3", "gpt-oss-yarn", "olmo2", "cohere2"])
def test_run_time_flags_against_a_converted_file(tmp_path: Path, name: str) -> None:
    """llama.cpp's --rope-scale reaches the sliding-window layers of some architectures only from the file.

    Where it does not (gemma2, gpt-oss), the flags and the converted file differ, and yarn-cli's
    run-time scalings (key overrides) follow the file; elsewhere the flags equal the file too.
    """
    case = CASES.get(name, Case(name))
    model = case.write(tmp_path)
    result = convert_file(model, ConvertRequest(factor=2.0))
    converted = logits(result.outputs[0].path, TOKENS, CONTEXT)
    flags = {
        "rope_scaling_type": llama_cpp.LLAMA_ROPE_SCALING_TYPE_YARN,
        "rope_freq_scale": 1 / (2.0 * (case.trained_yarn or 1.0)),
        "yarn_orig_ctx": ORIGINAL if case.trained_yarn else CONTEXT,
    }
    with_flags = logits(model, TOKENS, CONTEXT, **flags)
    differs = np.abs(with_flags - converted).max()
    if window_scaling(case.arch) == WindowScaling.FOLLOWS_FILE:
        assert differs > 1e-4
        assert any("sliding-window" in w and "--override-kv" in w for w in result.plan.warnings)
    else:
        assert differs == 0.0
    if window_scaling(case.arch) != WindowScaling.NO_WINDOW:
        assert any(f"{SLIDING_WINDOW}-token sliding-window" in w for w in result.plan.warnings)


def test_a_trained_yarn_is_extended_for_every_architecture_that_ships_one(tmp_path: Path) -> None:
    for name in ("mistral3-yarn", "deepseek2-yarn", "gpt-oss-yarn"):
        directory = tmp_path / name
        directory.mkdir()
        model = open_model(CASES[name].write(directory))
        plan = plan_conversion(model, ConvertRequest(factor=4.0))
        assert (plan.total_factor, plan.original_context, plan.context_length) == (16.0, ORIGINAL, 4 * CONTEXT)
        with pytest.raises(InputError, match="would lower context_length from 256 to 128"):
            plan_conversion(model, ConvertRequest(method=Method.LINEAR, factor=2.0, force=True))


def test_longrope_with_force_scales_over_its_factors(tmp_path: Path) -> None:
    """Forced, YaRN goes on top of Phi-3's long factors; llama.cpp loads it like the run-time variant."""
    model = CASES["phi3-longrope"].write(tmp_path)
    with pytest.raises(InputError, match="would lower context_length from 256"):
        plan_conversion(open_model(model), ConvertRequest(factor=2.0, force=True))
    result = convert_file(model, ConvertRequest(context=1024, force=True))
    assert (result.plan.total_factor, result.plan.original_context) == (16.0, ORIGINAL)
    assert read_back(result.outputs[0].path)[:2] == (1024, pytest.approx(1 / 16))
    assert read_header(result.outputs[0].path).get("phi3.rope.scaling.attn_factor") == pytest.approx(1.19)
    assert result.plan.runtime is not None
    converted = logits(result.outputs[0].path, TOKENS, CONTEXT)
    assert np.array_equal(converted, logits(model, TOKENS, CONTEXT, **result.plan.runtime.as_kwargs()))


def test_rope_freqs_are_named_when_converting(tmp_path: Path) -> None:
    plan = plan_conversion(open_model(CASES["llama-rope-freqs"].write(tmp_path)), ConvertRequest(factor=2.0))
    assert any("rope_freqs" in w for w in plan.warnings)


def test_inspect_says_what_llama_cpp_does_per_architecture(tmp_path: Path) -> None:
    expected = {
        "gemma3-linear": ("never", "global-attention layers only", "linear x8"),
        "gpt-oss-yarn": ("follows_file", "to every layer", "yarn x4 (original context 64)"),
        "cohere2": ("only_rope", "only the 32-token sliding-window layers use RoPE", "none"),
        "phi3-longrope": ("no_window", "long factors when a sequence's context is above 64", "longrope"),
        "deepseek2-yarn": ("no_window", "DeepSeek's attention scaling (yarn_log_multiplier 0.1)", "yarn x4"),
        "llama-rope-freqs": ("no_window", "divides each pair's frequency", "none"),
    }
    for name, (scaling, note, described) in expected.items():
        directory = tmp_path / name
        directory.mkdir()
        model = open_model(CASES[name].write(directory))
        info = summary(model)
        assert info["rope"]["window_scaling"] == scaling
        assert any(note in line for line in info["rope"]["llama_cpp"]), info["rope"]["llama_cpp"]
        assert model.rope.describe_scaling().startswith(described)
    assert info["rope"]["factor_tensors"] == ["rope_freqs"]


@pytest.mark.parametrize("swa_full", [True, False])
def test_kv_cache_sizes_match_what_llama_cpp_allocates(tmp_path: Path, swa_full: bool) -> None:
    """inspect's two KV figures: every layer full (llama-cpp-python's default), and windowed (llama-server's)."""
    from yarn_cli.llama.loader import captured_log

    model = open_model(write_tiny(tmp_path / "gemma3.gguf", "gemma3"))
    assert (model.shape.window, model.shape.window_layers, model.shape.n_layers) == (SLIDING_WINDOW, 1, 2)
    with captured_log(echo=False) as lines:
        llm = llama_cpp.Llama(model_path=str(model.path), n_ctx=4096, swa_full=swa_full, verbose=False)
        log = "".join(lines)
    llm.close()
    allocated = sum(float(m) for m in re.findall(r"llama_kv_cache: size =\s+([\d.]+) MiB", log)) * 2**20
    expected = model.shape.kv_cache_bytes(4096) if swa_full else model.shape.windowed_kv_cache_bytes(4096)
    assert expected is not None and allocated == pytest.approx(expected, rel=0.01)


def test_the_legacy_scale_linear_key_is_read_and_converted(tmp_path: Path) -> None:
    """Old files state a linear factor as rope.scale_linear; llama.cpp reads it when scaling.factor is absent."""
    model = write_tiny(tmp_path / "old.gguf", "llama", extra={"llama.rope.scale_linear": (2.0, F32)})
    assert read_back(model)[1] == pytest.approx(0.5)
    assert open_model(model).rope.describe_scaling() == "linear x2"
    with pytest.raises(UnsupportedModelError, match="trained with linear RoPE scaling x2"):
        plan_conversion(open_model(model), ConvertRequest(factor=2.0))
    result = convert_file(model, ConvertRequest(factor=2.0, force=True))
    header = read_header(result.outputs[0].path)
    assert header.get("llama.rope.scale_linear") is None  # replaced, not left to compound
    assert read_back(result.outputs[0].path)[1:] == (pytest.approx(0.5), "yarn")
    undone = convert_file(result.outputs[0].path, ConvertRequest(method=Method.NONE), output=tmp_path / "back.gguf")
    assert filecmp.cmp(undone.outputs[0].path, model, shallow=False)


HF_MAPPED = {"llama", "qwen2", "qwen3", "qwen3moe", "granite", "phi3"}  # one rope_parameters, whole heads
HF_REASONS = {
    "llama-rope-freqs": "per-dimension RoPE factors (rope_freqs)",
    "mistral3-yarn": "came with its own YaRN",
    "deepseek2-yarn": "came with its own YaRN",
    "gpt-oss-yarn": "sliding-window",
    "gemma2": "sliding-window",
    "olmo2": "sliding-window",
    "cohere2": "sliding-window",
}


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n].refused is None])
def test_hugging_face_form_per_architecture(tmp_path: Path, name: str) -> None:
    """vLLM's --hf-overrides for a YaRN x2 file where one rope_parameters describes it; else the reason."""
    plan = plan_conversion(open_model(CASES[name].write(tmp_path)), ConvertRequest(factor=2.0))
    hf = plan.hugging_face
    if name in HF_MAPPED:
        assert hf.overrides == {
            "rope_parameters": {
                "rope_theta": 10000.0, "rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": CONTEXT,
            },
            "max_position_embeddings": 2 * CONTEXT,
        }  # fmt: skip
        assert hf.reason is None and hf.context == 2 * CONTEXT
    else:
        assert hf.overrides is None and hf.vllm_flags() is None
        assert HF_REASONS[name] in (hf.reason or "")
    assert set(HF_MAPPED) | set(HF_REASONS) == {n for n in CASES if CASES[n].refused is None}


def test_no_hugging_face_form_for_partial_rotary(tmp_path: Path) -> None:
    """vLLM would replace the config's partial_rotary_factor along with the rest of rope_parameters."""
    model = write_tiny(tmp_path / "m.gguf", "llama", extra={"llama.rope.dimension_count": (8, U32)})
    hf = plan_conversion(open_model(model), ConvertRequest(factor=2.0)).hugging_face
    assert hf.overrides is None and "rotates 8 of its 16 head dimensions" in (hf.reason or "")
