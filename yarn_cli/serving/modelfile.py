"""An Ollama Modelfile for a converted GGUF, so that ``ollama create`` gives the longer context.

Ollama runs llama.cpp, which reads the scaling from the file, but it clamps ``num_ctx`` to the
file's ``context_length`` and defaults to a context chosen from the GPU's memory (4k below
24 GiB): without ``PARAMETER num_ctx`` an extended model still gets the short default.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from yarn_cli.errors import OutputError
from yarn_cli.files.checks import check_name_fits, check_writable, same_file
from yarn_cli.files.staging import write_atomically

SUFFIX = ".Modelfile"


def modelfile_path(gguf: Path) -> Path:
    """``model.yarn-2x.gguf`` -> ``model.yarn-2x.Modelfile``, beside it."""
    stem = gguf.name[: -len(".gguf")] if gguf.name.endswith(".gguf") else gguf.name
    return gguf.with_name(stem + SUFFIX)


def modelfile_text(gguf: Path, num_ctx: int) -> str:
    return f"# ollama create NAME -f {modelfile_path(gguf).name}\nFROM ./{gguf.name}\nPARAMETER num_ctx {num_ctx}\n"


def check_modelfile(gguf: Path, models: Sequence[Path], *, overwrite: bool, dry_run: bool = False) -> Path:
    """The Modelfile's path for the model written to ``gguf``, checked before any model is written.

    Refused: a name the filesystem cannot take, one of ``models`` (the input, whose name may
    end in .Modelfile), a folder, a device or pipe, an existing file without ``overwrite``,
    and a folder that takes no new file (not checked by a dry run, which creates nothing).
    """
    path = modelfile_path(gguf)
    check_name_fits(path, "--modelfile: the name")
    for model in models:
        if same_file(path, model):
            raise OutputError(
                f"--modelfile would write {path}, which is the model {model}; give an OUTPUT whose Modelfile "
                "name is free"
            )
    if path.is_dir():
        raise OutputError(f"--modelfile would write {path}, which is a folder; move it, or give another OUTPUT")
    if path.exists() and not path.is_file():
        raise OutputError(
            f"--modelfile would write {path}, which is not a regular file (a device, pipe or socket); "
            "give another OUTPUT"
        )
    if path.exists() and not overwrite and not dry_run:
        raise OutputError(f"{path} exists; use --force to replace it")
    if not dry_run:
        check_writable(path, "--modelfile")
    return path


def write_modelfile(gguf: Path, num_ctx: int) -> Path:
    """The Modelfile beside ``gguf``, replacing any: ``check_modelfile`` said before the model was written."""
    path = modelfile_path(gguf)
    write_atomically(path, modelfile_text(gguf, num_ctx).encode("utf-8"))
    return path
