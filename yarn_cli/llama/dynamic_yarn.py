"""``chat --yarn dynamic``: a session that starts with the model as it came and rescales as it grows.

When the next turn would not fit the current window (the native context times the current factor),
the model is loaded again with the smallest YaRN factor from ``rope.yarn_ladder.LADDER`` that holds it
(llama.cpp fixes the scaling when a context is created; the old one is freed first, so memory does
not double), and the conversation is evaluated again. The factor only grows, until ``reset``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import llama_cpp

from yarn_cli.errors import UnsupportedModelError
from yarn_cli.llama.loader import Effective, LoadOptions, load_model
from yarn_cli.model import Model
from yarn_cli.rope.scaling import Method
from yarn_cli.rope.yarn_ladder import dynamic_factor


@dataclass
class Rescale:
    """What a change of scale did."""

    factor: float | None  # None: back to the model as it came
    seconds: float  # loading the model again


class DynamicYarn:
    """Which scaling a conversation of a given size runs with, and the loads that apply it."""

    def __init__(self, model: Model, options: LoadOptions) -> None:
        rope = model.rope
        if not rope.uses_rope:
            raise UnsupportedModelError(f"{model.architecture} models use {rope.no_rope_reason}: nothing to scale")
        native = rope.native_context or rope.trained_context
        if not native:
            raise UnsupportedModelError(f"{model.path} states no context length; --yarn dynamic needs one")
        self.model = model
        self.options = options
        self.native = native
        self.factor: float | None = None  # the ladder's factor over the model as it came (None: as it came)
        self.max_factor = 1.0  # the context's size over the native one, known once loaded
        self.effective: Effective | None = None  # what llama.cpp made of the latest load

    @property
    def scale(self) -> float | None:
        """The RoPE scale factor the latest load runs with: the ladder's factor times the model's own YaRN, if any."""
        return self.effective.factor if self.effective is not None else None

    def load(self, factor: float | None = None) -> tuple[llama_cpp.Llama, Effective]:
        rope = self.model.rope
        scaling = rope.as_it_came() if factor is None else rope.runtime(Method.YARN, factor)
        self.factor = factor
        llm, self.effective = load_model(self.model, replace(self.options, scaling=scaling))
        self.max_factor = max(1.0, llm.n_ctx() / self.native)
        return llm, self.effective

    def needed(self, tokens: int) -> float | None:
        """A larger factor when ``tokens`` no longer fit the current window, else None (no change)."""
        factor = dynamic_factor(tokens, self.native)
        if factor is None or self.max_factor <= 1.0:
            return None
        factor = min(factor, self.max_factor)  # past the context, the oldest turns are dropped instead
        if self.factor is not None and factor <= self.factor:
            return None
        return factor

    def rescale(self, old: llama_cpp.Llama, factor: float | None) -> tuple[llama_cpp.Llama, Rescale]:
        """Free ``old``, load the model with ``factor``."""
        old.close()
        start = time.perf_counter()
        llm, _ = self.load(factor)
        return llm, Rescale(factor, time.perf_counter() - start)
