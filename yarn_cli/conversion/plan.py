"""The plan of a conversion: every key it writes, and what they mean. Pure: it reads nothing but the
opened model, and writes nothing.

A conversion never compounds: the state the file had before yarn-cli first
touched it is recorded as JSON under ``yarn_cli.original`` (see ``rope.state``),
every later conversion starts from that state, and ``--method none`` restores it
exactly (the header, and so the whole file, becomes byte-identical to the original).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from yarn_cli import __version__
from yarn_cli.errors import InputError, UnsupportedModelError
from yarn_cli.gguf.header import GGUFHeader, edited_keys, unpadded_header
from yarn_cli.gguf.values import Value, boolean, f32, float32, string
from yarn_cli.model import Model
from yarn_cli.rope.architectures import BETA_ARCHS, window_note
from yarn_cli.rope.frequencies import DEFAULT_BETA_FAST, DEFAULT_BETA_SLOW
from yarn_cli.rope.huggingface import HfScaling, hf_scaling
from yarn_cli.rope.keys import RECORD_KEY, VERSION_KEY, RopeKeys
from yarn_cli.rope.runtimes import Where, where_scaling_applies
from yarn_cli.rope.scaling import (
    MAX_CONTEXT,
    Method,
    RuntimeScaling,
    check_betas,
    check_context,
    check_factor,
    check_positive,
)
from yarn_cli.rope.state import RopeState, Values, record_json, rope_params
from yarn_cli.rope.variants import Variant

PAGE = 4096


@dataclass(frozen=True)
class ConvertRequest:
    """What the user asked for; exactly one of ``factor`` and ``context`` for scaling methods."""

    method: Method | None = None  # None: not named, which is yarn
    factor: float | None = None
    context: int | None = None
    original_context: int | None = None
    attn_factor: float | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    finetuned: bool | None = None
    force: bool = False
    allow_shorter_context: bool = False  # a context_length below the file's own is refused otherwise

    @property
    def chosen_method(self) -> Method:
        return Method.YARN if self.method is None else self.method

    @property
    def asks_nothing(self) -> bool:
        """No method, scale or option named (``--force`` aside): nothing to convert."""
        return self == ConvertRequest(force=self.force)


@dataclass(frozen=True)
class KeyChange:
    key: str
    before: Value | None
    after: Value | None


@dataclass(frozen=True)
class ConversionPlan:
    """The metadata edits a conversion makes, and what they mean."""

    model: Model
    method: Method
    factor: float | None  # what was asked: S times the file's own context
    total_factor: float | None  # what the file then says: S, times a YaRN factor the model came with
    original_context: int
    context_length: int
    freq_base: float
    edits: dict[str, Value | None]
    changes: list[KeyChange]
    replaced: str | None
    warnings: list[str] = field(default_factory=list)
    key_order: list[str] | None = None  # the keys' order after the change, where it is not the default
    target: Values = field(default_factory=dict)  # every tracked key after the change (None: absent)

    @property
    def hugging_face(self) -> HfScaling:
        """The same scaling for servers that run the Hugging Face model (vLLM's --hf-overrides)."""
        return hf_scaling(self.model.rope, self.model.shape.head_dim_k, self.target)

    @property
    def runtimes(self) -> list[Where]:
        """Where the scaling written takes effect, runtime by runtime (Ollama, LM Studio, vLLM...)."""
        attn = rope_params(self.target, self.model.rope.keys).scaling.attn_factor
        return where_scaling_applies(self.model.architecture, self.method, attn_factor=attn not in (None, 1.0))

    @property
    def runtime(self) -> RuntimeScaling | None:
        """The llama.cpp load parameters that reproduce this conversion on the unconverted file."""
        if self.method == Method.NONE or self.factor is None:
            return None
        return self.model.rope.unconverted().overrides_for(self.target)


def _check_convertible(rope: RopeState, method: Method, force: bool) -> None:
    """A model without RoPE has nothing to scale; a scaling it was trained with is replaced only with --force.

    A trained YaRN is not replaced by --method yarn: it is extended (see ``RopeState.trained_yarn``).
    """
    original_scaling = rope.original.scaling
    if not rope.uses_rope:
        raise UnsupportedModelError(
            f"{rope.architecture} models use {rope.no_rope_reason}, not RoPE: there is nothing to scale"
        )
    if method == Method.NTK_BY_PARTS:
        rope.check_ntk_by_parts("--method ntk-by-parts", "--method yarn", force=force)
    if force:
        return
    if rope.trained_yarn and method in (Method.LINEAR, Method.NTK):
        raise UnsupportedModelError(
            f"the model came with YaRN x{rope.trained_yarn:g} (original context {rope.trained_context}); "
            f"--method {method.value} would replace it. --method yarn extends it instead; use --force to replace it"
        )
    if original_scaling.type == "longrope" or rope.longrope_factors:
        raise UnsupportedModelError(
            f"the model uses longrope scaling: per-dimension factors it was trained with (rope_factors_long, "
            f"used above {rope.trained_context} tokens) already stretch it to {rope.native_context}; llama.cpp "
            "would apply a new scaling on top of them, compounding the two. Use --force to do it anyway"
        )
    if original_scaling.type == "linear" and original_scaling.factor != 1.0:
        raise UnsupportedModelError(
            f"the model was trained with linear RoPE scaling x{original_scaling.factor:g} (as Gemma 3 is); a new "
            "scaling would replace that trained factor. Use --force to replace it anyway"
        )


def _target_factor(request: ConvertRequest, original_context: int, name: str = "original") -> tuple[float, int]:
    """(S, new context): S times ``original_context``, the context S is measured against (called ``name``)."""
    if request.factor is not None and request.context is not None:
        raise InputError("give either --factor or --context, not both")
    if request.context is not None:
        if request.context <= original_context:
            raise InputError(
                f"--context {request.context} is not above the {name} context {original_context}; "
                "the target context must be larger"
            )
        factor = request.context / original_context
        if f32(factor) <= 1.0:
            raise InputError(
                f"--context {request.context:,} is so close to the {name} context {original_context:,} that the "
                "scale factor is 1 once stored as a GGUF float32, which is no scaling; give a larger --context"
            )
        return factor, request.context
    if request.factor is None:
        raise InputError("give the scale with --factor S or the target context with --context N")
    factor = request.factor
    if math.isfinite(factor) and factor * original_context > MAX_CONTEXT:
        scaled = factor * original_context
        shown = f"{round(scaled):,}" if scaled < 1e15 else f"{factor:g} x {original_context:,}"
        raise InputError(_too_long(shown))
    factor = check_factor(factor)
    context_length = round(factor * original_context)
    if context_length <= original_context:
        raise InputError(
            f"--factor {factor!r} leaves context_length at {original_context:,} ({factor!r} x {original_context:,} "
            f"rounds to it); give a larger --factor, or --context N above {original_context:,}"
        )
    return factor, context_length


def _too_long(tokens: str) -> str:
    return (
        f"the target context, {tokens} tokens, is more than a GGUF file can state "
        f"({MAX_CONTEXT:,}); choose a smaller --factor or --context"
    )


def _describe_current(rope: RopeState) -> str | None:
    """How the file is scaled now, for "replaced ..." messages."""
    if rope.current.scaling.is_scaled or rope.longrope_factors:
        return rope.describe_scaling()
    if rope.base_changed:
        return f"ntk (freq_base {rope.original.freq_base:g} -> {rope.current.freq_base:g})"
    return None


def plan_conversion(model: Model, request: ConvertRequest) -> ConversionPlan:
    """Decide every key to write. Pure: reads nothing but the opened model, writes nothing."""
    rope = model.rope
    keys = rope.keys
    method = request.chosen_method
    rope.check_keys()  # nothing is computed from, or written back with, a damaged value
    if request.attn_factor is not None and method == Method.NTK_BY_PARTS:
        # one spelling per file: ntk-by-parts with an extra factor A is --method yarn --attn-factor A/(0.1 ln S + 1)
        raise InputError(
            "--method ntk-by-parts sets rope.scaling.attn_factor itself, to 1 / (0.1 ln S + 1), which cancels "
            "YaRN's temperature; for another attention factor use --method yarn --attn-factor A"
        )
    ramp_options = {  # YaRN's ramp, which NTK-by-parts shares
        "--attn-factor": request.attn_factor,
        "--beta-fast": request.beta_fast,
        "--beta-slow": request.beta_slow,
        "--finetuned": request.finetuned,
    }
    used = [name for name, value in ramp_options.items() if value is not None]
    if used and method not in (Method.YARN, Method.NTK_BY_PARTS):
        only = "--method yarn" if request.attn_factor is not None else "--method yarn and ntk-by-parts"
        raise InputError(f"{', '.join(used)} {'applies' if len(used) == 1 else 'apply'} only to {only}")

    warnings: list[str] = []
    if method == Method.NONE:
        if request.factor is not None or request.context is not None:
            raise InputError("--method none takes no --factor or --context: it restores the original")
        target = _plan_none(model, request.force)
        factor = total_factor = None
        context_length = orig_ctx = rope_params(target, keys).context_length or 0
    else:
        _check_convertible(rope, method, request.force)
        if request.original_context is not None:
            check_context(request.original_context, "--original-context")
        orig_ctx = request.original_context or rope.trained_context or 0
        if orig_ctx <= 0:
            raise UnsupportedModelError(
                f"the file has no {keys.context_length}; give the trained context with --original-context L"
            )
        extends = method == Method.YARN and rope.trained_yarn is not None
        # S is measured against the context the file offers: the trained one, or what its own YaRN reaches
        if extends:
            factor, context_length = _target_factor(request, rope.native_context or orig_ctx, "file's")
        else:
            factor, context_length = _target_factor(request, orig_ctx)
        if context_length > MAX_CONTEXT:
            raise InputError(_too_long(f"{context_length:,}"))
        _check_not_shorter(rope, context_length, request)
        total_factor = factor * (rope.trained_yarn or 1.0) if extends else factor
        target = rope.scaled_values(
            method,
            total_factor,
            orig_ctx,
            context_length,
            extends=extends,
            extra=_yarn_options(request, keys) if method in (Method.YARN, Method.NTK_BY_PARTS) else None,
        )
        warnings += _option_warnings(rope, request)

    current = rope.current_values
    edits: dict[str, Value | None] = {k: target.get(k) for k in keys.tracked if target.get(k) != current[k]}
    if method == Method.NONE and rope.converted:
        edits[RECORD_KEY] = None
        edits[VERSION_KEY] = None
    elif not rope.converted:
        edits[RECORD_KEY] = string(record_json(model.header, keys))
        edits[VERSION_KEY] = string(__version__)
    edits = _keep_page_offset(model.header, edits)
    key_order = _original_order(model, edits) if method == Method.NONE and rope.converted else None
    changes = [KeyChange(k, model.header.scalar(k), v) for k, v in edits.items()]
    return ConversionPlan(
        model=model,
        method=method,
        factor=factor,
        total_factor=total_factor,
        original_context=orig_ctx,
        context_length=context_length,
        freq_base=rope_params(target, keys).freq_base,
        edits=edits,
        changes=changes,
        replaced=_describe_current(rope),
        warnings=warnings,
        key_order=key_order,
        target=target,
    )


def _original_order(model: Model, edits: dict[str, Value | None]) -> list[str] | None:
    """The keys in the order they had before the first conversion, so that an undo is byte-exact.

    Conversions move no key but the tracked ones (and add yarn-cli's), so the others keep their
    order; each tracked key goes back to the index the record gives it. None for a record from an
    older yarn-cli that kept no indices (the keys are then restored in place, or last).
    """
    record = model.rope.record
    if record is None or record.positions is None:
        return None
    tracked = set(model.rope.keys.tracked)
    order = [k for k in edited_keys(model.header, edits) if k not in tracked]
    for key, index in sorted(record.positions.items(), key=lambda item: item[1]):
        order.insert(index, key)
    return order


def _keep_page_offset(header: GGUFHeader, edits: dict[str, Value | None]) -> dict[str, Value | None]:
    """Pad the undo record with spaces so the tensor data keeps its offset within a 4 KiB page.

    The kernel then copies whole pages (copy_file_range between differently aligned offsets
    measured about 20% slower), and the data moves by whole pages, as block-level tricks need.
    An undo, which removes the record, brings the original layout back by itself.
    """
    if edits.get(RECORD_KEY, header.scalar(RECORD_KEY)) is None or PAGE % header.alignment:
        return edits
    current = edits.get(RECORD_KEY) or header.scalar(RECORD_KEY)
    assert current is not None
    padded = dict(edits)
    padded[RECORD_KEY] = string(str(current.value).rstrip(" "))
    shortfall = (header.data_offset - len(unpadded_header(header, padded))) % PAGE
    padded[RECORD_KEY] = string(str(padded[RECORD_KEY].value) + " " * shortfall)  # type: ignore[union-attr]
    if padded[RECORD_KEY] == header.scalar(RECORD_KEY):
        del padded[RECORD_KEY]  # already laid out this way: no need to rewrite it
    return padded


def _plan_none(model: Model, force: bool) -> Values:
    rope = model.rope
    if rope.converted:
        return dict(rope.original_values)
    if not rope.current.scaling.is_scaled:
        raise InputError(f"{model.path} carries no RoPE scaling and no yarn-cli record: there is nothing to undo")
    _check_convertible(rope, Method.NONE, force)
    # The file's own scaling, removed: back to the trained context; recorded, so it can be restored.
    return rope.unscaled_values()


def _check_not_shorter(rope: RopeState, context_length: int, request: ConvertRequest) -> None:
    """A user who asks for more context never gets less without saying so."""
    native = rope.native_context
    if native and context_length < native and not request.allow_shorter_context:
        raise InputError(
            f"this would lower context_length from {native:,} to {context_length:,} (the factor applies to the "
            f"trained context {rope.trained_context:,}); give --context N above {native:,}, or "
            "--allow-shorter-context if a shorter context is what you want"
        )


def _yarn_options(request: ConvertRequest, keys: RopeKeys) -> dict[str, Value]:
    """The keys YaRN's own options set, checked."""
    extra: dict[str, Value] = {}
    if request.attn_factor is not None:
        check_positive(request.attn_factor, "--attn-factor")
        extra[keys.attn_factor] = float32(request.attn_factor)
    if request.finetuned is not None:
        extra[keys.finetuned] = boolean(request.finetuned)
    if request.beta_fast is not None or request.beta_slow is not None:
        check_betas(
            DEFAULT_BETA_FAST if request.beta_fast is None else request.beta_fast,
            DEFAULT_BETA_SLOW if request.beta_slow is None else request.beta_slow,
        )
    for key, beta in ((keys.beta_fast, request.beta_fast), (keys.beta_slow, request.beta_slow)):
        if beta is not None:
            extra[key] = float32(beta)
    return extra


def _option_warnings(rope: RopeState, request: ConvertRequest) -> list[str]:
    warnings = []
    arch = rope.architecture
    if (request.beta_fast is not None or request.beta_slow is not None) and arch not in BETA_ARCHS:
        warnings.append(
            f"llama.cpp ignores yarn_beta_fast/yarn_beta_slow for {arch} (it reads them only for "
            f"{', '.join(sorted(BETA_ARCHS))}); pass --yarn-beta-fast/--yarn-beta-slow at run time instead"
        )
    if request.finetuned is not None:
        warnings.append("rope.scaling.finetuned is informational: llama.cpp computes the same either way")
    if request.chosen_method != Method.NONE:
        note = window_note(arch, rope.window)
        if note:
            warnings.append(note)
        if rope.rope_freqs:
            warnings.append(
                "the file carries rope_freqs (Llama 3's per-dimension frequency divisors); llama.cpp keeps "
                "applying them and the new scaling on top, its YaRN ramp measured on the undivided "
                "frequencies, so dimensions the divisors already stretched count as shorter than they are"
            )
    return warnings


def request_for_variant(variant: Variant) -> ConvertRequest:
    """The conversion that writes a run-time variant into a file (``tune --write``): the keys its run loads."""
    if variant.dynamic or variant.factor is None or variant.method not in {m.value for m in Method}:
        raise InputError(
            f"{variant.name} is not a scaling a file can hold: llama.cpp has no dynamic type in files; chat runs "
            "dynamic YaRN with --yarn dynamic"
        )
    return ConvertRequest(method=Method(variant.method), factor=variant.factor, attn_factor=variant.attn_factor)
