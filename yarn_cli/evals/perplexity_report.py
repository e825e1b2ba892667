"""A perplexity run as data: the JSON record (model, settings, software, results) and CSV rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yarn_cli.backend import Backend
from yarn_cli.evals.perplexity import SCHEMA_VERSION, PerplexityRun, PerplexitySettings, Text
from yarn_cli.evals.records import software
from yarn_cli.evals.records import write_csv as write_rows

CSV_COLUMNS = ["variant", "context", "ppl", "tokens", "nll"]


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
            "bos": run.bos,
            "text": {"path": str(text.path), "characters": len(text.content), "tokens": run.text_tokens},
        },
        "software": software(),
        "results": [r.to_dict() for r in run.results],
    }
    if backend.may_truncate:  # which columns were left out, and why
        record |= {"truncated": run.truncated, "unscored": run.unscored}
    record |= {"evaluated_tokens": run.evaluated_tokens, "seconds": round(run.seconds, 3)}
    record |= {f"{name}_seconds": round(seconds, 3) for name, seconds in run.timings.items()}
    return record


def write_csv(path: Path, run: PerplexityRun) -> None:
    write_rows(path, CSV_COLUMNS, (r.to_dict() for r in run.results))
