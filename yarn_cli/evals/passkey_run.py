"""Running the passkey trials on a backend, with the run's record kept up to date after every trial.

The same seeded trials run under every column (a local model's variants, or servers). Where the
backend keeps a shared prefix evaluated, trials run in order of the filler before the key, so
consecutive prompts share it; a backend that takes several prompts at once gets up to its
``parallel`` in flight, and the answers do not depend on it. An earlier ``--json`` record of the same
model and settings is resumed: its trials are kept, not run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from yarn_cli.backend import Backend, Session
from yarn_cli.evals.completions import kept_costs, run_jobs
from yarn_cli.evals.estimate import Estimate, estimate_completions
from yarn_cli.evals.passkey import (
    ANSWER_TOKENS,
    PasskeySettings,
    Prompt,
    PromptBuilder,
    TrialKey,
    TrialResult,
    TrialSpec,
    plan_trials,
    reuse_order,
    trial_result,
)
from yarn_cli.evals.passkey_report import build_record, load_previous, write_csv
from yarn_cli.evals.records import write_json

# Room in a context beyond its longest prompt: the answer, and a margin.
CONTEXT_MARGIN = ANSWER_TOKENS + 8


@dataclass
class PasskeyRun:
    results: list[TrialResult]  # every trial, those resumed from the record included
    resumed: int
    interrupted: bool  # Ctrl-C stopped it; the finished trials are kept


@dataclass(frozen=True)
class Planned:
    """A trial to run, where it runs, and the prompt tokens it will cost to evaluate."""

    column: str
    spec: TrialSpec
    prompt: Prompt
    tokens: int  # with a kept prefix, only what this prompt does not share with the one before
    number: int  # 1-based, in the order the run takes them


@dataclass(frozen=True)
class PassPlan:
    """The trials one session runs: a column, with one scaling for its lengths."""

    column: str
    longest: int
    trials: list[Planned]


def run_passkey(
    backend: Backend,
    settings: PasskeySettings,
    *,
    json_path: Path | None = None,
    csv_path: Path | None = None,
    on_start: Callable[[int, int, int, Estimate | None], None] | None = None,
    on_tokens: Callable[[int, Planned], None] | None = None,
    on_trial: Callable[[TrialResult, Sequence[TrialResult]], None] | None = None,
    plan_only: bool = False,
) -> PasskeyRun:
    """Run every trial the record at ``json_path`` lacks, rewriting it after each; then the CSV.

    ``on_start(prompt tokens to evaluate, trials to run, trials resumed, the run's estimated time)``, after a
    short measurement of the backend's speed where it has one; ``on_tokens(n, trial)`` as the
    prompt tokens are read, inside a trial where the backend can tell, else when it ends, so that the
    tokens add up to the first figure; ``on_trial(result, every result so far)``. Ctrl-C ends the run
    and a failure ends it too: either way every finished trial is kept, in the record and the result.
    ``plan_only``: stop after ``on_start``, running and writing nothing.
    """
    done = load_previous(json_path, backend, settings) if json_path else {}
    results = list(done.values())

    def keep(result: TrialResult) -> None:
        results.append(result)
        if json_path:
            write_json(json_path, build_record(backend, settings, results))
        if on_trial:
            on_trial(result, results)

    interrupted = False
    try:
        plan = plan_run(backend, settings, done)
        if on_start:
            tokens = sum(t.tokens for p in plan for t in p.trials)
            on_start(tokens, sum(len(p.trials) for p in plan), len(done), estimate_run(backend, plan))
        if plan_only:
            return PasskeyRun(results, len(done), False)
        for part in plan:
            with backend.session(part.column, part.longest + CONTEXT_MARGIN, part.longest) as session:
                answer_all(session, part.trials, backend.parallel, keep, on_tokens)
    except KeyboardInterrupt:
        if plan_only:  # nothing run, nothing to keep: interrupted as any command is
            raise
        interrupted = True
    if json_path:
        write_json(json_path, build_record(backend, settings, results))
    if csv_path:
        write_csv(csv_path, results)
    return PasskeyRun(results, len(done), interrupted)


def plan_run(backend: Backend, settings: PasskeySettings, done: dict[TrialKey, TrialResult]) -> list[PassPlan]:
    """Every trial not in ``done``, session by session, in the order they run, with its cost in tokens."""
    backend.check_fits(max(settings.lengths) + CONTEXT_MARGIN, "test shorter lengths")
    builder = PromptBuilder(lambda text: backend.tokenizer.tokenize(text, add_bos=True))
    for length in settings.lengths:
        builder.check_length(length)
    specs = plan_trials(settings.lengths, settings.trials, settings.depths, settings.seed)
    prompts = {(s.length, s.index): builder.build(s) for s in specs}
    plan: list[PassPlan] = []
    number = 0
    for column in backend.columns:
        # Lengths under one scaling share a session, so a local KV cache is reused between all their
        # prompts; dynamic-yarn's scaling depends on the length, so it needs one per factor.
        for group in backend.scale_groups(column, settings.lengths):
            todo = [
                (s, prompts[(s.length, s.index)])
                for s in specs
                if s.length in group and (column, s.length, s.index) not in done
            ]
            if not todo:
                continue
            ordered = reuse_order(todo) if backend.reuses_prefix else todo
            costs = kept_costs([prompt.tokens for _, prompt in ordered], backend.reuses_prefix)
            trials = []
            for (spec, prompt), cost in zip(ordered, costs, strict=True):
                number += 1
                trials.append(Planned(column, spec, prompt, cost, number))
            plan.append(PassPlan(column, max(s.length for s, _ in todo), trials))
    return plan


def estimate_run(backend: Backend, plan: list[PassPlan]) -> Estimate | None:
    """The plan's time on the backend's measured speed: each trial's new prompt tokens, then its answer."""
    return estimate_completions(
        backend, [(len(t.prompt.tokens), t.tokens, ANSWER_TOKENS) for part in plan for t in part.trials]
    )


def answer_all(
    session: Session,
    todo: list[Planned],
    parallel: int,
    keep: Callable[[TrialResult], None],
    on_tokens: Callable[[int, Planned], None] | None,
) -> None:
    run_jobs(session, todo, parallel, answer, keep, on_tokens)


def answer(session: Session, trial: Planned, read: Callable[[int], None] | None = None) -> TrialResult:
    spec, prompt = trial.spec, trial.prompt
    start = time.perf_counter()
    completion = session.complete(prompt.text, prompt.tokens, ANSWER_TOKENS, read)
    seconds = time.perf_counter() - start
    result = trial_result(trial.column, spec, prompt, completion.text, seconds, completion.evaluated_tokens)
    return replace(result, server_prompt_tokens=completion.reported_prompt_tokens, truncated=completion.truncated)
