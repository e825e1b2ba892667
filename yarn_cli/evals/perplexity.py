"""Perplexity of a long text as the context grows, under several RoPE scalings.

The default protocol is the YaRN paper's (its Proof-pile evaluation): for each of K
consecutive chunks of the longest context, the perplexity at context c is the exp of the
mean negative log-likelihood of the chunk's first c tokens. Attention is causal and a
static scaling does not depend on the length, so one pass over a chunk gives every
shorter context's figure; ``dynamic-yarn`` changes the scaling with the length, so it
needs a pass per distinct factor. ``stride`` switches to the sliding-window protocol.

Every pass is planned up front as a window of the token stream plus the spans of its
log-likelihoods that count towards each context, so progress and cost are known
before the first token is evaluated. ``perplexity_run`` runs the plan on a backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yarn_cli.backend import Backend
from yarn_cli.errors import InputError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PerplexitySettings:
    contexts: list[int]
    chunks: int = 1
    stride: int | None = None  # None: the paper's nested protocol
    nested: bool = True  # False: one pass per context, for checking and benchmarking the nesting
    reference: str | None = None  # a column every other is compared with, distribution by distribution
    score_reference: bool = True  # False: the reference only compared with, its own figures not given

    @property
    def protocol(self) -> str:
        if self.stride is not None:
            return "sliding-window"
        return "nested" if self.nested else "separate"

    def check(self, first_token_scored: bool = True) -> None:
        """Refuse settings no run can follow; ``first_token_scored``: False over a server (see ``Backend``)."""
        if self.chunks < 1:
            raise InputError(f"--chunks must be at least 1, got {self.chunks}")
        if min(self.contexts) < (2 if first_token_scored else 3):
            raise InputError(
                "every context needs at least 2 tokens: one to read and one to predict"
                if first_token_scored
                else "every context needs at least 3 tokens over a server: its first token has no score"
            )
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

    column: str  # the backend's column: a variant, or a server
    scale_length: int  # the length the column's scaling is sized for
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
    # against the run's reference (--reference), over the same scored tokens; None for the reference itself
    kl_divergence: float | None = None  # mean KL(P_reference || P_variant), nats per token
    kl_divergence_p99: float | None = None  # its 99th percentile over the tokens
    top1_agreement: float | None = None  # share of tokens whose most likely next token is the reference's

    def to_dict(self, *, compared: bool = False) -> dict[str, Any]:
        """The result's fields; the comparison's only where the run had a reference (``compared``)."""
        data = asdict(self)
        if not compared:
            for key in COMPARISON_FIELDS:
                del data[key]
        return data


COMPARISON_FIELDS = ("kl_divergence", "kl_divergence_p99", "top1_agreement")


def stream_span(settings: PerplexitySettings, bos: bool) -> int:
    """Text tokens the run reads: K chunks of the longest context."""
    return settings.chunks * (max(settings.contexts) - int(bos))


def plan_passes(settings: PerplexitySettings, backend: Backend, bos: bool) -> list[Pass]:
    """Every pass of the run, grouped by column and scaling so each group shares one session."""
    w = int(bos)
    contexts = sorted(settings.contexts)
    chunk = max(contexts) - w  # text tokens per chunk
    passes: list[Pass] = []
    for column in backend.columns:
        for group in backend.scale_groups(column, contexts):
            scale = max(group)
            if settings.stride is not None:
                for c in group:
                    passes.extend(_sliding(column, scale, c, settings.stride, stream_span(settings, bos), w))
            elif settings.nested:
                for k in range(settings.chunks):
                    targets = tuple(Target(c, 0, c - 1) for c in group)
                    passes.append(Pass(column, scale, k * chunk, scale, targets))
            else:
                for c in group:
                    for k in range(settings.chunks):
                        passes.append(Pass(column, scale, k * chunk, c, (Target(c, 0, c - 1),)))
    return passes


def _sliding(column: str, scale: int, context: int, stride: int, span: int, w: int) -> list[Pass]:
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
        passes.append(Pass(column, scale, begin, length, (Target(context, first - 1, length - 1),)))
        scored_to = end
        if end >= span:
            return passes
        begin += stride


@dataclass
class PerplexityRun:
    results: list[PerplexityResult]
    evaluated_tokens: int
    seconds: float  # the whole run: loads, tokenizing, decoding and scoring
    timings: dict[str, float]  # where the backend says the time went (in llama.cpp: decode, scoring)
    text_tokens: int
    bos: bool
    truncated: dict[str, str] = field(default_factory=dict)  # column -> how its backend cut a window
    unscored: dict[str, str] = field(default_factory=dict)  # column -> why its figures are infinite or unknown


@dataclass(frozen=True)
class Text:
    """The text a run scores, and the file it came from."""

    path: Path
    content: str


def read_text(path: Path) -> Text:
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
    return Text(path, text)
