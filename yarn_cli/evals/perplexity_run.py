"""Running a perplexity plan on a backend: every window scored once, under every column, then the record.

Consecutive passes of one column and scaling share a session (one model load in llama.cpp). A
column whose backend cut a window (a server with a shorter context than it says) or could not give
its log-likelihoods (a -inf or NaN) is reported and left out of the results; the others go on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from yarn_cli.backend import Backend, Comparison, PromptCut, Scores, ScoresUnavailable
from yarn_cli.errors import EvaluationError, InputError
from yarn_cli.evals.estimate import Estimate, measured_speed
from yarn_cli.evals.perplexity import (
    Pass,
    PerplexityResult,
    PerplexityRun,
    PerplexitySettings,
    Text,
    plan_passes,
    stream_span,
)
from yarn_cli.evals.perplexity_report import build_record, write_csv
from yarn_cli.evals.records import write_json


def run_perplexity(
    backend: Backend,
    text: Text,
    settings: PerplexitySettings,
    *,
    json_path: Path | None = None,
    csv_path: Path | None = None,
    on_start: Callable[[int, Estimate | None], None] | None = None,
    on_tokens: Callable[[int, str], None] | None = None,
    plan_only: bool = False,
) -> PerplexityRun:
    """Score ``text`` at every context under every column and write the record; KeyboardInterrupt propagates.

    ``on_start(tokens to evaluate, the run's estimated time)``, after a short measurement of the backend's
    speed where it has one; ``on_tokens(tokens just evaluated, the pass they belong to)``. ``plan_only``: stop
    after ``on_start``, scoring and writing nothing (the run returned has no results).
    """
    settings.check(backend.scores_first_token)
    if settings.reference is not None and settings.reference not in backend.columns:
        raise InputError(f"the reference {settings.reference} is not one of the variants compared")
    if settings.reference is not None and len(backend.scale_groups(settings.reference, settings.contexts)) > 1:
        # its scaling would have to follow each compared window's length: compare with a fixed one
        raise InputError(
            f"--reference {settings.reference} changes its scaling with the length across these contexts; compare "
            "against a fixed scaling such as none"
        )
    if settings.reference is not None and len(backend.columns) > 1:  # two KV caches at once
        backend.check_fits(2 * max(settings.contexts), "score shorter contexts (a reference keeps two KV caches)")
    else:
        backend.check_fits(max(settings.contexts), "score shorter contexts")
    backend.check_scores()
    tokenizer = backend.tokenizer
    bos = tokenizer.add_bos
    bos_token = [tokenizer.bos_token] if bos else []
    stream = tokenizer.tokenize(text.content, add_bos=False)
    span = stream_span(settings, bos)
    if len(stream) < span:
        raise InputError(
            f"the text has {len(stream):,} tokens but {settings.chunks} chunk(s) of {max(settings.contexts):,} "
            f"need {span:,}: give a longer text, fewer --chunks or shorter --contexts"
        )
    passes = plan_passes(settings, backend, bos)
    donor = _reference_donor(backend, settings)
    if settings.reference is not None and (donor is not None or not settings.score_reference):
        passes = [p for p in passes if p.column != settings.reference]
    if on_start:
        tokens = sum(p.length for p in passes)
        on_start(tokens, estimate_passes(backend, passes, settings.reference, tokens))
    if plan_only:
        return PerplexityRun([], 0, 0.0, {}, len(stream), bos, {}, {})
    sums: dict[tuple[str, int], float] = {}
    counts: dict[tuple[str, int], int] = {}
    divergence = Divergence()
    truncated: dict[str, str] = {}
    unscored: dict[str, str] = {}
    evaluated = 0
    started = time.perf_counter()
    number = 0
    reference = settings.reference
    for group in _sessions(passes):
        column = group[0].column
        if column in truncated or column in unscored:
            continue
        n_ctx, scale = max(p.length for p in group), group[0].scale_length
        if reference is not None and column != reference:
            # every window under the reference and the column at once, distributions compared batch by batch
            with backend.compared_session(reference, column, n_ctx, scale) as compared:
                for p in group:
                    number += 1
                    window = bos_token + stream[p.offset : p.offset + p.length - int(bos)]
                    comparison = compared.score(window, _reporter(on_tokens, column, number, len(passes), p))
                    evaluated += comparison.evaluated_tokens
                    _add(sums, counts, column, p, comparison.variant)
                    if column == donor:  # the reference's own figures, from the same windows
                        _add(sums, counts, reference, p, comparison.reference)
                    divergence.add(column, p, comparison)
            continue
        with backend.session(column, n_ctx, scale) as session:
            for p in group:
                number += 1
                window = bos_token + stream[p.offset : p.offset + p.length - int(bos)]
                try:
                    scores = session.score(window, _reporter(on_tokens, column, number, len(passes), p))
                except PromptCut as cut:
                    evaluated += cut.evaluated_tokens
                    truncated[column] = str(cut)
                    break
                except ScoresUnavailable as exc:
                    unscored[column] = str(exc)
                    break
                evaluated += scores.evaluated_tokens
                _add(sums, counts, column, p, scores)
    run = PerplexityRun(
        results=_results(backend, settings, sums, counts, truncated, unscored, divergence),
        evaluated_tokens=evaluated,
        seconds=time.perf_counter() - started,
        timings=backend.timings(),
        text_tokens=len(stream),
        bos=bos,
        truncated=truncated,
        unscored=unscored,
    )
    if json_path:
        write_json(json_path, build_record(backend, settings, text, run))
    if csv_path:
        write_csv(csv_path, run, settings)
    return run


def estimate_passes(backend: Backend, passes: list[Pass], reference: str | None, tokens: int) -> Estimate | None:
    """The passes' time on the backend's measured speed: every window from scratch, every logit wanted, twice
    where a column is compared with the reference (both models evaluate it)."""
    speed = measured_speed(backend, tokens)
    if speed is None:
        return None
    twice = {c for c in backend.columns if reference is not None and c != reference}
    jobs = [
        (p.length, speed.prompt_seconds(0, p.length, scored=True) * (2 if p.column in twice else 1)) for p in passes
    ]
    return Estimate.of(jobs, speed)


def _sessions(passes: list[Pass]) -> list[list[Pass]]:
    """Consecutive passes with the same column and scaling: each group shares one session."""
    groups: list[list[Pass]] = []
    for p in passes:
        if groups and (groups[-1][0].column, groups[-1][0].scale_length) == (p.column, p.scale_length):
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def _reference_donor(backend: Backend, settings: PerplexitySettings) -> str | None:
    """The first column compared with the reference whose windows are the reference's own (both scaled alike at
    every context): the reference's figures come from those comparisons, and it needs no pass of its own."""
    reference = settings.reference
    if reference is None or not settings.score_reference or settings.stride is not None or not settings.nested:
        return None
    contexts = sorted(settings.contexts)
    if len(backend.scale_groups(reference, contexts)) != 1:
        return None
    for column in backend.columns:
        if column != reference and len(backend.scale_groups(column, contexts)) == 1:
            return column
    return None


def _reporter(
    on_tokens: Callable[[int, str], None] | None, column: str, number: int, total: int, p: Pass
) -> Callable[[int], None] | None:
    if on_tokens is None:
        return None
    label = f"{column}, pass {number}/{total} ({p.length:,} tokens)"
    return lambda n: on_tokens(n, label)


class Divergence:
    """Each column's KL divergences from the reference and top-1 agreements, per context, over its scored tokens."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, int], list[Any]] = {}
        self.agreements: dict[tuple[str, int], int] = {}

    def add(self, column: str, p: Pass, comparison: Comparison) -> None:
        for t in p.targets:
            key = (column, t.context)
            self.values.setdefault(key, []).append(np.asarray(comparison.divergences(t.start, t.stop)))
            self.agreements[key] = self.agreements.get(key, 0) + comparison.agreements(t.start, t.stop)

    def figures(self, column: str, context: int) -> dict[str, float]:
        key = (column, context)
        if key not in self.values:
            return {}
        values = np.concatenate(self.values[key])
        return {
            "kl_divergence": float(values.mean()),
            "kl_divergence_p99": float(np.percentile(values, 99)),
            "top1_agreement": self.agreements[key] / len(values),
        }


def _add(sums: dict[tuple[str, int], float], counts: dict[tuple[str, int], int], column: str, p: Pass,
         scores: Scores) -> None:  # fmt: skip
    for t in p.targets:
        total, n = scores.total(t.start, t.stop)
        key = (column, t.context)
        sums[key] = sums.get(key, 0.0) + total
        counts[key] = counts.get(key, 0) + n


def _results(
    backend: Backend,
    settings: PerplexitySettings,
    sums: dict[tuple[str, int], float],
    counts: dict[tuple[str, int], int],
    truncated: dict[str, str],
    unscored: dict[str, str],
    divergence: Divergence,
) -> list[PerplexityResult]:
    results = []
    for column in backend.columns:
        if column in truncated or column in unscored:
            continue
        if column == settings.reference and not settings.score_reference:
            continue
        for c in sorted(settings.contexts):
            key = (column, c)
            if not counts.get(key):
                raise EvaluationError(f"{column} gave no log-likelihood for the first {c:,} tokens of a window")
            mean = sums[key] / counts[key]
            compared = divergence.figures(column, c)
            results.append(PerplexityResult(column, c, math.exp(mean), counts[key], mean, **compared))
    return results
