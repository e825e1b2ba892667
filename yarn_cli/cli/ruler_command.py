"""``yarn-cli ruler``: RULER's synthetic long-context tasks, swept over lengths and scaling variants."""

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
from yarn_cli.errors import InputError, YarnCliError
from yarn_cli.evals.estimate import Estimate
from yarn_cli.evals.ruler import (
    THRESHOLD,
    RulerSettings,
    SampleResult,
    TaskScore,
    calibration_prompts,
    effective_context,
    mean_over_tasks,
    summarize,
)
from yarn_cli.evals.ruler_haystack import Essay, read_essay
from yarn_cli.evals.ruler_prompts import essay_identity
from yarn_cli.evals.ruler_report import truncation_note
from yarn_cli.evals.ruler_run import Planned, run_ruler
from yarn_cli.evals.ruler_tasks import TASKS, parse_tasks
from yarn_cli.llama.loader import LoadOptions
from yarn_cli.serving import DEFAULT_READ_TIMEOUT

EPILOG = """\
Examples:

  yarn-cli ruler --tasks niah_single_1,vt,cwe,fwe --lengths 1k,2k --samples 3     # no haystack needed

  yarn-cli ruler model.gguf --haystack essays.txt --lengths 4k,8k --compare none,yarn:2,dynamic-yarn --json r.json

  yarn-cli ruler instruct.gguf --chat-template --haystack essays.txt --prompts prompts.jsonl

  yarn-cli ruler --server http://127.0.0.1:8080/v1 --tokenizer m.gguf --haystack essays.txt --lengths 8k
"""


def ruler_command(
    model: ModelArgument = None,
    tasks: Annotated[
        str, typer.Option(help="Tasks or groups, comma-separated: all, niah, or names such as vt,cwe.")
    ] = "all",
    lengths: Annotated[
        str | None,
        typer.Option(
            help="Prompt lengths in the model's tokens (prompt and answer): 1k,2k,8192... "
            "Default: powers of two up to its context."
        ),
    ] = None,
    samples: Annotated[int, typer.Option(help="Samples per task, length and variant (RULER: 500).")] = 10,
    seed: Annotated[int, typer.Option(help="Seed for every sample: the same seed runs the same samples.")] = 0,
    haystack: Annotated[
        Path | None, typer.Option(help="The essay haystack: a long plain text (RULER uses Paul Graham's essays).")
    ] = None,
    chat_template: Annotated[
        bool,
        typer.Option(
            "--chat-template",
            help="Wrap each input in the model's own chat template, the answer prefix opening its reply (for "
            "instruct models). Default: the raw prompt, RULER's base-model setting.",
        ),
    ] = False,
    compare: Annotated[
        str,
        typer.Option(
            help="Variants, run on the same samples: as-is, none, yarn:S, yarn:S@F (its attention factor x F), "
            "linear:S, ntk:S, "
            "ntk-by-parts:S (YaRN without its temperature), dynamic-yarn, dynamic-ntk (per length)."
        ),
    ] = "as-is",
    threshold: Annotated[
        float, typer.Option(help="Mean score (percent) a length must reach to count in the effective context.")
    ] = THRESHOLD,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the run here; an existing run is resumed.")
    ] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write one row per sample here.")] = None,
    prompts_path: Annotated[
        Path | None,
        typer.Option("--prompts", help="Write every prompt here as RULER's JSONL (index, input, outputs, length...)."),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw score against length, per task and the mean, to this PNG.")
    ] = None,
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
    """Run RULER's synthetic tasks per length and variant, and find the context that really holds.

    A passkey context overstates the usable one: RULER's harder retrieval, multi-hop tracing and
    aggregation fall first. Prompts are sized in the model's own tokens; each sample is scored as RULER
    scores it (the share of expected strings in the answer), and the effective context is the longest
    length whose mean over tasks reaches --threshold, counting lengths from the shortest up. With
    --server, samples a server cut short are reported as truncated, not scored.

    Tasks: niah_single_1/2/3, niah_multikey_1/2/3, niah_multivalue and niah_multiquery (needles in
    noise, an essay or other needles), vt (variable tracking), cwe (common words), fwe (frequent
    words); groups niah and all. RULER's qa_1 and qa_2 need SQuAD and HotpotQA, which cannot be had
    offline: they are left out.

    niah_single_2/3, niah_multikey_1, niah_multivalue and niah_multiquery hide their needles in an
    essay: give a long plain text as --haystack FILE (RULER uses Paul Graham's essays).
    """
    check_run_outputs(json_path, csv_path, plot, prompts_path, inputs=[model, tokenizer, haystack])
    chosen = parse_tasks(tasks)
    essay = _essay(haystack, chosen)
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
    settings = RulerSettings(
        lengths=wanted,
        tasks=chosen,
        samples=samples,
        seed=seed,
        threshold=threshold,
        chat_template=chat_template,
        haystack=essay_identity(essay),
    )
    finished = 0
    with backend, WorkProgress("tokens") as progress:
        for setup in backend.notes():
            say(setup)
        if cut:
            say(cut)
        to_run = 0

        def on_start(tokens: int, count: int, resumed: int, estimate: Estimate | None) -> None:
            nonlocal finished, to_run
            finished, to_run = resumed, count
            if resumed:
                say(f"Resuming {json_path}: {resumed} samples already done.")
            columns = len(backend.columns)
            grid = f"{len(chosen)} tasks x {len(settings.lengths)} lengths x {samples} samples x {columns} variants"
            say(plan_line(f"{count:,} samples to run ({grid}, less those done)", tokens, estimate))
            progress.begin(tokens, estimate)

        scores: dict[str, list[float]] = {}  # per variant, the samples so far

        def on_tokens(n: int, sample: Planned) -> None:
            marks = scores.get(sample.column, [])
            mean = f"{sum(marks) / len(marks):.0%} so far" if marks else ""
            progress.advance(
                n, f"{sample.column}, sample {sample.number}/{to_run} ({sample.prompt.task}, {sample.prompt.length:,})",
                mean,
            )  # fmt: skip

        def on_sample(result: SampleResult, results: Sequence[SampleResult]) -> None:
            nonlocal finished
            finished = len(results)
            if not result.truncated:  # not the model's answer: counted apart
                scores.setdefault(result.variant, []).append(result.score)

        try:
            run = run_ruler(
                backend,
                settings,
                essay,
                json_path=json_path,
                csv_path=csv_path,
                prompts_path=prompts_path,
                on_start=on_start,
                on_tokens=on_tokens,
                on_sample=on_sample,
                plan_only=dry_run,
            )
        except YarnCliError:
            if json_path and finished:
                say(f"The {finished} finished samples are in {json_path}; the same command resumes the run.")
            raise
    if dry_run:
        return
    if plot is not None:  # every file is written before the table, the last thing a run does
        _plot(plot, run.results, backend.columns, settings)
    _render(run.results, backend.columns, settings)
    note = truncation_note(run.results)
    if note:
        warn(note)
    if run.interrupted:
        if json_path:
            say(f"The {len(run.results)} finished samples are in {json_path}; the same command resumes the run.")
        raise typer.Exit(130)


def _essay(path: Path | None, tasks: list[str]) -> Essay | None:
    """The essay haystack where a chosen task needs it; refused in one line where it is missing."""
    needing = [t for t in tasks if TASKS[t].haystack == "essay"]
    if not needing:
        return None
    if path is None:
        raise InputError(
            f"{', '.join(needing)} {'hides its' if len(needing) == 1 else 'hide their'} needles in an essay: give a "
            "long plain text as --haystack FILE (RULER "
            "uses Paul Graham's essays), or choose other --tasks (niah_single_1, niah_multikey_2/3, vt, cwe, fwe "
            "need none)"
        )
    return read_essay(path)


def _render(results: list[SampleResult], variants: list[str], settings: RulerSettings) -> None:
    rows = summarize(results)
    for variant in variants:
        table = Table(title=f"RULER score (%), {variant}", title_justify="left")
        table.add_column("task")
        for length in settings.lengths:
            table.add_column(f"{length:,}", justify="right")
        for task in settings.tasks:
            cells = []
            for length in settings.lengths:
                found = [r for r in rows if r.variant == variant and r.task == task and r.length == length]
                cells.append(_cell(found[0]) if found else "-")
            table.add_row(task, *cells)
        table.add_section()
        means = []
        for length in settings.lengths:
            mean = mean_over_tasks(rows, variant, length)
            means.append("-" if mean is None else _coloured(mean, settings.threshold))
        table.add_row("mean", *means)
        effective = effective_context(rows, variant, settings.lengths, settings.threshold)
        table.add_row("effective", f"{effective:,}" if effective else "none", *[""] * (len(settings.lengths) - 1))
        out.print(table)
    out.print(
        f"Effective context: the longest length whose mean over tasks reaches {settings.threshold:g}, counting "
        "lengths from the shortest up (none: the shortest already falls short)."
    )


def _coloured(score: float, threshold: float) -> str:
    colour = "green" if score >= threshold else ("yellow" if score >= 50 else "red")
    return f"[{colour}]{score:.1f}[/]"


def _cell(row: TaskScore) -> str:
    if row.score is None:
        return f"[yellow]truncated ({row.truncated})[/]"
    cut = f" ({row.truncated} cut)" if row.truncated else ""
    return f"{row.score:.1f}{cut}"


def _plot(path: Path, results: list[SampleResult], variants: list[str], settings: RulerSettings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summarize(results)
    fig, axes = plt.subplots(1, len(variants), figsize=(5.5 * len(variants) + 2, 4), squeeze=False, sharey=True)
    labels = [f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in settings.lengths]
    for ax, variant in zip(axes[0], variants, strict=True):
        for i, task in enumerate(settings.tasks):
            points = sorted((r.length, r.score) for r in rows
                            if r.variant == variant and r.task == task and r.score is not None)  # fmt: skip
            if points:  # 20 colours, so that no two of the 11 tasks share one
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", linewidth=1, alpha=0.7, label=task,
                        color=plt.get_cmap("tab20")(i % 20))  # fmt: skip
        means = [(n, mean_over_tasks(rows, variant, n)) for n in settings.lengths]
        kept = [(n, m) for n, m in means if m is not None]
        if kept:
            ax.plot([p[0] for p in kept], [p[1] for p in kept], color="black", marker="o", linewidth=2.5, label="mean")
        ax.axhline(settings.threshold, color="grey", linestyle=":", linewidth=1)
        effective = effective_context(rows, variant, settings.lengths, settings.threshold)
        if effective:
            ax.axvline(effective, color="green", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(settings.lengths, labels)
        ax.minorticks_off()
        ax.set_ylim(-3, 103)
        ax.set_xlabel("length (tokens)")
        ax.set_title(f"{variant}: effective {effective:,}" if effective else f"{variant}: no effective length")
    axes[0][0].set_ylabel("RULER score (%)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # beside, not over
    fig.tight_layout()
    save_figure(fig, path)
