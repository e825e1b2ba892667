"""Scalings applied at run time, for comparing methods on the same trials without writing files.

The YaRN paper's methods, each over the model's original state: ``none``, ``linear:S`` (PI),
``ntk:S`` (NTK-aware), ``ntk-by-parts:S`` (YaRN's per-dimension blend without its attention
temperature), ``yarn:S`` (and ``yarn:S@F``, its attention factor times F, the file key
``convert --attn-factor F`` writes), and its Dynamic Scaling, per length with S = max(1, length /
native context): ``dynamic-yarn`` and ``dynamic-ntk``. ``as-is`` keeps the file's own scaling.
Taken over the original state, a file yarn-cli converted gives the same figures as the file
it came from; ``yarn:S`` on a model that came with YaRN multiplies its factor, as ``convert``
does (``ntk-by-parts`` and ``dynamic-ntk`` are refused there: that model's YaRN is not theirs
to replace).
"""

from __future__ import annotations

from dataclasses import dataclass

from yarn_cli.errors import InputError, UnsupportedModelError
from yarn_cli.gguf.values import FLOAT32_ABOVE_ONE, f32
from yarn_cli.rope.scaling import MAX_CONTEXT, Method, RuntimeScaling
from yarn_cli.rope.state import RopeState

FACTOR_METHODS = ("yarn", "linear", "ntk", "ntk-by-parts")
DYNAMIC_METHODS = ("dynamic-yarn", "dynamic-ntk")
PLAIN_METHODS = ("as-is", "none", *DYNAMIC_METHODS)
NAMES = "as-is, none, yarn:S, yarn:S@F, linear:S, ntk:S, ntk-by-parts:S, dynamic-yarn or dynamic-ntk"


@dataclass(frozen=True)
class Variant:
    method: str
    factor: float | None = None
    attn_factor: float | None = None  # yarn:S@F: YaRN's rope.scaling.attn_factor key, as convert --attn-factor F

    @property
    def name(self) -> str:
        name = self.method if self.factor is None else f"{self.method}:{self.factor:g}"
        return name if self.attn_factor is None else f"{name}@{self.attn_factor:g}"

    @property
    def scales(self) -> bool:
        return self.method not in ("as-is", "none")

    @property
    def dynamic(self) -> bool:
        """Its scaling depends on the length: lengths with equal runtimes share a session."""
        return self.method in DYNAMIC_METHODS

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
        if self.method == "dynamic-ntk":
            return dynamic_ntk(length, rope)
        assert self.factor is not None
        return rope.runtime(Method(self.method), self.factor, attn_factor=self.attn_factor)


def dynamic_ntk(length: int, rope: RopeState) -> RuntimeScaling:
    """The paper's Dynamic NTK: NTK-aware with s = max(1, length / native), so the unscaled model up to native.

    Every length gets base' = base * s^(d/(d-2)) over the original base, exactly ``ntk:s``.
    Hugging Face transformers' ``dynamic`` rope type is another formula: base' = base *
    ((factor * seq_len / max_pos) - (factor - 1))^(d/(d-2)) for seq_len > max_pos, a configured
    factor included, which at seq_len = factor * max_pos gives base * (factor^2 - factor + 1)^(d/(d-2)),
    not ``ntk:factor``. yarn-cli offers only the paper's.
    """
    check_dynamic_ntk(rope, "dynamic-ntk")
    factor = length / (rope.native_context or length)
    if factor <= 1:
        return rope.runtime(Method.NONE)
    return rope.runtime(Method.NTK, factor)


def check_dynamic_ntk(rope: RopeState, what: str) -> None:
    if rope.trained_yarn:
        raise UnsupportedModelError(
            f"{what}: the model came with YaRN x{rope.trained_yarn:g}; NTK-aware scaling would replace the "
            "YaRN it was trained with, at every length; use dynamic-yarn, which keeps it"
        )


def parse_variant(text: str) -> Variant:
    value = text.strip().lower()
    if value in PLAIN_METHODS:
        return Variant(value)
    method, _, factor_text = value.partition(":")
    factor_text, at, attn_text = factor_text.partition("@")
    attn = None
    if at:
        try:
            attn = float(attn_text)
        except ValueError:
            attn = float("nan")
        if method != "yarn" or not 0 < attn < float("inf") or f32(attn) == 0:
            raise InputError(
                f"cannot read the variant {text!r}: @F sets YaRN's attention factor, yarn:S@F with F a number above 0"
            )
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
            return Variant(method, factor, attn)
    raise InputError(f"cannot read the variant {text!r}: use {NAMES} (S > 1)")


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
    for variant in variants:  # before any work: these are undefined on some models
        if variant.method == "ntk-by-parts":
            rope.check_ntk_by_parts(f"--compare {variant.name}")
        elif variant.method == "dynamic-ntk":
            check_dynamic_ntk(rope, "--compare dynamic-ntk")
    return variants
