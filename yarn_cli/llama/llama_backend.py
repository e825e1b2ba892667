"""The evaluations' backend in this process: one GGUF model, one column per scaling variant.

Each session is the model loaded in llama.cpp with its variant's run-time scaling (the keys
``convert`` would write, passed as key overrides), sized for the session's longest prompt. Only
one is loaded at a time. Consecutive prompts keep their shared prefix in the KV cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import llama_cpp
import numpy as np

from yarn_cli.backend import Backend, ComparedSession, Comparison, Completion, Scores, Session, Speed
from yarn_cli.llama.devices import resolve_gpu_layers
from yarn_cli.llama.evaluation import (
    ComparedLikelihoods,
    EvaluationTime,
    Vocabulary,
    compared_log_likelihoods,
    greedy_completion,
    negative_log_likelihoods,
)
from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.llama.memory import check_kv_memory, kv_memory
from yarn_cli.llama.scoring import LogitScorer
from yarn_cli.llama.speed import measure_speed
from yarn_cli.model import Model
from yarn_cli.rope.variants import Variant, parse_variants

DEFAULT_CONTEXT = 8192  # what a sweep goes up to for a file that states no context
SPEED_CONTEXT = 1024  # the context the speed is measured in


@dataclass(frozen=True)
class LocalScores(Scores):
    nll: np.ndarray[Any, np.dtype[np.float64]]
    evaluated_tokens: int

    def total(self, start: int, stop: int) -> tuple[float, int]:
        return float(self.nll[start:stop].sum()), stop - start


class LlamaSession(Session):
    def __init__(self, llm: llama_cpp.Llama, *, reuse: bool, timings: EvaluationTime) -> None:
        self.llm = llm
        self.reuse = reuse
        self.timings = timings
        self._scorer: LogitScorer | None = None

    def complete(
        self, text: str, tokens: Sequence[int], max_tokens: int, on_tokens: Callable[[int], None] | None = None
    ) -> Completion:
        output, evaluated = greedy_completion(self.llm, tokens, max_tokens, reuse=self.reuse, on_tokens=on_tokens)
        return Completion(output, evaluated)

    def score(self, tokens: Sequence[int], on_tokens: Callable[[int], None] | None = None) -> Scores:
        if self._scorer is None:
            # llama.cpp's batch threads are idle while a batch is scored: the scoring takes them
            self._scorer = LogitScorer(self.llm.n_vocab(), workers=self.llm.context_params.n_threads_batch)
        nll = negative_log_likelihoods(self.llm, tokens, on_tokens, scorer=self._scorer, timings=self.timings)
        return LocalScores(nll, len(tokens))

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.close()
        self.llm.close()


@dataclass(frozen=True)
class LocalComparison(Comparison):
    likelihoods: ComparedLikelihoods
    evaluated_tokens: int

    @property
    def reference(self) -> Scores:
        return LocalScores(self.likelihoods.reference, self.evaluated_tokens // 2)

    @property
    def variant(self) -> Scores:
        return LocalScores(self.likelihoods.variant, self.evaluated_tokens // 2)

    def divergences(self, start: int, stop: int) -> Sequence[float]:
        return self.likelihoods.kl[start:stop]  # type: ignore[no-any-return]

    def agreements(self, start: int, stop: int) -> int:
        return int(self.likelihoods.same_top[start:stop].sum())


class LlamaComparedSession(ComparedSession):
    def __init__(self, reference: llama_cpp.Llama, variant: llama_cpp.Llama, *, timings: EvaluationTime) -> None:
        self.models = (reference, variant)
        self.timings = timings
        self._scorer = LogitScorer(variant.n_vocab(), workers=variant.context_params.n_threads_batch)

    def score(self, tokens: Sequence[int], on_tokens: Callable[[int], None] | None = None) -> Comparison:
        compared = compared_log_likelihoods(*self.models, tokens, on_tokens, scorer=self._scorer, timings=self.timings)
        return LocalComparison(compared, 2 * len(tokens))

    def close(self) -> None:
        self._scorer.close()
        for llm in self.models:
            llm.close()


class LlamaBackend(Backend):
    """``model`` under each of ``variants``, loaded with ``options`` (threads, GPU layers, flash attention)."""

    def __init__(
        self, model: Model, variants: Sequence[Variant], options: LoadOptions | None = None, *, reuse: bool = True
    ) -> None:
        self.model = model
        self.variants = {variant.name: variant for variant in variants}
        self.options = options or LoadOptions()
        self.reuses_prefix = reuse
        self._vocabulary = Vocabulary(model)
        self._timings = EvaluationTime()
        self._checked = 0  # the longest context already checked against free memory
        self._owns_vocabulary = True
        self._speed: list[Speed] = []  # measured once, shared with the backends of other columns

    @property
    def columns(self) -> list[str]:
        return list(self.variants)

    @property
    def tokenizer(self) -> Vocabulary:
        return self._vocabulary

    @property
    def context_length(self) -> int | None:
        return self.model.context_length or DEFAULT_CONTEXT

    @property
    def native_context(self) -> int | None:
        return self.model.original_context

    @property
    def name(self) -> str:
        return self.model.path.name

    def check_fits(self, n_tokens: int, advice: str) -> None:
        check_kv_memory(self.model, n_tokens, advice, self.options.n_gpu_layers)
        self._checked = max(self._checked, n_tokens)

    def tokens_that_fit(self) -> int | None:
        per_token = self.model.shape.kv_cache_bytes(1)
        free, _ = kv_memory(self.model, resolve_gpu_layers(self.options.n_gpu_layers))
        return free // per_token if per_token and free else None

    def speed(self, budget_tokens: int) -> Speed:
        """Measured in a short context of the first column's model, loaded for it alone (on a CPU, a second
        load of a 7B costs what the first did: seconds, against a run of hours)."""
        if not self._speed:
            column = self.columns[0]
            with self.session(column, SPEED_CONTEXT, SPEED_CONTEXT) as session:
                self._speed.append(measure_speed(session.llm, self.model, budget_tokens))
        return self._speed[0]

    def scale_key(self, column: str, length: int) -> Hashable:
        variant = self.variants[column]
        return variant.runtime(length, self.model.rope) if variant.dynamic else None

    @contextlib.contextmanager
    def session(self, column: str, n_ctx: int, length: int) -> Iterator[LlamaSession]:
        options = replace(
            self.options,
            n_ctx=n_ctx,
            scaling=self.variants[column].runtime(length, self.model.rope),
            memory_checked=n_ctx <= self._checked,
        )
        llm, _ = load_model(self.model, options)
        session = LlamaSession(llm, reuse=self.reuses_prefix, timings=self._timings)
        try:
            yield session
        finally:
            session.close()  # freed in order now, not by the garbage collector later

    @contextlib.contextmanager
    def compared_session(self, reference: str, column: str, n_ctx: int, length: int) -> Iterator[LlamaComparedSession]:
        """Both variants loaded at once: on a CPU the weights are mapped once, the KV caches are two."""
        loaded = []
        try:
            for name in (reference, column):
                options = replace(
                    self.options,
                    n_ctx=n_ctx,
                    scaling=self.variants[name].runtime(length, self.model.rope),
                    memory_checked=n_ctx <= self._checked,
                )
                loaded.append(load_model(self.model, options)[0])
            session = LlamaComparedSession(loaded[0], loaded[1], timings=self._timings)
        except BaseException:
            for llm in loaded:
                llm.close()
            raise
        try:
            yield session
        finally:
            session.close()

    def with_columns(self, columns: Sequence[str]) -> LlamaBackend:
        other = LlamaBackend(self.model, parse_variants(",".join(columns), self.model.rope), self.options,
                             reuse=self.reuses_prefix)  # fmt: skip
        other._vocabulary, other._timings, other._checked = self._vocabulary, self._timings, self._checked
        other._speed = self._speed
        other._owns_vocabulary = False
        return other

    def close(self) -> None:
        if self._owns_vocabulary:
            super().close()

    def record(self) -> dict[str, Any]:
        return self.model.record()

    def mismatch(self, saved: dict[str, Any]) -> str | None:
        if saved.get("header_sha256") != self.model.header.fingerprint():
            return (
                "of another model, or of this file before it was converted (their headers differ); choose another "
                "--json file to keep it"
            )
        return None

    def timings(self) -> dict[str, float]:
        return {"decode": self._timings.decode, "scoring": self._timings.scoring}
