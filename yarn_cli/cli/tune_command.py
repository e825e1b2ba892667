"""``yarn-cli tune``: measure the ways to reach a context, choose one, and bake the best static one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from yarn_cli.cli.backends import local_backend
from yarn_cli.cli.options import FlashAttnOption, GpuLayersOption, ModelArgument, ThreadsOption
from yarn_cli.cli.render import WorkProgress, check_run_outputs, duration, out, save_figure, say
from yarn_cli.conversion import convert_variant
from yarn_cli.errors import InputError
from yarn_cli.evals.estimate import Estimate
from yarn_cli.evals.lengths import parse_length
from yarn_cli.evals.perplexity import read_text
from yarn_cli.evals.tune import (
    DEFAULT_MAX_KL,
    PASSKEY_TRIALS,
    TuneSettings,
    default_candidates,
    scale_factor,
    short_context_for,
)
from yarn_cli.evals.tune_report import rule
from yarn_cli.evals.tune_run import TuneRun, run_tune
from yarn_cli.llama.loader import LoadOptions

EPILOG = """\
Examples:

  yarn-cli tune --context 16k --text book.txt                         # the embedded SmolLM2, 8k -> 16k

  yarn-cli tune model.gguf --context 32k --text book.txt --json tune.json --plot tune.png

  yarn-cli tune model.gguf --context 32k --text book.txt --write model.tuned.gguf

  yarn-cli tune model.gguf --context 12k --text book.txt --candidates yarn:1.5,ntk-by-parts:1.5,dynamic-yarn
"""


def tune_command(
    context: Annotated[str, typer.Option(metavar="N", help="The context to reach, in tokens: 16k, 32768...")],
    text: Annotated[
        Path, typer.Option(help="UTF-8 text to measure perplexity on, as many tokens as the context or more.")
    ],
    model: ModelArgument = None,
    candidates: Annotated[
        str | None,
        typer.Option(
            metavar="LIST",
            help="Variants to measure, as --compare takes them. Default: linear, ntk, ntk-by-parts and yarn at "
            "S = N / native, yarn with its attention factor x0.9 and x1.1 (yarn:S@F), dynamic-yarn, dynamic-ntk.",
        ),
    ] = None,
    short_context: Annotated[
        str | None,
        typer.Option(metavar="N", help="Where the cost at short lengths is measured. Default: min(native, 2048)."),
    ] = None,
    max_kl: Annotated[
        float,
        typer.Option(
            metavar="X",
            help="The most KL divergence from the unscaled model at the short context (nats per token) a choice "
            "may cost.",
        ),
    ] = DEFAULT_MAX_KL,
    trials: Annotated[int, typer.Option(help="Passkey trials at N, for the choice and the best static one.")] = (
        PASSKEY_TRIALS
    ),
    seed: Annotated[int, typer.Option(help="Seed for the passkey trials.")] = 0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the measurements here; an existing tune is resumed.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw long perplexity against short KL, the front and the choice, to this PNG.")
    ] = None,
    write: Annotated[
        Path | None,
        typer.Option(
            metavar="OUT.gguf", help="Write the model with the best static scaling baked in, as convert does."
        ),
    ] = None,
    gpu_layers: GpuLayersOption = None,
    threads: ThreadsOption = None,
    flash_attn: FlashAttnOption = False,
    servers: Annotated[
        list[str] | None,
        typer.Option(
            "--server",
            metavar="URL",
            help="Not taken: a server fixes its scaling when it loads the model.",
            rich_help_panel="Served models",
        ),
    ] = None,
) -> None:
    """Measure the ways to reach a longer context on this model, and say which to use.

    Each candidate gets the figures other commands give: perplexity at --context on --text (perplexity
    --contexts N), its cost at short lengths as KL divergence from the unscaled model and top-1 agreement
    (perplexity --reference none), and passkey retrieval at N. The rule: among the candidates whose short
    KL is at most --max-kl, the lowest long perplexity; the table marks the Pareto front of the two.
    Static scalings can be written into the file (--write); a dynamic one is a run-time setting.
    """
    if servers:
        raise InputError("tune measures a model run here: a server fixes its scaling when it loads the model")
    n = parse_length(context)
    check_run_outputs(json_path, None, plot, inputs=[model, text])
    source = read_text(text)
    options = LoadOptions(n_gpu_layers=gpu_layers, n_threads=threads, flash_attn=flash_attn)
    backend = local_backend(model, "none", options)
    rope = backend.model.rope
    if rope.original.scaling.is_scaled or rope.longrope_factors:
        raise InputError(
            f"{backend.name} came with a RoPE scaling of its own ({rope.original.scaling.describe()}): tune compares "
            "the ways to scale an unscaled model; measure this one's with passkey or perplexity --compare"
        )
    native = backend.native_context
    scale_factor(n, native)  # refuses a context within the native one
    short = parse_length(short_context) if short_context else short_context_for(native)
    names = [v.strip() for v in candidates.split(",") if v.strip()] if candidates else default_candidates(n, native)
    names = backend.with_columns(names).columns  # checked and named as --compare names them
    settings = TuneSettings(context=n, short_context=short, candidates=names, max_kl=max_kl, trials=trials, seed=seed)
    if write is not None:  # the output checked now, as convert checks it, not after the measurements
        convert_variant(model or "default", f"yarn:{scale_factor(n, native):g}", write, dry_run=True)
    with backend, WorkProgress("tokens") as progress:

        def on_start(resumed: int, estimate: Estimate | None) -> None:
            say(f"Tuning {backend.name} from {native:,} to {n:,} tokens, {len(names)} candidates.")
            if resumed:
                say(f"Resuming {json_path}: {resumed} candidates' measurements kept.")
            say(f"The rule: {rule(settings)}.")
            if estimate is not None:
                say(
                    f"At most about {duration(estimate.total_seconds)} here, if every candidate's long perplexity is "
                    f"measured (measured: {estimate.speed.measured})."
                )

        stage = [""]

        def on_stage(what: str, tokens: int, estimate: Estimate | None) -> None:
            stage[0] = what
            progress.begin(tokens, estimate)

        run = run_tune(backend, source, settings, json_path=json_path, on_start=on_start, on_stage=on_stage,
                       on_tokens=lambda count, label: progress.advance(count, stage[0]))  # fmt: skip
    if plot is not None and run.front:
        _plot(plot, run, settings)
    out.print(_table(run, settings))
    if run.interrupted:
        if json_path:
            say(f"The measurements so far are in {json_path}; the same command resumes the tune.")
        raise typer.Exit(130)
    _verdict(run, model)
    if write is not None:
        if run.best_static.variant is None:
            raise InputError(f"nothing written to {write}: {run.best_static.why}")
        written = convert_variant(model or "default", run.best_static.variant, write).outputs[0].path
        say(
            f"Wrote {written} with {run.best_static.variant} baked in (undo: yarn-cli convert {written} --method none)."
        )


def _table(run: TuneRun, settings: TuneSettings) -> Table:
    n, short = settings.context, settings.short_context
    table = Table(title=f"Ways to reach {n:,} tokens", title_justify="left", caption_justify="left", show_edge=False)
    table.caption = (
        f"ppl: perplexity at {n:,} tokens. KL: from the unscaled model at {short:,} tokens, nats per token. front: "
        "no other candidate has both a lower perplexity and a lower KL. stopped: its KL is too high to be chosen."
    )
    for name in ("variant", "ppl", "KL", "KL p99", "top-1", "passkey", ""):
        table.add_column(name, justify="left" if name in ("variant", "") else "right", no_wrap=True)
    for c in run.candidates:
        marks = ["front"] if c.variant in run.front else []
        if c.variant == run.choice.variant:
            marks.append("[bold green]choice[/]")
        if c.variant == run.best_static.variant and c.variant != run.choice.variant:
            marks.append("[green]best static[/]")
        if c.stopped:
            marks.append("[dim]stopped[/]")
        table.add_row(
            c.variant,
            _number(c.long_perplexity, ".3f"),
            _number(c.short_kl, ".4f"),
            _number(c.short_kl_p99, ".4f"),
            _number(c.short_top1, ".1%"),
            f"{c.passkey:.0%} ({c.passkey_trials})" if c.passkey is not None else "-",
            ", ".join(marks),
        )
    return table


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _verdict(run: TuneRun, model: str | None) -> None:
    file = model or "default"
    if run.choice.variant is None:
        out.print(f"No choice: {run.choice.why}. Raise --max-kl to accept a larger cost at short lengths.")
        return
    out.print(f"Choice: {run.choice.variant}, {run.choice.why}.")
    if run.choice.variant == "dynamic-yarn":
        out.print(
            "dynamic-yarn is a run-time setting (llama.cpp has no dynamic type in files): chat with it as "
            f"yarn-cli chat {file} --yarn dynamic"
        )
    elif run.choice.variant == "dynamic-ntk":
        twin = next((c for c in run.candidates if c.variant == "dynamic-yarn"), None)
        figures = f" (here: perplexity {twin.long_perplexity:.3f}, KL 0)" if twin and twin.long_perplexity else ""
        out.print(
            "dynamic-ntk is a run-time setting no runtime offers yet: llama.cpp has no dynamic type in files, and "
            f"yarn-cli chat --yarn dynamic runs dynamic-yarn{figures}"
        )
    if run.best_static.variant is not None and run.best_static.variant != run.choice.variant:
        out.print(f"Best static: {run.best_static.variant}, {run.best_static.why}; --write bakes it into a file.")
    elif run.best_static.variant is None:
        out.print(f"No static choice: {run.best_static.why}.")


def _plot(path: Path, run: TuneRun, settings: TuneSettings) -> None:
    """Long perplexity against short KL: every measured candidate, and beside it the ones within --max-kl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = {c.variant: (c.short_kl, c.long_perplexity) for c in run.candidates
              if c.long_perplexity is not None and c.short_kl is not None}  # fmt: skip
    within = {v: p for v, p in points.items() if p[0] <= settings.max_kl}
    panels = [points, within] if within and len(within) < len(points) else [points]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.4), squeeze=False)
    for ax, shown in zip(axes[0], panels, strict=True):
        for i, (variant, (kl, ppl)) in enumerate(sorted(shown.items(), key=lambda item: item[1])):
            on_front = variant in run.front
            ax.scatter(kl, ppl, s=60 if on_front else 30, marker="o" if on_front else "x",
                       color="tab:blue" if on_front else "grey", zorder=3)  # fmt: skip
            # neighbours' labels on alternate sides, so that close candidates stay readable
            ax.annotate(variant, (kl, ppl), fontsize=7, xytext=(6, 6 if i % 2 == 0 else -11),
                        textcoords="offset points")  # fmt: skip
        line = sorted(shown[v] for v in run.front if v in shown)
        ax.plot([p[0] for p in line], [p[1] for p in line], color="tab:blue", linewidth=1, label="Pareto front")
        if run.choice.variant in shown:
            kl, ppl = shown[run.choice.variant]
            ax.scatter(kl, ppl, s=220, facecolors="none", edgecolors="tab:green", linewidths=2,
                       label=f"choice: {run.choice.variant}", zorder=4)  # fmt: skip
        if shown is points:
            ax.axvline(settings.max_kl, color="grey", linestyle=":", linewidth=1, label=f"--max-kl {settings.max_kl:g}")
        else:
            ax.set_title(f"within --max-kl {settings.max_kl:g}", fontsize=9)
        ax.set_xlabel(f"KL from the unscaled model at {settings.short_context:,} tokens (nats/token)")
        ax.set_ylabel(f"perplexity at {settings.context:,} tokens")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
