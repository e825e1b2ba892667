"""Every output of a conversion named and checked before anything is written: the model's files, one per
split, beside the input (or in the current folder, for the embedded model), and the Modelfile."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from yarn_cli.conversion.modelfile import Modelfile, check_modelfile, num_ctx_as_it_is
from yarn_cli.conversion.plan import ConversionPlan
from yarn_cli.default_model import DEFAULT_NAME
from yarn_cli.errors import InputError, OutputError
from yarn_cli.files.checks import check_name_fits, check_not_special, check_replaceable, same_file
from yarn_cli.gguf.splits import parse_split_name, split_name, split_paths, split_prefix_for
from yarn_cli.model import Model
from yarn_cli.rope.scaling import Method


@dataclass(frozen=True)
class Outputs:
    """What a conversion reads and writes: ``files[i]`` is ``inputs[i]`` converted (the same path, in place)."""

    inputs: list[Path]
    files: list[Path]
    modelfile: Modelfile | None = None


def default_folder(model: str | os.PathLike[str]) -> Path | None:
    """Where default outputs go when not beside the input: the current folder for the embedded model,
    which lives inside site-packages."""
    return Path.cwd() if str(model) == DEFAULT_NAME else None


def name_outputs(
    plan: ConversionPlan,
    output: Path | None,
    *,
    in_place: bool,
    output_dir: Path | None,
    modelfile: bool,
    overwrite: bool,
    dry_run: bool,
) -> Outputs:
    """Name every output and check it may be written; a dry run does not ask what only writing needs."""
    path = plan.model.path
    inputs, files = ([path], [path]) if in_place else output_paths(plan, output, output_dir)
    written_modelfile = None
    if modelfile:
        check_modelfile(files[0], [*inputs, *files], overwrite=overwrite, dry_run=dry_run)
        written_modelfile = Modelfile(files[0], plan.context_length)
    if in_place and output is not None:
        raise InputError("give an OUTPUT or --in-place, not both")
    if not in_place:
        check_outputs(inputs, files, force=overwrite)
    return Outputs(inputs, files, written_modelfile)


def name_modelfile_alone(model: Model, *, overwrite: bool, dry_run: bool) -> Modelfile:
    """The Modelfile for ``model`` as it is, beside it, checked as a conversion's is; the model is no output."""
    modelfile = Modelfile(model.path, num_ctx_as_it_is(model))
    check_modelfile(model.path, [model.path], overwrite=overwrite, dry_run=dry_run)
    return modelfile


def check_modelfile_wanted(method: Method, modelfile: bool) -> None:
    if modelfile and method == Method.NONE:
        raise InputError("--modelfile is for a scaled model; the original needs no num_ctx of its own")


def method_suffix(method: Method, factor: float | None) -> str:
    if method == Method.NONE or factor is None:
        return "orig"
    return f"{method.value}-{factor:g}x"


def _strip_suffix(stem: str) -> str:
    """Drop an earlier conversion's suffix, so model.yarn-4x.gguf undone is model.orig.gguf."""
    return re.sub(r"\.(?:(?:yarn|linear|ntk|ntk-by-parts)-[0-9.e+]+x|orig)$", "", stem)


def output_paths(
    plan: ConversionPlan, output: Path | None, output_dir: Path | None = None
) -> tuple[list[Path], list[Path]]:
    """(input paths, output paths), one per split; default outputs go beside the input or in ``output_dir``."""
    split = plan.model.split
    path = plan.model.path
    suffix = method_suffix(plan.method, plan.factor)
    directory = output_dir if output_dir is not None else path.parent
    if split is None:
        if output is None:
            stem = path.name.removesuffix(".gguf")
            output = directory / f"{_strip_suffix(stem)}.{suffix}.gguf"
        return [path], [output]
    parsed = parse_split_name(path)
    if split.number != 1 or parsed is None or parsed[1] != 1:
        raise InputError(
            f"{path} is split {split.number} of {split.count}; pass the first split "
            f"(its name ends in -00001-of-{split.count:05d}.gguf)"
        )
    prefix, _, count = parsed
    inputs = split_paths(path.parent, prefix, count)
    for p in inputs[1:]:
        if not p.is_file():
            raise InputError(f"split {p.name} of {path.name} is missing; all {count} splits must sit together")
    if output is None:
        out_dir, out_prefix = directory, f"{_strip_suffix(prefix)}.{suffix}"
    else:
        out_dir, out_prefix = split_prefix_for(output, count)
    return inputs, [out_dir / split_name(out_prefix, i, count) for i in range(1, count + 1)]


def check_outputs(inputs: list[Path], outputs: list[Path], *, force: bool) -> None:
    for i, (src, dst) in enumerate(zip(inputs, outputs, strict=True)):
        if not dst.parent.is_dir():
            raise OutputError(f"the output folder {dst.parent} does not exist; create it first")
        check_name_fits(dst, "the output name")
        # a later split may already be a hard link to its input, from an earlier conversion
        same = same_file(src, dst) if i == 0 else src.resolve() == dst.resolve()
        if same:
            raise OutputError(f"the output {dst} is the input file; use --in-place to replace the input")
        if dst.is_dir():
            raise OutputError(f"the output {dst} is a folder; choose another name")
        check_not_special(dst, "the output")
        if dst.exists() and not force:
            raise OutputError(f"{dst} already exists; use --force to overwrite it")
        check_replaceable(dst, "the output")
