"""A passkey run as data: the JSON record (which makes resuming possible), CSV, and depth bins.

The record carries the model, the settings, the software versions, every trial, the
summary and each variant's passkey context, with a schema version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from yarn_cli.backend import Backend
from yarn_cli.errors import InputError
from yarn_cli.evals.passkey import (
    SCHEMA_VERSION,
    PasskeySettings,
    TrialKey,
    TrialResult,
    passkey_context,
    summarize,
    trial_key,
)
from yarn_cli.evals.records import read_saved_run, software
from yarn_cli.evals.records import truncation_note as served_truncation_note
from yarn_cli.evals.records import write_csv as write_rows

DEPTH_BINS = 5


def build_record(backend: Backend, settings: PasskeySettings, results: Sequence[TrialResult]) -> dict[str, Any]:
    columns = backend.columns
    ordered = sorted(results, key=lambda r: (columns.index(r.variant) if r.variant in columns else 99, r.length,
                                             r.index))  # fmt: skip
    summaries = summarize(ordered)
    return {
        "schema": SCHEMA_VERSION,
        "model": backend.record(),
        "settings": {
            "lengths": settings.lengths,
            "trials": settings.trials,
            "depths": settings.depths if settings.depths is not None else "random",
            "seed": settings.seed,
            "variants": columns,
            "reuse": backend.reuses_prefix,
            "protocol": settings.identity(),
        },
        "software": software(),
        "trials": [r.to_dict() for r in ordered],
        "summary": [vars(s) for s in summaries],
        "passkey_context": {v: passkey_context(summaries, v) for v in columns},
        "evaluated_tokens": sum(r.evaluated_tokens for r in ordered),
        "truncated_trials": sum(r.truncated for r in ordered),
    }


def load_previous(path: Path, backend: Backend, settings: PasskeySettings) -> dict[TrialKey, TrialResult]:
    """Trials of an earlier run of the same model (or servers) and settings, to be kept instead of run again."""
    saved = read_saved_run(
        path, backend, "a passkey run",
        lambda record: (record["settings"].get("protocol"), [TrialResult.from_dict(t) for t in record["trials"]]),
    )  # fmt: skip
    if saved is None:
        return {}
    protocol, trials = saved
    if protocol != settings.identity():
        raise InputError(
            f"{path} holds a run with other --seed, --depths or answer length ({protocol}); choose another "
            "--json file to keep it, or the same settings to resume it"
        )
    wanted = set(settings.lengths)
    return {
        trial_key(t): t
        for t in trials
        # a truncated trial is run again: the user was told to give the server a larger context
        if t.length in wanted and t.variant in backend.columns and t.index < settings.trials and not t.truncated
    }


def write_csv(path: Path, results: Sequence[TrialResult]) -> None:
    write_rows(path, [f.name for f in fields(TrialResult)], (r.to_dict() for r in results))


def depth_grid(results: list[TrialResult], variant: str, lengths: list[int]) -> list[list[float | None]]:
    """Accuracy per depth bin (rows, 0 -> 1) and length (columns); None where no trial fell."""
    grid: list[list[float | None]] = []
    for b in range(DEPTH_BINS):
        row: list[float | None] = []
        for length in lengths:
            marks = [
                r.correct
                for r in results
                if r.variant == variant
                and r.length == length
                and not r.truncated
                and min(int(r.depth * DEPTH_BINS), DEPTH_BINS - 1) == b
            ]
            row.append(sum(marks) / len(marks) if marks else None)
        grid.append(row)
    return grid


def truncation_note(results: Sequence[TrialResult]) -> str | None:
    """One sentence when a server cut prompts; None when none was cut."""
    return served_truncation_note(results, "trials", "counted as failures")
