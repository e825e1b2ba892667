"""A tune as data: the JSON record (resumable: every measurement kept) and its rule in words."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from yarn_cli.backend import Backend
from yarn_cli.errors import InputError
from yarn_cli.evals.perplexity import Text
from yarn_cli.evals.records import read_saved_run, software
from yarn_cli.evals.tune import WEAK_KL, Candidate, TuneSettings, Verdict

SCHEMA_VERSION = 1


def rule(settings: TuneSettings) -> str:
    return (
        f"among the candidates whose mean KL from the unscaled model at {settings.short_context:,} tokens is at most "
        f"{settings.max_kl:g} nats per token, the lowest perplexity at {settings.context:,} tokens; candidates above "
        f"{WEAK_KL} x that KL are not measured at {settings.context:,}, and passkey runs for the choice and the best "
        "static candidate only"
    )


def text_identity(text: Text) -> dict[str, Any]:
    return {"path": str(text.path), "sha256": hashlib.sha256(text.content.encode("utf-8")).hexdigest()}


def build_record(
    backend: Backend,
    text: Text,
    settings: TuneSettings,
    candidates: list[Candidate],
    verdicts: tuple[Verdict, Verdict] | None,
    front: list[str],
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "model": backend.record(),
        "settings": {
            "context": settings.context,
            "short_context": settings.short_context,
            "max_kl": settings.max_kl,
            "trials": settings.trials,
            "seed": settings.seed,
            "candidates": settings.candidates,
            "text": text_identity(text),
            "protocol": settings.identity(),
        },
        "software": software(),
        "rule": rule(settings),
        "candidates": [c.to_dict() for c in candidates],
        "front": front,
    }
    if verdicts is not None:
        choice, best_static = verdicts
        record["choice"] = {"variant": choice.variant, "why": choice.why}
        record["best_static"] = {"variant": best_static.variant, "why": best_static.why}
    record["evaluated_tokens"] = sum(c.tokens for x in candidates for c in x.cost.values())
    record["seconds"] = round(sum(c.seconds for x in candidates for c in x.cost.values()), 3)
    return record


def load_previous(path: Path, backend: Backend, text: Text, settings: TuneSettings) -> dict[str, Candidate]:
    """The measurements of an earlier tune of the same model, text and settings, to be kept."""

    def parse(record: dict[str, Any]) -> tuple[Any, Any, Any, list[Candidate]]:
        saved = record["settings"]
        candidates = [Candidate.from_dict(c) for c in record["candidates"]]
        return saved["protocol"], saved["text"]["sha256"], saved["max_kl"], candidates

    found = read_saved_run(path, backend, "a tune", parse)
    if found is None:
        return {}
    protocol, saved_text, max_kl, candidates = found
    if protocol != settings.identity() or saved_text != text_identity(text)["sha256"]:
        raise InputError(
            f"{path} holds a tune with another --context, --short-context, --trials, --seed or --text; choose "
            "another --json file to keep it, or the same settings to resume it"
        )
    kept = {c.variant: c for c in candidates if c.variant in settings.candidates}
    if max_kl != settings.max_kl:  # which candidates were stopped depends on --max-kl: measure them again
        for c in kept.values():
            c.stopped = None
    return kept
