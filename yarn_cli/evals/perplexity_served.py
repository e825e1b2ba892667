"""Perplexity of a served model, from the log-probabilities a server gives of a prompt's tokens.

The paper's nested protocol, as locally: for each chunk one request holds the longest context,
and every shorter context's figure is read from its first tokens. Windows are cut in the model's
tokens (from the served GGUF, or the server's tokenize endpoint) and sent as text, since servers
take text; the server's echo says which tokens it saw. The first token of a window has no score
over a server (the OpenAI API gives none to the first echoed token, which after a BOS is the one
a local run scores from the BOS), so a served figure averages one token fewer per window.

Before the run, the server's echo is checked against its own generation: the log-probabilities
it gives the last token of a prompt must be those it gives when generating that token after the
rest. llama-cpp-python 0.3.36's server fails this on models without a BOS token (its echo is
shifted by one position), and a perplexity from it would be meaningless.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from yarn_cli.errors import InputError, ServerError
from yarn_cli.evals.perplexity import PerplexityResult
from yarn_cli.serving.client import ContextExceededError, NonFiniteScoresError, PromptScores, ServerClient

# A server may retokenize a window's text a token or two differently at its ends.
TOKEN_SLACK = 2
# The check of a server's echo: a prompt whose last token is a whole word.
ALIGNMENT_PROBE = "The capital of France is Paris. The capital of Germany is"
ALIGNMENT_TOLERANCE = 0.02  # nats: two evaluations of the same position on one server


class TokenSource(Protocol):
    """Whose tokens cut the windows: the served GGUF's or the server's own."""

    bos: bool

    def tokens(self, text: str) -> list[int]: ...

    def text(self, tokens: list[int]) -> str: ...


def strips_space(source: TokenSource) -> bool:
    """Whether the source's text of a window starts with a space its tokenizer adds back.

    SentencePiece vocabularies mark a word start with a space that detokenizing keeps; the server
    adds it again when it tokenizes (its space prefix), which would shift every position by one.
    """
    return source.text(source.tokens("hello")).startswith(" ")


class ServerTokens:
    """The server's tokenize and detokenize endpoints (llama-server, llama-cpp-python's server)."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client
        empty = client.tokenize("")
        if empty is None:
            raise InputError(
                f"{client.url} has no tokenize endpoint to cut windows in the model's tokens; give the served GGUF "
                "with --tokenizer MODEL.gguf"
            )
        self.bos = len(empty) > 0  # what the server adds to an empty prompt: its BOS, or nothing

    def tokens(self, text: str) -> list[int]:
        found = self.client.tokenize(text)
        if found is None:
            raise ServerError(f"{self.client.url} stopped answering its tokenize endpoint")
        return found[int(self.bos) :]

    def text(self, tokens: list[int]) -> str:
        found = self.client.detokenize(tokens)
        if found is None:
            raise InputError(
                f"{self.client.url} has no detokenize endpoint to turn windows back into text; give the served "
                "GGUF with --tokenizer MODEL.gguf"
            )
        return found


def window_text(source: TokenSource, tokens: list[int], strip: bool) -> str:
    text = source.text(tokens)
    return text[1:] if strip and text.startswith(" ") else text


def text_scores(scores: PromptScores, bos: bool, expected: int) -> list[float | None]:
    """The echo's entries for the prompt's text tokens: without an echoed BOS or the generated token.

    ``expected``: how many text tokens were sent, used where the server does not count them.
    """
    return scores.logprobs[_text_span(scores, bos, expected)]


def _text_span(scores: PromptScores, bos: bool, expected: int) -> slice:
    n = scores.prompt_tokens - int(bos) if scores.prompt_tokens else expected
    # llama-cpp-python echoes the text and the generated token; vLLM the BOS, the text and it
    lead = 1 if bos and len(scores.logprobs) - n > scores.completion_tokens else 0
    return slice(lead, lead + n)


def check_alignment(client: ServerClient, source: TokenSource, strip: bool) -> None:
    """Refuse a server whose prompt log-probabilities do not line up with its own generation."""
    tokens = source.tokens(ALIGNMENT_PROBE)
    echo = client.prompt_logprobs(window_text(source, tokens, strip), top=5)
    span = _text_span(echo, source.bos, len(tokens))
    top = echo.top[span]
    n = span.stop - span.start
    echoed = top[-1] if n >= 3 and len(top) == n else None
    if echoed is None:
        raise ServerError(f"{client.url} echoed too little of a {len(tokens)}-token prompt to check it")
    generated = client.next_token(window_text(source, tokens[:-1], strip), top=5)
    best = max(generated, key=lambda token: generated[token])
    if best not in echoed or abs(echoed[best] - generated[best]) > ALIGNMENT_TOLERANCE:
        raise ServerError(
            f"{client.url} gives prompt log-probabilities that do not line up with its own generation (for the "
            f"last token of a prompt it gives the distribution of the token after it: llama-cpp-python's server "
            "does this on models without a BOS token); its perplexity would be meaningless"
        )


def check_served_settings(contexts: Sequence[int], chunks: int) -> None:
    if chunks < 1:
        raise InputError(f"--chunks must be at least 1, got {chunks}")
    if min(contexts) < 3:
        raise InputError("every context needs at least 3 tokens over a server: its first token has no score")


@dataclass
class ServedPerplexityRun:
    results: list[PerplexityResult]
    evaluated_tokens: int  # prompt tokens the servers evaluated
    seconds: float
    text_tokens: int
    bos: bool
    truncated: dict[str, str] = field(default_factory=dict)  # label -> what the server did
    unscored: dict[str, str] = field(default_factory=dict)  # label -> why its figures are infinite or unknown


def run_perplexity_served(
    servers: Sequence[tuple[str, ServerClient]],
    text: str,
    contexts: Sequence[int],
    chunks: int,
    source: TokenSource,
    *,
    on_start: Callable[[int], None] | None = None,
    on_tokens: Callable[[int, str], None] | None = None,
) -> ServedPerplexityRun:
    """Score ``text`` at every context on every server; a server that cut a window is reported, not scored."""
    check_served_settings(contexts, chunks)
    strip = strips_space(source)
    for _, client in servers:
        check_alignment(client, source, strip)
    stream = source.tokens(text)
    w = int(source.bos)
    longest = max(contexts)
    span = chunks * (longest - w)
    if len(stream) < span:
        raise InputError(
            f"the text has {len(stream):,} tokens but {chunks} chunk(s) of {longest:,} need {span:,}: give a "
            "longer text, fewer --chunks or shorter --contexts"
        )
    windows = [window_text(source, stream[k * (longest - w) : (k + 1) * (longest - w)], strip) for k in range(chunks)]
    if on_start:
        on_start(len(servers) * chunks * longest)
    sums: dict[tuple[str, int], float] = {}
    counts: dict[tuple[str, int], int] = {}
    truncated: dict[str, str] = {}
    unscored: dict[str, str] = {}
    evaluated = 0
    started = time.perf_counter()
    for label, client in servers:
        for window in windows:
            try:
                scores = client.prompt_logprobs(window)
            except NonFiniteScoresError as exc:  # the model's numbers broke down: the other servers go on
                unscored[label] = f"{exc}: its perplexity is infinite or undefined at this length"
                break
            except ContextExceededError as exc:
                raise ServerError(
                    f"{exc}; score shorter --contexts, or raise the server's context (llama-server -c, "
                    "llama-cpp-python --n_ctx, vLLM --max-model-len; llama-server gives no more than the model's "
                    "trained context, so a longer one needs a file extended by yarn-cli convert)"
                ) from exc
            entries = text_scores(scores, source.bos, longest - w)
            evaluated += scores.prompt_tokens or len(entries) + w
            if len(entries) < longest - w - TOKEN_SLACK:
                truncated[label] = f"saw {len(entries):,} of {longest - w:,} tokens"
                break
            for c in contexts:
                # the text tokens a local run scores in its first c positions, less any the server left without
                values = [v for v in entries[: c - w] if v is not None]
                key = (label, c)
                sums[key] = sums.get(key, 0.0) - math.fsum(values)
                counts[key] = counts.get(key, 0) + len(values)
            if on_tokens:
                on_tokens(longest, label)
    results = []
    for label, _ in servers:
        if label in truncated or label in unscored:
            continue
        for c in sorted(contexts):
            key = (label, c)
            if not counts.get(key):
                raise ServerError(f"{label} echoed no log-probability for the first {c:,} tokens of a window")
            mean = sums[key] / counts[key]
            results.append(PerplexityResult(label, c, math.exp(mean), counts[key], mean))
    return ServedPerplexityRun(
        results=results,
        evaluated_tokens=evaluated,
        seconds=time.perf_counter() - started,
        text_tokens=len(stream),
        bos=source.bos,
        truncated=truncated,
        unscored=unscored,
    )


def served_perplexity_record(
    servers: Sequence[tuple[str, ServerClient]],
    tokenizer: dict[str, Any] | str,
    contexts: Sequence[int],
    chunks: int,
    text: dict[str, Any],
    run: ServedPerplexityRun,
    software: dict[str, Any],
) -> dict[str, Any]:
    from yarn_cli.evals.passkey_served import served_record
    from yarn_cli.evals.perplexity import SCHEMA_VERSION

    return {
        "schema": SCHEMA_VERSION,
        "model": served_record(servers, tokenizer),
        "settings": {
            "contexts": list(contexts),
            "variants": [label for label, _ in servers],
            "chunks": chunks,
            "stride": None,
            "protocol": "nested",
            "bos": run.bos,
            "text": text | {"tokens": run.text_tokens},
        },
        "software": software,
        "results": [r.to_dict() for r in run.results],
        "truncated": run.truncated,
        "unscored": run.unscored,
        "evaluated_tokens": run.evaluated_tokens,
        "seconds": round(run.seconds, 3),
    }
