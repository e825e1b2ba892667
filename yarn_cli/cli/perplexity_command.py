"""``yarn-cli perplexity``: long-text perplexity per context length and scaling variant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from yarn_cli.cli.options import FlashAttnOption, GpuLayersOption, ModelArgument, ThreadsOption
from yarn_cli.cli.render import WorkProgress, check_run_outputs, err, out, save_figure
from yarn_cli.evals.lengths import default_lengths, parse_lengths
from yarn_cli.evals.perplexity import PerplexityResult, PerplexitySettings, read_text, run_perplexity
from yarn_cli.evals.perplexity_report import build_record, write_csv
from yarn_cli.evals.records import write_json
from yarn_cli.model import Model, open_model
from yarn_cli.rope.variants import parse_variants

EPILOG = """\
Examples:

  yarn-cli perplexity --text book.txt --contexts 2k,4k,8k,16k --compare none,yarn:2,dynamic-yarn

  yarn-cli perplexity model.gguf --text book.txt --contexts 4k,8k --chunks 4 --json ppl.json --plot ppl.png

  yarn-cli perplexity --text book.txt --contexts 2k --stride 512        # sliding windows
"""


def perplexity_command(
    text: Annotated[Path, typer.Option(help="UTF-8 text to score, at least K x the longest context in tokens.")],
    model: ModelArgument = None,
    contexts: Annotated[
        str | None,
        typer.Option(help="Context lengths in tokens: 2k,4k,8192... Default: powers of two up to the model's."),
    ] = None,
    compare: Annotated[
        str,
        typer.Option(help="Variants scored on the same tokens: as-is, none, yarn:S, linear:S, ntk:S, dynamic-yarn."),
    ] = "as-is",
    chunks: Annotated[int, typer.Option(help="Consecutive chunks of the longest context to average over.")] = 1,
    stride: Annotated[
        int | None,
        typer.Option(help="Sliding windows moved by S tokens, each scoring only new tokens (default: the paper's)."),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the run (settings, results) here.")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write one row per variant and context here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Draw perplexity against context to this PNG.")] = None,
    no_nesting: Annotated[
        bool, typer.Option("--no-nesting", help="Score each context in its own pass (slower; same figures).")
    ] = False,
    gpu_layers: GpuLayersOption = None,
    threads: ThreadsOption = None,
    flash_attn: FlashAttnOption = False,
) -> None:
    """Score a long text at several context lengths, under several RoPE scalings.

    The paper's protocol: perplexity at context c = exp(mean negative log-likelihood of the first c tokens
    of each chunk); one pass over the longest context gives every shorter one.
    """
    opened = open_model(model)
    wanted = parse_lengths(contexts, "--contexts") if contexts else default_lengths(opened.context_length or 8192)
    variants = parse_variants(compare, opened.rope)
    settings = PerplexitySettings(
        contexts=wanted,
        variants=[v.name for v in variants],
        chunks=chunks,
        stride=stride,
        nested=not no_nesting,
        n_gpu_layers=gpu_layers,
        n_threads=threads,
        flash_attn=flash_attn,
    )
    settings.check()
    source = read_text(text)
    check_run_outputs(json_path, csv_path, plot)

    with WorkProgress("tokens") as progress:
        try:
            run = run_perplexity(
                opened,
                source,
                settings,
                variants,
                on_start=progress.begin,
                on_tokens=progress.advance,
            )
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    if json_path:
        write_json(json_path, build_record(opened, settings, text, source, run))
    if csv_path:
        write_csv(csv_path, run)
    if plot is not None:  # every file is written before the table, the last thing a run does
        _plot(plot, run.results, settings, opened)
    out.print(_table(run.results, settings, opened))
    err.print(
        f"{settings.protocol} protocol, {settings.chunks} chunk(s); {run.evaluated_tokens:,} tokens evaluated "
        f"in {run.seconds:.1f} s ({run.evaluated_tokens / max(run.seconds, 1e-9):,.0f} tokens/s)"
    )


def _table(results: list[PerplexityResult], settings: PerplexitySettings, model: Model) -> Table:
    """The layout of the paper's Table 1: one row per method, one column per evaluation context."""
    native = model.original_context
    table = Table(title="Perplexity (lower is better)", title_justify="left", caption_justify="left")
    if native:
        table.caption = f"* beyond the native context ({native:,})"
    table.add_column("variant")
    for c in settings.contexts:
        table.add_column(f"{c:,}" + ("*" if native and c > native else ""), justify="right")
    for variant in settings.variants:
        cells = []
        row = {r.context: r for r in results if r.variant == variant}
        best = {c: min(r.ppl for r in results if r.context == c) for c in settings.contexts}
        for c in settings.contexts:
            ppl = row[c].ppl
            cells.append(f"[bold]{ppl:.2f}[/]" if ppl == best[c] and len(settings.variants) > 1 else f"{ppl:.2f}")
        table.add_row(variant, *cells)
    return table


def _plot(path: Path, results: list[PerplexityResult], settings: PerplexitySettings, model: Model) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for variant in settings.variants:
        points = sorted((r.context, r.ppl) for r in results if r.variant == variant)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
    native = model.original_context
    if native:
        ax.axvline(native, color="grey", linestyle=":", linewidth=1, label=f"native context ({native:,})")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("perplexity")
    ax.set_title(f"{model.path.name}: perplexity against context")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
