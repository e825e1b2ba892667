"""An Ollama Modelfile for a converted GGUF, so that ``ollama create`` gives the longer context.

Ollama runs llama.cpp, which reads the scaling from the file, but it clamps ``num_ctx`` to the
file's ``context_length`` and defaults to a context chosen from the GPU's memory (4k below
24 GiB): without ``PARAMETER num_ctx`` an extended model still gets the short default.
"""

from __future__ import annotations

from pathlib import Path

from yarn_cli.errors import OutputError
from yarn_cli.gguf.fileops import write_atomically

SUFFIX = ".Modelfile"


def modelfile_path(gguf: Path) -> Path:
    """``model.yarn-2x.gguf`` -> ``model.yarn-2x.Modelfile``, beside it."""
    stem = gguf.name[: -len(".gguf")] if gguf.name.endswith(".gguf") else gguf.name
    return gguf.with_name(stem + SUFFIX)


def modelfile_text(gguf: Path, num_ctx: int) -> str:
    return f"# ollama create NAME -f {modelfile_path(gguf).name}\nFROM ./{gguf.name}\nPARAMETER num_ctx {num_ctx}\n"


def write_modelfile(gguf: Path, num_ctx: int, *, overwrite: bool) -> Path:
    path = modelfile_path(gguf)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; use --force to replace it")
    write_atomically(path, modelfile_text(gguf, num_ctx).encode("utf-8"))
    return path
