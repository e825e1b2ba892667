"""How much memory a llama.cpp context may take: the KV cache is what grows with it.

With every layer offloaded, llama.cpp keeps the KV cache on the GPUs (split like the layers), so
it is the GPUs' free memory that counts there, not the host's.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from yarn_cli.errors import InputError
from yarn_cli.llama.devices import gpus, resolve_gpu_layers
from yarn_cli.model import Model

# Share of the available memory the KV cache may take when the context is chosen for the user.
KV_MEMORY_SHARE = 0.5
# llama.cpp takes n_ctx as uint32; 2**32 would wrap to 0, which means "the model's own context".
MAX_CONTEXT = 2**32 - 1


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), None where unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def kv_memory(model: Model, n_gpu_layers: int) -> tuple[int | None, str]:
    """Free bytes where the KV cache will live, and what that memory is called in a message.

    ``n_gpu_layers`` as llama.cpp takes it (-1: all). With part of the layers offloaded the cache is
    split; the host's memory is the one checked then.
    """
    n_layers = model.shape.n_layers
    # llama.cpp counts the output layer too: -ngl n_layers leaves the first block (and its cache) on the CPU
    every_layer = n_gpu_layers < 0 or (n_layers is not None and n_gpu_layers > n_layers)
    on_gpu = gpus() if every_layer else []
    if on_gpu:
        names = ", ".join(d.name for d in on_gpu)
        return sum(d.free for d in on_gpu), f"GPU memory ({names})"
    return available_memory(), "memory"


def check_kv_memory(model: Model, n_tokens: int, advice: str, n_gpu_layers: int | None = None) -> None:
    """Refuse before loading when an f16 KV cache for ``n_tokens`` cannot fit where it will live."""
    need = model.shape.kv_cache_bytes(n_tokens)
    free, where = kv_memory(model, resolve_gpu_layers(n_gpu_layers))
    if need and free and need > free:
        raise InputError(
            f"the KV cache for {n_tokens} tokens needs {need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB "
            f"of {where} are free; {advice}"
        )


def choose_context(
    model: Model, requested: int | None, n_gpu_layers: int = 0, *, checked: bool = False
) -> tuple[int, str | None]:
    """The context to create: what was asked, else the model's, capped so the KV cache fits where it lives.

    ``checked``: the caller has made sure a requested context fits (an evaluation, for its longest prompt).
    """
    if requested is not None:
        if not 0 < requested <= MAX_CONTEXT:
            raise InputError(f"-c/--ctx-size must be between 1 and {MAX_CONTEXT:,} tokens, got {requested:,}")
        if not checked:
            # asked for: refused here in one line rather than by a failed allocation inside llama.cpp
            check_kv_memory(model, requested, "choose a smaller -c", n_gpu_layers)
        return requested, None
    limit, capped = context_limit(model, n_gpu_layers)
    return limit, f"context capped at {limit} tokens ({capped}); set -c to choose" if capped else None


def context_limit(model: Model, n_gpu_layers: int = 0) -> tuple[int, str | None]:
    """The model's context, capped so that its KV cache takes at most half the memory where it lives.

    The note says why when it is capped.
    """
    native = model.context_length or 4096
    per_token = model.shape.kv_cache_bytes(1)
    free, where = kv_memory(model, n_gpu_layers)
    if not per_token or not free:
        return native, None
    limit = int(free * KV_MEMORY_SHARE / per_token) // 256 * 256
    if limit >= native:
        return native, None
    limit = max(limit, 256)
    return limit, (
        f"the model's {native} tokens need {per_token * native / 2**30:.1f} GiB of KV cache, "
        f"{free / 2**30:.1f} GiB of {where} are free"
    )
