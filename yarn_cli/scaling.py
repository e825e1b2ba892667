"""What "a RoPE scaling" is, and where it lives: GGUF keys and llama.cpp parameters.

Key names come from gguf-py's ``Keys`` templates; values carry the exact GGUF
type llama.cpp checks when it loads the model (a wrong type fails the load).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
from gguf import GGUFValueType, Keys

from yarn_cli.errors import InputError
from yarn_cli.gguf_file import GGUFHeader, Value

DEFAULT_FREQ_BASE = 10000.0  # llama.cpp's default when rope.freq_base is absent


class Method(str, Enum):
    """Scaling methods ``convert`` can write."""

    YARN = "yarn"
    LINEAR = "linear"
    NTK = "ntk"
    NONE = "none"


# llama.cpp's ``llama_rope_scaling_type`` values (llama.h).
LLAMA_ROPE_SCALING_NONE = 0
LLAMA_ROPE_SCALING_LINEAR = 1
LLAMA_ROPE_SCALING_YARN = 2


def arch_key(template: str, arch: str) -> str:
    return template.format(arch=arch)


@dataclass(frozen=True)
class RopeKeys:
    """The metadata keys that describe a model's positions, for one architecture."""

    context_length: str
    freq_base: str
    dimension_count: str
    scaling_type: str
    scaling_factor: str
    original_context: str
    attn_factor: str
    finetuned: str
    beta_fast: str
    beta_slow: str

    @classmethod
    def for_arch(cls, arch: str) -> RopeKeys:
        rope = Keys.Rope
        return cls(
            context_length=arch_key(Keys.LLM.CONTEXT_LENGTH, arch),
            freq_base=arch_key(rope.FREQ_BASE, arch),
            dimension_count=arch_key(rope.DIMENSION_COUNT, arch),
            scaling_type=arch_key(rope.SCALING_TYPE, arch),
            scaling_factor=arch_key(rope.SCALING_FACTOR, arch),
            original_context=arch_key(rope.SCALING_ORIG_CTX_LEN, arch),
            attn_factor=arch_key(rope.SCALING_ATTN_FACTOR, arch),
            finetuned=arch_key(rope.SCALING_FINETUNED, arch),
            beta_fast=arch_key(rope.SCALING_YARN_BETA_FAST, arch),
            beta_slow=arch_key(rope.SCALING_YARN_BETA_SLOW, arch),
        )

    @property
    def tracked(self) -> tuple[str, ...]:
        """Every key a conversion may write; their prior state is recorded for an exact undo."""
        return (
            self.context_length,
            self.freq_base,
            self.scaling_type,
            self.scaling_factor,
            self.original_context,
            self.attn_factor,
            self.finetuned,
            self.beta_fast,
            self.beta_slow,
        )

    @property
    def scaling(self) -> tuple[str, ...]:
        """The keys that together say "this file is scaled" (cleared before a new scaling)."""
        return (
            self.scaling_type,
            self.scaling_factor,
            self.original_context,
            self.attn_factor,
            self.finetuned,
            self.beta_fast,
            self.beta_slow,
        )


def f32(x: float) -> float:
    """Round to float32, as stored in the file, so written and re-read values compare equal."""
    return float(np.float32(x))


def uint32(x: int) -> Value:
    return Value(GGUFValueType.UINT32, int(x))


def float32(x: float) -> Value:
    return Value(GGUFValueType.FLOAT32, f32(x))


def string(x: str) -> Value:
    return Value(GGUFValueType.STRING, x)


def boolean(x: bool) -> Value:
    return Value(GGUFValueType.BOOL, bool(x))


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


def scaling_from(values: dict[str, Value | None], keys: RopeKeys) -> FileScaling:
    def get(key: str) -> object:
        found = values.get(key)
        return None if found is None else found.value

    stype = get(keys.scaling_type)
    factor = get(keys.scaling_factor)
    orig = get(keys.original_context)
    attn = get(keys.attn_factor)
    return FileScaling(
        # llama.cpp: an absent type means linear, which with factor 1 (or absent) is no scaling
        type=str(stype) if stype is not None else ("linear" if factor not in (None, 0.0, 1.0) else "none"),
        factor=float(factor) if factor not in (None, 0.0) else 1.0,  # type: ignore[arg-type]
        original_context=int(orig) if orig else None,  # type: ignore[call-overload]
        attn_factor=float(attn) if attn is not None else None,  # type: ignore[arg-type]
    )


def file_scaling(header: GGUFHeader, keys: RopeKeys) -> FileScaling:
    return scaling_from({k: header.scalar(k) for k in keys.scaling}, keys)


@dataclass(frozen=True)
class RuntimeScaling:
    """llama-cpp-python ``Llama(...)`` keyword arguments that apply a scaling at load time."""

    rope_scaling_type: int
    rope_freq_scale: float = 0.0  # 0 = from the model
    rope_freq_base: float = 0.0  # 0 = from the model
    yarn_orig_ctx: int = 0  # 0 = from the model

    def as_kwargs(self) -> dict[str, float | int]:
        return {
            "rope_scaling_type": self.rope_scaling_type,
            "rope_freq_scale": self.rope_freq_scale,
            "rope_freq_base": self.rope_freq_base,
            "yarn_orig_ctx": self.yarn_orig_ctx,
        }


def runtime_yarn(factor: float, original_context: int) -> RuntimeScaling:
    return RuntimeScaling(LLAMA_ROPE_SCALING_YARN, rope_freq_scale=1.0 / factor, yarn_orig_ctx=original_context)


def runtime_linear(factor: float) -> RuntimeScaling:
    return RuntimeScaling(LLAMA_ROPE_SCALING_LINEAR, rope_freq_scale=1.0 / factor)


def runtime_ntk(freq_base: float) -> RuntimeScaling:
    return RuntimeScaling(LLAMA_ROPE_SCALING_NONE, rope_freq_base=freq_base)


def check_factor(factor: float) -> float:
    """A scale factor must be a finite number above 1 (1 would be no scaling)."""
    if not math.isfinite(factor) or factor <= 1.0:
        raise InputError(
            f"the scale factor must be a finite number above 1, got {factor:g} (to remove a scaling use --method none)"
        )
    return float(factor)
