"""Token counts as users write them on the command line: ``8192``, ``1k``, ``32k``."""

from __future__ import annotations

import math

from yarn_cli.errors import InputError


def parse_length(text: str) -> int:
    """``1k`` = 1024, ``32k``, ``8192``."""
    value = text.strip().lower()
    try:
        number = float(value[:-1]) * 1024 if value.endswith("k") else float(value)
    except ValueError:
        raise InputError(f"cannot read {text!r} as a length: use tokens like 8192, 1k or 32k") from None
    if not math.isfinite(number) or number < 1 or number != int(number):
        raise InputError(f"cannot read {text!r} as a length: use a whole positive number of tokens")
    return int(number)


def parse_lengths(text: str, option: str = "--lengths") -> list[int]:
    """Sorted and without repeats, so every sweep runs shortest first."""
    lengths = sorted({parse_length(part) for part in text.split(",") if part.strip()})
    if not lengths:
        raise InputError(f"{option} is empty: give lengths such as 1k,2k,4k")
    return lengths


def default_lengths(context_length: int) -> list[int]:
    """Powers of two from 1k up to the model's context_length."""
    lengths = []
    n = 1024
    while n <= max(context_length, 1024):
        lengths.append(n)
        n *= 2
    return lengths
