"""Passkey retrieval, as the YaRN paper's code runs it (jquesnelle/yarn, ``eval/passkey.py``).

A key is hidden at some depth inside filler text; the model is asked for it and
answers greedily. Lengths are counted in the model's own tokens. This module is the
protocol (prompts, seeded trials, scoring, summaries); ``passkey_run`` runs it on a
backend, ``passkey_report`` keeps its record.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from yarn_cli.errors import InputError
from yarn_cli.evals.records import checked_row

TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
GARBAGE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = "What is the pass key? The pass key is"
KEY_MIN, KEY_MAX = 1, 50000
ANSWER_TOKENS = 10
PASSKEY_ACCURACY = 0.8  # the paper's "passkey context": the largest length with accuracy >= 80%

Tokenizer = Callable[[str], list[int]]


def info_line(key: int) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key."


def build_prompt(prefix_chars: int, suffix_chars: int, key: int) -> str:
    """The paper's prompt: task, filler, the key's line, filler, question, joined by newlines."""
    return "\n".join([TASK, filler(prefix_chars), info_line(key), filler(suffix_chars), QUESTION])


def filler(chars: int) -> str:
    repeats = chars // (len(GARBAGE) + 1) + 1
    return " ".join([GARBAGE] * repeats)[:chars]


def parse_answer(output: str) -> int | None:
    """The first run of digits in the output, as the paper's code reads it (``int(re.search(r'\\d+'))``)."""
    match = re.search(r"\d+", output)
    return int(match.group()) if match else None


def parse_depths(text: str | None) -> list[float] | None:
    """None (uniform random, as in the paper), ``0,0.5,1``, or ``grid:K`` (K evenly spaced)."""
    if text is None or text.strip() in ("", "random"):
        return None
    value = text.strip()
    try:
        if value.startswith("grid:"):
            k = int(value[5:])
            if k < 1:
                raise ValueError
            return [0.5] if k == 1 else [i / (k - 1) for i in range(k)]
        depths = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"cannot read --depths {text!r}: use random, 0,0.25,0.5 or grid:5") from None
    if not depths or any(not 0 <= d <= 1 for d in depths):
        raise InputError(f"--depths must be numbers between 0 and 1, got {text!r}")
    return depths


@dataclass(frozen=True)
class TrialSpec:
    """One trial, the same under every variant: the length, the key and where it sits."""

    length: int
    index: int
    key: int
    depth: float


def plan_trials(lengths: Sequence[int], trials: int, depths: list[float] | None, seed: int) -> list[TrialSpec]:
    """Keys and depths drawn per (length, trial) from the seed, so every variant and every resume sees the same."""
    if trials < 1:
        raise InputError(f"--trials must be at least 1, got {trials}")
    specs = []
    for length in lengths:
        for i in range(trials):
            rng = random.Random(f"{seed}:{length}:{i}")
            key = rng.randint(KEY_MIN, KEY_MAX)
            depth = depths[i % len(depths)] if depths else rng.random()
            specs.append(TrialSpec(length, i, key, depth))
    return specs


@dataclass(frozen=True)
class Prompt:
    text: str
    tokens: list[int]
    prefix_chars: int
    depth: float  # where the key's line starts, as a fraction of the filler


MAX_CHARS_PER_TOKEN = 256


class PromptBuilder:
    """Sizes the filler so that a prompt lands at or just below a target in the model's tokens.

    The filler is one sentence repeated, so its characters per token are nearly constant: the search
    starts from that ratio, measured once, and closes in by interpolation (bisecting whenever that
    does not halve the interval). 4 to 6 tokenizations a prompt, where a bisection from a blind guess
    took 16 (SmolLM2) and, at 64k tokens, tokenized half a megabyte of text at every step.
    """

    def __init__(self, tokenize: Tokenizer) -> None:
        self.tokenize = tokenize
        self.fixed_tokens = len(tokenize(build_prompt(0, 0, KEY_MAX)))
        sample = len(GARBAGE) * 40
        self.chars_per_token = sample / max(len(tokenize(filler(sample))), 1)

    def check_length(self, length: int) -> None:
        if length < self.fixed_tokens + 16:
            raise InputError(
                f"a length of {length} tokens is too short: the task, key and question alone take "
                f"{self.fixed_tokens} tokens; use at least {self.fixed_tokens + 16}"
            )

    def build(self, spec: TrialSpec) -> Prompt:
        self.check_length(spec.length)
        built: dict[int, tuple[str, list[int], int]] = {}

        def prompt_for(total_chars: int) -> tuple[str, list[int], int]:
            if total_chars not in built:
                prefix = round(spec.depth * total_chars)
                text = build_prompt(prefix, total_chars - prefix, spec.key)
                built[total_chars] = (text, self.tokenize(text), prefix)
            return built[total_chars]

        def count(total_chars: int) -> int:
            return len(prompt_for(total_chars)[1])

        guess = max(1, round((spec.length - self.fixed_tokens) * self.chars_per_token))
        chars = largest_within(count, spec.length, guess, spec.length * MAX_CHARS_PER_TOKEN)
        text, tokens, prefix = prompt_for(chars)
        return Prompt(text, tokens, prefix, spec.depth)


def largest_within(count: Callable[[int], int], target: int, guess: int, most: int) -> int:
    """The largest ``n`` in [0, ``most``] with ``count(n) <= target``, ``count`` growing with ``n``, searched from
    ``guess``: outwards to a bracket, then by interpolation, bisecting once whenever a step does not halve it.

    Where ``count`` is not monotone (a tokenizer merging across one more character), an ``n`` with
    ``count(n) <= target < count(n + 1)``. 0 where even ``count(0)`` is over the target (``check_length``
    rules that out for a prompt); an ``InputError`` where ``count(most)`` is not.
    """
    step = max(16, guess // 50)
    x = min(max(guess, 0), most)
    n = count(x)
    if n <= target:  # walk up until past the target
        low, n_low = x, n
        while True:
            if low >= most:
                raise InputError(
                    f"the tokenizer counts {n_low:,} tokens in a prompt of {low:,} characters: it is not tokenizing "
                    "the text (with a server, give the model's GGUF as --tokenizer)"
                )
            x = min(low + step, most)
            n = count(x)
            if n > target:
                high, n_high = x, n
                break
            low, n_low, step = x, n, 2 * step
    else:  # walk down until within it
        high, n_high = x, n
        while True:
            x = max(high - step, 0)
            n = count(x)
            if n <= target:
                low, n_low = x, n
                break
            if x == 0:
                return 0
            high, n_high, step = x, n, 2 * step
    bisect = False
    while high - low > 1:
        width = high - low
        if bisect or n_high <= n_low:
            mid = (low + high) // 2
        else:
            mid = low + round((target + 0.5 - n_low) * width / (n_high - n_low))
            mid = min(max(mid, low + 1), high - 1)
        n = count(mid)
        if n <= target:
            low, n_low = mid, n
        else:
            high, n_high = mid, n
        bisect = high - low > width / 2
    return low


@dataclass
class TrialResult:
    variant: str
    length: int
    index: int
    prompt_tokens: int
    depth: float
    key: int
    output: str
    answer: int | None
    correct: bool
    seconds: float
    evaluated_tokens: int
    server_prompt_tokens: int | None = None  # what a server said it evaluated (usage.prompt_tokens)
    truncated: bool = False  # the server saw fewer tokens than were sent: not the model's failure

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        """A trial as a saved run holds it, each value checked: a damaged record fails here, not mid-run."""
        return checked_row(cls, data, "trial")


@dataclass
class Summary:
    variant: str
    length: int
    accuracy: float | None  # None when every trial was truncated by a server
    trials: int  # trials the model really saw whole
    truncated: int = 0


def summarize(results: Iterable[TrialResult]) -> list[Summary]:
    groups: dict[tuple[str, int], list[TrialResult]] = {}
    for r in results:
        groups.setdefault((r.variant, r.length), []).append(r)
    summaries = []
    for (variant, length), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        whole = [r.correct for r in group if not r.truncated]
        accuracy = sum(whole) / len(whole) if whole else None
        summaries.append(Summary(variant, length, accuracy, len(whole), len(group) - len(whole)))
    return summaries


def passkey_context(summaries: Iterable[Summary], variant: str) -> int | None:
    """The largest tested length with accuracy >= 80% (the paper's definition), over untruncated trials."""
    passing = [
        s.length
        for s in summaries
        if s.variant == variant and s.accuracy is not None and s.accuracy >= PASSKEY_ACCURACY
    ]
    return max(passing) if passing else None


def reuse_order(prompts: list[tuple[TrialSpec, Prompt]]) -> list[tuple[TrialSpec, Prompt]]:
    """Ascending filler before the key, whatever the length: each prompt shares the previous one's prefix."""
    return sorted(prompts, key=lambda sp: (sp[1].prefix_chars, sp[0].index))


def score(output: str, key: int) -> tuple[int | None, bool]:
    answer = parse_answer(output)
    return answer, answer == key


SCHEMA_VERSION = 1
CALIBRATION_CHARS = 4000


def calibration_prompts() -> tuple[str, str]:
    """Two prompts that differ only in their filler, to estimate a server's tokens per character with."""
    return build_prompt(0, 0, KEY_MAX), build_prompt(CALIBRATION_CHARS, 0, KEY_MAX)


@dataclass(frozen=True)
class PasskeySettings:
    lengths: list[int]
    trials: int = 10
    depths: list[float] | None = None
    seed: int = 0

    def identity(self) -> dict[str, Any]:
        """What must match for a saved run's trials to be reused (lengths and variants may grow)."""
        return {"seed": self.seed, "depths": self.depths, "answer_tokens": ANSWER_TOKENS}


TrialKey = tuple[str, int, int]  # variant, length, index


def trial_key(r: TrialResult) -> TrialKey:
    return (r.variant, r.length, r.index)


def trial_result(
    variant: str, spec: TrialSpec, prompt: Prompt, output: str, seconds: float, evaluated: int
) -> TrialResult:
    answer, correct = score(output, spec.key)
    return TrialResult(
        variant=variant,
        length=spec.length,
        index=spec.index,
        prompt_tokens=len(prompt.tokens),
        depth=round(prompt.depth, 6),
        key=spec.key,
        output=output,
        answer=answer,
        correct=correct,
        seconds=round(seconds, 4),
        evaluated_tokens=evaluated,
    )
