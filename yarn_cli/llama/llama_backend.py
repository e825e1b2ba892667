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

from yarn_cli.backend import Backend, Completion, Scores, Session
from yarn_cli.llama.evaluation import EvaluationTime, Vocabulary, greedy_completion, negative_log_likelihoods
from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.llama.memory import check_kv_memory
from yarn_cli.llama.scoring import LogitScorer
from yarn_cli.model import Model
from yarn_cli.rope.variants import Variant

DEFAULT_CONTEXT = 8192  # what a sweep goes up to for a file that states no context


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
