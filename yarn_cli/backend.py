"""What an evaluation needs from a model, whoever runs it: the seam between ``evals/`` and the runtimes.

An evaluation (passkey, perplexity, and those to come) is written once against ``Backend``. Two
implement it: llama.cpp in this process (``yarn_cli.llama.llama_backend``) and models served over an
OpenAI-compatible API (``yarn_cli.serving.served_backend``). The evaluation never knows which it has.

A backend has one or more *columns*, the labels a run's tables and records show side by side: the
scaling variants of one local model (``as-is``, ``yarn:2``...), or the servers of a served run. It
tokenizes in the model's own tokens (lengths are counted in them), and opens a ``Session`` per column
and scaling, in which prompts are completed greedily and windows scored.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from yarn_cli.errors import InputError


class Tokenizer(ABC):
    """A model's own tokens: what prompts are sized in and windows cut in."""

    @property
    @abstractmethod
    def add_bos(self) -> bool:
        """Whether the model starts every prompt with its BOS token."""

    @property
    @abstractmethod
    def bos_token(self) -> int:
        """The BOS token's id, to put in front of a window."""

    @abstractmethod
    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        """``text`` in the model's tokens; with ``add_bos``, as a prompt the model would be given."""

    @abstractmethod
    def detokenize(self, tokens: Sequence[int]) -> str: ...

    @abstractmethod
    def describe(self) -> dict[str, Any] | str:
        """What a run's record says of whose tokens sized it."""

    def chat_prompt(self, message: str, answer_start: str) -> tuple[str, list[int]]:
        """``message`` as the one user turn of the model's chat template, the assistant's turn opened and begun
        with ``answer_start``: the text and its tokens (the template's special tokens read as such)."""
        raise InputError(
            "the served model's chat template is not known here: give its GGUF as --tokenizer to wrap prompts "
            "in the template it holds, or leave out --chat-template"
        )

    def close(self) -> None:
        """Free what the tokenizer holds (a vocabulary loaded in llama.cpp)."""
        return None


@dataclass(frozen=True)
class Speed:
    """How fast a backend evaluates its model on this machine: what a run's time is estimated from before it starts.

    Measured at the start of a context (``*_token``); the growth with the tokens before, which a short
    measurement cannot see, comes from the model's shape (``*_growth``, a share of the start's cost per
    position): attention's work for a prompt token, reading the KV cache for a generated one.
    """

    prompt_token: float  # seconds per prompt token at the start of a context, in whole batches
    generated_token: float  # seconds per generated token at the start of a context
    prompt_growth: float  # a prompt token's extra cost per token before it, as a share of prompt_token
    generated_growth: float  # the same for a generated token
    scoring_factor: float = 1.0  # a scored token's cost over a prompt token's: logits at every position
    measured: str = ""  # what was measured, in words

    def prompt_seconds(self, start: int, stop: int, *, scored: bool = False) -> float:
        """Evaluating the prompt tokens at positions [start, stop) (those before kept in the cache)."""
        n = max(stop - start, 0)
        factor = self.scoring_factor if scored else 1.0
        return self.prompt_token * factor * n * (1 + self.prompt_growth * (start + stop) / 2)

    def generated_seconds(self, n: int, after: int) -> float:
        """Generating ``n`` tokens after ``after`` tokens of context."""
        return self.generated_token * n * (1 + self.generated_growth * (after + n / 2))


@dataclass(frozen=True)
class Completion:
    """A greedy answer to a prompt, and what the backend says it took to give it."""

    text: str
    evaluated_tokens: int  # prompt and answer tokens evaluated for it (a reused prefix not counted again)
    reported_prompt_tokens: int | None = None  # what a server said it evaluated (usage.prompt_tokens)
    truncated: bool = False  # the model saw fewer tokens than were sent: not the model's failure


class Scores(ABC):
    """Per-token log-likelihoods of a window: position ``i`` scores window token ``i + 1`` given those before."""

    evaluated_tokens: int  # tokens the backend evaluated for the window

    @abstractmethod
    def total(self, start: int, stop: int) -> tuple[float, int]:
        """The negative log-likelihood summed over the scored positions in ``[start, stop)``, and their count."""


class Comparison(ABC):
    """A window scored under a reference and a variant at once: each position's whole distributions compared.

    Position ``i`` is the prediction of window token ``i + 1``, as in ``Scores``.
    """

    evaluated_tokens: int  # tokens the backend evaluated for the window, in both models

    @property
    @abstractmethod
    def reference(self) -> Scores: ...

    @property
    @abstractmethod
    def variant(self) -> Scores: ...

    @abstractmethod
    def divergences(self, start: int, stop: int) -> Sequence[float]:
        """KL(P_reference || P_variant) in nats at each position in ``[start, stop)``."""

    @abstractmethod
    def agreements(self, start: int, stop: int) -> int:
        """Positions in ``[start, stop)`` where both give the same most likely token."""


class ComparedSession(ABC):
    """A reference's model and a variant's, loaded together, evaluating the same windows batch by batch."""

    @abstractmethod
    def score(self, tokens: Sequence[int], on_tokens: Callable[[int], None] | None = None) -> Comparison:
        """Both models' scores of ``tokens`` (a BOS first where the model wants one), from fresh contexts."""


class PromptCut(Exception):
    """The backend saw less of a window than was sent (a server that truncates): the column is not scored."""

    def __init__(self, detail: str, evaluated_tokens: int) -> None:
        super().__init__(detail)
        self.evaluated_tokens = evaluated_tokens


class ScoresUnavailable(Exception):
    """The backend could not give a window's log-likelihoods (a -inf or NaN): the column is not scored."""


class Session(ABC):
    """One column's model, loaded (or reached) with the scaling for a set of lengths."""

    @abstractmethod
    def complete(
        self, text: str, tokens: Sequence[int], max_tokens: int, on_tokens: Callable[[int], None] | None = None
    ) -> Completion:
        """The greedy continuation of a prompt given both as text and as the model's tokens.

        ``on_tokens(n)``: prompt tokens read so far, where the backend can tell before it answers.
        """

    @abstractmethod
    def score(self, tokens: Sequence[int], on_tokens: Callable[[int], None] | None = None) -> Scores:
        """Log-likelihoods of ``tokens`` (a BOS first where the model wants one), from a fresh context.

        Raises ``PromptCut`` or ``ScoresUnavailable`` when the column cannot be scored.
        """


class Backend(ABC):
    """A model as an evaluation sees it: its tokens, its columns, and sessions to run them in."""

    parallel: int = 1  # prompts in flight at once; 1: in order, in the calling thread
    reuses_prefix: bool = False  # consecutive prompts keep their shared prefix evaluated
    scores_first_token: bool = True  # False: a window's first token gets no log-likelihood (a server's echo)
    may_truncate: bool = False  # the model may see less than was sent (a server): records say where it did

    @property
    @abstractmethod
    def columns(self) -> list[str]:
        """The labels of what is compared, in order: variants of one model, or servers."""

    @property
    @abstractmethod
    def tokenizer(self) -> Tokenizer: ...

    @property
    @abstractmethod
    def context_length(self) -> int | None:
        """The context default sweeps go up to: the model's (8192 for a file that states none); None where
        unknown (served models without their GGUF)."""

    @property
    @abstractmethod
    def native_context(self) -> int | None:
        """The context the model was trained with, before any scaling; None where unknown."""

    @property
    @abstractmethod
    def name(self) -> str:
        """What plots call the model: the file's name, or what is served."""

    def check_fits(self, n_tokens: int, advice: str) -> None:
        """Refuse, before any work, a run whose longest prompt cannot fit in memory (``advice``: what to do)."""
        return None

    def check_scores(self) -> None:
        """Refuse, before any work, a backend whose log-likelihoods cannot be trusted."""
        return None

    def scale_key(self, column: str, length: int) -> Hashable:
        """Lengths with equal keys run under the same scaling (``dynamic-yarn``'s depends on the length)."""
        return None

    def scale_groups(self, column: str, lengths: Sequence[int]) -> list[list[int]]:
        """``lengths`` in groups that share a scaling, so that one session serves each group."""
        groups: dict[Hashable, list[int]] = {}
        for n in lengths:
            groups.setdefault(self.scale_key(column, n), []).append(n)
        return list(groups.values())

    @abstractmethod
    def session(self, column: str, n_ctx: int, length: int) -> contextlib.AbstractContextManager[Session]:
        """The column's model for prompts of up to ``n_ctx`` tokens, with its scaling for ``length``."""

    def with_columns(self, columns: Sequence[str]) -> Backend:
        """The same model under other columns (variants), sharing what this backend loaded; closing it closes
        nothing of this one's."""
        raise InputError("a served model's scaling is the server's: only a model run here can be given others")

    def compared_session(
        self, reference: str, column: str, n_ctx: int, length: int
    ) -> contextlib.AbstractContextManager[ComparedSession]:
        """The columns ``reference`` and ``column`` loaded together, for windows of up to ``n_ctx`` tokens."""
        raise InputError(
            "comparing distributions needs every position's whole distribution, which only a model run here gives"
        )

    @abstractmethod
    def record(self) -> dict[str, Any]:
        """What a run's record says of the model: the file and its header, or the servers and tokenizer."""

    @abstractmethod
    def mismatch(self, saved: dict[str, Any]) -> str | None:
        """Why a saved record's model is not this one (the end of "FILE holds a run ..."), None if it is."""

    def timings(self) -> dict[str, float]:
        """Where a scoring run's time went, where the backend measures it (seconds by name)."""
        return {}

    def speed(self, budget_tokens: int) -> Speed | None:
        """This machine's speed on the model, from a short measurement of at most about ``budget_tokens``
        prompt tokens; None where it cannot be measured here (a server's machine)."""
        return None

    def tokens_that_fit(self) -> int | None:
        """The longest context whose KV cache fits in the memory free where it would live; None where unknown."""
        return None

    def notes(self) -> list[str]:
        """What the user should know about how the backend was set up (shown before a run)."""
        return []

    def close(self) -> None:
        self.tokenizer.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
