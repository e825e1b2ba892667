"""What every evaluation record carries (software versions) and how it reaches disk.

Records are written to a temporary name and renamed, so an interrupted write never
leaves a half-written file where a finished one was.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

from yarn_cli import __version__
from yarn_cli.backend import Backend
from yarn_cli.errors import InputError
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


# The types a saved row's values may have, by the annotation of its field.
_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "int | None": (int, type(None)),
    "list[str]": (list,),
}

Row = TypeVar("Row")


def checked_row(cls: type[Row], data: dict[str, Any], noun: str) -> Row:
    """A dataclass row (a trial, a sample) as a saved run holds it, each value checked against its field's type:
    a damaged record fails here, not mid-run. ``noun``: what a row is, for the message."""
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            if f.default is MISSING:
                raise ValueError(f"a {noun} has no {f.name!r}")
            continue
        value = data[f.name]
        kinds = _KINDS[str(f.type)]
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            raise ValueError(f"a {noun}'s {f.name!r} is {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"a {noun}'s {f.name!r} is {value!r}")
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise ValueError(f"a {noun}'s {f.name!r} are {value!r}")
        values[f.name] = value
    return cls(**values)


Saved = TypeVar("Saved")


def read_saved_run(path: Path, backend: Backend, what: str, parse: Callable[[dict[str, Any]], Saved]) -> Saved | None:
    """What ``parse`` reads of the earlier run at ``path`` (None where there is none), once the file is known to
    be a record of ``what`` (a passkey run, a tune) of this backend's model; else one InputError saying why."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        saved_model = record["model"]
        if not isinstance(saved_model, dict):
            raise ValueError(f"its model is {saved_model!r}")
        parsed = parse(record)
        different = backend.mismatch(saved_model)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}; choose another --json file") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path} exists but is not {what} ({exc}); choose another --json file") from exc
    if different:
        raise InputError(f"{path} holds a run {different}")
    return parsed
