"""Perplexity of a long text as the context grows, under several RoPE scalings.

The default protocol is the YaRN paper's (its Proof-pile evaluation): for each of K
consecutive chunks of the longest context, the perplexity at context c is the exp of the
mean negative log-likelihood of the chunk's first c tokens. Attention is causal and a
static scaling does not depend on the length, so one pass over a chunk gives every
shorter context's figure; ``dynamic-yarn`` changes the scaling with the length, so it
needs a pass per distinct factor. ``stride`` switches to the sliding-window protocol.

Every pass is planned up front as a window of the token stream plus the spans of its
log-likelihoods that count towards each context, so progress and cost are known
before the first token is evaluated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yarn_cli.errors import InputError, YarnCliError
from yarn_cli.model_info import ModelInfo
from yarn_cli.variants import Variant

SCHEMA_VERSION = 1


class EvaluationError(YarnCliError):
    """llama.cpp refused a batch (out of memory, context too small)."""


@dataclass(frozen=True)
class PerplexitySettings:
    contexts: list[int]
    variants: list[str] = field(default_factory=lambda: ["as-is"])
    chunks: int = 1
    stride: int | None = None  # None: the paper's nested protocol
    nested: bool = True  # False: one pass per context, for checking and benchmarking the nesting
    n_gpu_layers: int | None = None
    n_threads: int | None = None
    flash_attn: bool = False

    @property
    def protocol(self) -> str:
        if self.stride is not None:
            return "sliding-window"
        return "nested" if self.nested else "separate"

    def check(self) -> None:
        if self.chunks < 1:
            raise InputError(f"--chunks must be at least 1, got {self.chunks}")
        if min(self.contexts) < 2:
            raise InputError("every context needs at least 2 tokens: one to read and one to predict")
        if self.stride is not None and not 1 <= self.stride < min(self.contexts):
            raise InputError(
                f"--stride must be between 1 and the shortest context minus one ({min(self.contexts) - 1}), "
                f"got {self.stride}"
            )


@dataclass(frozen=True)
class Target:
    """Log-likelihoods ``nll[start:stop]`` of a pass count towards ``context``."""

    context: int
    start: int
    stop: int


@dataclass(frozen=True)
class Pass:
    """Evaluate ``length`` tokens of the stream from ``offset`` (after a BOS when the model wants one)."""

    variant: Variant
    scale_length: int  # the length the variant's scaling is sized for
    offset: int
    length: int  # window tokens, BOS included
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class PerplexityResult:
    variant: str
    context: int
    ppl: float
    tokens: int  # tokens scored
    nll: float  # mean negative log-likelihood, nats per token

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stream_span(settings: PerplexitySettings, bos: bool) -> int:
    """Text tokens the run reads: K chunks of the longest context."""
    return settings.chunks * (max(settings.contexts) - int(bos))


def _scale_groups(variant: Variant, contexts: Sequence[int], info: ModelInfo) -> list[list[int]]:
    """Contexts that share a scaling, so that one pass can serve them all."""
    if variant.method != "dynamic-yarn":
        return [list(contexts)]
    groups: dict[Any, list[int]] = {}
    for c in contexts:
        groups.setdefault(variant.runtime(c, info), []).append(c)
    return list(groups.values())


def plan_passes(settings: PerplexitySettings, variants: Sequence[Variant], info: ModelInfo, bos: bool) -> list[Pass]:
    """Every pass of the run, grouped by variant and scaling so each group shares one model load."""
    w = int(bos)
    contexts = sorted(settings.contexts)
    chunk = max(contexts) - w  # text tokens per chunk
    passes: list[Pass] = []
    for variant in variants:
        for group in _scale_groups(variant, contexts, info):
            scale = max(group)
            if settings.stride is not None:
                for c in group:
                    passes.extend(_sliding(variant, scale, c, settings.stride, stream_span(settings, bos), w))
            elif settings.nested:
                for k in range(settings.chunks):
                    targets = tuple(Target(c, 0, c - 1) for c in group)
                    passes.append(Pass(variant, scale, k * chunk, scale, targets))
            else:
                for c in group:
                    for k in range(settings.chunks):
                        passes.append(Pass(variant, scale, k * chunk, c, (Target(c, 0, c - 1),)))
    return passes


def _sliding(variant: Variant, scale: int, context: int, stride: int, span: int, w: int) -> list[Pass]:
    """Windows of ``context`` tokens moved by ``stride``; each scores only tokens not scored before.

    Window token j (j >= w) is stream token ``begin + j - w`` and is predicted by ``nll[j - 1]``.
    """
    passes = []
    scored_to = 0  # stream tokens before this are scored (stream token 0 needs a BOS to be predicted)
    begin = 0
    while True:
        end = min(begin + context - w, span)
        first = max(1, scored_to - begin + w)  # first window token to score
        length = end - begin + w
        passes.append(Pass(variant, scale, begin, length, (Target(context, first - 1, length - 1),)))
        scored_to = end
        if end >= span:
            return passes
        begin += stride


def negative_log_likelihoods(llm: Any, tokens: Sequence[int], on_batch: Callable[[int], None] | None = None) -> Any:
    """``nll[i] = -log p(tokens[i + 1] | tokens[: i + 1])``, from a fresh KV cache, batch by batch.

    Only one batch of logits (n_batch x n_vocab floats) is alive at a time, so a 64k-token pass
    does not need gigabytes for logits.
    """
    import llama_cpp

    ctx = llm.ctx
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    n_batch = int(llama_cpp.llama_n_batch(ctx))
    n_vocab = int(llm.n_vocab())
    targets = np.asarray(tokens[1:], dtype=np.int64)
    nll = np.empty(len(tokens) - 1, dtype=np.float64)
    batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
    try:
        for start in range(0, len(tokens), n_batch):
            part = tokens[start : start + n_batch]
            batch.n_tokens = len(part)
            for i, token in enumerate(part):
                batch.token[i] = token
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            code = llama_cpp.llama_decode(ctx, batch)
            if code != 0:
                raise EvaluationError(
                    f"llama.cpp could not evaluate tokens {start}..{start + len(part)} (llama_decode returned {code})"
                )
            rows = min(len(part), len(targets) - start)
            if rows > 0:
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(len(part), n_vocab))[:rows]
                top = logits.max(axis=1)
                log_z = top + np.log(np.exp(logits - top[:, None]).sum(axis=1, dtype=np.float64))
                picked = logits[np.arange(rows), targets[start : start + rows]]
                nll[start : start + rows] = log_z - picked
            if on_batch:
                on_batch(len(part))
    finally:
        llama_cpp.llama_batch_free(batch)
    return nll


def _reporter(on_tokens: Callable[[int, str], None] | None, label: str) -> Callable[[int], None] | None:
    if on_tokens is None:
        return None
    return lambda n: on_tokens(n, label)


@dataclass
class PerplexityRun:
    results: list[PerplexityResult]
    evaluated_tokens: int
    seconds: float
    text_tokens: int
    bos: bool


def read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such text file; give --text a UTF-8 text to score") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory; give --text a UTF-8 text file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start}); give --text a plain text file") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if not text.strip():
        raise InputError(f"{path} is empty; give --text a text with at least as many tokens as the longest context")
    return text


def run_perplexity(
    path: Path,
    text: str,
    settings: PerplexitySettings,
    info: ModelInfo,
    variants: Sequence[Variant],
    *,
    on_start: Callable[[int], None] | None = None,
    on_tokens: Callable[[int, str], None] | None = None,
) -> PerplexityRun:
    """Score ``text`` at every context under every variant; KeyboardInterrupt propagates."""
    import llama_cpp

    from yarn_cli.runtime import LoadOptions, check_kv_memory, load_model

    settings.check()
    check_kv_memory(info, max(settings.contexts), "score shorter contexts")
    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        model_vocab = llama_cpp.llama_model_get_vocab(vocab.model)
        bos = bool(llama_cpp.llama_vocab_get_add_bos(model_vocab))
        bos_token = int(llama_cpp.llama_vocab_bos(model_vocab))
        stream = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    finally:
        vocab.close()
    span = stream_span(settings, bos)
    if len(stream) < span:
        raise InputError(
            f"the text has {len(stream):,} tokens but {settings.chunks} chunk(s) of {max(settings.contexts):,} "
            f"need {span:,}: give a longer text, fewer --chunks or shorter --contexts"
        )
    passes = plan_passes(settings, variants, info, bos)
    if on_start:
        on_start(sum(p.length for p in passes))
    sums: dict[tuple[str, int], float] = {}
    counts: dict[tuple[str, int], int] = {}
    started = time.perf_counter()
    i = 0
    while i < len(passes):
        # Consecutive passes with the same variant and scaling share one loaded context.
        j = i
        while j < len(passes) and (passes[j].variant, passes[j].scale_length) == (
            passes[i].variant,
            passes[i].scale_length,
        ):
            j += 1
        group = passes[i:j]
        variant = group[0].variant
        options = LoadOptions(
            n_ctx=max(p.length for p in group),
            scaling=variant.runtime(group[0].scale_length, info),
            n_gpu_layers=settings.n_gpu_layers,
            n_threads=settings.n_threads,
            flash_attn=settings.flash_attn,
        )
        llm, _, _ = load_model(path, options, info)
        try:
            for p in group:
                window = ([bos_token] if bos else []) + stream[p.offset : p.offset + p.length - int(bos)]
                nll = negative_log_likelihoods(llm, window, _reporter(on_tokens, f"{variant.name} @ {p.length:,}"))
                for t in p.targets:
                    key = (variant.name, t.context)
                    sums[key] = sums.get(key, 0.0) + float(nll[t.start : t.stop].sum())
                    counts[key] = counts.get(key, 0) + (t.stop - t.start)
        finally:
            llm.close()
        i = j
    results = []
    for variant in variants:
        for c in sorted(settings.contexts):
            key = (variant.name, c)
            mean = sums[key] / counts[key]
            results.append(PerplexityResult(variant.name, c, math.exp(mean), counts[key], mean))
    return PerplexityRun(
        results=results,
        evaluated_tokens=sum(p.length for p in passes),
        seconds=time.perf_counter() - started,
        text_tokens=len(stream),
        bos=bos,
    )
