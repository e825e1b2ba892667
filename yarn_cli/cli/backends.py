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


def sweep(backend: Backend, given: str | None, option: str) -> list[int]:
    """The lengths ``option`` gave, else powers of two up to the model's context."""
    if given:
        return parse_lengths(given, option)
    if backend.context_length is None:
        raise InputError(f"give {option} (or the served GGUF with --tokenizer, whose context sets the default)")
    return default_lengths(backend.context_length)


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
