"""RULER's prompts sized in the model's own tokens, as RULER sizes them.

RULER searches, per task and length, the largest haystack whose prompt (input and answer prefix,
in the model's template) plus the task's tokens to generate fits the length. Here the search is
per sample, with the sample's draws fixed, so every sample fills its length as closely as its
haystack's grain allows; a prompt must use at least 85% of its length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yarn_cli.backend import Tokenizer
from yarn_cli.errors import InputError
from yarn_cli.evals.ruler_haystack import Essay
from yarn_cli.evals.ruler_tasks import (
    GENERATORS,
    TASKS,
    VT_ICL_TOKENS,
    Draw,
    Task,
    split_answer_prefix,
    vt_example_text,
)

FILL = 0.85  # a prompt and its answer take at least this share of the length


@dataclass(frozen=True)
class RulerPrompt:
    """One sample as the model is given it; ``input + answer_prefix`` is the text completed (before a template)."""

    task: str
    length: int
    index: int
    input: str
    answer_prefix: str
    outputs: list[str]
    text: str  # what the model completes: input + answer_prefix, or both in its chat template
    tokens: list[int]
    haystack: int  # the haystack's size, in its task's units

    @property
    def max_tokens(self) -> int:
        return TASKS[self.task].tokens_to_generate

    @property
    def sized(self) -> int:
        """RULER's ``length``: the prompt's tokens and the tokens to generate."""
        return len(self.tokens) + self.max_tokens

    def to_jsonl(self) -> dict[str, Any]:
        """RULER's own JSONL fields, and the task."""
        return {"index": self.index, "input": self.input, "outputs": self.outputs, "length": self.sized,
                "answer_prefix": self.answer_prefix, "task": self.task}  # fmt: skip


class PromptBuilder:
    """Builds and sizes samples for one run: its seed, tokenizer, essay and template are fixed."""

    def __init__(self, tokenizer: Tokenizer, seed: int, essay: Essay | None, *, chat_template: bool) -> None:
        self.tokenizer = tokenizer
        self.seed = seed
        self.essay = essay
        self.chat_template = chat_template
        self._vt_example: str | None = None
        self._sizes: dict[tuple[str, int], int] = {}  # the last sample's haystack, per task and length

    def render(self, input_text: str, answer_prefix: str) -> tuple[str, list[int]]:
        if self.chat_template:
            return self.tokenizer.chat_prompt(input_text, answer_prefix)
        text = input_text + answer_prefix
        return text, self.tokenizer.tokenize(text, add_bos=True)

    def vt_example(self, task: Task) -> str:
        """vt's answered in-context example, once per run: the largest within 500 tokens (RULER's size)."""
        if self._vt_example is None:
            draw = Draw(f"{self.seed}:{task.name}:example", self.seed, VT_ICL_TOKENS, None)

            def tokens(size: int) -> int:
                return len(self.tokenizer.tokenize(vt_example_text(task, draw, size)[0], add_bos=False))

            size = _largest(task.smallest, None, lambda n: tokens(n) <= VT_ICL_TOKENS)
            if size is None:
                raise InputError(f"the tokenizer counts more than {VT_ICL_TOKENS} tokens in vt's shortest example")
            text, answer = vt_example_text(task, draw, size)
            self._vt_example = text + " " + " ".join(answer) + "\n"
        return self._vt_example

    def build(self, name: str, length: int, index: int) -> RulerPrompt:
        task = TASKS[name]
        essay = self.essay if task.haystack == "essay" else None
        draw = Draw(
            f"{self.seed}:{name}:{length}:{index}",
            self.seed,
            length,
            essay,
            self.vt_example(task) if task.kind == "variable_tracking" else None,
        )
        generate = GENERATORS[task.kind]
        built: dict[int, RulerPrompt] = {}

        def at(size: int) -> RulerPrompt:
            if size not in built:
                full, outputs = generate(task, draw, size)
                input_text, prefix = split_answer_prefix(task, full)
                text, tokens = self.render(input_text, prefix)
                built[size] = RulerPrompt(name, length, index, input_text, prefix, outputs, text, tokens, size)
            return built[size]

        if essay is not None and len(essay.words) < task.smallest:
            raise InputError(
                f"--haystack {essay.source} is too short for {name}: it has {len(essay.words):,} words; give a longer "
                "text"
            )
        smallest = at(task.smallest)
        if smallest.sized > length:
            raise InputError(
                f"a length of {length:,} tokens is too short for {name}: its shortest prompt and the "
                f"{task.tokens_to_generate} tokens it generates take {smallest.sized:,}; test longer lengths"
            )
        most = len(essay.words) if essay is not None else None
        guess = self._sizes.get((name, length))
        if guess is None:  # from the tokens one more unit of haystack costs
            doubled = at(task.smallest * 2).sized
            per_unit = max(doubled - smallest.sized, 1) / task.smallest
            guess = task.smallest + int((length - smallest.sized) / per_unit)
        size = _largest(task.smallest, most, lambda n: at(n).sized <= length, guess)
        assert size is not None
        prompt = at(size)
        self._sizes[(name, length)] = size  # the next sample's search starts here
        if prompt.sized < FILL * length:
            if essay is not None and size == most:
                raise InputError(
                    f"--haystack {essay.source} is too short for {name} at {length:,} tokens: its "
                    f"{len(essay.words):,} words fill {prompt.sized:,}; give a longer text or test shorter lengths"
                )
            raise InputError(
                f"{name} at {length:,} tokens fills only {prompt.sized:,} ({prompt.sized / length:.0%}; RULER's "
                f"prompts fill the length): test longer lengths"
            )
        return prompt


def _largest(low: int, most: int | None, fits: Callable[[int], bool], guess: int | None = None) -> int | None:
    """The largest size from ``low`` (up to ``most``) that ``fits``, sizes being monotone; None if none fits.

    The search starts at ``guess`` and widens its steps from there, so a good guess costs a few fits.
    """
    if not fits(low):
        return None
    guess = max(low + 1, guess if guess is not None else low * 2)
    if most is not None:
        if most <= low:
            return low
        guess = min(guess, most)
    step = max(1, guess // 512)
    if fits(guess):
        low, high = guess, guess + step
        while True:
            if most is not None and high >= most:
                if fits(most):
                    return most
                high = most
                break
            if not fits(high):
                break
            step *= 2
            low, high = high, high + step
    else:
        high = guess
        while (candidate := high - step) > low:
            if fits(candidate):
                low = candidate
                break
            high, step = candidate, step * 2
    while high - low > 1:
        mid = (low + high) // 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return low


def essay_identity(essay: Essay | None) -> dict[str, Any] | None:
    """What a record says of the essay haystack: its name, size and hash (a resume needs the same text)."""
    if essay is None:
        return None
    digest = hashlib.sha256(essay.text.encode("utf-8")).hexdigest()
    return {"file": essay.source, "words": len(essay.words), "sha256": digest}
