"""Split GGUF models: ``name-00001-of-00003.gguf`` naming, as llama.cpp's ``llama_split_path``."""

from __future__ import annotations

import re
from pathlib import Path

_SPLIT_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def parse_split_name(path: Path) -> tuple[str, int, int] | None:
    """(prefix, number, count) for a split-style file name, else None."""
    match = _SPLIT_RE.match(path.name)
    if match is None:
        return None
    return match["prefix"], int(match["no"]), int(match["count"])


def split_name(prefix: str, number: int, count: int) -> str:
    return f"{prefix}-{number:05d}-of-{count:05d}.gguf"


def split_paths(directory: Path, prefix: str, count: int) -> list[Path]:
    return [directory / split_name(prefix, i, count) for i in range(1, count + 1)]


def split_prefix_for(output: Path, count: int) -> tuple[Path, str]:
    """Directory and prefix for a split output named by the user as ``x.gguf`` or ``x-00001-of-0000N.gguf``."""
    parsed = parse_split_name(output)
    if parsed is not None and parsed[2] == count:
        return output.parent, parsed[0]
    name = output.name.removesuffix(".gguf")
    return output.parent, name
