"""What every ``--server`` run does on the command line before its own work: the checks, the clients.

httpx and the served-run code are imported only when a served run starts: a local run needs neither.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yarn_cli.errors import InputError

if TYPE_CHECKING:
    from yarn_cli.evals.passkey_served import Endpoint
    from yarn_cli.model import Model
    from yarn_cli.serving.client import ServerClient


def served_gguf(local_only: dict[str, bool], model: str | None, tokenizer: Path | None) -> Path | None:
    """Refuse the options that apply to a model run here; the served GGUF, given as MODEL or --tokenizer."""
    used = [name for name, given in local_only.items() if given]
    if used:
        raise InputError(
            f"{', '.join(used)} applies to a model run here, not to --server (compare servers by giving "
            "--server LABEL=URL more than once)"
        )
    if model is not None and tokenizer is not None:
        raise InputError("give the served GGUF once: as MODEL or as --tokenizer")
    return tokenizer or (Path(model) if model is not None else None)


def served_endpoints(values: list[str], timeout: float) -> list[Endpoint]:
    """The ``--server [LABEL=]URL`` values and ``--timeout``, checked before any work."""
    from yarn_cli.evals.passkey_served import parse_endpoints

    endpoints = parse_endpoints(values)
    if not timeout > 0:
        raise InputError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    return endpoints


def open_servers(
    stack: contextlib.ExitStack, endpoints: list[Endpoint], server_model: str | None, timeout: float
) -> list[tuple[str, ServerClient]]:
    """A client per endpoint, closed with ``stack``."""
    from yarn_cli.serving.client import ServerClient

    return [(e.label, stack.enter_context(ServerClient(e.url, server_model, read_timeout=timeout))) for e in endpoints]


def gguf_tokenizer(gguf: Model) -> dict[str, Any]:
    """The record's note of whose tokens sized the run: the served GGUF's."""
    return {"header_sha256": gguf.header.fingerprint(), "path": str(gguf.path)}
