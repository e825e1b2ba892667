"""Writing a conversion: lock the input, finish an interrupted in-place change, plan, name and check every
output, then write them all through one staging, so that they appear together or none does. And the
Modelfile alone, for a file already scaled: the same checks and staging, the model only read."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from yarn_cli.conversion.in_use import check_not_in_use
from yarn_cli.conversion.modelfile import Modelfile
from yarn_cli.conversion.outputs import (
    Outputs,
    check_modelfile_wanted,
    default_folder,
    name_modelfile_alone,
    name_outputs,
)
from yarn_cli.conversion.plan import ConversionPlan, ConvertRequest, plan_conversion, request_for_variant
from yarn_cli.default_model import resolve_model
from yarn_cli.errors import InputError, OutputError
from yarn_cli.files.checks import check_free_space
from yarn_cli.files.copying import Unsupported
from yarn_cli.files.staging import Staging, link_or_copy, staging
from yarn_cli.gguf.header import GGUFHeader
from yarn_cli.gguf.inplace import has_record, in_place_target, locked, recover
from yarn_cli.gguf.rewrite import patch_in_place, write_patched
from yarn_cli.model import Model, open_model
from yarn_cli.rope.huggingface import HfScaling, hf_scaling
from yarn_cli.rope.runtimes import Where, runtime_report
from yarn_cli.rope.variants import parse_variant

IN_PLACE = "changing it in place"
RECOVERY = "finishing or undoing its interrupted in-place change"


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    # The first file: "insert-range", "collapse-range" or "overwrite" (in place, only the header
    # written), "reflink" (data blocks shared with the input) or "copy"; later splits:
    # "hardlink" or "copy".
    action: str
    bytes_copied: int


@dataclass(frozen=True)
class ConvertResult:
    plan: ConversionPlan
    input: Path
    outputs: list[WrittenFile]  # none for a dry run
    in_place: bool
    seconds: float
    recovered: str | None = None  # what an interrupted earlier in-place change became
    fallback: str | None = None  # why an in-place change went through a copy
    modelfile: Modelfile | None = None  # the Modelfile written (on a dry run: the one that would be)
    notes: list[str] = field(default_factory=list)  # what could not be checked before an in-place change

    @property
    def warnings(self) -> list[str]:
        return [*self.plan.warnings, *self.notes]


@dataclass(frozen=True)
class Recovery:
    path: Path
    outcome: str | None  # "completed", "restored", or None: there was nothing to recover
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelfileResult:
    """The Modelfile written for a model as it is (on a dry run: the one that would be); the model untouched."""

    model: Model
    modelfile: Modelfile
    dry_run: bool
    seconds: float

    @property
    def hugging_face(self) -> HfScaling:
        """The file's scaling for servers that run the Hugging Face model, as a conversion's result gives it."""
        return hf_scaling(self.model.rope, self.model.shape.head_dim_k)

    @property
    def runtimes(self) -> list[Where]:
        """Where the file's own scaling takes effect, runtime by runtime, as a conversion's plan says it."""
        report = runtime_report(self.model.rope)
        return report.where if report is not None and report.from_file else []


def wants_modelfile_alone(
    request: ConvertRequest, *, modelfile: bool, output: str | os.PathLike[str] | None, in_place: bool
) -> bool:
    """``convert FILE --modelfile`` and nothing else (no scale, method, option, OUTPUT or --in-place)."""
    return modelfile and request.asks_nothing and output is None and not in_place


def write_modelfile(path: str | os.PathLike[str], *, overwrite: bool = False, dry_run: bool = False) -> ModelfileResult:
    """The Ollama Modelfile for a file already scaled, as it is (``num_ctx`` its context_length), beside it.

    The model is only read, held against in-place changes meanwhile; a file whose in-place change
    was cut short is refused (its header may be half-written: ``--recover`` first), and so is one
    with no scaling. The Modelfile is named, checked and staged as a conversion's is.
    """
    start = time.perf_counter()
    source = resolve_model(path)
    with locked(source, exclusive=False):
        model = open_model(source)
        modelfile = name_modelfile_alone(model, overwrite=overwrite, dry_run=dry_run)
        if not dry_run:
            with staging() as stage:
                stage.write(modelfile.path, modelfile.text().encode("utf-8"))
    return ModelfileResult(model, modelfile, dry_run, time.perf_counter() - start)


def convert_file(
    path: str | os.PathLike[str],
    request: ConvertRequest,
    *,
    output: str | os.PathLike[str] | None = None,
    in_place: bool = False,
    overwrite: bool = False,
    output_dir: Path | None = None,
    modelfile: bool = False,
    in_use_ok: bool = False,
    progress: Callable[[int, int], None] | None = None,
    dry_run: bool = False,
) -> ConvertResult:
    """Convert a GGUF model (all splits of it), and write its Ollama Modelfile too where ``modelfile``.

    ``path`` may be ``default``, the embedded model, whose default outputs go to the current folder
    (``output_dir`` elsewhere). The input is held against other processes' in-place changes
    throughout: exclusively when this one changes it (``in_place``, or finishing an interrupted
    change first), shared when it only reads it; and it is not changed in place while another
    process maps it or holds it open, unless ``in_use_ok``. A dry run changes nothing, not even an
    interrupted change's file. ``progress(done, total)`` reports bytes.
    """
    start = time.perf_counter()
    if output_dir is None:
        output_dir = default_folder(path)
    source = resolve_model(path)
    check_modelfile_wanted(request.chosen_method, modelfile)
    source = in_place_target(source) if in_place else source
    pending = has_record(source) and not dry_run
    with locked(source, exclusive=(in_place and not dry_run) or pending) as lock_fd:
        notes = []
        if (in_place or pending) and not in_use_ok:
            note = check_not_in_use(source, lock_fd, IN_PLACE if in_place else RECOVERY, new_file_instead=in_place)
            notes = [] if note is None else [note]
        recovered = None if dry_run else recover(source)  # an earlier in-place change cut short: finish or undo it
        model = open_model(source)
        plan = plan_conversion(model, request)
        outputs = name_outputs(
            plan,
            Path(output) if output is not None else None,
            in_place=in_place,
            output_dir=output_dir,
            modelfile=modelfile,
            overwrite=overwrite,
            dry_run=dry_run,
        )
        result = ConvertResult(plan, model.path, [], in_place, 0.0, recovered, modelfile=outputs.modelfile, notes=notes)
        if dry_run:
            return _timed(result, start)
        return _timed(_write(model, plan, outputs, in_place, progress, result), start)


def convert_variant(
    path: str | os.PathLike[str], variant: str, output: Path, *, dry_run: bool = False
) -> ConvertResult:
    """Bake a run-time variant (``yarn:1.5``, ``ntk-by-parts:2``...) into a new file, as ``convert`` writes it:
    verified, atomic, undoable with ``--method none``. A dry run checks the output before any work."""
    return convert_file(path, request_for_variant(parse_variant(variant)), output=output, dry_run=dry_run)


def _timed(result: ConvertResult, start: float) -> ConvertResult:
    return dataclasses.replace(result, seconds=time.perf_counter() - start)


def recover_file(path: str | os.PathLike[str], *, in_use_ok: bool = False) -> Recovery:
    """``convert --recover``: finish or undo an interrupted in-place change, holding the file meanwhile.

    Refused, like the change itself, while another process maps the file, unless ``in_use_ok``.
    """
    source = resolve_model(path)
    if not source.exists():
        raise InputError(f"{source} does not exist; --recover takes the model whose in-place change was cut short")
    target = in_place_target(source)
    with locked(target, exclusive=True) as lock_fd:
        note = None
        if has_record(target) and not in_use_ok:
            note = check_not_in_use(target, lock_fd, RECOVERY, new_file_instead=False)
        return Recovery(source, recover(target), [] if note is None else [note])


def _write(
    model: Model,
    plan: ConversionPlan,
    outputs: Outputs,
    in_place: bool,
    progress: Callable[[int, int], None] | None,
    result: ConvertResult,
) -> ConvertResult:
    """Every output through one staging: the model (all its splits) and its Modelfile appear together or not at all.

    In place, the Modelfile is staged first and renamed into place once the header change is verified.
    """
    header = model.header
    fallback = None
    written: list[WrittenFile] = []
    with staging() as stage:
        if outputs.modelfile is not None:
            stage.write(outputs.modelfile.path, outputs.modelfile.text().encode("utf-8"))
        if in_place:
            try:
                action, written_bytes = patch_in_place(header, plan.edits, plan.key_order, progress)
                written = [WrittenFile(header.path, action, written_bytes)]
            except Unsupported as exc:
                names = header.path.stat().st_nlink
                if names > 1:  # the copy renamed over this name would leave the others with the old file
                    raise OutputError(
                        f"{header.path} has {names} names (hard links) and here the change can only be made through "
                        f"a copy ({exc.strerror}), which the other names would not see; convert it to an OUTPUT "
                        "instead"
                    ) from None
                fallback = (
                    f"the data cannot be moved in place here ({exc.strerror}); the file was rewritten through a copy"
                )
        if not written:
            written = _write_new(header, plan, outputs, stage, progress)
    return dataclasses.replace(result, outputs=written, fallback=fallback)


def _write_new(
    header: GGUFHeader,
    plan: ConversionPlan,
    outputs: Outputs,
    stage: Staging,
    progress: Callable[[int, int], None] | None,
) -> list[WrittenFile]:
    """The converted model as new files (the first a reflink or a copy, later splits hard links or copies)."""
    inputs, files = outputs.inputs, outputs.files
    total = header.file_size + sum(p.stat().st_size for p in inputs[1:])
    same_device = all(p.parent.stat().st_dev == inputs[0].parent.stat().st_dev for p in files)
    check_free_space(files[0].parent, header.file_size if same_device else total)

    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    action, copied = write_patched(header, plan.edits, files[0], stage, key_order=plan.key_order, progress=advance)
    written = [WrittenFile(files[0], action, copied)]
    for src, dst in zip(inputs[1:], files[1:], strict=True):
        split_size = src.stat().st_size
        action = link_or_copy(src, dst, stage, advance)
        if action == "hardlink":
            advance(split_size)
        written.append(WrittenFile(dst, action, split_size if action == "copy" else 0))
    return written
