"""A passkey run as data: the JSON record (which makes resuming possible), CSV, and depth bins.

The record carries the model, the settings, the software versions, every trial, the
summary and each variant's passkey context, with a schema version.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from typing import Any

from yarn_cli import __version__
from yarn_cli.errors import InputError
from yarn_cli.model_info import ModelInfo
from yarn_cli.passkey import (
    SCHEMA_VERSION,
    PasskeySettings,
    TrialKey,
    TrialResult,
    passkey_context,
    summarize,
    trial_key,
)

DEPTH_BINS = 5


def software() -> dict[str, str]:
    versions = {"yarn-cli": __version__}
    for package in ("llama-cpp-python", "gguf"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "?"
    return versions


def model_record(info: ModelInfo) -> dict[str, Any]:
    return {
        "path": str(info.header.path),
        "size": info.header.file_size,
        "architecture": info.architecture,
        "context_length": info.context_length,
        "original_context": info.original_context,
    }


def build_record(info: ModelInfo, settings: PasskeySettings, results: list[TrialResult]) -> dict[str, Any]:
    ordered = sorted(results, key=lambda r: (settings.variants.index(r.variant) if r.variant in settings.variants
                                             else 99, r.length, r.index))  # fmt: skip
    summaries = summarize(ordered)
    return {
        "schema": SCHEMA_VERSION,
        "model": model_record(info),
        "settings": {
            "lengths": settings.lengths,
            "trials": settings.trials,
            "depths": settings.depths if settings.depths is not None else "random",
            "seed": settings.seed,
            "variants": settings.variants,
            "reuse": settings.reuse,
        },
        "software": software(),
        "trials": [r.to_dict() for r in ordered],
        "summary": [vars(s) for s in summaries],
        "passkey_context": {v: passkey_context(summaries, v) for v in settings.variants},
        "evaluated_tokens": sum(r.evaluated_tokens for r in ordered),
    }


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Atomically, so an interrupted write never loses the trials already saved."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def load_previous(path: Path, info: ModelInfo, settings: PasskeySettings) -> dict[TrialKey, TrialResult]:
    """Trials of an earlier run of the same model and settings, to be kept instead of run again."""
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
        model = record["model"]
        saved = record["settings"]
        names = {f.name for f in fields(TrialResult)}
        trials = [TrialResult(**{k: v for k, v in t.items() if k in names}) for t in record["trials"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} exists but is not a passkey run ({exc}); choose another --json file") from exc
    same_model = (model.get("size"), model.get("architecture")) == (info.header.file_size, info.architecture)
    depths = saved.get("depths")
    same_settings = (saved.get("seed"), None if depths == "random" else depths) == (settings.seed, settings.depths)
    if not (same_model and same_settings):
        raise InputError(
            f"{path} holds a run of another model or other --seed/--depths; choose another --json file to keep it"
        )
    wanted = set(settings.lengths)
    return {
        trial_key(t): t
        for t in trials
        if t.length in wanted and t.variant in settings.variants and t.index < settings.trials
    }


def write_csv(path: Path, results: list[TrialResult]) -> None:
    columns = [f.name for f in fields(TrialResult)]
    tmp = path.with_name(f".{path.name}.partial")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in results:
            writer.writerow(r.to_dict())
    os.replace(tmp, path)


def depth_grid(results: list[TrialResult], variant: str, lengths: list[int]) -> list[list[float | None]]:
    """Accuracy per depth bin (rows, 0 -> 1) and length (columns); None where no trial fell."""
    grid: list[list[float | None]] = []
    for b in range(DEPTH_BINS):
        row: list[float | None] = []
        for length in lengths:
            marks = [
                r.correct
                for r in results
                if r.variant == variant and r.length == length and min(int(r.depth * DEPTH_BINS), DEPTH_BINS - 1) == b
            ]
            row.append(sum(marks) / len(marks) if marks else None)
        grid.append(row)
    return grid
