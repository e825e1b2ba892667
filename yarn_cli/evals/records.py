"""What every evaluation record carries (software versions) and how it reaches disk.

Records are written to a temporary name and renamed, so an interrupted write never
leaves a half-written file where a finished one was.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from yarn_cli import __version__
from yarn_cli.files.staging import write_atomically


def software() -> dict[str, str]:
    from importlib import metadata  # 25 ms to import: only when a record is written

    versions = {"yarn-cli": __version__}
    for package in ("llama-cpp-python", "gguf"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "?"
    return versions


def write_json(path: Path, record: dict[str, Any]) -> None:
    write_atomically(path, (json.dumps(record, indent=2) + "\n").encode("utf-8"))


def write_csv(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    write_atomically(path, text.getvalue().encode("utf-8"))
