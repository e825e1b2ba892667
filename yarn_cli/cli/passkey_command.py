"""``yarn-cli passkey``: the paper's passkey retrieval, swept over lengths and scaling variants."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from yarn_cli.backend import Backend
from yarn_cli.cli.backends import local_backend, served_backend, sweep
from yarn_cli.cli.options import (
    COMPARE_SERVERS,
    FlashAttnOption,
    GpuLayersOption,
    ModelArgument,
    ParallelOption,
    PlanOnlyOption,
    PromptServersOption,
    PromptTokenizerOption,
    ServerModelOption,
    ServerTimeoutOption,
    ThreadsOption,
    refuse_local_only,
)
from yarn_cli.cli.render import WorkProgress, check_run_outputs, out, plan_line, save_figure, say, warn
from yarn_cli.errors import YarnCliError
from yarn_cli.evals.estimate import Estimate
from yarn_cli.evals.passkey import (
    PasskeySettings,
    Summary,
    TrialResult,
    calibration_prompts,
    parse_depths,
    passkey_context,
    summarize,
)
from yarn_cli.evals.passkey_report import DEPTH_BINS, depth_grid, truncation_note
from yarn_cli.evals.passkey_run import Planned, run_passkey
from yarn_cli.llama.loader import LoadOptions
from yarn_cli.serving import DEFAULT_READ_TIMEOUT

EPILOG = """\
Examples:

  yarn-cli passkey                                       # the embedded SmolLM2, 1k..8k, 10 trials each

  yarn-cli passkey model.gguf --lengths 4k,8k,16k --compare none,yarn:2,dynamic-yarn --json run.json

  yarn-cli passkey --lengths 2k --depths grid:5 --trials 5 --seed 1

  yarn-cli passkey --server http://127.0.0.1:8080/v1 --lengths 8k,16000 --json served.json

  yarn-cli passkey --server orig=http://host:8080 --server yarn=http://host:8081 --tokenizer m.gguf --lengths 8k
"""


def passkey_command(
    model: ModelArgument = None,
    lengths: Annotated[
        str | None,
        typer.Option(
            help="Prompt lengths in the model's tokens: 1k,2k,8192... Default: powers of two up to its context."
        ),
    ] = None,
    trials: Annotated[int, typer.Option(help="Trials per length and variant (the paper: 10).")] = 10,
    depths: Annotated[
        str | None,
        typer.Option(help="Where the key sits: random (default, as in the paper), a list 0,0.5,1, or grid:K."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for keys and depths: the same seed runs the same trials.")] = 0,
    compare: Annotated[
        str,
        typer.Option(
            help="Variants, run on the same trials: as-is, none, yarn:S, yarn:S@F (its attention factor x F), "
            "linear:S, ntk:S, "
            "ntk-by-parts:S (YaRN without its temperature), dynamic-yarn, dynamic-ntk (per length)."
        ),
    ] = "as-is",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the run here; an existing run is resumed.")
    ] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write one row per trial here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Draw the heatmap and accuracy curves to this PNG.")] = None,
    no_reuse: Annotated[bool, typer.Option("--no-reuse", help="Evaluate every prompt from scratch.")] = False,
    dry_run: PlanOnlyOption = False,
    gpu_layers: GpuLayersOption = None,
    threads: ThreadsOption = None,
    flash_attn: FlashAttnOption = False,
    servers: PromptServersOption = None,
    server_model: ServerModelOption = None,
    tokenizer: PromptTokenizerOption = None,
    parallel: ParallelOption = 1,
    timeout: ServerTimeoutOption = DEFAULT_READ_TIMEOUT,
) -> None:
    """Hide a pass key in filler text and check, per length and variant, that the model finds it.

    Lengths are counted in the model's own tokens; each prompt lands at or just below its target.
    With --server the model is the one a server runs (llama-server, Ollama, LM Studio, vLLM):
    prompts a server cut short are reported as truncated, not as the model's failure.
    """
    check_run_outputs(json_path, csv_path, plot, inputs=[model, tokenizer])
    backend: Backend
    if servers:
        refuse_local_only(
            {"--compare": compare != "as-is", "-ngl": gpu_layers is not None, "-t": threads is not None,
             "-fa": flash_attn, "--no-reuse": no_reuse},
            COMPARE_SERVERS,
        )  # fmt: skip
        backend = served_backend(
            servers, server_model, timeout, model, tokenizer, estimate_from=calibration_prompts(), parallel=parallel
        )
    else:
        options = LoadOptions(n_gpu_layers=gpu_layers, n_threads=threads, flash_attn=flash_attn)
        backend = local_backend(model, compare, options, reuse=not no_reuse)
    wanted, cut = sweep(backend, lengths, "--lengths")
    settings = PasskeySettings(lengths=wanted, trials=trials, depths=parse_depths(depths), seed=seed)
    finished = 0
    with backend, WorkProgress("tokens") as progress:
        for setup in backend.notes():
            say(setup)
        if cut:
            say(cut)
        trials = 0

        def on_start(tokens: int, to_run: int, resumed: int, estimate: Estimate | None) -> None:
            nonlocal finished, trials
            finished, trials = resumed, to_run
            if resumed:
                say(f"Resuming {json_path}: {resumed} trials already done.")
            if to_run:
                say(plan_line(f"{to_run} trials", tokens, estimate))
            progress.begin(tokens, estimate)

        found: dict[str, list[bool]] = {}  # per variant, the trials so far

        def on_tokens(n: int, trial: Planned) -> None:
            marks = found.get(trial.column, [])
            progress.advance(
                n,
                f"{trial.column}, trial {trial.number}/{trials} ({trial.spec.length:,} tokens)",
                f"{sum(marks)}/{len(marks)} found",
            )

        def on_trial(result: TrialResult, results: Sequence[TrialResult]) -> None:
            nonlocal finished
            finished = len(results)
            found.setdefault(result.variant, []).append(result.correct)
            if result.truncated:  # not the model's answer: counted apart
                found[result.variant].pop()

        try:
            run = run_passkey(
                backend,
                settings,
                json_path=json_path,
                csv_path=csv_path,
                on_start=on_start,
                on_tokens=on_tokens,
                on_trial=on_trial,
                plan_only=dry_run,
            )
        except YarnCliError:
            if json_path and finished:
                say(f"The {finished} finished trials are in {json_path}; the same command resumes the run.")
            raise
    if dry_run:
        return
    if plot is not None:  # every file is written before the table, the last thing a run does
        _plot(plot, run.results, backend.columns, settings.lengths)
    _render(run.results, backend.columns, settings.lengths)
    note = truncation_note(run.results)
    if note:
        warn(note)
    if run.interrupted:
        if json_path:
            say(f"The {len(run.results)} finished trials are in {json_path}; the same command resumes the run.")
        raise typer.Exit(130)


def _render(results: list[TrialResult], variants: list[str], lengths: list[int]) -> None:
    summaries = summarize(results)
    table = Table(title="Passkey retrieval accuracy", title_justify="left")
    table.add_column("length", justify="right")
    for variant in variants:
        table.add_column(variant, justify="right")
    for length in lengths:
        row = [f"{length:,}"]
        for variant in variants:
            found = [s for s in summaries if s.variant == variant and s.length == length]
            row.append(_cell(found[0]) if found else "-")
        table.add_row(*row)
    contexts = []
    for variant in variants:
        ctx = passkey_context(summaries, variant)
        contexts.append(f"{ctx:,}" if ctx else "none")
    table.add_section()
    table.add_row("passkey context", *contexts)
    out.print(table)
    for variant in variants:
        out.print(_heatmap(results, variant, lengths))


def _cell(summary: Summary) -> str:
    cut = f", {summary.truncated} truncated" if summary.truncated else ""
    if summary.accuracy is None:
        return f"[yellow]truncated ({summary.truncated})[/]"
    return f"{summary.accuracy:.0%} ({summary.trials}{cut})"


def _heatmap(results: list[TrialResult], variant: str, lengths: list[int]) -> Table:
    grid = depth_grid(results, variant, lengths)
    table = Table(title=f"{variant}: accuracy by key depth x length", title_justify="left")
    table.add_column("depth", justify="right")
    for length in lengths:
        table.add_column(f"{length:,}", justify="center")
    for b, row in enumerate(grid):
        cells = []
        for value in row:
            if value is None:
                cells.append("[dim]·[/]")
            else:
                colour = "green" if value >= 0.8 else ("yellow" if value >= 0.5 else "red")
                cells.append(f"[{colour}]{value:.0%}[/]")
        table.add_row(f"{b / DEPTH_BINS:.1f}-{(b + 1) / DEPTH_BINS:.1f}", *cells)
    return table


def _plot(path: Path, results: list[TrialResult], variants: list[str], lengths: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(variants) + 1, figsize=(4 * (len(variants) + 1), 3.6), squeeze=False)
    summaries = summarize(results)
    curve = axes[0][0]
    for variant in variants:
        points = sorted((s.length, s.accuracy) for s in summaries if s.variant == variant and s.accuracy is not None)
        if points:
            curve.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
    curve.set_xscale("log", base=2)
    labels = [f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in lengths]
    curve.set_xticks(lengths, labels)
    curve.minorticks_off()
    curve.set_ylim(-0.05, 1.05)
    curve.set_xlabel("prompt length (tokens)")
    curve.set_ylabel("accuracy")
    curve.axhline(0.8, color="grey", linestyle=":", linewidth=1)
    curve.legend(fontsize=8)
    curve.set_title("passkey accuracy")
    for ax, variant in zip(axes[0][1:], variants, strict=True):
        grid = depth_grid(results, variant, lengths)
        data = [[float("nan") if v is None else v for v in row] for row in grid]
        image = ax.imshow(data, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="lower")
        ax.set_xticks(range(len(lengths)), labels)
        ax.set_yticks(range(DEPTH_BINS), [f"{(b + 0.5) / DEPTH_BINS:.1f}" for b in range(DEPTH_BINS)])
        ax.set_xlabel("length")
        ax.set_ylabel("depth of the key")
        ax.set_title(variant)
    fig.colorbar(image, ax=axes[0][-1], fraction=0.05)
    fig.tight_layout()
    save_figure(fig, path)
