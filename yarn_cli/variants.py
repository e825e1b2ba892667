"""Scalings applied at run time, for comparing methods on the same trials without writing files.

``as-is`` (the file's own), ``none``, ``yarn:S``, ``linear:S``, ``ntk:S`` and ``dynamic-yarn``
(the paper's Dynamic Scaling: per length, YaRN with S = max(1, length / original context)).
"""

from __future__ import annotations

from dataclasses import dataclass

from yarn_cli.errors import InputError, UnsupportedModelError
from yarn_cli.model_info import ModelInfo
from yarn_cli.rope import ntk_freq_base
from yarn_cli.scaling import LLAMA_ROPE_SCALING_NONE, RuntimeScaling, runtime_linear, runtime_yarn

FACTOR_METHODS = ("yarn", "linear", "ntk")
PLAIN_METHODS = ("as-is", "none", "dynamic-yarn")


@dataclass(frozen=True)
class Variant:
    method: str
    factor: float | None = None

    @property
    def name(self) -> str:
        return self.method if self.factor is None else f"{self.method}:{self.factor:g}"

    @property
    def scales(self) -> bool:
        return self.method not in ("as-is", "none")

    def runtime(self, length: int, info: ModelInfo) -> RuntimeScaling | None:
        """llama.cpp parameters for a context of ``length`` tokens; None keeps the file's own scaling."""
        original = info.original_context or length
        if self.method == "as-is":
            return None
        if self.method == "none":
            return RuntimeScaling(LLAMA_ROPE_SCALING_NONE)
        if self.method == "dynamic-yarn":
            factor = max(1.0, length / original)
            return runtime_yarn(factor, original) if factor > 1 else RuntimeScaling(LLAMA_ROPE_SCALING_NONE)
        assert self.factor is not None
        if self.method == "yarn":
            return runtime_yarn(self.factor, original)
        if self.method == "linear":
            return runtime_linear(self.factor)
        if not info.rope_dims:
            raise UnsupportedModelError("the rotary dimension count is unknown; ntk needs it")
        base = ntk_freq_base(info.freq_base, self.factor, info.rope_dims)
        return RuntimeScaling(LLAMA_ROPE_SCALING_NONE, rope_freq_base=base)


def parse_variant(text: str) -> Variant:
    value = text.strip().lower()
    if value in PLAIN_METHODS:
        return Variant(value)
    method, _, factor_text = value.partition(":")
    if method in FACTOR_METHODS and factor_text:
        try:
            factor = float(factor_text)
        except ValueError:
            factor = float("nan")
        if factor > 1 and factor < float("inf"):
            return Variant(method, factor)
    raise InputError(
        f"cannot read the variant {text!r}: use as-is, none, yarn:S, linear:S, ntk:S or dynamic-yarn (S > 1)"
    )


def parse_variants(text: str, info: ModelInfo) -> list[Variant]:
    variants: list[Variant] = []
    for part in text.split(","):
        if part.strip():
            variant = parse_variant(part)
            if variant not in variants:
                variants.append(variant)
    if not variants:
        raise InputError("--compare is empty: give variants such as as-is,yarn:2")
    scaled = [v.name for v in variants if v.scales]
    if scaled and not info.uses_rope:
        raise UnsupportedModelError(
            f"{info.architecture} models use {info.no_rope_reason}, not RoPE: {', '.join(scaled)} cannot apply"
        )
    return variants
