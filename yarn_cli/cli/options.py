"""Arguments and options several commands share, named as llama.cpp's tools name them."""

from __future__ import annotations

from typing import Annotated

import typer

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
