"""The evaluations' backend over HTTP: models served over an OpenAI-compatible API, one column per server.

A server fixes its scaling when it loads the model, so the columns are servers, never variants.
Prompts are sized and windows cut in the model's tokens (the served GGUF's, or the server's own
tokenizer, or estimated from its counts) and sent as text, since servers take text. Every answer
keeps the server's ``usage.prompt_tokens``: a server that saw fewer tokens than were sent truncated
the prompt (Ollama's ``num_ctx``, a proxy), and that is reported, never counted as the model's failure.

Scores come from the log-probabilities a server echoes of a prompt's tokens. The first token of a
window has none over a server (the OpenAI API gives none to the first echoed token, which after a
BOS is the one a local run scores from the BOS), so a served figure averages one token fewer per
window. Before a scoring run, the echo is checked against the server's own generation: the
log-probabilities it gives the last token of a prompt must be those it gives when generating that
token after the rest. llama-cpp-python 0.3.36's server fails this on models without a BOS token (its
echo is shifted by one position), and a perplexity from it would be meaningless.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from yarn_cli.backend import Backend, Completion, PromptCut, Scores, ScoresUnavailable, Session, Tokenizer
from yarn_cli.errors import ContextExceededError, InputError, ServerError
from yarn_cli.serving import DEFAULT_READ_TIMEOUT
from yarn_cli.serving.client import NonFiniteScoresError, PromptScores, ServerClient
from yarn_cli.serving.endpoints import Endpoint
from yarn_cli.serving.tokens import EstimatedTokens, ServerTokens

# A server may count or retokenize one or two tokens differently (a BOS it adds or not, a window's
# ends); fewer than that is a cut.
TOKEN_SLACK = 2
# Prompts sized by estimate (no tokenizer at hand) may miss their size by this share without being "cut".
ESTIMATE_MARGIN = 0.05
# The check of a server's echo: a prompt whose last token is a whole word.
ALIGNMENT_PROBE = "The capital of France is Paris. The capital of Germany is"
ALIGNMENT_TOLERANCE = 0.02  # nats: two evaluations of the same position on one server


# What a server's context cannot go past, and how to get more.
SERVER_CAP = (
    "llama-server gives no more than the file's context_length (llama.cpp's n_ctx_train) whatever -c says, so a "
    "longer one needs a file extended by yarn-cli convert (for vLLM: the --hf-overrides yarn-cli inspect shows)"
)


def truncated(sent: int, seen: int | None, margin: float = 0.0) -> bool:
    return seen is not None and seen < sent * (1 - margin) - TOKEN_SLACK


def strips_space(tokenizer: Tokenizer) -> bool:
    """Whether the text of a window starts with a space its tokenizer adds back.

    SentencePiece vocabularies mark a word start with a space that detokenizing keeps; the server
    adds it again when it tokenizes (its space prefix), which would shift every position by one.
    """
    return tokenizer.detokenize(tokenizer.tokenize("hello", add_bos=False)).startswith(" ")


def window_text(tokenizer: Tokenizer, tokens: Sequence[int], strip: bool) -> str:
    text = tokenizer.detokenize(tokens)
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


def check_alignment(client: ServerClient, tokenizer: Tokenizer, strip: bool) -> None:
    """Refuse a server whose prompt log-probabilities do not line up with its own generation."""
    tokens = tokenizer.tokenize(ALIGNMENT_PROBE, add_bos=False)
    echo = client.prompt_logprobs(window_text(tokenizer, tokens, strip), top=5)
    span = _text_span(echo, tokenizer.add_bos, len(tokens))
    top = echo.top[span]
    n = span.stop - span.start
    echoed = top[-1] if n >= 3 and len(top) == n else None
    if echoed is None:
        raise ServerError(f"{client.url} echoed too little of a {len(tokens)}-token prompt to check it")
    generated = client.next_token(window_text(tokenizer, tokens[:-1], strip), top=5)
    best = max(generated, key=lambda token: generated[token])
    if best not in echoed or abs(echoed[best] - generated[best]) > ALIGNMENT_TOLERANCE:
        raise ServerError(
            f"{client.url} gives prompt log-probabilities that do not line up with its own generation (for the "
            f"last token of a prompt it gives the distribution of the token after it: llama-cpp-python's server "
            "does this on models without a BOS token); its perplexity would be meaningless"
        )


@dataclass(frozen=True)
class EchoScores(Scores):
    """A window's echoed log-probabilities: ``entries[k]`` scores text token k, so position i is entry i + shift."""

    entries: list[float | None]
    shift: int  # 1 - (1 if the window starts with a BOS)
    evaluated_tokens: int

    def total(self, start: int, stop: int) -> tuple[float, int]:
        lo, hi = max(start + self.shift, 0), min(stop + self.shift, len(self.entries))
        values = [v for v in self.entries[lo:hi] if v is not None]  # positions the server left unscored
        return -math.fsum(values), len(values)


class ServedSession(Session):
    def __init__(self, backend: ServedBackend, client: ServerClient) -> None:
        self.backend = backend
        self.client = client

    def complete(
        self, text: str, tokens: Sequence[int], max_tokens: int, on_tokens: Callable[[int], None] | None = None
    ) -> Completion:
        """The answer, and nothing before it: a server does not say how far it has read."""
        try:
            completion = self.client.complete(text, max_tokens)
        except ContextExceededError as exc:
            raise ContextExceededError(
                f"{exc}. The prompt was {len(tokens):,} tokens: start the server with a larger context "
                "(llama-server -c N, Ollama's num_ctx, vLLM's --max-model-len) or test shorter --lengths; "
                f"{SERVER_CAP}"
            ) from exc
        margin = ESTIMATE_MARGIN if self.backend.estimated else 0.0
        return Completion(
            text=completion.text,
            evaluated_tokens=completion.prompt_tokens or 0,
            reported_prompt_tokens=completion.prompt_tokens,
            truncated=truncated(len(tokens), completion.prompt_tokens, margin),
        )

    def score(self, tokens: Sequence[int], on_tokens: Callable[[int], None] | None = None) -> Scores:
        tokenizer = self.backend.tokenizer
        w = int(tokenizer.add_bos)
        text_tokens = list(tokens[w:])
        try:
            scores = self.client.prompt_logprobs(window_text(tokenizer, text_tokens, self.backend.strip))
        except NonFiniteScoresError as exc:  # the model's numbers broke down: the other columns go on
            raise ScoresUnavailable(f"{exc}: its perplexity is infinite or undefined at this length") from exc
        except ContextExceededError as exc:
            raise ContextExceededError(
                f"{exc}; score shorter --contexts, or raise the server's context (llama-server -c, "
                f"llama-cpp-python --n_ctx, vLLM --max-model-len); {SERVER_CAP}"
            ) from exc
        entries = text_scores(scores, bool(w), len(text_tokens))
        evaluated = scores.prompt_tokens or len(entries) + w
        if len(entries) < len(text_tokens) - TOKEN_SLACK:
            raise PromptCut(f"saw {len(entries):,} of {len(text_tokens):,} tokens", evaluated)
        if on_tokens:
            on_tokens(len(tokens))
        return EchoScores(entries, 1 - w, evaluated)


class ServedBackend(Backend):
    """The servers at ``endpoints``, their prompts sized by ``tokenizer`` (the served GGUF's) when given.

    Without one, the first server's own tokenizer sizes them; a server with none is refused unless
    ``estimate_from`` gives the two texts to estimate token counts with (see ``EstimatedTokens``).
    Nothing is asked of a server until the backend is entered.
    """

    reuses_prefix = False
    scores_first_token = False
    may_truncate = True

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        server_model: str | None = None,
        *,
        timeout: float = DEFAULT_READ_TIMEOUT,
        tokenizer: Tokenizer | None = None,
        context_length: int | None = None,
        native_context: int | None = None,
        estimate_from: tuple[str, str] | None = None,
        parallel: int = 1,
    ) -> None:
        if not timeout > 0:
            raise InputError(f"--timeout must be a positive number of seconds, got {timeout:g}")
        if parallel < 1:
            raise InputError(f"--parallel must be at least 1, got {parallel}")
        self.endpoints = list(endpoints)
        self.server_model = server_model
        self.timeout = timeout
        self.parallel = parallel
        self.estimate_from = estimate_from
        self.estimated = False
        self._tokenizer = tokenizer
        self._context_length = context_length
        self._native_context = native_context
        self._clients: dict[str, ServerClient] = {}
        self._stack = contextlib.ExitStack()
        self._notes: list[str] = []
        self._strip: bool | None = None

    def __enter__(self) -> ServedBackend:
        try:
            for e in self.endpoints:
                client = ServerClient(e.url, self.server_model, read_timeout=self.timeout)
                self._clients[e.label] = self._stack.enter_context(client)
            if self._tokenizer is None:
                self._tokenizer = self._server_tokenizer(self._clients[self.endpoints[0].label])
        except BaseException:
            self.close()
            raise
        return self

    def _server_tokenizer(self, first: ServerClient) -> Tokenizer:
        found = ServerTokens.probe(first)
        if found is not None:
            return found
        if self.estimate_from is None:
            raise InputError(
                f"{first.url} has no tokenize endpoint to cut windows in the model's tokens; give the served GGUF "
                "with --tokenizer MODEL.gguf"
            )
        self._notes.append(
            f"{first.url} has no tokenize endpoint: prompt sizes are estimated from the server's own token counts "
            "(within a few %); --tokenizer MODEL.gguf sizes them exactly."
        )
        self.estimated = True
        return EstimatedTokens(first, *self.estimate_from)

    @property
    def columns(self) -> list[str]:
        return [e.label for e in self.endpoints]

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            raise RuntimeError("a served backend is used inside its with block")
        return self._tokenizer

    @property
    def context_length(self) -> int | None:
        return self._context_length

    @property
    def native_context(self) -> int | None:
        return self._native_context

    @property
    def name(self) -> str:
        return "served models"

    @property
    def strip(self) -> bool:
        if self._strip is None:
            self._strip = strips_space(self.tokenizer)
        return self._strip

    def check_scores(self) -> None:
        for client in self._clients.values():
            check_alignment(client, self.tokenizer, self.strip)

    def session(self, column: str, n_ctx: int, length: int) -> contextlib.AbstractContextManager[Session]:
        return contextlib.nullcontext(ServedSession(self, self._clients[column]))

    def record(self) -> dict[str, Any]:
        """Which servers and models, and whose tokens sized the prompts."""
        return {
            "servers": [
                {"label": label, "url": client.url, "model": client.model} for label, client in self._clients.items()
            ],
            "tokenizer": self.tokenizer.describe(),
        }

    def mismatch(self, saved: dict[str, Any]) -> str | None:
        before = {s["label"]: (s["url"], s["model"]) for s in saved.get("servers") or []}
        for label, client in self._clients.items():
            if label in before and before[label] != (client.url, client.model):
                url, model = before[label]
                return (
                    f"where {label!r} was {url} ({model}); choose another --json file, or label this server differently"
                )
        if _tokenizer_id(saved.get("tokenizer")) != _tokenizer_id(self.tokenizer.describe()):
            return "whose prompts were sized by another tokenizer; choose another --json"
        return None

    def notes(self) -> list[str]:
        return list(self._notes)

    def close(self) -> None:
        self._stack.close()
        if self._tokenizer is not None:
            self._tokenizer.close()


def _tokenizer_id(tokenizer: object) -> object:
    """What identifies the tokens prompts were sized in: a GGUF's header, wherever the file lies, or the server."""
    return tokenizer.get("header_sha256") if isinstance(tokenizer, dict) else tokenizer
