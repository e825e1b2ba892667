"""A model's RoPE state: what its keys say now, and what they said before yarn-cli changed them.

yarn-cli's conversions never compound: the first one records the tracked keys as they
were, as JSON under ``yarn_cli.original``. Everything that scales a model (``convert``,
``inspect``'s YaRN view, the evaluation variants, ``chat --yarn auto``) starts from the
original state that record describes, not from the keys an earlier conversion wrote:
``yarn:2`` on a file converted with ``--method ntk`` is YaRN x2 over the original base
and context, not over the raised ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property

from gguf import GGUFValueType

from yarn_cli.errors import InputError, UnsupportedModelError
from yarn_cli.gguf.header import GGUFHeader
from yarn_cli.gguf.values import (
    DAMAGED,
    DamagedValueError,
    Value,
    as_count,
    as_number,
    f32,
    float32,
    shown,
    string,
    uint32,
)
from yarn_cli.rope.architectures import DEFAULT_BETA_FAST_BY_ARCH, DEFAULT_WINDOW, NO_ROPE_ARCHS
from yarn_cli.rope.frequencies import DEFAULT_BETA_FAST, DEFAULT_BETA_SLOW, ntk_freq_base, temperature_cancel
from yarn_cli.rope.keys import DEFAULT_FREQ_BASE, RECORD_KEY, RopeKeys
from yarn_cli.rope.scaling import FileScaling, Method, OverrideValue, RuntimeScaling, scaling_from

Values = dict[str, Value | None]

# Tensors that rescale RoPE per dimension, as llama.cpp names them.
FACTOR_TENSORS = ("rope_freqs", "rope_factors_long", "rope_factors_short")


def same_type(old: Value | None, new: Value) -> Value:
    """``new``'s value in the type the file already used for the key, so llama.cpp's type check still passes.

    Where that type cannot hold the value (a context of 131,072 in a UINT16), ``new``'s own type: the
    type llama.cpp reads the key as.
    """
    if old is None:
        return new
    kept = Value(old.type, new.value)
    return kept if kept.holds_exactly() else new


def override_value(value: Value) -> OverrideValue:
    """A key's value as llama.cpp's ``--override-kv`` takes it (bool, int, float or str)."""
    raw = value.value
    if value.type == GGUFValueType.BOOL:
        return bool(raw)
    if value.type == GGUFValueType.STRING:
        return str(raw)
    if value.type in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return float(raw)  # type: ignore[arg-type]
    return int(raw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RopeParams:
    """Context, base and scaling, as one set of keys describes them to llama.cpp."""

    context_length: int | None
    freq_base: float
    scaling: FileScaling

    @property
    def trained_context(self) -> int | None:
        """The context the model was trained with (YaRN's L): original_context_length, else context_length."""
        return self.scaling.original_context or self.context_length


def rope_params(values: Mapping[str, Value | None], keys: RopeKeys) -> RopeParams:
    """What the keys say; a key whose value its meaning rules out is a ``DamagedValueError``."""
    context = values.get(keys.context_length)
    base = values.get(keys.freq_base)
    freq_base = None if base is None else as_number(keys.freq_base, base.value)
    return RopeParams(
        context_length=None if context is None else as_count(keys.context_length, context.value),
        freq_base=DEFAULT_FREQ_BASE if freq_base is None else freq_base,
        scaling=scaling_from(values, keys),
    )


@dataclass(frozen=True)
class RopeState:
    """The positions of one model file: its keys now and, for a converted file, before."""

    architecture: str
    keys: RopeKeys
    dims: int | None  # rotary dimensions (rope.dimension_count, else the head size, as llama.cpp)
    current_values: Values  # every tracked key as it is now (None: absent)
    record: OriginalKeys | None  # yarn-cli's undo record, None for a file it has not converted
    # What else shapes llama.cpp's rotation, never written by yarn-cli:
    factor_tensors: tuple[str, ...] = ()  # rope_freqs (Llama 3), rope_factors_long/short (Phi-3 longrope)
    window: int | None = None  # sliding window in tokens: attention.sliding_window, or llama.cpp's default
    freq_base_swa: float | None = None  # the sliding-window layers' own base
    yarn_log_multiplier: float | None = None  # DeepSeek's mscale_all_dim, for llama.cpp's YaRN temperature

    @cached_property
    def original_values(self) -> Values:
        """Every tracked key as it was before yarn-cli's first conversion (as it is, for an unconverted file)."""
        if self.record is None:
            return self.current_values
        return {k: self.record.values.get(k) for k in self.keys.tracked}

    @cached_property
    def current(self) -> RopeParams:
        return rope_params(self.current_values, self.keys)

    @cached_property
    def original(self) -> RopeParams:
        """The same as ``current`` for a file yarn-cli has not converted."""
        return rope_params(self.original_values, self.keys)

    @property
    def factor_tensor_names(self) -> list[str]:
        """The factor tensors by name, without the ``.weight`` suffix, as inspect and its JSON show them."""
        return sorted({name.split(".")[0] for name in self.factor_tensors})

    @property
    def longrope_factors(self) -> bool:
        """Phi-3-style per-dimension factors: llama.cpp uses the long ones above the original context."""
        return any(name.startswith("rope_factors_long") for name in self.factor_tensors)

    @property
    def rope_freqs(self) -> bool:
        """Llama 3-style per-dimension frequency divisors, applied under any scaling."""
        return any(name.startswith("rope_freqs") for name in self.factor_tensors)

    @property
    def uses_rope(self) -> bool:
        return self.architecture not in NO_ROPE_ARCHS

    @property
    def no_rope_reason(self) -> str | None:
        return NO_ROPE_ARCHS.get(self.architecture)

    @property
    def converted(self) -> bool:
        return self.record is not None

    @property
    def trained_context(self) -> int | None:
        """YaRN's original context L, from the original state."""
        return self.original.trained_context

    @property
    def native_context(self) -> int | None:
        """The context the file offered before yarn-cli changed it: what "S times longer" is measured against."""
        return self.original.context_length

    @property
    def trained_yarn(self) -> float | None:
        """The YaRN factor the file itself came with (DeepSeek, Mistral Small 3.x, gpt-oss...), else None.

        yarn-cli extends such a model by multiplying that factor, over the same original context,
        rather than replacing it: YaRN x4 on a YaRN x40 model is x160.
        """
        scaling = self.original.scaling
        return scaling.factor if scaling.type == "yarn" and scaling.factor > 1 else None

    @property
    def base_changed(self) -> bool:
        """yarn-cli changed the RoPE base (NTK-aware scaling); a NaN base compares equal to itself here."""
        now, before = self.current.freq_base, self.original.freq_base
        return now != before and not (math.isnan(now) and math.isnan(before))

    @property
    def is_scaled(self) -> bool:
        """The file's keys scale its positions: a scaling it carries, or a base yarn-cli raised."""
        return self.current.scaling.is_scaled or self.longrope_factors or self.base_changed

    def describe_scaling(self) -> str:
        """The current scaling in words, counting Phi-3's longrope tensors, which no key announces."""
        scaling = self.current.scaling
        if scaling.type == "longrope" or (self.longrope_factors and not scaling.is_scaled):
            return f"longrope (factor tensors; original context {self.trained_context})"
        return scaling.describe()

    def auto_factor(self, n_ctx: int) -> float | None:
        """``--yarn auto``: the YaRN factor that stretches an unscaled model to ``n_ctx``, None if none is needed."""
        native = self.trained_context
        if self.is_scaled or not self.uses_rope or not native or n_ctx <= native:
            return None
        return n_ctx / native

    def unconverted(self) -> RopeState:
        """The state of the file as it was before yarn-cli converted it."""
        return replace(self, current_values=self.original_values, record=None)

    def unscaled_values(self) -> Values:
        """The original keys with every scaling taken out: the trained context, plain RoPE."""
        target = dict(self.original_values)
        for k in self.keys.scaling:
            target[k] = None
        native = self.original.scaling.original_context
        if native:
            target[self.keys.context_length] = same_type(target.get(self.keys.context_length), uint32(native))
        return target

    def scaled_values(
        self,
        method: Method,
        factor: float,
        original_context: int,
        context_length: int,
        *,
        extends: bool = False,
        extra: Mapping[str, Value] | None = None,
    ) -> Values:
        """The tracked keys of the original state scaled by ``method`` x ``factor`` (the total factor).

        ``extends`` keeps a trained YaRN's own keys (attention factor, betas); ``extra`` sets more
        keys (YaRN's options). Values keep the types the file already used.
        """
        keys = self.keys
        original = self.original_values
        target = dict(original)
        if not extends:
            for k in keys.scaling:
                # Phi-3's attention factor belongs with its longrope tensors, which stay in the file
                if not (k == keys.attn_factor and self.longrope_factors):
                    target[k] = None
        target[keys.context_length] = same_type(original.get(keys.context_length), uint32(context_length))
        if method in (Method.YARN, Method.NTK_BY_PARTS):
            target[keys.scaling_type] = same_type(original.get(keys.scaling_type), string("yarn"))
            target[keys.scaling_factor] = same_type(original.get(keys.scaling_factor), float32(factor))
            target[keys.original_context] = same_type(original.get(keys.original_context), uint32(original_context))
            target.update(extra or {})
            if method == Method.NTK_BY_PARTS:  # YaRN whose temperature the attention factor cancels
                kept = target.get(keys.attn_factor)  # Phi-3's, kept with its longrope tensors
                cancel = temperature_cancel(factor) * (1.0 if kept is None else float(kept.value))  # type: ignore[arg-type]
                target[keys.attn_factor] = same_type(kept, float32(cancel))
        elif method == Method.LINEAR:
            target[keys.scaling_type] = string("linear")
            target[keys.scaling_factor] = float32(factor)
        elif method == Method.NTK:
            target[keys.freq_base] = same_type(original.get(keys.freq_base), float32(self.ntk_base(factor)))
        elif method == Method.NONE:
            return self.unscaled_values()
        return target

    def runtime(
        self,
        method: Method,
        factor: float = 1.0,
        *,
        original_context: int | None = None,
        attn_factor: float | None = None,
    ) -> RuntimeScaling:
        """Load arguments that run this file as ``convert`` would write the original state scaled by ``method``.

        The model is loaded with the keys that conversion would write (llama.cpp's key overrides),
        not with context flags, so every layer is scaled as in the converted file: some
        architectures keep their sliding-window layers out of the flags' reach (see
        ``rope.architectures``). ``Method.NONE`` is no scaling at all. YaRN on a model that came
        with YaRN multiplies its factor (see ``trained_yarn``); ``original_context`` overrides L;
        ``attn_factor`` is YaRN's ``rope.scaling.attn_factor`` key, as ``convert --attn-factor`` writes it.
        """
        self.check_keys()
        if method == Method.NONE:
            return self.overrides_for(self.unscaled_values())
        if method == Method.NTK_BY_PARTS:
            self.check_ntk_by_parts("ntk-by-parts")
        orig_ctx = original_context or self.trained_context
        if not orig_ctx:
            raise UnsupportedModelError(f"the file has no {self.keys.context_length}; its trained context is unknown")
        extends = method == Method.YARN and self.trained_yarn is not None
        if extends:
            total = factor * (self.trained_yarn or 1.0)
            context_length = round(factor * (self.native_context or orig_ctx))
        else:
            total, context_length = factor, round(factor * orig_ctx)
        extra = {self.keys.attn_factor: float32(attn_factor)} if attn_factor is not None else None
        return self.overrides_for(
            self.scaled_values(method, total, orig_ctx, context_length, extends=extends, extra=extra)
        )

    def check_ntk_by_parts(self, what: str, yarn: str = "yarn:S", *, force: bool | None = None) -> None:
        """NTK-by-parts is YaRN's blend on a model trained without a temperature; refused where it is undefined.

        A model that came with YaRN was trained with YaRN's temperature: taking it out is not the
        paper's NTK-by-parts of anything (``force``, where given: convert's, which replaces the
        trained YaRN, as with linear and ntk). With DeepSeek's yarn_log_multiplier llama.cpp computes another
        temperature, which 1 / (0.1 ln S + 1) does not cancel.
        """
        if self.trained_yarn and not force:
            raise UnsupportedModelError(
                f"{what}: the model came with YaRN x{self.trained_yarn:g} and was trained with its attention "
                f"temperature, so YaRN without it (NTK-by-parts) is not defined on it; use {yarn}, which extends "
                "the model's own YaRN" + ("" if force is None else ", or --force to replace it")
            )
        if self.yarn_log_multiplier:
            raise UnsupportedModelError(
                f"{what}: the file sets {self.keys.yarn_log_multiplier} (DeepSeek's attention scaling), under which "
                "llama.cpp computes a temperature that rope.scaling.attn_factor = 1 / (0.1 ln S + 1) does not "
                f"cancel; use {yarn}"
            )

    def as_it_came(self) -> RuntimeScaling:
        """Load arguments that run this file as it was before yarn-cli converted it (its own scaling kept)."""
        return self.overrides_for(self.original_values)

    def overrides_for(self, target: Mapping[str, Value | None]) -> RuntimeScaling:
        """llama.cpp key overrides that make this file load as if its tracked keys were ``target``.

        An override cannot remove a key: a key the target lacks gets the value llama.cpp
        assumes when the key is absent.
        """
        keys = self.keys
        neutral: dict[str, OverrideValue] = {
            keys.scaling_type: "none",
            keys.scaling_factor: 0.0,  # llama.cpp: 0, like an absent factor, is no scaling
            keys.scale_linear: 0.0,
            keys.attn_factor: 1.0,
            keys.finetuned: False,
            keys.beta_fast: DEFAULT_BETA_FAST_BY_ARCH.get(self.architecture, DEFAULT_BETA_FAST),
            keys.beta_slow: DEFAULT_BETA_SLOW,
            keys.freq_base: DEFAULT_FREQ_BASE,
        }
        overrides: list[tuple[str, OverrideValue]] = []
        for key in keys.tracked:
            wanted, now = target.get(key), self.current_values.get(key)
            if wanted == now:
                continue
            if wanted is not None:
                overrides.append((key, override_value(wanted)))
            elif key == keys.original_context:  # llama.cpp's default: the context length
                context = target.get(keys.context_length)
                if context is not None:
                    overrides.append((key, int(context.value)))  # type: ignore[call-overload]
            elif key in neutral:
                overrides.append((key, neutral[key]))
        return RuntimeScaling(kv_overrides=tuple(overrides))

    def ntk_base(self, factor: float) -> float:
        """The NTK-aware base for ``factor`` over the original base, as stored in a file (float32)."""
        if not self.dims or self.dims <= 2:
            raise UnsupportedModelError("the rotary dimension count is unknown; NTK scaling needs it")
        try:
            base = f32(ntk_freq_base(self.original_base(), factor, self.dims))
        except OverflowError:
            base = math.inf
        if not math.isfinite(base):
            raise InputError(
                f"NTK-aware x{factor:g} would raise {self.keys.freq_base} beyond what a GGUF float32 holds; "
                "give a smaller factor"
            )
        return base

    def check_keys(self) -> None:
        """The original keys a scaling is computed from, or written back with: numbers that make sense.

        A NaN base or an infinite factor reads fine (``inspect`` shows it) but nothing is computed or
        written from it; each is one error naming the key and its value.
        """
        self.original_base()
        keys, values = self.keys, self.original_values
        rules = (  # key, whether 0 is allowed (a factor of 0 is llama.cpp's "no scaling"), the rule
            (keys.scaling_factor, True, "a scaling factor must be a finite number, 0 or more"),
            (keys.scale_linear, True, "a scaling factor must be a finite number, 0 or more"),
            (keys.attn_factor, False, "an attention factor must be a finite number above 0"),
            (keys.beta_fast, False, "YaRN's beta_fast must be a finite number above 0"),
            (keys.beta_slow, False, "YaRN's beta_slow must be a finite number above 0"),
        )
        for key, zero_ok, rule in rules:
            found = values.get(key)
            number = None if found is None else as_number(key, found.value)
            if number is not None and not (math.isfinite(number) and (number > 0 or (zero_ok and number == 0))):
                raise UnsupportedModelError(f"{key} is {number:g}; {rule} {DAMAGED}")

    def original_base(self) -> float:
        """The original RoPE base, checked: the frequency math needs a finite base above 1."""
        base = self.original.freq_base
        if not (math.isfinite(base) and base > 1):
            raise UnsupportedModelError(
                f"{self.keys.freq_base} is {base:g}; a RoPE base must be a number above 1 {DAMAGED}"
            )
        return base


@dataclass(frozen=True)
class OriginalKeys:
    """yarn-cli's undo record: every tracked key as it was before the first conversion, and where it stood."""

    values: Values  # None: the key was absent
    positions: dict[str, int] | None  # each present key's index among the header's keys (None: an older record)


def read_record(header: GGUFHeader) -> OriginalKeys | None:
    """yarn-cli's undo record in ``header``, or None for a file it has not converted."""
    raw = header.get(RECORD_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        values = {k: None if v is None else Value.from_json(v) for k, v in data.items()}
        present = {k: v for k, v in data.items() if v is not None}
        indexed = all("index" in v for v in present.values())
        positions = {k: int(v["index"]) for k, v in present.items()} if indexed else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnsupportedModelError(
            f"{header.path}: the {RECORD_KEY} key is damaged ({exc}); yarn-cli cannot tell what the "
            "file had before it was converted"
        ) from exc
    return OriginalKeys(values, positions)


def record_json(header: GGUFHeader, keys: RopeKeys) -> str:
    """The undo record's text for a file about to be converted: each tracked key's type, value and index."""
    index = {k: i for i, k in enumerate(header.fields)}
    entries: dict[str, object] = {}
    for k in keys.tracked:
        value = header.scalar(k)
        entries[k] = None if value is None else {**value.to_json(), "index": index[k]}
    return json.dumps(entries, sort_keys=False)


def rope_state(header: GGUFHeader, architecture: str, dims: int | None) -> RopeState:
    """The state of ``header``'s model; ``dims`` is its rotary dimension count as llama.cpp derives it.

    Every key is read here, once: a value its meaning rules out (text for a number, a negative
    context...) is a ``DamagedValueError`` now, not an exception in whatever uses it later.
    """
    keys = RopeKeys.for_arch(architecture)
    for key in keys.tracked:
        found = header.fields.get(key)
        if found is not None and found.is_array:
            raise DamagedValueError(key, found.value, "a single value")
    window = as_count(keys.sliding_window, header.get(keys.sliding_window), per_layer=True)  # per layer: the widest
    state = RopeState(
        architecture=architecture,
        keys=keys,
        dims=dims,
        current_values={k: header.scalar(k) for k in keys.tracked},
        record=read_record(header),
        factor_tensors=tuple(t.name for t in header.tensors if t.name.split(".")[0] in FACTOR_TENSORS),
        # the file's window, else the one llama.cpp assumes for the architecture
        window=window if window else DEFAULT_WINDOW.get(architecture),
        freq_base_swa=as_number(keys.freq_base_swa, header.get(keys.freq_base_swa)),
        yarn_log_multiplier=as_number(keys.yarn_log_multiplier, header.get(keys.yarn_log_multiplier)),
    )
    _ = state.current  # the keys as they are now
    try:
        _ = state.original  # as the undo record has them
    except DamagedValueError as exc:
        raise UnsupportedModelError(
            f"{header.path}: the {RECORD_KEY} key is damaged (it records {exc.key} as {shown(exc.raw)}); yarn-cli "
            "cannot tell what the file had before it was converted"
        ) from exc
    return state
