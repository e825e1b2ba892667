"""Scalings applied at run time, for comparing methods on the same trials without writing files.

``as-is`` (the file's own), ``none``, ``yarn:S``, ``linear:S``, ``ntk:S`` and ``dynamic-yarn``
(the paper's Dynamic Scaling: per length, YaRN with S = max(1, length / native context)).
All but ``as-is`` are taken over the model's original state, so a file yarn-cli converted
gives the same figures as the file it came from; ``yarn:S`` on a model that came with YaRN
multiplies its factor, as ``convert`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from yarn_cli.errors import InputError, UnsupportedModelError
from yarn_cli.gguf.values import FLOAT32_ABOVE_ONE, f32
from yarn_cli.rope.scaling import MAX_CONTEXT, Method, RuntimeScaling
from yarn_cli.rope.state import RopeState

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

    def runtime(self, length: int, rope: RopeState) -> RuntimeScaling | None:
        """llama.cpp arguments for a context of ``length`` tokens; None keeps the file's own scaling."""
        if self.method == "as-is":
            return None
        if self.method == "none":
            return rope.runtime(Method.NONE)
        if self.method == "dynamic-yarn":
            factor = max(1.0, length / (rope.native_context or length))
            if factor == 1 and not rope.trained_yarn:
                return rope.runtime(Method.NONE)
            return rope.runtime(Method.YARN, factor)  # a model that came with YaRN keeps it at short lengths
        assert self.factor is not None
        return rope.runtime(Method(self.method), self.factor)


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
            if f32(factor) <= 1.0:
                raise InputError(
                    f"--compare {text.strip()}: the factor is 1 once stored as a GGUF float32, which is no "
                    f"scaling; give {FLOAT32_ABOVE_ONE:.8g} or more"
                )
            return Variant(method, factor)
    raise InputError(
        f"cannot read the variant {text!r}: use as-is, none, yarn:S, linear:S, ntk:S or dynamic-yarn (S > 1)"
    )


def _check_context(variant: Variant, text: str, rope: RopeState) -> None:
    """The context a factor variant scales to must be one a GGUF file can state, as ``convert`` requires."""
    if variant.factor is None:
        return
    extends = variant.method == "yarn" and rope.trained_yarn is not None
    base = (rope.native_context if extends else None) or rope.trained_context
    if base and variant.factor * base > MAX_CONTEXT:
        raise InputError(
            f"--compare {text.strip()} scales the {base:,}-token context beyond what a GGUF file can state "
            f"({MAX_CONTEXT:,} tokens); give a smaller factor"
        )


def parse_variants(text: str, rope: RopeState) -> list[Variant]:
    variants: list[Variant] = []
    for part in text.split(","):
        if part.strip():
            variant = parse_variant(part)
            _check_context(variant, part, rope)
            if variant not in variants:
                variants.append(variant)
    if not variants:
        raise InputError("--compare is empty: give variants such as as-is,yarn:2")
    scaled = [v.name for v in variants if v.scales]
    if scaled and not rope.uses_rope:
        raise UnsupportedModelError(
            f"{rope.architecture} models use {rope.no_rope_reason}, not RoPE: {', '.join(scaled)} cannot apply"
        )
    return variants
