"""An Ollama Modelfile for a converted GGUF (``convert --modelfile``), so that ``ollama create`` offers the
longer context.

Ollama clamps ``num_ctx`` to the file's ``context_length`` and defaults to a context chosen from the
GPU's memory (4k below 24 GiB): without ``PARAMETER num_ctx`` an extended model still gets the short
default. Whether the scaling itself is applied depends on the Ollama version: 0.30 and later run
every GGUF in llama-server, which reads ``rope.scaling.*`` from the file; earlier ones ran some
architectures (gemma3 among them) on their own engine, which did not always (``rope/runtimes.py``).

The Modelfile is one more output of the conversion: checked with the others before anything is
written, and staged with the model, so that both appear together or neither does. A file already
scaled gets its Modelfile alone (``convert FILE --modelfile``), through the same checks and staging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from yarn_cli.errors import InputError, OutputError, UnsupportedModelError
from yarn_cli.files.checks import check_name_fits, check_writable, same_file
from yarn_cli.model import Model

SUFFIX = ".Modelfile"


@dataclass(frozen=True)
class Modelfile:
    """The Modelfile for the model written to ``model``: ``FROM`` it, with ``num_ctx`` its new context."""

    model: Path
    num_ctx: int

    @property
    def path(self) -> Path:
        return modelfile_path(self.model)

    def text(self) -> str:
        return f"# ollama create NAME -f {self.path.name}\nFROM ./{self.model.name}\nPARAMETER num_ctx {self.num_ctx}\n"


def modelfile_path(gguf: Path) -> Path:
    """``model.yarn-2x.gguf`` -> ``model.yarn-2x.Modelfile``, beside it."""
    stem = gguf.name.removesuffix(".gguf")
    return gguf.with_name(stem + SUFFIX)


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


def num_ctx_as_it_is(model: Model) -> int:
    """The ``num_ctx`` of a Modelfile for a file as it is: its context_length, for a file that is scaled.

    A file with no scaling is refused: ``--modelfile`` without ``--factor`` on it is most likely a
    forgotten factor, and its native context is no longer context to offer (docs/convert.md).
    """
    if not model.rope.is_scaled:
        raise InputError(
            f"{model.path} carries no RoPE scaling: give --factor S or --context N to scale it "
            "(--modelfile alone is for a file already scaled)"
        )
    if not model.context_length:
        raise UnsupportedModelError(
            f"{model.path} has no {model.rope.keys.context_length}, so there is no context to give Ollama as num_ctx"
        )
    return model.context_length
