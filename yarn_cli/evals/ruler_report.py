"""A RULER run as data: the JSON record (which makes resuming possible), the CSV, the prompts as JSONL.

The record carries the model, the settings, the software versions, every sample, the scores per
task and length, the means, each variant's effective context and what each task cost, with a
schema version.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from yarn_cli.backend import Backend
from yarn_cli.errors import InputError
from yarn_cli.evals.records import read_saved_run, software
from yarn_cli.evals.records import truncation_note as served_truncation_note
from yarn_cli.evals.records import write_csv as write_rows
from yarn_cli.evals.ruler import (
    SCHEMA_VERSION,
    RulerSettings,
    SampleKey,
    SampleResult,
    effective_context,
    mean_over_tasks,
    sample_key,
    summarize,
)
from yarn_cli.evals.ruler_prompts import RulerPrompt
from yarn_cli.evals.ruler_tasks import TASKS
from yarn_cli.files.staging import write_atomically


def build_record(backend: Backend, settings: RulerSettings, results: Sequence[SampleResult]) -> dict[str, Any]:
    columns = backend.columns
    order = list(TASKS)
    ordered = sorted(results, key=lambda r: (columns.index(r.variant) if r.variant in columns else 99, r.length,
                                             order.index(r.task), r.index))  # fmt: skip
    rows = summarize(ordered)
    costs: dict[tuple[str, str], dict[str, Any]] = {}
    for r in ordered:
        cost = costs.setdefault((r.variant, r.task), {"variant": r.variant, "task": r.task, "samples": 0,
                                                       "evaluated_tokens": 0, "seconds": 0.0})  # fmt: skip
        cost["samples"] += 1
        cost["evaluated_tokens"] += r.evaluated_tokens
        cost["seconds"] = round(cost["seconds"] + r.seconds, 4)
    return {
        "schema": SCHEMA_VERSION,
        "model": backend.record(),
        "settings": {
            "lengths": settings.lengths,
            "tasks": settings.tasks,
            "samples": settings.samples,
            "seed": settings.seed,
            "threshold": settings.threshold,
            "chat_template": settings.chat_template,
            "haystack": settings.haystack,
            "variants": columns,
            "reuse": backend.reuses_prefix,
            "protocol": settings.identity(),
        },
        "software": software(),
        "samples": [r.to_dict() for r in ordered],
        "summary": [vars(s) for s in rows],
        "means": [
            {"variant": v, "length": n, "score": mean_over_tasks(rows, v, n)}
            for v in columns
            for n in settings.lengths
            if any(r.variant == v and r.length == n for r in rows)
        ],
        "effective_context": {v: effective_context(rows, v, settings.lengths, settings.threshold) for v in columns},
        "cost": list(costs.values()),
        "evaluated_tokens": sum(r.evaluated_tokens for r in ordered),
        "truncated_samples": sum(r.truncated for r in ordered),
    }


def load_previous(path: Path, backend: Backend, settings: RulerSettings) -> dict[SampleKey, SampleResult]:
    """Samples of an earlier run of the same model (or servers) and settings, to be kept instead of run again."""
    saved = read_saved_run(
        path, backend, "a RULER run",
        lambda record: (record["settings"].get("protocol"), [SampleResult.from_dict(s) for s in record["samples"]]),
    )  # fmt: skip
    if saved is None:
        return {}
    protocol, samples = saved
    if protocol != settings.identity():
        raise InputError(
            f"{path} holds a run with another --seed, --chat-template or --haystack ({protocol}); choose another "
            "--json file to keep it, or the same settings to resume it"
        )
    return {
        sample_key(s): s
        for s in samples
        # a truncated sample is run again: the user was told to give the server a larger context
        if s.length in settings.lengths and s.task in settings.tasks and s.variant in backend.columns
        and s.index < settings.samples and not s.truncated
    }  # fmt: skip


def write_csv(path: Path, results: Sequence[SampleResult]) -> None:
    def row(r: SampleResult) -> dict[str, Any]:
        data = r.to_dict()
        data["outputs"] = json.dumps(r.outputs)
        return data

    write_rows(path, [f.name for f in fields(SampleResult)], (row(r) for r in results))


def write_prompts(path: Path, prompts: Sequence[RulerPrompt]) -> None:
    """Every prompt in RULER's JSONL shape, one line each."""
    text = "".join(json.dumps(p.to_jsonl(), ensure_ascii=False) + "\n" for p in prompts)
    write_atomically(path, text.encode("utf-8"))


def truncation_note(results: Sequence[SampleResult]) -> str | None:
    """One sentence when a server cut prompts; None when none was cut."""
    return served_truncation_note(results, "samples", "scored")
