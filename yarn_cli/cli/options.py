"""Arguments and options several commands share, named as llama.cpp's tools name them, and the one
refusal of the options that apply only to a model run here when a command is pointed at a server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from yarn_cli.errors import InputError

ModelArgument = Annotated[
    str | None,
    typer.Argument(help="GGUF model; default: the embedded SmolLM2-135M-Instruct.", metavar="MODEL"),
]
GpuLayersOption = Annotated[
    int | None,
    typer.Option(
        "--gpu-layers", "-ngl", help="Layers to offload to the GPU. Default: all if llama.cpp has GPU support."
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads", "-t", help="CPU threads (default: the physical cores to generate, every usable CPU for prompts)."
    ),
]
FlashAttnOption = Annotated[bool, typer.Option("--flash-attn", "-fa", help="Use flash attention.")]
PlanOnlyOption = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Plan the run and estimate its time here (a few seconds' measurement of the model), then stop: nothing "
        "is run or written.",
    ),
]
ServerModelOption = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="The model name the server expects (default: the first in /v1/models).",
        rich_help_panel="Served models",
    ),
]
ServerTimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout", metavar="SECONDS", help="Seconds to wait for one answer.", rich_help_panel="Served models"
    ),
]

# The served-model options of the commands that send prompts (passkey, ruler).
PromptServersOption = Annotated[
    list[str] | None,
    typer.Option(
        "--server",
        metavar="[LABEL=]URL",
        help="Test a served model instead, over its OpenAI-compatible API: [LABEL=]URL such as "
        "http://127.0.0.1:8080/v1. Give it more than once to compare servers. API key: $YARN_CLI_API_KEY "
        "or $OPENAI_API_KEY.",
        rich_help_panel="Served models",
    ),
]
PromptTokenizerOption = Annotated[
    Path | None,
    typer.Option(
        help="The served GGUF, to size prompts in its tokens (default: the server's tokenize endpoint).",
        rich_help_panel="Served models",
    ),
]
ParallelOption = Annotated[
    int, typer.Option(help="Requests in flight at once (servers batch them).", rich_help_panel="Served models")
]

COMPARE_SERVERS = "compare servers by giving --server LABEL=URL more than once"


def refuse_local_only(given: dict[str, bool], advice: str) -> None:
    """One line naming the options given that apply to a model run here, not to one a server runs."""
    used = [name for name, present in given.items() if present]
    if used:
        raise InputError(f"{', '.join(used)} applies to a model run here, not to --server; {advice}")
