"""``yarn-cli chat``: talk to a GGUF model, with the scaling from the file or set at run time.

The options, the model loaded with the scaling ``chat_scaling.choose_scaling`` decides, and a
one-shot reply; the REPL is ``chat_repl``'s.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.markup import escape

from yarn_cli.chat_scaling import YARN_MODES, YarnMode, choose_scaling
from yarn_cli.cli.chat_repl import repl, show_reply_notes, write
from yarn_cli.cli.options import (
    FlashAttnOption,
    GpuLayersOption,
    ModelArgument,
    ServerModelOption,
    ThreadsOption,
    refuse_local_only,
)
from yarn_cli.cli.render import err, print_json, warn
from yarn_cli.errors import InputError
from yarn_cli.model import open_model
from yarn_cli.rope.scaling import ScalingOverride
from yarn_cli.sampling import (
    DEFAULT_MIN_P,
    DEFAULT_REPEAT_PENALTY,
    DEFAULT_TEMP,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    ONE_SHOT_MAX_TOKENS,
    Sampling,
)

if TYPE_CHECKING:  # a name for annotations only (see chat_repl); the sessions' modules load when a chat starts
    from yarn_cli.cli.chat_repl import Session

EPILOG = """\
Examples:

  yarn-cli chat                                     # the embedded SmolLM2-135M, interactive

  yarn-cli chat model.yarn-4x.gguf -c 32768         # the scaling baked into the file

  yarn-cli chat model.gguf -c 32768 --yarn auto     # YaRN x4 at run time for an 8k model

  yarn-cli chat model.gguf --rope-scaling yarn --rope-scale 4 --yarn-orig-ctx 8192 -c 32768

  echo "Summarise: ..." | yarn-cli chat model.gguf --temp 0

  yarn-cli chat -p "What is the capital of France?" --json

  yarn-cli chat --server http://127.0.0.1:8080/v1   # a model llama-server, Ollama, vLLM... serves
"""


def chat_command(
    model: ModelArgument = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="One-shot: answer this prompt, print the reply, exit.")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")] = None,
    ctx_size: Annotated[
        int | None,
        typer.Option(
            "--ctx-size",
            "-c",
            help="Context size in tokens, fixed. Default: sized to the work: a one-shot's prompt and reply; a "
            "conversation starts at 4096 and grows as it needs, up to the model's context and half the free memory.",
        ),
    ] = None,
    rope_scaling: Annotated[
        str | None, typer.Option(help="Run-time RoPE scaling: none, linear or yarn (overrides the file).")
    ] = None,
    rope_scale: Annotated[
        float | None, typer.Option(help="Run-time scale factor S (llama.cpp's --rope-scale).")
    ] = None,
    yarn_orig_ctx: Annotated[int | None, typer.Option(help="YaRN's original context L.")] = None,
    rope_freq_base: Annotated[float | None, typer.Option(help="RoPE base frequency (NTK-aware scaling).")] = None,
    yarn: Annotated[
        str,
        typer.Option(
            help="auto: when -c exceeds an unscaled model's context, apply YaRN with S = c / context. dynamic: start "
            "as the model came, and rescale (1.25, 1.5, 2, 3, 4...) when the conversation outgrows it."
        ),
    ] = "off",
    gpu_layers: GpuLayersOption = None,
    threads: ThreadsOption = None,
    flash_attn: FlashAttnOption = False,
    temp: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy.")] = DEFAULT_TEMP,
    top_p: Annotated[float, typer.Option(help="Top-p sampling.")] = DEFAULT_TOP_P,
    top_k: Annotated[int, typer.Option(help="Top-k sampling; 0 = off.")] = DEFAULT_TOP_K,
    min_p: Annotated[float, typer.Option(help="Min-p sampling.")] = DEFAULT_MIN_P,
    repeat_penalty: Annotated[float, typer.Option(help="Repetition penalty; 1 = off.")] = DEFAULT_REPEAT_PENALTY,
    seed: Annotated[int | None, typer.Option(help="Sampling seed, for reproducible replies.")] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            "-n",
            help=f"Most tokens per reply; -1 = until the model stops or the context is full, as llama.cpp. Without "
            f"-n a reply stops when it repeats itself over and over, and a one-shot reply at {ONE_SHOT_MAX_TOKENS} "
            "tokens.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", "-b", help="Prompt tokens per llama.cpp batch (llama.cpp: 512).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One-shot: print one JSON object.")] = False,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Print the reply when it is complete.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show llama.cpp's own log.")] = False,
    server: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Chat with a served model instead, over its OpenAI-compatible API (http://127.0.0.1:8080/v1). "
            "API key: $YARN_CLI_API_KEY or $OPENAI_API_KEY.",
            rich_help_panel="Served models",
        ),
    ] = None,
    server_model: ServerModelOption = None,
) -> None:
    """Chat with a GGUF model on the CPU or GPU through llama.cpp.

    Interactive on a terminal. With -p, or a prompt on stdin, it prints only the reply and exits.

    The first line (on stderr) shows the context, scaling and backend that llama.cpp really set up.
    """
    if yarn not in YARN_MODES:
        raise InputError(f"--yarn must be auto, dynamic or off, got {yarn!r}")
    if server is not None:
        local_only = {
            "MODEL": model is not None, "-c": ctx_size is not None, "--rope-scaling": rope_scaling is not None,
            "--rope-scale": rope_scale is not None, "--yarn-orig-ctx": yarn_orig_ctx is not None,
            "--rope-freq-base": rope_freq_base is not None, "--yarn": yarn != "off", "-ngl": gpu_layers is not None,
            "-t": threads is not None, "-fa": flash_attn, "-b": batch_size is not None, "--verbose": verbose,
        }  # fmt: skip
        refuse_local_only(local_only, "the server runs its own model, with its own settings")
    interactive = sys.stdin is not None and sys.stdin.isatty()
    one_shot = prompt is not None or not interactive
    sampling = Sampling(
        temp=temp,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repeat_penalty=repeat_penalty,
        seed=seed,
        # Without -n the user is protected from a reply that never ends; with it, they get what they asked.
        max_tokens=max_tokens if max_tokens is not None else ONE_SHOT_MAX_TOKENS if one_shot else -1,
        stop_loops=max_tokens is None,
    )
    sampling.check()
    opened = open_model(model) if server is None else None  # a bad file is said before stdin is read
    if one_shot and prompt is None:
        prompt = sys.stdin.read() if sys.stdin is not None else ""
        if not prompt.strip():
            raise InputError("no prompt: stdin was empty (give -p TEXT, or run on a terminal to chat)")
    if server is not None:
        _served_chat(server, server_model, sampling, system, prompt if one_shot else None, json_output, not no_stream)
        return
    from yarn_cli.llama.chat_context import chat_context
    from yarn_cli.llama.devices import resolve_gpu_layers
    from yarn_cli.llama.dynamic_yarn import DynamicYarn
    from yarn_cli.llama.loader import LoadOptions, load_model
    from yarn_cli.llama.session import ChatSession

    assert opened is not None
    override = ScalingOverride(rope_scaling, rope_scale, yarn_orig_ctx, rope_freq_base)
    chosen = choose_scaling(opened, override, yarn=cast(YarnMode, yarn), n_ctx=ctx_size)  # checked above
    # Without -c the context is sized to the work and grows with a conversation (--yarn dynamic keeps
    # one context for the largest window it may need).
    sized = (
        chat_context(
            opened,
            resolve_gpu_layers(gpu_layers),
            "\n".join(filter(None, (system, prompt))) if one_shot else None,
            sampling.max_tokens,
        )
        if ctx_size is None and yarn != "dynamic"
        else None
    )
    options = LoadOptions(
        n_ctx=sized.start if sized is not None else ctx_size,
        scaling=chosen.scaling,
        n_gpu_layers=gpu_layers,
        n_threads=threads,
        n_batch=batch_size,
        flash_attn=flash_attn,
        seed=seed,
        verbose=verbose,
    )
    dynamic = DynamicYarn(opened, options) if yarn == "dynamic" else None
    llm, effective = dynamic.load(None) if dynamic is not None else load_model(opened, options)
    session: ChatSession | None = None
    try:
        for note in (chosen.note, *effective.notes):
            if note:
                err.print(note, style="yellow", markup=False, soft_wrap=True)
        if not json_output:
            err.print(f"[dim]llama.cpp: {escape(effective.describe())}[/]", soft_wrap=True)
            if sized is not None:
                err.print(f"[dim]context: {escape(sized.reason)}[/]", soft_wrap=True)
            if dynamic is not None:
                err.print(
                    f"[dim]--yarn dynamic: as the model came up to {dynamic.native} tokens, then YaRN from the ladder "
                    f"1.25, 1.5, 2, 3, 4... up to x{dynamic.max_factor:g} (-c {llm.n_ctx()})[/]",
                    soft_wrap=True,
                )
        session = ChatSession(
            llm,
            sampling,
            system=system,
            dynamic=dynamic,
            scale=effective.factor,
            context_limit=sized.limit if sized is not None else None,
            to_measure=one_shot,
        )
        if session.plain and not json_output:
            err.print(
                "[dim]the file has no chat template (a base model): the text is continued as plain completion[/]",
                soft_wrap=True,
            )

        # after the reply: --yarn dynamic may have loaded the model again at another scale
        def settings() -> dict[str, Any]:
            loaded = (dynamic.effective if dynamic is not None and dynamic.effective else effective).to_dict()
            assert session is not None
            return {**loaded, "n_ctx": session.n_ctx, "n_ctx_limit": session.context_limit}

        _converse(session, prompt if one_shot else None, settings, json_output, not no_stream)
    finally:
        # freed here, in order (batch, context, model), not by the garbage collector at exit
        (session.llm if session is not None else llm).close()


def _served_chat(
    url: str,
    model: str | None,
    sampling: Sampling,
    system: str | None,
    prompt: str | None,
    json_output: bool,
    stream: bool,
) -> None:
    from yarn_cli.serving.chat import ServerChatSession
    from yarn_cli.serving.client import ServerClient

    with ServerClient(url, model) as client:
        session = ServerChatSession(client, sampling, system=system)
        template = session.template
        if not json_output:
            context = f"context {session.n_ctx}" if session.n_ctx else "context not reported"
            err.print(
                f"[dim]server: {escape(client.url)}, model {escape(client.model)}, {context}, "
                f"chat template: {template.describe()}[/]",
                soft_wrap=True,
            )
            if session.plain:
                warn(
                    f"the served model has no chat template ({template.source}): the text is continued as plain "
                    "completion (/v1/completions), as a local chat does"
                )
        settings = {
            "server": client.url, "model": client.model, "n_ctx": session.n_ctx or None,
            "chat_template": template.present,
        }  # fmt: skip
        _converse(session, prompt, lambda: settings, json_output, stream)


def _converse(
    session: Session, prompt: str | None, settings: Callable[[], dict[str, Any]], json_output: bool, stream: bool
) -> None:
    """One reply to ``prompt``, or the REPL when there is none."""
    if prompt is not None:
        _one_shot(session, prompt, settings, json_output=json_output, stream=stream)
    else:
        repl(session, stream=stream)


def _one_shot(
    session: Session, prompt: str, settings: Callable[[], dict[str, Any]], *, json_output: bool, stream: bool
) -> None:
    live = stream and not json_output
    reply, stats = session.reply(prompt, write if live else None)
    if stats.dropped_turns:
        warn(f"dropped {stats.dropped_turns} earlier turn(s) to fit the context")
    if json_output:
        print_json(
            {
                "reply": reply,
                "mode": "completion" if session.plain else "chat",
                "prompt_tokens": stats.prompt_tokens if stats.prompt_counted else None,
                "completion_tokens": stats.completion_tokens,
                "stopped": stats.stopped,
                "scale": stats.scale,
                "timings": {
                    "prompt_ms": round(stats.prompt_ms, 3),
                    "generation_ms": round(stats.generation_ms, 3),
                    "first_token_ms": round(stats.first_token_ms, 3),
                    "prompt_tokens_per_s": round(stats.prompt_tps, 2),
                    "generation_tokens_per_s": round(stats.generation_tps, 2),
                },
                "settings": settings(),
            }
        )
        return
    if not live:
        write(reply)
    write("\n")
    show_reply_notes(session, stats)
    if stats.stopped == "interrupted":
        raise typer.Exit(130)
