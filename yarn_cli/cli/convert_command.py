"""``yarn-cli convert``: bake a RoPE scaling into a GGUF file (or take it out again)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from yarn_cli.cli.render import byte_progress, err, mib, out, print_json, say, show_value, warn
from yarn_cli.conversion import (
    ConversionPlan,
    ConvertRequest,
    ConvertResult,
    Modelfile,
    ModelfileResult,
    convert_file,
    recover_file,
    wants_modelfile_alone,
    write_modelfile,
)
from yarn_cli.gguf.inplace import record_name
from yarn_cli.rope.keys import RECORD_KEY
from yarn_cli.rope.runtimes import not_taking_effect
from yarn_cli.rope.scaling import Method

EPILOG = """\
Examples:

  yarn-cli convert model.gguf --factor 4            # YaRN x4 -> model.yarn-4x.gguf

  yarn-cli convert model.gguf --context 32768 --dry-run

  yarn-cli convert model.gguf out.gguf --method ntk --factor 2

  yarn-cli convert model.gguf --method ntk-by-parts --factor 2  # YaRN's blend, no temperature

  yarn-cli convert model.yarn-4x.gguf --method none # undo -> model.orig.gguf

  yarn-cli convert default --factor 4               # the embedded SmolLM2-135M -> ./

  yarn-cli convert model.gguf --in-place --factor 2  # only the header is written (ext4, XFS)

  yarn-cli convert model.gguf --factor 2 --modelfile # + model.yarn-2x.Modelfile for ollama create

  yarn-cli convert model.yarn-2x.gguf --modelfile    # only its Modelfile, the file as it is
"""


def convert_command(
    input: Annotated[
        str,
        typer.Argument(
            help="GGUF model (the first split of a split model), or 'default' for the embedded SmolLM2-135M.",
            metavar="INPUT",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Argument(
            help="Output file. Default: beside INPUT, named <stem>.yarn-<S>x.gguf (.linear-, .ntk-, .ntk-by-parts-, "
            ".orig).",
            metavar="OUTPUT",
        ),
    ] = None,
    factor: Annotated[float | None, typer.Option("--factor", "-f", help="Scale factor S (> 1).")] = None,
    context: Annotated[
        int | None,
        typer.Option(
            "--context", "-c", help="Target context N; S = N / the trained context (N / the file's context for YaRN)."
        ),
    ] = None,
    method: Annotated[
        Method | None,
        typer.Option(
            "--method",
            "-m",
            help="yarn, ntk-by-parts (YaRN's blend without its attention temperature: rope.scaling.attn_factor = "
            "1 / (0.1 ln S + 1)), linear (PI), ntk (NTK-aware base) or none (undo).",
            show_default="yarn",
        ),
    ] = None,
    original_context: Annotated[
        int | None,
        typer.Option(help="Trained context L. Default: the file's original_context_length, else context_length."),
    ] = None,
    attn_factor: Annotated[
        float | None, typer.Option(help="YaRN: extra multiplier on the attention factor (rope.scaling.attn_factor).")
    ] = None,
    beta_fast: Annotated[float | None, typer.Option(help="YaRN, NTK-by-parts: beta_fast (default 32).")] = None,
    beta_slow: Annotated[float | None, typer.Option(help="YaRN, NTK-by-parts: beta_slow (default 1).")] = None,
    finetuned: Annotated[
        bool | None,
        typer.Option("--finetuned/--not-finetuned", help="YaRN, NTK-by-parts: mark the model as fine-tuned for it."),
    ] = None,
    in_place: Annotated[
        bool,
        typer.Option(
            "--in-place",
            help="Change INPUT itself: only the header is written where the filesystem can move blocks "
            "(ext4, XFS), else it is replaced through a copy. Crash-safe either way.",
        ),
    ] = False,
    recover: Annotated[
        bool,
        typer.Option("--recover", help="Finish or undo an in-place change of INPUT that was cut short; nothing else."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Overwrite an existing OUTPUT; replace a scaling the model was trained with; change INPUT in place "
            "(or --recover it) even while a running process maps it or holds it open.",
        ),
    ] = False,
    allow_shorter_context: Annotated[
        bool,
        typer.Option(
            "--allow-shorter-context", help="Let the new context_length be below the file's own (refused otherwise)."
        ),
    ] = False,
    modelfile: Annotated[
        bool,
        typer.Option(
            "--modelfile",
            help="Also write an Ollama Modelfile beside the output (FROM it, PARAMETER num_ctx the new context): "
            "Ollama otherwise keeps its short default context.",
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the keys that would change; write nothing.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Write YaRN (or NTK-by-parts, linear, NTK-aware, or no scaling) into a GGUF file's metadata.

    Raises context_length to S x original, so llama-server, Ollama and LM Studio offer the longer context.

    Records what the file had, so --method none restores it exactly. Tensor data is copied unchanged.
    """
    if recover:
        _recover(input, json_output, force)
        return
    request = ConvertRequest(
        method=method,
        factor=factor,
        context=context,
        original_context=original_context,
        attn_factor=attn_factor,
        beta_fast=beta_fast,
        beta_slow=beta_slow,
        finetuned=finetuned,
        force=force,
        allow_shorter_context=allow_shorter_context,
    )
    if wants_modelfile_alone(request, modelfile=modelfile, output=output, in_place=in_place):
        _modelfile_alone(write_modelfile(input, overwrite=force, dry_run=dry_run), json_output, quiet)
        return
    with byte_progress("Writing", enabled=not (quiet or json_output or dry_run)) as update:
        result = convert_file(
            input,
            request,
            output=output,
            in_place=in_place,
            overwrite=force,
            modelfile=modelfile,
            in_use_ok=force,
            progress=update,
            dry_run=dry_run,
        )
    plan = result.plan
    written_modelfile = None if dry_run or result.modelfile is None else result.modelfile.path
    if json_output:
        print_json(
            {
                **_result_dict(result, dry_run),
                "modelfile": None if written_modelfile is None else str(written_modelfile),
            }
        )
        return
    if result.recovered:
        say(_recovered_line(result.input, result.recovered))
    for message in result.warnings:
        warn(message)
    for message in not_taking_effect(plan.runtimes):  # runtimes that will not run the scaling as written
        warn(message)
    if result.fallback:
        warn(result.fallback)
    if dry_run:
        out.print(_changes_table(plan))
        if result.modelfile is not None:
            out.print(_modelfile_planned(result.modelfile), markup=False)
        out.print(f"Dry run: {_summary(plan)}; nothing written.", markup=False)
        return
    if not quiet:
        if plan.replaced:
            say(f"Replaced the file's previous scaling: {plan.replaced}")
        err.print(_changes_table(plan))
        where = "in place" if result.in_place else f"to {result.outputs[0].path}"
        how = _how(result.outputs[0].action, result.outputs[0].bytes_copied)
        say(f"{_summary(plan)}; written {where} ({how}) in {result.seconds:.2f} s, verified.")
        for written in result.outputs[1:]:
            say(f"  split {written.path.name}: {written.action}")
    if result.modelfile is not None and written_modelfile is not None:
        say(_modelfile_written(result.modelfile))


def _modelfile_planned(modelfile: Modelfile) -> str:
    return f"Ollama: {modelfile.path} (num_ctx {modelfile.num_ctx}) would be written."


def _modelfile_written(modelfile: Modelfile) -> str:
    return f"Ollama: {modelfile.path} (num_ctx {modelfile.num_ctx}); run: ollama create NAME -f {modelfile.path}"


def _modelfile_alone(result: ModelfileResult, json_output: bool, quiet: bool) -> None:
    """The Modelfile of a file as it is: no table (no key changes), the Modelfile lines a conversion prints."""
    model, modelfile = result.model, result.modelfile
    as_it_is = f"{model.path} as it is (context_length {modelfile.num_ctx})"
    if json_output:
        print_json(_modelfile_alone_dict(result))
        return
    for message in not_taking_effect(result.runtimes):  # runtimes that will not run the file's scaling as written
        warn(message)
    if result.dry_run:
        out.print(_modelfile_planned(modelfile), markup=False)
        out.print(f"Dry run: the Modelfile of {as_it_is}; nothing written.", markup=False)
    else:
        if not quiet:
            say(f"{as_it_is}: only its Modelfile written, the model unchanged.")
        say(_modelfile_written(modelfile))


def _how(action: str, copied: int) -> str:
    if action in ("insert-range", "collapse-range", "overwrite"):
        return f"{action}: the data stayed where it was, {mib(copied)} of header written"
    if action == "reflink":
        return f"reflink: the data blocks are shared with the input, {mib(copied)} of header written"
    return f"copy: {mib(copied)} written"


def _recovered_line(path: Path, outcome: str) -> str:
    if outcome == "completed":
        return f"{path}: an interrupted in-place change was found and completed."
    return f"{path}: an interrupted in-place change was found and undone; the original is back."


def _recover(input: str, json_output: bool, force: bool) -> None:
    recovery = recover_file(input, in_use_ok=force)
    path, outcome = recovery.path, recovery.outcome
    for note in recovery.notes:  # on stderr, --json or not
        warn(note)
    if json_output:
        print_json({"input": str(path), "recovered": outcome})
    elif outcome is None:
        say(f"{path}: nothing to recover (no {record_name(path)} beside it).")
    else:
        say(_recovered_line(path, outcome))


def _summary(plan: ConversionPlan) -> str:
    if plan.method == Method.NONE:
        return f"scaling removed, context_length {plan.context_length}"
    before = plan.model.rope.native_context or plan.original_context
    what = f"{plan.method.value} x{plan.factor:g}"
    if plan.total_factor != plan.factor:
        what += (
            f" on the model's own YaRN x{plan.model.rope.trained_yarn:g} (x{plan.total_factor:g} over its original "
            f"context {plan.original_context})"
        )
    current = plan.model.rope.current.context_length
    if plan.model.rope.converted and current and current != before:  # converted again: from the original
        return (
            f"{what}: context_length {current} -> {plan.context_length} (x{plan.factor:g} of the {before} it came with)"
        )
    return f"{what}: context_length {before} -> {plan.context_length}"


def _changes_table(plan: ConversionPlan) -> Table:
    table = Table(title="Metadata changes", title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for change in plan.changes:
        if change.key == RECORD_KEY:
            before = "(record)" if change.before is not None else "(absent)"
            after = "(removed)" if change.after is None else "(undo record)"
        else:
            before, after = show_value(change.before), show_value(change.after)
        table.add_row(Text(change.key), Text(before), Text(after))
    return table


def _result_dict(result: ConvertResult, dry_run: bool) -> dict[str, Any]:
    plan = result.plan
    runtime = plan.runtime
    return {
        "input": str(result.input),
        "outputs": [{"path": str(w.path), "action": w.action, "bytes_copied": w.bytes_copied} for w in result.outputs],
        "dry_run": dry_run,
        "in_place": result.in_place,
        "path": result.outputs[0].action if result.outputs else None,
        "bytes_copied": sum(w.bytes_copied for w in result.outputs),
        "recovered": result.recovered,
        "fallback": result.fallback,
        "method": plan.method.value,
        "factor": plan.factor,
        "total_factor": plan.total_factor,
        "original_context": plan.original_context,
        "context_length": plan.context_length,
        "freq_base": plan.freq_base,
        "replaced": plan.replaced,
        "changes": [
            {
                "key": c.key,
                "before": None if c.before is None else c.before.to_json(),
                "after": None if c.after is None else c.after.to_json(),
            }
            for c in plan.changes
        ],
        "warnings": result.warnings,
        "verified": bool(result.outputs),  # every written file is read back before it counts
        "seconds": round(result.seconds, 4),
        "runtime_equivalent": None if runtime is None else runtime.as_kwargs(),
        "runtime_flags": None if runtime is None else runtime.flags(),
        "hugging_face": plan.hugging_face.to_dict(),
        "runtimes": [w.to_dict() for w in plan.runtimes],
    }


def _modelfile_alone_dict(result: ModelfileResult) -> dict[str, Any]:
    """A conversion's keys, saying that nothing was converted: no method, no outputs, no changes."""
    model = result.model
    return {
        "input": str(model.path),
        "outputs": [],
        "dry_run": result.dry_run,
        "in_place": False,
        "path": None,
        "bytes_copied": 0,
        "recovered": None,
        "fallback": None,
        "method": None,
        "factor": None,
        "total_factor": None,
        "original_context": model.original_context,
        "context_length": model.context_length,
        "freq_base": model.rope.current.freq_base,
        "replaced": None,
        "changes": [],
        "warnings": [],
        "verified": False,
        "seconds": round(result.seconds, 4),
        "runtime_equivalent": None,
        "runtime_flags": None,
        "hugging_face": result.hugging_face.to_dict(),
        "modelfile": None if result.dry_run else str(result.modelfile.path),
        "runtimes": [w.to_dict() for w in result.runtimes],
    }
