"""Running RULER's samples on a backend, with the run's record kept up to date after every sample.

The prompts are built once, in the model's tokens, and the same samples run under every column.
Where the backend keeps a shared prefix evaluated, the samples of a session run in the order of
their tokens, so consecutive prompts share what they can (the template, the noise before the first
needle); a backend that takes several prompts at once gets up to its ``parallel`` in flight, and the
answers do not depend on it. An earlier ``--json`` record of the same model and settings is resumed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from yarn_cli.backend import Backend, Session
from yarn_cli.evals.completions import kept_costs, run_jobs
from yarn_cli.evals.estimate import Estimate, estimate_completions
from yarn_cli.evals.records import write_json
from yarn_cli.evals.ruler import RulerSettings, SampleKey, SampleResult, string_match_all
from yarn_cli.evals.ruler_haystack import Essay
from yarn_cli.evals.ruler_prompts import PromptBuilder, RulerPrompt
from yarn_cli.evals.ruler_report import build_record, load_previous, write_csv, write_prompts

CONTEXT_MARGIN = 8  # room in a context beyond its longest prompt and answer


@dataclass
class RulerRun:
    results: list[SampleResult]  # every sample, those resumed from the record included
    resumed: int
    interrupted: bool  # Ctrl-C stopped it; the finished samples are kept


@dataclass(frozen=True)
class Planned:
    """A sample to run, where it runs, and the prompt tokens it will cost to evaluate."""

    column: str
    prompt: RulerPrompt
    tokens: int  # with a kept prefix, only what this prompt does not share with the one before
    number: int  # 1-based, in the order the run takes them


@dataclass(frozen=True)
class SessionPlan:
    """The samples one session runs: a column, with one scaling for its lengths."""

    column: str
    longest: int
    samples: list[Planned]


def build_prompts(backend: Backend, settings: RulerSettings, essay: Essay | None) -> list[RulerPrompt]:
    """Every sample of the run, task by task and length by length, sized in the backend's tokens."""
    builder = PromptBuilder(backend.tokenizer, settings.seed, essay, chat_template=settings.chat_template)
    return [
        builder.build(task, length, index)
        for length in settings.lengths
        for task in settings.tasks
        for index in range(settings.samples)
    ]


def run_ruler(
    backend: Backend,
    settings: RulerSettings,
    essay: Essay | None,
    *,
    json_path: Path | None = None,
    csv_path: Path | None = None,
    prompts_path: Path | None = None,
    on_start: Callable[[int, int, int, Estimate | None], None] | None = None,
    on_tokens: Callable[[int, Planned], None] | None = None,
    on_sample: Callable[[SampleResult, Sequence[SampleResult]], None] | None = None,
    plan_only: bool = False,
) -> RulerRun:
    """Run every sample the record at ``json_path`` lacks, rewriting it after each; then the CSV.

    ``on_start(prompt tokens to evaluate, samples to run, samples resumed, the run's estimated time)``, after a
    short measurement of the backend's speed where it has one; ``on_tokens(n, sample)`` as
    prompt tokens are read; ``on_sample(result, every result so far)``. Ctrl-C ends the run and a failure
    ends it too: either way every finished sample is kept, in the record and the result. ``plan_only``: stop
    after ``on_start``, running nothing and writing nothing but the prompts asked for.
    """
    done = load_previous(json_path, backend, settings) if json_path else {}
    results = list(done.values())

    def keep(result: SampleResult) -> None:
        results.append(result)
        if json_path:
            write_json(json_path, build_record(backend, settings, results))
        if on_sample:
            on_sample(result, results)

    interrupted = False
    try:
        backend.check_fits(max(settings.lengths) + CONTEXT_MARGIN, "test shorter lengths")
        prompts = build_prompts(backend, settings, essay)
        if prompts_path:
            write_prompts(prompts_path, prompts)
        plan = plan_run(backend, prompts, done)
        if on_start:
            tokens = sum(s.tokens for p in plan for s in p.samples)
            on_start(tokens, sum(len(p.samples) for p in plan), len(done), estimate_run(backend, plan))
        if plan_only:
            return RulerRun(results, len(done), False)
        for part in plan:
            with backend.session(part.column, part.longest + CONTEXT_MARGIN, part.longest) as session:
                run_jobs(session, part.samples, backend.parallel, answer, keep, on_tokens)
    except KeyboardInterrupt:
        if plan_only:  # nothing run, nothing to keep: interrupted as any command is
            raise
        interrupted = True
    if json_path:
        write_json(json_path, build_record(backend, settings, results))
    if csv_path:
        write_csv(csv_path, results)
    return RulerRun(results, len(done), interrupted)


def plan_run(
    backend: Backend, prompts: Sequence[RulerPrompt], done: dict[SampleKey, SampleResult]
) -> list[SessionPlan]:
    """Every sample not in ``done``, session by session, in the order they run, with its cost in tokens."""
    lengths = sorted({p.length for p in prompts})
    plan: list[SessionPlan] = []
    number = 0
    for column in backend.columns:
        # Lengths under one scaling share a session; dynamic-yarn's scaling depends on the length.
        for group in backend.scale_groups(column, lengths):
            todo = [p for p in prompts if p.length in group and (column, p.task, p.length, p.index) not in done]
            if not todo:
                continue
            if backend.reuses_prefix:
                todo.sort(key=lambda p: p.tokens)  # neighbours in token order share the longest prefixes
            costs = kept_costs([p.tokens for p in todo], backend.reuses_prefix)
            samples = []
            for prompt, cost in zip(todo, costs, strict=True):
                number += 1
                samples.append(Planned(column, prompt, cost, number))
            plan.append(SessionPlan(column, max(p.length for p in todo), samples))
    return plan


def estimate_run(backend: Backend, plan: list[SessionPlan]) -> Estimate | None:
    """The plan's time on the backend's measured speed, each answer at its task's cap (most stop sooner)."""
    return estimate_completions(
        backend, [(len(s.prompt.tokens), s.tokens, s.prompt.max_tokens) for part in plan for s in part.samples]
    )


def answer(session: Session, planned: Planned, read: Callable[[int], None] | None = None) -> SampleResult:
    prompt = planned.prompt
    start = time.perf_counter()
    completion = session.complete(prompt.text, prompt.tokens, prompt.max_tokens, read)
    seconds = time.perf_counter() - start
    return SampleResult(
        task=prompt.task,
        length=prompt.length,
        index=prompt.index,
        variant=planned.column,
        prompt_tokens=len(prompt.tokens),
        outputs=prompt.outputs,
        output=completion.text,
        score=string_match_all(completion.text, prompt.outputs),
        seconds=round(seconds, 4),
        evaluated_tokens=completion.evaluated_tokens,
        server_prompt_tokens=completion.reported_prompt_tokens,
        truncated=completion.truncated,
    )
