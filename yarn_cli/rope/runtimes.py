"""Where a RoPE scaling written into a GGUF file takes effect: per runtime, per architecture.

Read in the runtimes' source and documentation, not run (Ollama and LM Studio cannot be installed
here); each entry names its source, and docs/serving.md has the same as a table.

- llama.cpp (llama-server, llama-cli, llama-cpp-python) reads the scaling keys for every
  architecture; what its sliding-window layers get is in ``architectures.py``.
- Ollama 0.30 and later run every GGUF in llama.cpp's own llama-server (ollama/ollama 9db4bdba,
  "use llama-server exclusively for GGML models", first in v0.30.0), started with no RoPE flags.
- Ollama before 0.30 ran the architectures of ``OllamaEngineRequired`` (fs/ggml/ggml.go) on its
  own Go engine (model/models/<arch>/, here as read at v0.24.0, the last release that had it) and
  the others on its llama.cpp runner; ``OLLAMA_NEW_ENGINE=1`` sent every architecture the engine
  implements there too. Nothing forces the llama.cpp runner, and no Modelfile PARAMETER touches
  RoPE (``rope_frequency_base``/``_scale`` were removed in 0.1.35: ``ollama create`` refuses them).
- LM Studio runs GGUF files with its llama.cpp engine, whose RoPE settings default to "Auto".
- vLLM serves the Hugging Face model and reads no GGUF: the same scaling goes in ``--hf-overrides``
  (``huggingface.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from yarn_cli.rope.architectures import WindowScaling, window_scaling
from yarn_cli.rope.scaling import Method
from yarn_cli.rope.state import RopeState

LLAMA_CPP = "llama.cpp"
LM_STUDIO = "LM Studio"
OLLAMA = "Ollama 0.30+"
OLD_OLLAMA = "Ollama < 0.30"
VLLM = "vLLM"
RUNTIMES = (LLAMA_CPP, LM_STUDIO, OLLAMA, OLD_OLLAMA, VLLM)

OLLAMA_ENGINE_SOURCE = "github.com/ollama/ollama v0.24.0 (c28ddc0a)"
OLLAMA_SOURCE = (
    "github.com/ollama/ollama llm/server.go NewLlamaServer, llm/llama_server.go (9db4bdba, v0.30.0; "
    "read at fb307609, v0.33.0-rc2)"
)
LLAMA_CPP_SOURCE = "llama.cpp src/llama-model.cpp load_hparams; yarn_cli/rope/architectures.py"
LM_STUDIO_SOURCE = (
    "github.com/lmstudio-ai/lmstudio-js packages/lms-kv-config/src/schema.ts (ropeFrequencyBase/Scale, "
    "unchecked: 'Auto'); lmstudio.ai/docs"
)
VLLM_SOURCE = "docs/serving.md (vLLM 0.32 run here); yarn_cli/rope/huggingface.py"


class Where(NamedTuple):
    """One runtime's answer: does the file's scaling take effect there, and how."""

    runtime: str
    applies: bool | None  # True: as llama.cpp applies it; False: not at all; None: applied otherwise
    sentence: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


class Effect(NamedTuple):
    applies: bool | None
    how: str  # what Ollama's engine does with the keys, after "which"


@dataclass(frozen=True)
class EngineModel:
    """What Ollama's own engine (before 0.30) does with each scaling of one architecture."""

    path: str  # under model/models/ at v0.24.0
    yarn: Effect
    linear: Effect
    ntk: Effect

    def effect(self, method: Method) -> Effect:
        return {Method.YARN: self.yarn, Method.LINEAR: self.linear}.get(method, self.ntk)


_NTK = Effect(True, "reads rope.freq_base")
_LINEAR = Effect(True, "applies rope.scaling.factor as linear scaling")
_YARN_AS_LINEAR = Effect(None, "applies rope.scaling.factor as linear scaling, never as YaRN")
_FIXED = Effect(False, "ignores rope.scaling.* (its RoPE scale is fixed at 1)")
_NO_TEMPERATURE = Effect(None, "applies YaRN without the attention factor llama.cpp applies (0.1 ln S + 1)")
_YARN = Effect(True, "applies YaRN from rope.scaling.type, factor and original_context_length")
_ALWAYS_YARN = Effect(None, "applies rope.scaling.factor as YaRN whatever rope.scaling.type says")
_NO_ROPE = Effect(False, "uses no RoPE in its attention layers")


def _linear_only(path: str) -> EngineModel:
    return EngineModel(path, _YARN_AS_LINEAR, _LINEAR, _NTK)


def _fixed(path: str) -> EngineModel:
    return EngineModel(path, _FIXED, _FIXED, _NTK)


def _yarn_no_temperature(path: str) -> EngineModel:
    return EngineModel(path, _NO_TEMPERATURE, _LINEAR, _NTK)


def _trained_yarn(path: str, how: str) -> EngineModel:
    return EngineModel(path, Effect(True, how), _ALWAYS_YARN, _NTK)


_GEMMA3 = EngineModel(
    "gemma3/model_text.go",
    Effect(
        None,
        "in 0.13.3 to 0.24 applies YaRN with beta_fast 64 (llama.cpp: 32) and without its attention factor "
        "(0.1 ln S + 1), and before ignored the scaling (0.12.0: as linear)",
    ),
    Effect(
        None,
        "in 0.13.3 to 0.24 applies it as llama.cpp does (on the global layers), and before ignored it "
        "(0.12.0 excepted)",
    ),
    Effect(None, "reads rope.freq_base from 0.13.3 on; earlier versions ignore it (they read rope.global.freq_base)"),
)
_QWEN3VL = EngineModel(
    "qwen3vl/model_text.go",
    Effect(None, "applies the square root of rope.scaling.factor as linear scaling: no YaRN"),
    Effect(None, "applies the square root of rope.scaling.factor, not the factor"),
    _NTK,
)
_GEMMA3N = EngineModel(
    "gemma3n/model_text.go",
    Effect(None, "applies rope.scaling.factor as linear scaling on every layer (llama.cpp: global layers only)"),
    Effect(None, "applies it to the sliding-window layers too (llama.cpp: global layers only)"),
    _NTK,
)
_LAGUNA = EngineModel(
    "laguna/model.go",
    Effect(None, "applies YaRN on its global layers with its own betas (rope.scaling.beta_fast, default 64)"),
    _ALWAYS_YARN,
    _NTK,
)
_MISTRAL3 = EngineModel(
    "mistral3/model_text.go",
    Effect(
        None,
        "applies YaRN with its betas and temperature from keys of its own (rope.scaling.beta_fast, mscale), "
        "not llama.cpp's yarn_beta_* and yarn_log_multiplier",
    ),
    _LINEAR,
    _NTK,
)

# fs/ggml/ggml.go OllamaEngineRequired at v0.24.0: the architectures Ollama ran on its own engine, where
# it implements them, whatever OLLAMA_NEW_ENGINE says (bert: no RoPE; the others are below).
OLLAMA_ENGINE_REQUIRED = frozenset({
    "bert", "deepseek2", "deepseekocr", "gemma3", "gemma3n", "gemma4", "gptoss", "gpt-oss", "laguna", "llama4",
    "mistral3", "mllama", "nemotron_h", "nemotron_h_moe", "nemotron_h_omni", "nomic-bert", "olmo3", "qwen25vl",
    "qwen3", "qwen3moe", "qwen35", "qwen35moe", "qwen3next", "qwen3vl", "qwen3vlmoe", "glm4moelite", "glmocr",
    "lfm2", "lfm2moe",
})  # fmt: skip

# The architectures Ollama's engine implemented at v0.24.0 (model/models/models.go), by GGUF name.
OLLAMA_ENGINE: dict[str, EngineModel] = {
    "deepseek2": _trained_yarn("deepseek2/model.go", "applies YaRN, with DeepSeek's yarn_log_multiplier"),
    "deepseekocr": _linear_only("deepseekocr/model_text.go"),
    "gemma2": _linear_only("gemma2/model.go"),
    "gemma3": _GEMMA3,
    "gemma3n": _GEMMA3N,
    "gemma4": _fixed("gemma4/model_text.go"),
    "glm4moelite": _fixed("glm4moelite/model.go"),
    "glmocr": _fixed("glmocr/model_text.go"),
    **dict.fromkeys(
        ("gpt-oss", "gptoss"), _trained_yarn("gptoss/model.go", "applies YaRN to every layer, as llama.cpp does")
    ),
    "laguna": _LAGUNA,
    **dict.fromkeys(("lfm2", "lfm2moe"), _yarn_no_temperature("lfm2/model.go")),
    "llama": _linear_only("llama/model.go"),
    "llama4": _linear_only("llama4/model_text.go"),
    "mistral3": _MISTRAL3,
    "mllama": _linear_only("mllama/model_text.go"),
    **dict.fromkeys(
        ("nemotron_h", "nemotron_h_moe", "nemotron_h_omni"),
        EngineModel("nemotronh/attention.go", _NO_ROPE, _NO_ROPE, _NO_ROPE),
    ),
    "nomic-bert": _fixed("nomicbert/model.go"),
    "nomic-bert-moe": _fixed("nomicbert/model.go"),
    "olmo3": EngineModel("olmo3/model.go", _YARN, _LINEAR, _NTK),
    "qwen2": _linear_only("qwen2/model.go"),
    "qwen25vl": _linear_only("qwen25vl/model_text.go"),
    **dict.fromkeys(("qwen3", "qwen3moe"), _yarn_no_temperature("qwen3/model.go")),
    **dict.fromkeys(("qwen35", "qwen35moe", "qwen3next"), _yarn_no_temperature("qwen3next/model.go")),
    **dict.fromkeys(("qwen3vl", "qwen3vlmoe"), _QWEN3VL),
}


def where_scaling_applies(architecture: str, method: Method, *, attn_factor: bool = False) -> list[Where]:
    """Per runtime, whether a ``method`` scaling in a file of ``architecture`` takes effect there.

    ``attn_factor``: the file also sets rope.scaling.attn_factor. ``Method.NONE`` asks nothing: [].
    """
    if method == Method.NONE:
        return []
    if method == Method.NTK_BY_PARTS:  # a YaRN file whose attn_factor cancels the temperature
        method, attn_factor = Method.YARN, True
    return [
        Where(LLAMA_CPP, True, _llama_cpp(architecture, method), LLAMA_CPP_SOURCE),
        Where(
            LM_STUDIO,
            True,
            "its llama.cpp engine reads these keys while its RoPE Frequency Base and Scale stay at Auto, "
            "their default; its context slider stops at context_length (from its documentation: not run here)",
            LM_STUDIO_SOURCE,
        ),
        Where(
            OLLAMA,
            True,
            "runs every GGUF in llama.cpp's llama-server, with no RoPE flags: as llama.cpp "
            "(its context: num_ctx, clamped to context_length)",
            OLLAMA_SOURCE,
        ),
        _old_ollama(architecture, method, attn_factor),
        Where(
            VLLM,
            False,
            "serves the Hugging Face model and reads no GGUF: give it the same scaling as --hf-overrides "
            "(yarn-cli inspect prints them)",
            VLLM_SOURCE,
        ),
    ]


def not_taking_effect(wheres: list[Where]) -> list[str]:
    """One warning line per runtime that runs this file but not its scaling as converted.

    vLLM never runs a GGUF, so it is no news about this file: its line is what ``inspect`` shows.
    """
    return [f"{w.runtime}: {w.sentence}" for w in wheres if w.applies is not True and w.runtime != VLLM]


def _llama_cpp(architecture: str, method: Method) -> str:
    text = "reads the scaling keys for every architecture (llama-server, llama-cli, llama-cpp-python)"
    if method == Method.NTK:
        return text
    how = window_scaling(architecture)
    if how == WindowScaling.FOLLOWS_FILE:
        text += f"; {architecture}'s sliding-window layers are scaled too"
    elif how == WindowScaling.NEVER:
        text += f"; {architecture}: on the global-attention layers only, as the model was trained"
    elif how == WindowScaling.ONLY_ROPE:
        text += f"; {architecture}: only its sliding-window layers rotate, so a scaling is unlikely to help"
    return text


def _old_ollama(architecture: str, method: Method, attn_factor: bool) -> Where:
    engine = OLLAMA_ENGINE.get(architecture)
    if engine is None:
        return Where(
            OLD_OLLAMA,
            True,
            f"runs {architecture} with its llama.cpp runner, which reads the keys as llama.cpp does",
            f"{OLLAMA_ENGINE_SOURCE} fs/ggml/ggml.go OllamaEngineRequired, model/models/models.go",
        )
    applies, how = engine.effect(method)
    if attn_factor and applies and architecture != "laguna":
        applies, how = None, how + ", but ignores rope.scaling.attn_factor"
    source = f"{OLLAMA_ENGINE_SOURCE} model/models/{engine.path}, fs/ggml/ggml.go OllamaEngineRequired"
    if architecture not in OLLAMA_ENGINE_REQUIRED:
        engine_does = "as does its own engine, used instead with OLLAMA_NEW_ENGINE=1"
        if not applies:
            engine_does = f"its own engine, used instead with OLLAMA_NEW_ENGINE=1, {how}"
        return Where(
            OLD_OLLAMA,
            True,
            f"runs {architecture} with its llama.cpp runner, which reads the keys as llama.cpp does ({engine_does})",
            source,
        )
    text = f"runs {architecture} on its own engine, which {how}"
    if not applies:
        text += "; Ollama 0.30 and later run it in llama-server, as converted"
        if method == Method.YARN and engine.linear.applies:
            text += "; before 0.30, a --method linear file is applied as llama.cpp applies it"
    return Where(OLD_OLLAMA, applies, text, source)


@dataclass(frozen=True)
class RuntimeReport:
    """Where a file's scaling takes effect; for an unscaled file, where a YaRN conversion would."""

    method: Method
    from_file: bool  # False: the file is unscaled, and this is what convert's default would give
    where: list[Where]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.value,
            "of": "file" if self.from_file else "convert --method yarn",
            "where": [w.to_dict() for w in self.where],
        }


def scaling_method(rope: RopeState) -> Method | None:
    """The method the file's keys amount to now: yarn, linear, ntk (a base yarn-cli raised), else None."""
    scaling = rope.current.scaling
    if scaling.is_scaled and scaling.type in (Method.YARN.value, Method.LINEAR.value):
        return Method(scaling.type)
    if rope.base_changed and not scaling.is_scaled:
        return Method.NTK
    return None


def runtime_report(rope: RopeState) -> RuntimeReport | None:
    """For ``inspect``: None for a model without RoPE, or with a scaling of another kind (longrope)."""
    if not rope.uses_rope:
        return None
    method = scaling_method(rope)
    if method is None:
        if rope.is_scaled:
            return None
        return RuntimeReport(Method.YARN, False, where_scaling_applies(rope.architecture, Method.YARN))
    attn = rope.current.scaling.attn_factor
    wheres = where_scaling_applies(rope.architecture, method, attn_factor=attn not in (None, 1.0))
    return RuntimeReport(method, True, wheres)
