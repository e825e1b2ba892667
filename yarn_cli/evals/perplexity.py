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

from yarn_cli.errors import InputError
from yarn_cli.model import Model
from yarn_cli.rope.state import RopeState
from yarn_cli.rope.variants import Variant

SCHEMA_VERSION = 1


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


def _scale_groups(variant: Variant, contexts: Sequence[int], rope: RopeState) -> list[list[int]]:
    """Contexts that share a scaling, so that one pass can serve them all."""
    if variant.method != "dynamic-yarn":
        return [list(contexts)]
    groups: dict[Any, list[int]] = {}
    for c in contexts:
        groups.setdefault(variant.runtime(c, rope), []).append(c)
    return list(groups.values())


def plan_passes(settings: PerplexitySettings, variants: Sequence[Variant], rope: RopeState, bos: bool) -> list[Pass]:
    """Every pass of the run, grouped by variant and scaling so each group shares one model load."""
    w = int(bos)
    contexts = sorted(settings.contexts)
    chunk = max(contexts) - w  # text tokens per chunk
    passes: list[Pass] = []
    for variant in variants:
        for group in _scale_groups(variant, contexts, rope):
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


def _reporter(on_tokens: Callable[[int, str], None] | None, label: str) -> Callable[[int], None] | None:
    if on_tokens is None:
        return None
    return lambda n: on_tokens(n, label)


@dataclass
class PerplexityRun:
    results: list[PerplexityResult]
    evaluated_tokens: int
    seconds: float  # the whole run: loads, tokenizing, decoding and scoring
    decode_seconds: float  # inside llama_decode
    scoring_seconds: float  # turning each batch's logits into log-likelihoods
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
    model: Model,
    text: str,
    settings: PerplexitySettings,
    variants: Sequence[Variant],
    *,
    on_start: Callable[[int], None] | None = None,
    on_tokens: Callable[[int, str], None] | None = None,
) -> PerplexityRun:
    """Score ``text`` at every context under every variant; KeyboardInterrupt propagates."""
    # llama.cpp is imported here, when a run starts: every command imports this module.
    from yarn_cli.llama.evaluation import EvaluationTime, negative_log_likelihoods, vocabulary
    from yarn_cli.llama.loader import LoadOptions, load_model
    from yarn_cli.llama.memory import check_kv_memory
    from yarn_cli.llama.scoring import LogitScorer

    settings.check()
    check_kv_memory(model, max(settings.contexts), "score shorter contexts", settings.n_gpu_layers)
    with vocabulary(model) as vocab:
        bos, bos_token = vocab.add_bos, vocab.bos_token
        stream = vocab.tokenize(text, add_bos=False)
    span = stream_span(settings, bos)
    if len(stream) < span:
        raise InputError(
            f"the text has {len(stream):,} tokens but {settings.chunks} chunk(s) of {max(settings.contexts):,} "
            f"need {span:,}: give a longer text, fewer --chunks or shorter --contexts"
        )
    passes = plan_passes(settings, variants, model.rope, bos)
    if on_start:
        on_start(sum(p.length for p in passes))
    sums: dict[tuple[str, int], float] = {}
    counts: dict[tuple[str, int], int] = {}
    started = time.perf_counter()
    timings = EvaluationTime()
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
            scaling=variant.runtime(group[0].scale_length, model.rope),
            n_gpu_layers=settings.n_gpu_layers,
            n_threads=settings.n_threads,
            flash_attn=settings.flash_attn,
        )
        llm, _ = load_model(model, options)
        # llama.cpp's batch threads are idle while a batch is scored: the scoring takes them
        scorer = LogitScorer(llm.n_vocab(), workers=llm.context_params.n_threads_batch)
        try:
            for p in group:
                window = ([bos_token] if bos else []) + stream[p.offset : p.offset + p.length - int(bos)]
                report = _reporter(on_tokens, f"{variant.name} @ {p.length:,}")
                nll = negative_log_likelihoods(llm, window, report, scorer=scorer, timings=timings)
                for t in p.targets:
                    key = (variant.name, t.context)
                    sums[key] = sums.get(key, 0.0) + float(nll[t.start : t.stop].sum())
                    counts[key] = counts.get(key, 0) + (t.stop - t.start)
        finally:
            scorer.close()
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
        decode_seconds=timings.decode,
        scoring_seconds=timings.scoring,
        text_tokens=len(stream),
        bos=bos,
    )
