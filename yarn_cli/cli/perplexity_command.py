"""``yarn-cli perplexity``: long-text perplexity per context length and scaling variant."""

from __future__ import annotations

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
    PlanOnlyOption,
    ServerModelOption,
    ServerTimeoutOption,
    ThreadsOption,
    refuse_local_only,
)
from yarn_cli.cli.render import WorkProgress, check_run_outputs, err, out, plan_line, save_figure, say, warn
from yarn_cli.evals.estimate import Estimate
from yarn_cli.evals.perplexity import PerplexityResult, PerplexitySettings, read_text
from yarn_cli.evals.perplexity_run import run_perplexity
from yarn_cli.llama.loader import LoadOptions
from yarn_cli.rope.variants import parse_variant
from yarn_cli.serving import DEFAULT_READ_TIMEOUT

EPILOG = """\
Examples:

  yarn-cli perplexity --text book.txt --contexts 2k,4k,8k,16k --compare none,yarn:2,dynamic-yarn

  yarn-cli perplexity model.gguf --text book.txt --contexts 4k,8k --chunks 4 --json ppl.json --plot ppl.png

  yarn-cli perplexity --text book.txt --contexts 2k --stride 512        # sliding windows

  yarn-cli perplexity --server http://127.0.0.1:8000/v1 --tokenizer model.gguf --text book.txt --contexts 4k,8k
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
        typer.Option(
            help="Variants scored on the same tokens: as-is, none, yarn:S, yarn:S@F (its attention factor x F), "
            "linear:S, ntk:S, "
            "ntk-by-parts:S (YaRN without its temperature), dynamic-yarn, dynamic-ntk (per length)."
        ),
    ] = "as-is",
    chunks: Annotated[int, typer.Option(help="Consecutive chunks of the longest context to average over.")] = 1,
    stride: Annotated[
        int | None,
        typer.Option(help="Sliding windows moved by S tokens, each scoring only new tokens (default: the paper's)."),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            metavar="VARIANT",
            help="Compare every other variant with this one (typically none), token by token: mean KL "
            "divergence, its 99th percentile and top-1 agreement, as llama-perplexity's --kl-divergence. Added to "
            "--compare if missing.",
        ),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the run (settings, results) here.")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write one row per variant and context here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Draw perplexity against context to this PNG.")] = None,
    no_nesting: Annotated[
        bool, typer.Option("--no-nesting", help="Score each context in its own pass (slower; same figures).")
    ] = False,
    dry_run: PlanOnlyOption = False,
    gpu_layers: GpuLayersOption = None,
    threads: ThreadsOption = None,
    flash_attn: FlashAttnOption = False,
    servers: Annotated[
        list[str] | None,
        typer.Option(
            "--server",
            metavar="[LABEL=]URL",
            help="Score a served model instead, from the log-probabilities its server gives a prompt's tokens "
            "(llama-cpp-python's server, vLLM). Give it more than once to compare servers.",
            rich_help_panel="Served models",
        ),
    ] = None,
    server_model: ServerModelOption = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            help="The served GGUF, to cut windows in its tokens (default: the server's tokenize endpoint).",
            rich_help_panel="Served models",
        ),
    ] = None,
    timeout: ServerTimeoutOption = DEFAULT_READ_TIMEOUT,
) -> None:
    """Score a long text at several context lengths, under several RoPE scalings.

    The paper's protocol: perplexity at context c = exp(mean negative log-likelihood of the first c tokens
    of each chunk); one pass over the longest context gives every shorter one. With --server, the model
    is the one a server runs, scored from the log-probabilities it returns.
    """
    backend: Backend
    if servers:
        refuse_local_only(
            {"--compare": compare != "as-is", "--stride": stride is not None, "--no-nesting": no_nesting,
             "-ngl": gpu_layers is not None, "-t": threads is not None, "-fa": flash_attn,
             "--reference": reference is not None},
            COMPARE_SERVERS,
        )  # fmt: skip
        backend = served_backend(servers, server_model, timeout, model, tokenizer)
    else:
        options = LoadOptions(n_gpu_layers=gpu_layers, n_threads=threads, flash_attn=flash_attn)
        if reference is not None:
            reference = parse_variant(reference).name
            if reference not in [parse_variant(v).name for v in compare.split(",") if v.strip()]:
                compare = f"{reference},{compare}"
        backend = local_backend(model, compare, options)
    # a reference keeps a second KV cache beside each variant's
    wanted, cut = sweep(backend, contexts, "--contexts", caches=2 if reference is not None else 1)
    settings = PerplexitySettings(
        contexts=wanted, chunks=chunks, stride=stride, nested=not no_nesting, reference=reference
    )
    settings.check(backend.scores_first_token)
    source = read_text(text)
    check_run_outputs(json_path, csv_path, plot, inputs=[model, tokenizer, text])
    with backend, WorkProgress("tokens") as progress:
        if cut:
            say(cut)

        def on_start(tokens: int, estimate: Estimate | None) -> None:
            what = (
                f"{len(backend.columns)} variant(s) x {len(settings.contexts)} context(s), {settings.chunks} chunk(s)"
            )
            say(plan_line(what, tokens, estimate))
            progress.begin(tokens, estimate)

        try:
            run = run_perplexity(
                backend,
                source,
                settings,
                json_path=json_path,
                csv_path=csv_path,
                on_start=on_start,
                on_tokens=progress.advance,
                plan_only=dry_run,
            )
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    if dry_run:
        return
    missing = {label: "cut" for label in run.truncated} | {label: "inf/NaN" for label in run.unscored}
    if plot is not None and run.results:  # every file is written before the table, the last thing a run does
        scored = [c for c in backend.columns if c not in missing]
        _plot(plot, run.results, scored, backend.native_context, backend.name)
    out.print(_table(run.results, settings.contexts, backend.columns, backend.native_context, missing))
    if settings.reference is not None and len(backend.columns) > 1:
        out.print(_comparison_table(run.results, settings.reference, backend.columns))
    for label, what in run.truncated.items():
        warn(
            f"{label} cut the prompt ({what}): not scored. Raise the server's context (Ollama: num_ctx or "
            "OLLAMA_CONTEXT_LENGTH; llama-server: -c) to score these contexts"
        )
    for label, why in run.unscored.items():
        warn(f"{label} not scored: {why}")
    fewer = any(r.tokens < settings.chunks * (r.context - 1) for r in run.results)
    note = "; the server gives a window's first text token no score, so it counts one token fewer" if fewer else ""
    err.print(
        f"{settings.protocol} protocol, {settings.chunks} chunk(s); {run.evaluated_tokens:,} tokens evaluated "
        f"in {run.seconds:.1f} s ({run.evaluated_tokens / max(run.seconds, 1e-9):,.0f} tokens/s){note}"
    )
    if plot is not None and not run.results:
        warn(f"nothing was scored, so {plot} was not drawn")


def _table(
    results: list[PerplexityResult],
    contexts: list[int],
    variants: list[str],
    native: int | None,
    missing: dict[str, str] | None = None,
) -> Table:
    """The layout of the paper's Table 1: one row per method, one column per evaluation context.

    ``missing``: what to show for a server that gave no figures (``cut``: it truncated the window).
    """
    table = Table(title="Perplexity (lower is better)", title_justify="left", caption_justify="left")
    if native and any(c > native for c in contexts):
        table.caption = f"* beyond the native context ({native:,})"
    table.add_column("variant")
    for c in contexts:
        table.add_column(f"{c:,}" + ("*" if native and c > native else ""), justify="right")
    best = {c: min((r.ppl for r in results if r.context == c), default=None) for c in contexts}
    for variant in variants:
        cells = []
        row = {r.context: r for r in results if r.variant == variant}
        for c in contexts:
            if c not in row:
                cells.append((missing or {}).get(variant, "cut"))
                continue
            ppl = row[c].ppl
            cells.append(f"[bold]{ppl:.2f}[/]" if ppl == best[c] and len(variants) > 1 else f"{ppl:.2f}")
        table.add_row(variant, *cells)
    return table


def _comparison_table(results: list[PerplexityResult], reference: str, variants: list[str]) -> Table:
    """Per variant and context, what it changes in the reference's next-token distributions."""
    table = Table(title=f"Against {reference}, token by token", title_justify="left", caption_justify="left")
    table.caption = "KL: mean KL(P_reference || P_variant) in nats per token; p99: its 99th percentile"
    for name in ("variant", "context", "KL", "KL p99", "top-1 agreement"):
        table.add_column(name, justify="left" if name == "variant" else "right")
    for variant in variants:
        for r in (r for r in results if r.variant == variant and r.kl_divergence is not None):
            assert r.kl_divergence_p99 is not None and r.top1_agreement is not None
            table.add_row(variant, f"{r.context:,}", f"{r.kl_divergence:.4f}", f"{r.kl_divergence_p99:.4f}",
                          f"{r.top1_agreement:.1%}")  # fmt: skip
    return table


def _plot(path: Path, results: list[PerplexityResult], variants: list[str], native: int | None, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for variant in variants:
        points = sorted((r.context, r.ppl) for r in results if r.variant == variant)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
    if native:
        ax.axvline(native, color="grey", linestyle=":", linewidth=1, label=f"native context ({native:,})")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("perplexity")
    ax.set_title(f"{name}: perplexity against context")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
