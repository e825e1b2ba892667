"""What every evaluation record carries (model, software versions) and how it reaches disk.

Records are written to a temporary name and renamed, so an interrupted write never
leaves a half-written file where a finished one was.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from yarn_cli import __version__
from yarn_cli.model import Model


def software() -> dict[str, str]:
    from importlib import metadata  # 25 ms to import: only when a record is written

    versions = {"yarn-cli": __version__}
    for package in ("llama-cpp-python", "gguf"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "?"
    return versions


def model_record(model: Model) -> dict[str, Any]:
    return {
        "path": str(model.path),
        "size": model.header.file_size,
        "architecture": model.architecture,
        "context_length": model.context_length,
        "original_context": model.original_context,
    }


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def write_json(path: Path, record: dict[str, Any]) -> None:
    tmp = _partial(path)
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def write_csv(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
    tmp = _partial(path)
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    os.replace(tmp, path)
