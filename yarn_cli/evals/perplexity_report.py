"""A perplexity run as data: the JSON record (model, settings, software, results) and CSV rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yarn_cli.evals.perplexity import SCHEMA_VERSION, PerplexityRun, PerplexitySettings
from yarn_cli.evals.records import model_record, software
from yarn_cli.evals.records import write_csv as write_rows
from yarn_cli.model import Model

CSV_COLUMNS = ["variant", "context", "ppl", "tokens", "nll"]


def build_record(
    model: Model, settings: PerplexitySettings, text: Path, source: str, run: PerplexityRun
) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "model": model_record(model),
        "settings": {
            "contexts": settings.contexts,
            "variants": settings.variants,
            "chunks": settings.chunks,
            "stride": settings.stride,
            "protocol": settings.protocol,
            "bos": run.bos,
            "text": {"path": str(text), "characters": len(source), "tokens": run.text_tokens},
        },
        "software": software(),
        "results": [r.to_dict() for r in run.results],
        "evaluated_tokens": run.evaluated_tokens,
        "seconds": round(run.seconds, 3),
        "decode_seconds": round(run.decode_seconds, 3),
        "scoring_seconds": round(run.scoring_seconds, 3),
    }


def write_csv(path: Path, run: PerplexityRun) -> None:
    write_rows(path, CSV_COLUMNS, (r.to_dict() for r in run.results))
