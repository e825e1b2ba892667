"""The backend an evaluation command runs on: the model here with its variants, or served models.

The served backend (and httpx with it) is imported only when a served run starts: a local run
needs neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from yarn_cli.backend import Backend
from yarn_cli.errors import InputError
from yarn_cli.evals.lengths import default_lengths, parse_lengths
from yarn_cli.llama.evaluation import Vocabulary
from yarn_cli.llama.llama_backend import DEFAULT_CONTEXT, LlamaBackend
from yarn_cli.llama.loader import LoadOptions
from yarn_cli.model import open_model
from yarn_cli.rope.variants import parse_variants

if TYPE_CHECKING:
    from yarn_cli.serving.served_backend import ServedBackend


# Room a default length keeps in its context beyond the prompt: the answer (RULER's longest, 128 tokens), a margin.
SWEEP_MARGIN = 256


def sweep(backend: Backend, given: str | None, option: str, *, caches: int = 1) -> tuple[list[int], str | None]:
    """The lengths ``option`` gave, else powers of two up to the model's context, and a note when memory cut them.

    A default sweep stops at the longest length whose KV cache fits in the free memory (``caches`` of them
    at once), and says so; lengths given are taken as they are and refused before any work if they cannot
    fit.
    """
    if given:
        return parse_lengths(given, option), None
    if backend.context_length is None:
        raise InputError(f"give {option} (or the served GGUF with --tokenizer, whose context sets the default)")
    lengths = default_lengths(backend.context_length)
    fit = backend.tokens_that_fit()
    if fit is None:
        return lengths, None
    fitting = [n for n in lengths if caches * (n + SWEEP_MARGIN) <= fit]
    if len(fitting) == len(lengths):
        return lengths, None
    if not fitting:
        return lengths[:1], None  # too little memory even for the first: its check says so, in one line
    return fitting, (
        f"The default {option} stop at {fitting[-1]:,} tokens, the longest whose KV cache fits in the free memory "
        f"(the model's context is {backend.context_length:,}); give {option} to choose."
    )


def local_backend(model: str | None, compare: str, options: LoadOptions, *, reuse: bool = True) -> LlamaBackend:
    """MODEL under each variant of ``--compare``."""
    opened = open_model(model)
    return LlamaBackend(opened, parse_variants(compare, opened.rope), options, reuse=reuse)


def served_backend(
    servers: Sequence[str],
    server_model: str | None,
    timeout: float,
    model: str | None,
    tokenizer: Path | None,
    *,
    estimate_from: tuple[str, str] | None = None,
    parallel: int = 1,
) -> ServedBackend:
    """The ``--server [LABEL=]URL`` values, sized in the served GGUF's tokens when one is given (as MODEL or
    --tokenizer); nothing is asked of a server yet."""
    from yarn_cli.serving.endpoints import parse_endpoints
    from yarn_cli.serving.served_backend import ServedBackend

    endpoints = parse_endpoints(servers)
    if model is not None and tokenizer is not None:
        raise InputError("give the served GGUF once: as MODEL or as --tokenizer")
    path = tokenizer or (Path(model) if model is not None else None)
    gguf = open_model(path) if path is not None else None
    return ServedBackend(
        endpoints,
        server_model,
        timeout=timeout,
        tokenizer=Vocabulary(gguf) if gguf is not None else None,
        context_length=(gguf.context_length or DEFAULT_CONTEXT) if gguf is not None else None,
        native_context=gguf.original_context if gguf is not None else None,
        estimate_from=estimate_from,
        parallel=parallel,
    )
