"""A run's time before it starts, job by job, and the time left as it goes.

Each job (a trial, a sample, a scored window) is priced with the backend's measured ``Speed``: its
prompt tokens where they sit in the context (those a kept prefix spares are free), and its answer at
its cap. The ETA then scales what the estimate says is left by how the run's real time compares with
the estimate of the work done, so a machine slower or faster than measured corrects itself.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from yarn_cli.backend import Backend, Speed

# The speed measurement spends at most this share of a run's prompt tokens (a short run, a short measurement).
MEASURED_SHARE = 20


@dataclass(frozen=True)
class Estimate:
    """The planned jobs' prompt tokens and estimated seconds, in the order the run takes them."""

    tokens: tuple[int, ...]
    seconds: tuple[float, ...]
    speed: Speed

    @classmethod
    def of(cls, jobs: Iterable[tuple[int, float]], speed: Speed) -> Estimate:
        listed = list(jobs)
        return cls(tuple(t for t, _ in listed), tuple(s for _, s in listed), speed)

    @property
    def total_seconds(self) -> float:
        return self._ends[1][-1]

    @functools.cached_property
    def _ends(self) -> tuple[list[int], list[float]]:
        """Where each job's tokens and seconds end, counted from the run's start (asked at every batch)."""
        return list(itertools.accumulate(self.tokens)), [0.0, *itertools.accumulate(self.seconds)]

    def seconds_done(self, tokens_done: int) -> float:
        """The estimated seconds of the first ``tokens_done`` prompt tokens (a job's share by its tokens)."""
        ends, seconds = self._ends
        whole = bisect.bisect_right(ends, tokens_done)
        done = seconds[whole]
        if whole < len(self.tokens) and self.tokens[whole]:
            before = ends[whole - 1] if whole else 0
            done += self.seconds[whole] * (tokens_done - before) / self.tokens[whole]
        return done

    def seconds_left(self, tokens_done: int, elapsed: float) -> float:
        """What is left, in this machine's real seconds: the estimate's, scaled by elapsed / estimated so far."""
        done = self.seconds_done(tokens_done)
        left = self.total_seconds - done
        return left * elapsed / done if done > 0 and elapsed > 0 else left


def estimate_completions(backend: Backend, completions: Sequence[tuple[int, int, int]]) -> Estimate | None:
    """Greedy completions' time on the backend's measured speed, each given as (its prompt tokens, those evaluated
    after the prefix kept from the one before, its answer's cap), in the order they run; None where the backend
    has no speed (a server) or nothing is to run."""
    speed = measured_speed(backend, sum(evaluated for _, evaluated, _ in completions))
    if speed is None:
        return None
    jobs = [(evaluated, completion_seconds(speed, n, evaluated, cap)) for n, evaluated, cap in completions]
    return Estimate.of(jobs, speed)


def completion_seconds(speed: Speed, prompt_tokens: int, evaluated: int, answer_tokens: int) -> float:
    """A greedy completion: the last ``evaluated`` of its ``prompt_tokens`` read, then up to ``answer_tokens``."""
    return speed.prompt_seconds(prompt_tokens - evaluated, prompt_tokens) + speed.generated_seconds(
        answer_tokens, prompt_tokens
    )


def measured_speed(backend: Backend, tokens: int) -> Speed | None:
    """The backend's speed, measured with at most a twentieth of the run's ``tokens``; None for a run with none."""
    return backend.speed(tokens // MEASURED_SHARE) if tokens else None
