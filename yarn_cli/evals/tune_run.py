"""Running a tune on a local backend: short KL for every candidate, long perplexity for those still in the
running, passkey for the choice and the best static one; the record rewritten after each measurement."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from yarn_cli.backend import Backend
from yarn_cli.errors import InputError
from yarn_cli.evals.estimate import Estimate, completion_seconds, measured_speed
from yarn_cli.evals.passkey import ANSWER_TOKENS, PasskeySettings
from yarn_cli.evals.passkey_run import run_passkey
from yarn_cli.evals.perplexity import PerplexitySettings, Text
from yarn_cli.evals.perplexity_run import run_perplexity
from yarn_cli.evals.records import write_json
from yarn_cli.evals.tune import WEAK_KL, Candidate, Cost, TuneSettings, Verdict, choose, front
from yarn_cli.evals.tune_report import build_record, load_previous

Stage = Callable[[str, int, "Estimate | None"], None]  # (what is measured now, its prompt tokens, its estimate)
Tokens = Callable[[int, str], None]  # (tokens just evaluated, a label)


@dataclass
class TuneRun:
    candidates: list[Candidate]
    choice: Verdict
    best_static: Verdict
    front: list[str]
    resumed: int  # candidates whose measurements came from the record
    interrupted: bool


def run_tune(
    backend: Backend,
    text: Text,
    settings: TuneSettings,
    *,
    json_path: Path | None = None,
    on_start: Callable[[int, Estimate | None], None] | None = None,
    on_stage: Stage | None = None,
    on_tokens: Tokens | None = None,
) -> TuneRun:
    """Measure every candidate as far as the budget says, choose, and keep the record; Ctrl-C keeps what was
    measured (the same command resumes).

    ``on_start(candidates resumed, the most the rest may take)`` once the inputs are checked, before the first
    measurement.
    """
    n, short = settings.context, settings.short_context
    stream = backend.tokenizer.tokenize(text.content, add_bos=False)
    if len(stream) < n:
        raise InputError(
            f"the text has {len(stream):,} tokens; measuring perplexity at --context {n:,} needs at least that many: "
            "give a longer text"
        )
    backend.check_fits(max(n, 2 * short), "tune to a shorter --context")
    previous = load_previous(json_path, backend, text, settings) if json_path else {}
    candidates = [previous.get(v) or Candidate(v) for v in settings.candidates]
    verdicts: tuple[Verdict, Verdict] | None = None
    if on_start:
        on_start(len(previous), estimate_tune(backend, settings, candidates))

    def save() -> None:
        if json_path:
            write_json(json_path, build_record(backend, text, settings, candidates, verdicts, front(candidates)))

    interrupted = False
    try:
        for c in candidates:
            if c.short_kl is None:
                _short(backend, text, settings, c, on_stage, on_tokens)
                save()
        for c in candidates:
            assert c.short_kl is not None
            if c.short_kl > WEAK_KL * settings.max_kl:
                c.stopped = f"short KL {c.short_kl:.4f} is above {WEAK_KL} x --max-kl: it cannot be chosen"
            elif c.long_perplexity is None:
                c.stopped = None
                _long(backend, text, settings, c, on_stage, on_tokens)
                save()
        verdicts = _verdicts(candidates, settings)
        for name in dict.fromkeys(v.variant for v in verdicts if v.variant is not None):
            c = next(c for c in candidates if c.variant == name)
            if c.passkey is None:
                _passkey(backend, settings, c, on_stage, on_tokens)
                save()
    except KeyboardInterrupt:
        interrupted = True
    # an interrupted tune names no choice: the candidates not yet measured might have won
    verdicts = None if interrupted else _verdicts(candidates, settings)
    save()
    choice, best_static = verdicts or (Verdict(None, "interrupted"), Verdict(None, "interrupted"))
    return TuneRun(candidates, choice, best_static, front(candidates), len(previous), interrupted)


def estimate_tune(backend: Backend, settings: TuneSettings, candidates: list[Candidate]) -> Estimate | None:
    """The most the measurements still to make may take: every candidate's long perplexity included (those whose
    short KL stops them skip it), and passkey for two. Each stage prices its own runs again when it starts."""
    n, short = settings.context, settings.short_context
    todo_short = [c for c in candidates if c.short_kl is None and c.variant != "none"]
    todo_long = [c for c in candidates if c.long_perplexity is None]
    passkeys = min(2, len([c for c in candidates if c.passkey is None]))
    tokens = short * len(todo_short) + n * len(todo_long) + n * settings.trials * passkeys
    speed = measured_speed(backend, tokens)
    if speed is None:
        return None
    compared = 2 * speed.prompt_seconds(0, short, scored=True)  # the candidate and the reference
    trial = completion_seconds(speed, n, n, ANSWER_TOKENS)
    jobs = [(short, compared)] * len(todo_short) + [(n, speed.prompt_seconds(0, n, scored=True))] * len(todo_long)
    jobs += [(n, trial)] * settings.trials * passkeys
    return Estimate.of(jobs, speed)


def _verdicts(candidates: list[Candidate], settings: TuneSettings) -> tuple[Verdict, Verdict]:
    n, short = settings.context, settings.short_context
    return (
        choose(candidates, settings.max_kl, n, short, static=False),
        choose(candidates, settings.max_kl, n, short, static=True),
    )


def _starter(on_stage: Stage | None, label: str) -> Callable[[int, Estimate | None], None] | None:
    """A run's ``on_start(tokens, estimate)`` as the start of a stage."""
    return (lambda tokens, estimate: on_stage(label, tokens, estimate)) if on_stage else None


def _short(backend: Backend, text: Text, settings: TuneSettings, c: Candidate, on_stage: Stage | None,
           on_tokens: Tokens | None) -> None:  # fmt: skip
    """``perplexity --contexts SHORT --reference none --compare VARIANT``'s comparison, the reference not scored
    apart."""
    short = settings.short_context
    if c.variant == "none":  # the reference itself
        c.short_kl, c.short_kl_p99, c.short_top1 = 0.0, 0.0, 1.0
        c.cost["short"] = Cost()
        return
    label = f"{c.variant}: KL from none at {short:,} tokens"
    start = time.perf_counter()
    with backend.with_columns(["none", c.variant]) as pair:
        figures = PerplexitySettings(contexts=[short], reference="none", score_reference=False)
        run = run_perplexity(pair, text, figures, on_start=_starter(on_stage, label), on_tokens=on_tokens)
    result = next(r for r in run.results if r.variant == c.variant)
    c.short_kl, c.short_kl_p99, c.short_top1 = result.kl_divergence, result.kl_divergence_p99, result.top1_agreement
    c.cost["short"] = Cost(run.evaluated_tokens, time.perf_counter() - start)


def _long(backend: Backend, text: Text, settings: TuneSettings, c: Candidate, on_stage: Stage | None,
          on_tokens: Tokens | None) -> None:  # fmt: skip
    """``perplexity --contexts N --compare VARIANT``'s figure."""
    n = settings.context
    label = f"{c.variant}: perplexity at {n:,} tokens"
    start = time.perf_counter()
    with backend.with_columns([c.variant]) as one:
        run = run_perplexity(one, text, PerplexitySettings(contexts=[n]), on_start=_starter(on_stage, label),
                             on_tokens=on_tokens)  # fmt: skip
    c.long_perplexity = run.results[0].ppl
    c.cost["long"] = Cost(run.evaluated_tokens, time.perf_counter() - start)


def _passkey(backend: Backend, settings: TuneSettings, c: Candidate, on_stage: Stage | None,
             on_tokens: Tokens | None) -> None:  # fmt: skip
    """``passkey --lengths N --trials T --seed SEED --compare VARIANT``'s accuracy."""
    n = settings.context
    label = f"{c.variant}: passkey at {n:,} tokens, {settings.trials} trials"
    start = time.perf_counter()
    with backend.with_columns([c.variant]) as one:
        report = (lambda count, trial: on_tokens(count, label)) if on_tokens else None
        begin = _starter(on_stage, label)
        run = run_passkey(
            one,
            PasskeySettings(lengths=[n], trials=settings.trials, seed=settings.seed),
            on_start=(lambda tokens, trials, resumed, estimate: begin(tokens, estimate)) if begin else None,
            on_tokens=report,
        )
    if run.interrupted:
        raise KeyboardInterrupt
    found = [r.correct for r in run.results]
    c.passkey, c.passkey_trials = sum(found) / len(found), len(found)
    c.cost["passkey"] = Cost(sum(r.evaluated_tokens for r in run.results), time.perf_counter() - start)
