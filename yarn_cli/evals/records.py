"""What every evaluation record carries (software versions) and how it reaches disk.

Records are written to a temporary name and renamed, so an interrupted write never
leaves a half-written file where a finished one was.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

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


class ServedAnswer(Protocol):
    """What a truncation note reads of a trial or sample."""

    variant: str
    prompt_tokens: int
    server_prompt_tokens: int | None
    truncated: bool


def truncation_note(results: Sequence[ServedAnswer], noun: str, outcome: str) -> str | None:
    """One sentence when a server cut prompts, with the likely cause; None when none was cut.

    ``noun``: what the results are (trials, samples); ``outcome``: what a cut one is not (counted as failures).
    """
    cut = [r for r in results if r.truncated]
    if not cut:
        return None
    worst = min(cut, key=lambda r: (r.server_prompt_tokens or 0) / r.prompt_tokens)
    labels = sorted({r.variant for r in cut})
    return (
        f"{len(cut)} of {len(results)} {noun} were truncated by the server ({', '.join(labels)}): it saw "
        f"{worst.server_prompt_tokens:,} of {worst.prompt_tokens:,} tokens sent. They are marked truncated, not "
        f"{outcome}; raise the server's context (Ollama: num_ctx or OLLAMA_CONTEXT_LENGTH; llama-server: -c) to test "
        "those lengths"
    )
