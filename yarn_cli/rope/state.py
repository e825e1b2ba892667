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

from yarn_cli.errors import UnsupportedModelError
from yarn_cli.gguf.header import GGUFHeader
from yarn_cli.gguf.values import Value, f32
from yarn_cli.rope.architectures import NO_ROPE_ARCHS
from yarn_cli.rope.frequencies import ntk_freq_base
from yarn_cli.rope.keys import DEFAULT_FREQ_BASE, RECORD_KEY, RopeKeys
from yarn_cli.rope.scaling import (
    LLAMA_ROPE_SCALING_LINEAR,
    LLAMA_ROPE_SCALING_NONE,
    LLAMA_ROPE_SCALING_YARN,
    FileScaling,
    Method,
    RuntimeScaling,
    scaling_from,
)

Values = dict[str, Value | None]


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
    context = values.get(keys.context_length)
    base = values.get(keys.freq_base)
    return RopeParams(
        context_length=int(context.value) if context is not None else None,
        freq_base=float(base.value) if base is not None else DEFAULT_FREQ_BASE,
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
    def is_scaled(self) -> bool:
        """The file's keys scale its positions: a scaling it carries, or a base yarn-cli raised."""
        return self.current.scaling.is_scaled or self.current.freq_base != self.original.freq_base

    def auto_factor(self, n_ctx: int) -> float | None:
        """``--yarn auto``: the YaRN factor that stretches an unscaled model to ``n_ctx``, None if none is needed."""
        native = self.trained_context
        if self.is_scaled or not self.uses_rope or not native or n_ctx <= native:
            return None
        return n_ctx / native

    def unconverted(self) -> RopeState:
        """The state of the file as it was before yarn-cli converted it."""
        return replace(self, current_values=self.original_values, record=None)

    def runtime(self, method: Method, factor: float = 1.0, *, original_context: int | None = None) -> RuntimeScaling:
        """llama.cpp arguments that give this file, loaded as it is, the original state scaled by ``method``.

        ``Method.NONE`` is no scaling at all. The base is set back to the original where a
        conversion raised it (NTK), so nothing compounds; ``original_context`` overrides L. YaRN on
        a model that came with YaRN multiplies its factor (see ``trained_yarn``).
        """
        base = self.original.freq_base
        keep_base = 0.0 if base == self.current.freq_base else base  # 0: the file's own, already right
        if method == Method.NONE:
            return RuntimeScaling(LLAMA_ROPE_SCALING_NONE, rope_freq_base=keep_base)
        if method == Method.YARN:
            return RuntimeScaling(
                LLAMA_ROPE_SCALING_YARN,
                rope_freq_scale=1.0 / (factor * (self.trained_yarn or 1.0)),
                rope_freq_base=keep_base,
                yarn_orig_ctx=original_context or self.trained_context or 0,
            )
        if method == Method.LINEAR:
            return RuntimeScaling(LLAMA_ROPE_SCALING_LINEAR, rope_freq_scale=1.0 / factor, rope_freq_base=keep_base)
        return RuntimeScaling(LLAMA_ROPE_SCALING_NONE, rope_freq_base=self.ntk_base(factor))

    def ntk_base(self, factor: float) -> float:
        """The NTK-aware base for ``factor`` over the original base, as stored in a file (float32)."""
        if not self.dims or self.dims <= 2:
            raise UnsupportedModelError("the rotary dimension count is unknown; NTK scaling needs it")
        return f32(ntk_freq_base(self.original_base(), factor, self.dims))

    def original_base(self) -> float:
        """The original RoPE base, checked: the frequency math needs a finite base above 1."""
        base = self.original.freq_base
        if not (math.isfinite(base) and base > 1):
            raise UnsupportedModelError(
                f"{self.keys.freq_base} is {base:g}; a RoPE base must be a number above 1 (the header may be damaged)"
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
    """The state of ``header``'s model; ``dims`` is its rotary dimension count as llama.cpp derives it."""
    keys = RopeKeys.for_arch(architecture)
    return RopeState(
        architecture=architecture,
        keys=keys,
        dims=dims,
        current_values={k: header.scalar(k) for k in keys.tracked},
        record=read_record(header),
    )
