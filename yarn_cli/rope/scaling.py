"""What "a RoPE scaling" is, in the two places it lives: GGUF keys and llama.cpp parameters.

``FileScaling`` is what a set of keys says, as llama.cpp's loader reads them;
``RuntimeScaling`` is the llama-cpp-python ``Llama(...)`` arguments that apply a
scaling when a context is created; ``ScalingOverride`` is llama.cpp's own run-time
flags (``--rope-scaling``, ``--rope-scale``...) on their way to those arguments.
Which scaling to apply to a given model is decided by its ``RopeState``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from yarn_cli.errors import InputError
from yarn_cli.gguf.values import FLOAT32_ABOVE_ONE, FLOAT32_MAX, Value, as_count, as_number, as_text, f32
from yarn_cli.rope.keys import RopeKeys


class Method(str, Enum):
    """Scaling methods ``convert`` can write.

    ``NTK_BY_PARTS`` is YaRN's per-dimension blend without its attention temperature: llama.cpp has
    no type for it, so it is written as YaRN with ``rope.scaling.attn_factor`` = 1 / (0.1 ln S + 1),
    which cancels the temperature llama.cpp applies to every YaRN file.
    """

    YARN = "yarn"
    NTK_BY_PARTS = "ntk-by-parts"
    LINEAR = "linear"
    NTK = "ntk"
    NONE = "none"


# llama.cpp's ``llama_rope_scaling_type`` values (llama.h).
LLAMA_ROPE_SCALING_UNSPECIFIED = -1
LLAMA_ROPE_SCALING_NONE = 0
LLAMA_ROPE_SCALING_LINEAR = 1
LLAMA_ROPE_SCALING_YARN = 2
SCALING_NAMES = {
    LLAMA_ROPE_SCALING_NONE: "none",
    LLAMA_ROPE_SCALING_LINEAR: "linear",
    LLAMA_ROPE_SCALING_YARN: "yarn",
}


@dataclass(frozen=True)
class FileScaling:
    """The scaling a set of keys describes, as llama.cpp will interpret it."""

    type: str
    factor: float
    original_context: int | None
    attn_factor: float | None = None

    @property
    def is_scaled(self) -> bool:
        return self.type not in ("none", "") and not (self.type == "linear" and self.factor == 1.0)

    def describe(self) -> str:
        if not self.is_scaled:
            return "none"
        text = f"{self.type} x{self.factor:g}"
        if self.original_context:
            text += f" (original context {self.original_context})"
        return text


def scaling_from(values: Mapping[str, Value | None], keys: RopeKeys) -> FileScaling:
    """The scaling the keys describe; a key whose value its meaning rules out is a ``DamagedValueError``."""

    def get(key: str) -> object:
        found = values.get(key)
        return None if found is None else found.value

    stype = as_text(keys.scaling_type, get(keys.scaling_type))
    factor = as_number(keys.scaling_factor, get(keys.scaling_factor))
    if factor is None:  # llama.cpp falls back to the legacy name
        factor = as_number(keys.scale_linear, get(keys.scale_linear))
    orig = as_count(keys.original_context, get(keys.original_context))
    return FileScaling(
        # llama.cpp: an absent type means linear, which with factor 1 (or absent) is no scaling
        type=stype if stype is not None else ("linear" if factor not in (None, 0.0, 1.0) else "none"),
        factor=factor if factor is not None and factor != 0.0 else 1.0,
        original_context=orig or None,
        attn_factor=as_number(keys.attn_factor, get(keys.attn_factor)),
    )


OverrideValue = bool | int | float | str


@dataclass(frozen=True)
class RuntimeScaling:
    """llama-cpp-python ``Llama(...)`` keyword arguments that apply a scaling at load time.

    Two forms, as llama.cpp has them: context parameters (``--rope-scaling``, ``--rope-scale``...),
    which some architectures do not apply to their sliding-window layers, and ``kv_overrides``
    (``--override-kv``), which load the model as if its file had those keys, so that the model
    runs exactly as the converted file would.
    """

    rope_scaling_type: int = LLAMA_ROPE_SCALING_UNSPECIFIED
    rope_freq_scale: float = 0.0  # 0 = from the model
    rope_freq_base: float = 0.0  # 0 = from the model
    yarn_orig_ctx: int = 0  # 0 = from the model
    kv_overrides: tuple[tuple[str, OverrideValue], ...] = ()

    @property
    def scales(self) -> bool:
        """Whether it asks llama.cpp to interpolate positions (a RoPE-less model cannot)."""
        if self.rope_scaling_type in (LLAMA_ROPE_SCALING_LINEAR, LLAMA_ROPE_SCALING_YARN):
            return True
        overrides = dict(self.kv_overrides)
        return any(k.endswith(".rope.scaling.type") and v in ("linear", "yarn") for k, v in overrides.items()) or any(
            k.endswith(".rope.freq_base") for k in overrides
        )

    def as_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {
            "rope_scaling_type": self.rope_scaling_type,
            "rope_freq_scale": self.rope_freq_scale,
            "rope_freq_base": self.rope_freq_base,
            "yarn_orig_ctx": self.yarn_orig_ctx,
        }
        if self.kv_overrides:
            kwargs["kv_overrides"] = dict(self.kv_overrides)
        return kwargs

    def flags(self) -> str:
        """The same load as llama.cpp command-line flags."""
        parts = []
        if self.rope_scaling_type in SCALING_NAMES:
            parts.append(f"--rope-scaling {SCALING_NAMES[self.rope_scaling_type]}")
        if self.rope_freq_scale:
            parts.append(f"--rope-scale {1 / self.rope_freq_scale:g}")
        if self.rope_freq_base:
            parts.append(f"--rope-freq-base {self.rope_freq_base:g}")
        if self.yarn_orig_ctx:
            parts.append(f"--yarn-orig-ctx {self.yarn_orig_ctx}")
        for key, value in self.kv_overrides:
            kind = (
                "bool"
                if isinstance(value, bool)
                else "int"
                if isinstance(value, int)
                else "float"
                if isinstance(value, float)
                else "str"
            )
            shown = str(value).lower() if isinstance(value, bool) else f"{value:.9g}" if kind == "float" else value
            parts.append(f"--override-kv {key}={kind}:{shown}")
        return " ".join(parts)


@dataclass(frozen=True)
class ScalingOverride:
    """Run-time scaling flags, named as llama.cpp's (``--rope-scaling``, ``--rope-scale``...)."""

    rope_scaling: str | None = None  # none, linear, yarn
    rope_scale: float | None = None
    yarn_orig_ctx: int | None = None
    rope_freq_base: float | None = None

    def to_runtime(self) -> RuntimeScaling | None:
        """The llama.cpp arguments; None when no flag was given (the file's own scaling applies)."""
        if self == ScalingOverride():
            return None
        kinds = {v: k for k, v in SCALING_NAMES.items()}
        if self.rope_scaling is not None and self.rope_scaling not in kinds:
            raise InputError(f"--rope-scaling must be one of none, linear, yarn; got {self.rope_scaling!r}")
        if self.rope_scale is not None:  # llama.cpp takes 1/scale and the base as float32
            check_positive(self.rope_scale, "--rope-scale")
            check_positive(1.0 / self.rope_scale, "1 / --rope-scale")
        if self.yarn_orig_ctx is not None and self.yarn_orig_ctx <= 0:
            raise InputError(f"--yarn-orig-ctx must be a positive number of tokens, got {self.yarn_orig_ctx}")
        if self.rope_freq_base is not None:
            check_positive(self.rope_freq_base, "--rope-freq-base")
        return RuntimeScaling(
            rope_scaling_type=kinds[self.rope_scaling]
            if self.rope_scaling is not None
            else LLAMA_ROPE_SCALING_UNSPECIFIED,
            rope_freq_scale=1.0 / self.rope_scale if self.rope_scale else 0.0,
            rope_freq_base=self.rope_freq_base or 0.0,
            yarn_orig_ctx=self.yarn_orig_ctx or 0,
        )


# The largest context a GGUF file can state: context_length is a uint32.
MAX_CONTEXT = 2**32 - 1


def check_context(tokens: int, option: str) -> int:
    """A context given by the user: a positive number of tokens that a GGUF uint32 can hold."""
    if not 0 < tokens <= MAX_CONTEXT:
        raise InputError(f"{option} must be a number of tokens between 1 and {MAX_CONTEXT:,}, got {tokens:,}")
    return tokens


def check_positive(value: float, option: str, what: str = "a positive number") -> float:
    """A positive number for a float32 key: finite and above 0, and still so once stored as float32."""
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{option} must be {what}, got {value:g}")
    stored = f32(value)
    if not math.isfinite(stored):
        raise InputError(
            f"{option} {value:g} is more than a GGUF float32 can hold ({FLOAT32_MAX:.7g}); give a smaller number"
        )
    if stored == 0:
        raise InputError(f"{option} {value:g} is 0 once stored as a GGUF float32; give a larger number")
    return value


def check_betas(beta_fast: float, beta_slow: float) -> None:
    """YaRN's ramp runs from pairs turning beta_fast times in the original context down to beta_slow times."""
    for name, beta in (("--beta-fast", beta_fast), ("--beta-slow", beta_slow)):
        check_positive(beta, name, "a positive number of rotations")
    if f32(beta_fast) <= f32(beta_slow):
        raise InputError(
            f"--beta-fast ({beta_fast:g}) must be larger than --beta-slow ({beta_slow:g}): YaRN keeps the pairs that "
            "turn more than beta_fast times and interpolates those that turn less than beta_slow times"
        )


def check_factor(factor: float, option: str = "--factor") -> float:
    """A scale factor must be a finite number above 1 (1 would be no scaling), and stay so as a float32."""
    if not math.isfinite(factor) or factor <= 1.0:
        raise InputError(
            f"the scale factor must be a finite number above 1, got {factor:g} (to remove a scaling use --method none)"
        )
    stored = f32(factor)
    if not math.isfinite(stored):
        raise InputError(
            f"{option} {factor:g} is more than a GGUF float32 can hold ({FLOAT32_MAX:.7g}); give a smaller factor"
        )
    if stored <= 1.0:
        raise InputError(
            f"{option} {factor!r} is 1 once stored as a GGUF float32, which is no scaling; "
            f"give {FLOAT32_ABOVE_ONE:.8g} or more"
        )
    return float(factor)
