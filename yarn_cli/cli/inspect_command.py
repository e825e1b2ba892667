"""``yarn-cli inspect``: what a GGUF file says about its context and positions."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from yarn_cli.cli.options import ModelArgument
from yarn_cli.cli.render import mib, out, print_json, warn
from yarn_cli.default_model import resolve_model
from yarn_cli.errors import InputError, NotGGUFError
from yarn_cli.gguf.inplace import pending_change
from yarn_cli.gguf.tokenizer import SpecialToken
from yarn_cli.model import Model, open_model, summary
from yarn_cli.rope.explain import explain, scaling_origin
from yarn_cli.rope.frequencies import DEFAULT_BETA_FAST, DEFAULT_BETA_SLOW, YarnView, yarn_view
from yarn_cli.rope.huggingface import hf_scaling
from yarn_cli.rope.keys import VERSION_KEY
from yarn_cli.rope.runtimes import VLLM, RuntimeReport, runtime_report
from yarn_cli.rope.scaling import check_betas, check_factor
from yarn_cli.rope.state import RopeState

EPILOG = "Example: yarn-cli inspect model.gguf --factor 4"


def inspect_command(
    model: ModelArgument = None,
    factor: Annotated[
        float | None,
        typer.Option("--factor", "-f", help="Add the YaRN view for this scale factor: ramp bounds and per-pair table."),
    ] = None,
    beta_fast: Annotated[
        float, typer.Option(help="YaRN beta_fast (rotations) for the --factor view.")
    ] = DEFAULT_BETA_FAST,
    beta_slow: Annotated[
        float, typer.Option(help="YaRN beta_slow (rotations) for the --factor view.")
    ] = DEFAULT_BETA_SLOW,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Show a GGUF model's context, RoPE settings, scaling keys, tokenizer, chat template and KV-cache needs."""
    path = resolve_model(model)
    pending = pending_change(path)
    if pending is not None:
        warn(f"{pending}; what follows is the header as it is now")
    try:
        opened = open_model(path, pending_ok=True)
    except NotGGUFError:
        if pending is None:
            raise
        raise pending from None  # a half-written header: recovering it is the way out
    view = _yarn_view(opened, factor, beta_fast, beta_slow) if factor is not None else None
    if json_output:
        data = summary(opened)
        if view is not None:
            data["yarn"] = _view_dict(view)
        print_json(data)
        return
    _render_info(opened)
    if view is not None:
        _render_view(view)


def _yarn_view(model: Model, factor: float, beta_fast: float, beta_slow: float) -> YarnView:
    """YaRN over the model's original state: a converted file shows what its own conversion did."""
    check_factor(factor)
    check_betas(beta_fast, beta_slow)
    rope = model.rope
    if not rope.uses_rope:
        raise InputError(f"{rope.architecture} does not use RoPE ({rope.no_rope_reason}); --factor has no meaning")
    if not rope.dims or not rope.trained_context:
        raise InputError("the file lacks the rotary dimension count or context length that YaRN needs")
    return yarn_view(
        rope.dims, rope.original_base(), rope.trained_context, factor, beta_fast=beta_fast, beta_slow=beta_slow
    )


def _render_info(model: Model) -> None:
    h = model.header
    rope = model.rope
    shape = model.shape
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    split = f", split {model.split.number} of {model.split.count}" if model.split else ""
    table.add_row("File", Text(str(h.path)))
    table.add_row("", f"{mib(h.file_size)}, GGUF v{h.version}, {h.endianness}-endian, {len(h.tensors)} tensors{split}")
    table.add_row("Architecture", Text(model.architecture))
    table.add_row("Context length", _ctx_text(model))
    if rope.uses_rope:
        table.add_row("RoPE", f"freq_base {rope.current.freq_base:g}, {rope.dims} rotary dims")
    else:
        table.add_row("RoPE", f"not used: {rope.no_rope_reason}; nothing to scale")
    kv = shape.n_kv_heads if shape.n_kv_heads is not None else "?"
    table.add_row(
        "Shape", f"{shape.n_layers} layers, {shape.n_heads} heads, {kv} KV heads, head size {shape.head_dim_k}"
    )
    origin = {"file": ", as the file came", "yarn-cli": ", by yarn-cli"}.get(scaling_origin(rope) or "", "")
    table.add_row("Scaling", Text(rope.describe_scaling() + origin))
    for key in (*rope.keys.scaling, rope.keys.yarn_log_multiplier, rope.keys.freq_base_swa, rope.keys.sliding_window):
        value = h.get(key)
        if value is not None:
            table.add_row("", Text(f"{key} = {value!r}"))
    tensors = rope.factor_tensor_names
    if tensors:
        table.add_row("RoPE tensors", Text(", ".join(tensors)))
    for i, note in enumerate(explain(rope)):
        table.add_row("llama.cpp" if i == 0 else "", Text(note))
    for i, line in enumerate(_runtime_lines(runtime_report(rope))):
        table.add_row("Runtimes" if i == 0 else "", Text(line))
    if rope.converted:
        table.add_row("Converted by", Text(f"yarn-cli {h.get(VERSION_KEY, '?')} (undo: convert --method none)"))
    _add_tokenizer_rows(table, model)
    out.print(table)
    if rope.is_scaled:  # on one line, so that it can be copied
        out.print(Text(_hf_text(rope, model.shape.head_dim_k)), soft_wrap=True)
    rows = model.kv_cache_table()
    if rows:
        windowed = any(row[3] is not None for row in rows)
        kv_table = Table(title="KV cache, f16", title_justify="left")
        kv_table.add_column("context", justify="right")
        kv_table.add_column("x native", justify="right")
        kv_table.add_column("every layer full" if windowed else "memory", justify="right")
        if windowed:
            kv_table.add_column("window layers windowed", justify="right")
        for m, ctx, size, small in rows:
            cells = [f"{ctx:,}", f"{m}x", mib(size)] + ([mib(small)] if windowed else [])
            kv_table.add_row(*cells)
        out.print(kv_table)
        if windowed:
            out.print(
                f"[dim]{shape.window_layers} of {shape.n_layers} layers attend to a {shape.window}-token window. "
                "llama-cpp-python and yarn-cli keep their cache full size; llama-server keeps only the window "
                "(for one sequence as shown; per slot with -np) unless --swa-full.[/]",
                soft_wrap=True,
            )


def _runtime_lines(report: RuntimeReport | None) -> list[str]:
    """Where the file's scaling (an unscaled file: a YaRN conversion's) takes effect, and where not."""
    if report is None:
        return []
    head = f"the file's {report.method.value}" if report.from_file else "a YaRN conversion"
    taken = ", ".join(w.runtime for w in report.where if w.applies)
    lines = [f"{head} takes effect in {taken}"]
    for w in report.where:
        if w.runtime == VLLM:  # its own line, below, for a scaled file
            lines.append("not in vLLM, which reads no GGUF" + (": its flags are below" if report.from_file else ""))
        elif not w.applies:
            lines.append(f"{'not' if w.applies is False else 'differently'} in {w.runtime}: {w.sentence}")
    return lines


def _add_tokenizer_rows(table: Table, model: Model) -> None:
    """Quantization, tokenizer, BOS/EOS and chat template: what a chat will run with."""
    quantization, tokenizer = model.file_type, model.tokenizer
    table.add_row("Quantization", "(not stated)" if quantization is None else Text(quantization.name))
    kind = tokenizer.model or "(not stated)"
    about = [tokenizer.algorithm or "", f"pre-tokenizer {tokenizer.pre}" if tokenizer.pre else ""]
    if any(about):
        kind += f" ({', '.join(part for part in about if part)})"
    size = "no vocabulary" if tokenizer.tokens is None else f"{tokenizer.tokens:,} tokens"
    table.add_row("Tokenizer", Text(f"{kind}, {size}"))
    added = {True: " (added to every prompt)", False: " (not added)", None: ""}[tokenizer.add_bos]
    table.add_row("", Text(f"BOS {_token_text(tokenizer.bos)}{added}, EOS {_token_text(tokenizer.eos)}"))
    template = tokenizer.chat_template
    if template is None:
        table.add_row("Chat template", "none: chat continues the text as plain completion")
    else:
        what = template.format or f"starting {template.start!r}"
        table.add_row("Chat template", Text(f"{what}, {template.length:,} characters"))


def _token_text(token: SpecialToken | None) -> str:
    if token is None:
        return "(not stated)"
    return f"{token.id} {token.text!r}" if token.text is not None else f"{token.id} (not in the vocabulary)"


def _hf_text(rope: RopeState, head_dim: int | None) -> str:
    """How to give a server that runs the Hugging Face model (vLLM) the same scaling."""
    hf = hf_scaling(rope, head_dim)
    flags = hf.vllm_flags()
    if flags is None:
        return f"vLLM (serves the Hugging Face model): no flags from this file; {hf.reason}"
    return f"vLLM (serves the Hugging Face model, whose config lacks this scaling): vllm serve MODEL {flags}"


def _ctx_text(model: Model) -> str:
    text = f"{model.context_length}"
    if model.original_context and model.original_context != model.context_length:
        text += f" (trained: {model.original_context})"
    return text


def _view_dict(view: YarnView) -> dict[str, Any]:
    return {
        "factor": view.factor,
        "original_context": view.original_context,
        "beta_fast": view.beta_fast,
        "beta_slow": view.beta_slow,
        "low": view.low,
        "high": view.high,
        "mscale": view.mscale,
        "pairs": [
            {
                "pair": i,
                "wavelength": float(view.wavelength[i]),
                "rotations": float(view.rotations[i]),
                "ramp": float(view.ramp[i]),
                "freq_ratio": float(view.freq_ratio[i]),
            }
            for i in range(len(view.ramp))
        ],
    }


def _render_view(view: YarnView) -> None:
    out.print()
    out.print(
        f"[bold]YaRN x{view.factor:g}[/] over an original context of {view.original_context}: "
        f"pairs 0..{view.low} keep their frequency (>= {view.beta_fast:g} rotations), "
        f"pairs {view.high}.. are interpolated like PI (<= {view.beta_slow:g} rotation), "
        f"between them blended; attention mscale {view.mscale:.4f}"
    )
    table = Table(title_justify="left")
    for col in ("pair", "wavelength", "rotations in L", "ramp", "freq ratio", "region"):
        table.add_column(col, justify="right" if col != "region" else "left")
    for i in range(len(view.ramp)):
        ramp = view.ramp[i]
        region = "kept" if ramp == 0 else ("interpolated" if ramp == 1 else "blended")
        table.add_row(
            str(i),
            f"{view.wavelength[i]:,.1f}",
            f"{view.rotations[i]:,.2f}",
            f"{ramp:.3f}",
            f"{view.freq_ratio[i]:.4f}",
            region,
        )
    out.print(table)
