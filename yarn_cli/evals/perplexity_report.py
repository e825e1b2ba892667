"""A perplexity run as data: the JSON record (model, settings, software, results) and CSV rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yarn_cli.backend import Backend
from yarn_cli.evals.perplexity import COMPARISON_FIELDS, SCHEMA_VERSION, PerplexityRun, PerplexitySettings, Text
from yarn_cli.evals.records import software
from yarn_cli.evals.records import write_csv as write_rows

CSV_COLUMNS = ["variant", "context", "ppl", "tokens", "nll"]
COMPARED_CSV_COLUMNS = [*CSV_COLUMNS, *COMPARISON_FIELDS]


def build_record(backend: Backend, settings: PerplexitySettings, text: Text, run: PerplexityRun) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "model": backend.record(),
        "settings": {
            "contexts": settings.contexts,
            "variants": backend.columns,
            "chunks": settings.chunks,
            "stride": settings.stride,
            "protocol": settings.protocol,
            **({"reference": settings.reference} if settings.reference else {}),
            "bos": run.bos,
            "text": {"path": str(text.path), "characters": len(text.content), "tokens": run.text_tokens},
        },
        "software": software(),
        "results": [r.to_dict(compared=settings.reference is not None) for r in run.results],
    }
    if backend.may_truncate:  # which columns were left out, and why
        record |= {"truncated": run.truncated, "unscored": run.unscored}
    record |= {"evaluated_tokens": run.evaluated_tokens, "seconds": round(run.seconds, 3)}
    record |= {f"{name}_seconds": round(seconds, 3) for name, seconds in run.timings.items()}
    return record


def write_csv(path: Path, run: PerplexityRun, settings: PerplexitySettings) -> None:
    compared = settings.reference is not None
    columns = COMPARED_CSV_COLUMNS if compared else CSV_COLUMNS
    write_rows(path, columns, (r.to_dict(compared=compared) for r in run.results))
