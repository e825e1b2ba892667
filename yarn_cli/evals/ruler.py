"""RULER (Hsieh et al., arXiv 2404.06654): the protocol's settings, samples, scoring and verdict.

A sample is one prompt of one task at one length, the same under every variant. RULER scores each
with ``string_match_all`` (the share of the expected strings found in the answer, case-insensitive),
a task at a length by the mean over its samples in percent, and a length by the mean over its
tasks. The effective context is the largest length whose mean reaches the threshold (85.6, Llama-2-7B's
score at 4k), counting only lengths below the first one that falls short. ``ruler_tasks`` builds the
prompts, ``ruler_run`` runs them on a backend, ``ruler_report`` keeps the record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from yarn_cli.errors import InputError
from yarn_cli.evals.records import checked_row
from yarn_cli.evals.ruler_haystack import NOISE
from yarn_cli.evals.ruler_tasks import NIAH_PREFIX, NIAH_TEMPLATE, TASKS

THRESHOLD = 85.6  # RULER's: Llama-2-7B's mean score at 4k
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RulerSettings:
    lengths: list[int]
    tasks: list[str]
    samples: int = 10
    seed: int = 0
    threshold: float = THRESHOLD
    chat_template: bool = False
    haystack: dict[str, Any] | None = None  # the essay text's identity, where a task uses it

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise InputError(f"--samples must be at least 1, got {self.samples}")
        if not math.isfinite(self.threshold) or not 0 <= self.threshold <= 100:
            raise InputError(f"--threshold is a score in percent, from 0 to 100; got {self.threshold}")

    def identity(self) -> dict[str, Any]:
        """What must match for a saved run's samples to be reused (lengths, tasks and variants may grow)."""
        return {"seed": self.seed, "chat_template": self.chat_template, "haystack": self.haystack}


@dataclass
class SampleResult:
    task: str
    length: int
    index: int
    variant: str
    prompt_tokens: int
    outputs: list[str]  # the expected strings
    output: str  # the model's answer
    score: float  # string_match_all, 0..1
    seconds: float
    evaluated_tokens: int
    server_prompt_tokens: int | None = None  # what a server said it evaluated (usage.prompt_tokens)
    truncated: bool = False  # the server saw fewer tokens than were sent: not scored

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleResult:
        """A sample as a saved run holds it, each value checked: a damaged record fails here, not mid-run."""
        return checked_row(cls, data, "sample")


SampleKey = tuple[str, str, int, int]  # variant, task, length, index


def sample_key(r: SampleResult) -> SampleKey:
    return (r.variant, r.task, r.length, r.index)


_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(prediction: str) -> str:
    """RULER's ``postprocess_pred``: stripped, control characters made newlines."""
    return _CONTROL.sub("\n", prediction.strip()).strip()


def string_match_all(prediction: str, expected: Sequence[str]) -> float:
    """RULER's metric for one sample: the share of expected strings in the prediction, case-insensitive."""
    answer = postprocess(prediction).lower()
    return sum(1.0 if r.lower() in answer else 0.0 for r in expected) / len(expected)


@dataclass
class TaskScore:
    variant: str
    task: str
    length: int
    score: float | None  # percent, rounded as RULER rounds (2 places); None when every sample was truncated
    samples: int  # samples the model saw whole
    truncated: int = 0


def summarize(results: Iterable[SampleResult]) -> list[TaskScore]:
    groups: dict[tuple[str, str, int], list[SampleResult]] = {}
    for r in results:
        groups.setdefault((r.variant, r.task, r.length), []).append(r)
    order = list(TASKS)
    rows = []
    for (variant, task, length), group in sorted(groups.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]),
                                                                                 kv[0][2])):  # fmt: skip
        whole = [r.score for r in group if not r.truncated]
        score = round(sum(whole) / len(whole) * 100, 2) if whole else None
        rows.append(TaskScore(variant, task, length, score, len(whole), len(group) - len(whole)))
    return rows


def mean_over_tasks(rows: Iterable[TaskScore], variant: str, length: int) -> float | None:
    """The mean of the tasks' scores at a length (RULER's average); None where no task has a score."""
    scores = [r.score for r in rows if r.variant == variant and r.length == length and r.score is not None]
    return round(sum(scores) / len(scores), 2) if scores else None


def effective_context(rows: Sequence[TaskScore], variant: str, lengths: Sequence[int], threshold: float) -> int | None:
    """The largest length whose mean reaches ``threshold``, counting only lengths below the first that falls
    short (or has no score); None when the shortest already does."""
    effective = None
    for length in sorted(lengths):
        mean = mean_over_tasks(rows, variant, length)
        if mean is None or mean < threshold:
            break
        effective = length
    return effective


def calibration_prompts() -> tuple[str, str]:
    """Two prompts that differ only in their noise, to estimate a server's tokens per character with."""
    fill = {"type_needle_v": "numbers", "query": "key"}
    short = (NIAH_TEMPLATE + NIAH_PREFIX).format(context=NOISE, **fill)
    long = (NIAH_TEMPLATE + NIAH_PREFIX).format(context="\n".join([NOISE] * 40), **fill)
    return short, long
