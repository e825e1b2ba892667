"""How much of the machine's memory a llama.cpp context may take: the KV cache is what grows with it."""

from __future__ import annotations

import contextlib
from pathlib import Path

from yarn_cli.errors import InputError
from yarn_cli.model import Model

# Share of the available memory the KV cache may take when the context is chosen for the user.
KV_MEMORY_SHARE = 0.5


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), None where unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def check_kv_memory(model: Model, n_tokens: int, advice: str) -> None:
    """Refuse before loading when an f16 KV cache for ``n_tokens`` cannot fit in available memory."""
    need = model.shape.kv_cache_bytes(n_tokens)
    free = available_memory()
    if need and free and need > free:
        raise InputError(
            f"the KV cache for {n_tokens} tokens needs {need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB "
            f"of memory are available; {advice}"
        )


def choose_context(model: Model, requested: int | None) -> tuple[int, str | None]:
    """The context to create: what was asked, else the model's, capped so the KV cache fits in memory."""
    if requested is not None:
        if requested <= 0:
            raise InputError(f"-c/--ctx-size must be a positive number of tokens, got {requested}")
        return requested, None
    native = model.context_length or 4096
    per_token = model.shape.kv_cache_bytes(1)
    free = available_memory()
    if not per_token or not free:
        return native, None
    limit = int(free * KV_MEMORY_SHARE / per_token) // 256 * 256
    if limit >= native:
        return native, None
    limit = max(limit, 256)
    return limit, (
        f"context capped at {limit} tokens (the model's {native} needs "
        f"{per_token * native / 2**30:.1f} GiB of KV cache); set -c to choose"
    )
