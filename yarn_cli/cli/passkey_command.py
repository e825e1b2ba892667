"""``yarn-cli passkey``: the paper's passkey retrieval, swept over lengths and scaling variants."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from yarn_cli.cli.options import (
    FlashAttnOption,
    GpuLayersOption,
    ModelArgument,
    ServerModelOption,
    ServerTimeoutOption,
    ThreadsOption,
)
from yarn_cli.cli.render import WorkProgress, check_run_outputs, out, save_figure, say, warn
from yarn_cli.cli.served import gguf_tokenizer, open_servers, served_endpoints, served_gguf
from yarn_cli.errors import InputError, ServerError, YarnCliError
from yarn_cli.evals.lengths import default_lengths, parse_lengths
from yarn_cli.evals.passkey import (
    PasskeySettings,
    Summary,
    TrialKey,
    TrialResult,
    parse_depths,
    passkey_context,
    run_passkey,
    summarize,
)
from yarn_cli.evals.passkey_report import (
    DEPTH_BINS,
    Source,
    build_record,
    depth_grid,
    load_previous,
    truncation_note,
    write_csv,
)
from yarn_cli.evals.records import write_json
from yarn_cli.model import open_model
from yarn_cli.rope.variants import parse_variants
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
        str, typer.Option(help="Variants, run on the same trials: as-is, none, yarn:S, linear:S, ntk:S, dynamic-yarn.")
    ] = "as-is",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the run here; an existing run is resumed.")
    ] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write one row per trial here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Draw the heatmap and accuracy curves to this PNG.")] = None,
    no_reuse: Annotated[bool, typer.Option("--no-reuse", help="Evaluate every prompt from scratch.")] = False,
    gpu_layers: GpuLayersOption = None,
    threads: ThreadsOption = None,
    flash_attn: FlashAttnOption = False,
    servers: Annotated[
        list[str] | None,
        typer.Option(
            "--server",
            metavar="[LABEL=]URL",
            help="Test a served model instead, over its OpenAI-compatible API: [LABEL=]URL such as "
            "http://127.0.0.1:8080/v1. Give it more than once to compare servers. API key: $YARN_CLI_API_KEY "
            "or $OPENAI_API_KEY.",
            rich_help_panel="Served models",
        ),
    ] = None,
    server_model: ServerModelOption = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            help="The served GGUF, to size prompts in its tokens (default: the server's tokenize endpoint).",
            rich_help_panel="Served models",
        ),
    ] = None,
    parallel: Annotated[
        int, typer.Option(help="Requests in flight at once (servers batch them).", rich_help_panel="Served models")
    ] = 1,
    timeout: ServerTimeoutOption = DEFAULT_READ_TIMEOUT,
) -> None:
    """Hide a pass key in filler text and check, per length and variant, that the model finds it.

    Lengths are counted in the model's own tokens; each prompt lands at or just below its target.
    With --server the model is the one a server runs (llama-server, Ollama, LM Studio, vLLM):
    prompts a server cut short are reported as truncated, not as the model's failure.
    """
    check_run_outputs(json_path, csv_path, plot, inputs=[model, tokenizer])
    if servers:
        local_only = {"--compare": compare != "as-is", "-ngl": gpu_layers is not None, "-t": threads is not None,
                      "-fa": flash_attn, "--no-reuse": no_reuse}  # fmt: skip
        served = served_gguf(local_only, model, tokenizer)
        _served(
            servers, server_model, served, lengths, trials, depths, seed, parallel, timeout, json_path, csv_path, plot,
        )  # fmt: skip
        return
    opened = open_model(model)
    wanted = parse_lengths(lengths) if lengths else default_lengths(opened.context_length or 8192)
    variants = [v.name for v in parse_variants(compare, opened.rope)]
    settings = PasskeySettings(
        lengths=wanted,
        trials=trials,
        depths=parse_depths(depths),
        seed=seed,
        variants=variants,
        reuse=not no_reuse,
        n_gpu_layers=gpu_layers,
        n_threads=threads,
        flash_attn=flash_attn,
    )
    results, interrupted = _run_trials(
        opened,
        settings,
        json_path,
        lambda done, on_start, on_trial: run_passkey(opened, settings, done=done, on_start=on_start, on_trial=on_trial),
    )
    _finish(opened, settings, results, interrupted, json_path, csv_path, plot)


TrialRunner = Callable[
    [dict[TrialKey, TrialResult], Callable[[int], None], Callable[[TrialResult], None]], list[TrialResult]
]


def _run_trials(
    source: Source, settings: PasskeySettings, json_path: Path | None, run: TrialRunner, *, say_kept: bool = False
) -> tuple[list[TrialResult], bool]:
    """Resume from ``json_path``, run the rest with progress, and keep the record up to date after each trial.

    Returns every trial and whether Ctrl-C stopped the run. ``say_kept``: on an error, say where the
    finished trials are (a server that stops mid-run is an everyday event).
    """
    done = load_previous(json_path, source, settings) if json_path else {}
    if done:
        say(f"Resuming {json_path}: {len(done)} trials already done.")
    results: list[TrialResult] = list(done.values())
    interrupted = False
    with WorkProgress("trials") as progress:

        def on_trial(result: TrialResult) -> None:
            results.append(result)
            correct = sum(r.correct for r in results)
            progress.advance(1, f"{result.variant} @ {result.length}", f"{correct}/{len(results)} found")
            if json_path:
                write_json(json_path, build_record(source, settings, results))

        try:
            run(done, progress.begin, on_trial)
        except KeyboardInterrupt:
            interrupted = True
        except YarnCliError:
            if say_kept and json_path and results:
                say(f"The {len(results)} finished trials are in {json_path}; the same command resumes the run.")
            raise
    return results, interrupted


def _finish(
    source: Source,
    settings: PasskeySettings,
    results: list[TrialResult],
    interrupted: bool,
    json_path: Path | None,
    csv_path: Path | None,
    plot: Path | None,
) -> None:
    if json_path:
        write_json(json_path, build_record(source, settings, results))
    if csv_path:
        write_csv(csv_path, results)
    if plot is not None:  # every file is written before the table, the last thing a run does
        _plot(plot, results, settings)
    _render(results, settings)
    note = truncation_note(results)
    if note:
        warn(note)
    if interrupted:
        if json_path:
            say(f"The {len(results)} finished trials are in {json_path}; the same command resumes the run.")
        raise typer.Exit(130)


def _served(
    values: list[str],
    server_model: str | None,
    tokenizer: Path | None,
    lengths: str | None,
    trials: int,
    depths: str | None,
    seed: int,
    parallel: int,
    timeout: float,
    json_path: Path | None,
    csv_path: Path | None,
    plot: Path | None,
) -> None:
    # httpx and the served-run code are imported here: a local run does not need them
    from yarn_cli.evals.passkey_served import CalibratedCounter, run_passkey_served, served_record

    endpoints = served_endpoints(values, timeout)
    gguf = open_model(tokenizer) if tokenizer is not None else None
    if lengths:
        wanted = parse_lengths(lengths)
    elif gguf is not None:
        wanted = default_lengths(gguf.context_length or 8192)
    else:
        raise InputError("give --lengths (or the served GGUF with --tokenizer, whose context sets the default)")
    with contextlib.ExitStack() as stack:
        servers = open_servers(stack, endpoints, server_model, timeout)
        estimated = False
        if gguf is not None:
            from yarn_cli.llama.evaluation import vocabulary  # llama.cpp only when a run starts

            vocab = stack.enter_context(vocabulary(gguf))
            tokenize: Callable[[str], list[int]] = partial(vocab.tokenize, add_bos=True)
            tokenizer_info: dict[str, Any] | str = gguf_tokenizer(gguf)
        else:
            first = servers[0][1]
            if first.tokenize("probe") is None:
                say(
                    f"{first.url} has no tokenize endpoint: prompt sizes are estimated from the server's own "
                    "token counts (within a few %); --tokenizer MODEL.gguf sizes them exactly."
                )
                tokenize = CalibratedCounter(first)
                tokenizer_info = f"estimated from {first.url} usage.prompt_tokens"
                estimated = True
            else:

                def server_tokens(text: str) -> list[int]:
                    tokens = first.tokenize(text)
                    if tokens is None:
                        raise ServerError(f"{first.url} stopped answering its tokenize endpoint")
                    return tokens

                tokenize = server_tokens
                tokenizer_info = f"server {first.url}"
        settings = PasskeySettings(
            lengths=wanted, trials=trials, depths=parse_depths(depths), seed=seed,
            variants=[label for label, _ in servers], reuse=False,
        )  # fmt: skip
        source = served_record(servers, tokenizer_info)
        results, interrupted = _run_trials(
            source,
            settings,
            json_path,
            lambda done, on_start, on_trial: run_passkey_served(
                servers,
                wanted,
                trials,
                settings.depths,
                seed,
                tokenize,
                parallel=parallel,
                estimated=estimated,
                done=done,
                on_start=on_start,
                on_trial=on_trial,
            ),
            say_kept=True,
        )
    _finish(source, settings, results, interrupted, json_path, csv_path, plot)


def _render(results: list[TrialResult], settings: PasskeySettings) -> None:
    summaries = summarize(results)
    table = Table(title="Passkey retrieval accuracy", title_justify="left")
    table.add_column("length", justify="right")
    for variant in settings.variants:
        table.add_column(variant, justify="right")
    for length in settings.lengths:
        row = [f"{length:,}"]
        for variant in settings.variants:
            found = [s for s in summaries if s.variant == variant and s.length == length]
            row.append(_cell(found[0]) if found else "-")
        table.add_row(*row)
    contexts = []
    for variant in settings.variants:
        ctx = passkey_context(summaries, variant)
        contexts.append(f"{ctx:,}" if ctx else "none")
    table.add_section()
    table.add_row("passkey context", *contexts)
    out.print(table)
    for variant in settings.variants:
        out.print(_heatmap(results, variant, settings.lengths))


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


def _plot(path: Path, results: list[TrialResult], settings: PasskeySettings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = settings.variants
    fig, axes = plt.subplots(1, len(variants) + 1, figsize=(4 * (len(variants) + 1), 3.6), squeeze=False)
    summaries = summarize(results)
    curve = axes[0][0]
    for variant in variants:
        points = sorted((s.length, s.accuracy) for s in summaries if s.variant == variant and s.accuracy is not None)
        if points:
            curve.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
    curve.set_xscale("log", base=2)
    labels = [f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in settings.lengths]
    curve.set_xticks(settings.lengths, labels)
    curve.minorticks_off()
    curve.set_ylim(-0.05, 1.05)
    curve.set_xlabel("prompt length (tokens)")
    curve.set_ylabel("accuracy")
    curve.axhline(0.8, color="grey", linestyle=":", linewidth=1)
    curve.legend(fontsize=8)
    curve.set_title("passkey accuracy")
    for ax, variant in zip(axes[0][1:], variants, strict=True):
        grid = depth_grid(results, variant, settings.lengths)
        data = [[float("nan") if v is None else v for v in row] for row in grid]
        image = ax.imshow(data, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="lower")
        ax.set_xticks(range(len(settings.lengths)), labels)
        ax.set_yticks(range(DEPTH_BINS), [f"{(b + 0.5) / DEPTH_BINS:.1f}" for b in range(DEPTH_BINS)])
        ax.set_xlabel("length")
        ax.set_ylabel("depth of the key")
        ax.set_title(variant)
    fig.colorbar(image, ax=axes[0][-1], fraction=0.05)
    fig.tight_layout()
    save_figure(fig, path)
