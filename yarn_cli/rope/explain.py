"""What llama.cpp will do with a file's RoPE keys and tensors, in sentences for ``inspect``.

The rules are llama.cpp's (``llama_model::load_hparams``, ``llama_context``'s YaRN set-up,
``llama_model::get_rope_factors``), so a user can see before loading what a scaling in the file
means, and what a conversion would add to it.
"""

from __future__ import annotations

import math

from yarn_cli.rope.architectures import CONTEXT_BASE_WINDOWS, DEFAULT_FREQ_BASE_SWA, window_note
from yarn_cli.rope.state import RopeState


def yarn_temperature(factor: float) -> float:
    """llama.cpp's YaRN attention factor without DeepSeek's rule: 0.1 ln s + 1 (1 for s <= 1)."""
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


def cancels_temperature(factor: float, attn_factor: float | None) -> bool:
    """A YaRN x ``factor`` file whose attn_factor is 1 / (0.1 ln s + 1), as float32 holds it: NTK-by-parts."""
    return (
        attn_factor is not None
        and factor > 1
        and math.isclose(attn_factor * yarn_temperature(factor), 1.0, rel_tol=1e-6)
    )


def scaling_origin(rope: RopeState) -> str | None:
    """Where the current scaling comes from: yarn-cli, the file as it came, or None (no scaling)."""
    if not rope.is_scaled:
        return None
    if rope.converted:
        return "yarn-cli"
    return "file"


def explain(rope: RopeState) -> list[str]:
    """One sentence per thing llama.cpp does with this file's positions beyond plain RoPE."""
    if not rope.uses_rope:
        return []
    notes: list[str] = []
    scaling = rope.current.scaling
    attn = scaling.attn_factor
    if scaling.type == "yarn" and scaling.factor > 1:
        original = scaling.original_context or rope.current.context_length
        name = f"YaRN x{scaling.factor:g}"
        if rope.yarn_log_multiplier:
            temperature = f"DeepSeek's attention scaling (yarn_log_multiplier {rope.yarn_log_multiplier:g})"
        else:
            temperature = f"attention scaled by 0.1 ln s + 1 = {yarn_temperature(scaling.factor):.4f}"
        if not rope.yarn_log_multiplier and cancels_temperature(scaling.factor, attn):
            name = f"NTK-by-parts x{scaling.factor:g} (YaRN whose temperature the attn_factor cancels)"
            temperature += f", times the file's attn_factor {attn:.6g}: attention unscaled"
        elif attn is not None and attn != 1.0:
            temperature += f", times the file's attn_factor {attn:g}"
        notes.append(
            f"{name} over {original} tokens: llama.cpp keeps the fast-turning pairs, "
            f"interpolates the slow ones, blends between them; {temperature}"
        )
    elif scaling.type == "linear" and scaling.factor > 1:
        notes.append(f"linear x{scaling.factor:g}: positions divided by {scaling.factor:g} (position interpolation)")
    elif scaling.type == "longrope":
        notes.append("longrope: per-dimension factors from the rope_factors_long/short tensors")
    elif attn is not None and attn != 1.0:
        notes.append(f"attn_factor {attn:g}: llama.cpp multiplies every layer's rotated q and k by it")
    if rope.rope_freqs:
        notes.append(
            "rope_freqs tensor (Llama 3's own long-context rescaling): llama.cpp divides each pair's frequency "
            "by it, under any scaling; a YaRN on top measures its ramp on the undivided frequencies"
        )
    if rope.longrope_factors:
        original = scaling.original_context or rope.current.context_length
        notes.append(
            f"rope_factors_long/short tensors (Phi-3 longrope): llama.cpp uses the long factors when a sequence's "
            f"context is above {original} tokens, the short ones otherwise"
        )
    if rope.base_changed:
        notes.append(
            f"freq_base raised from {rope.original.freq_base:g} to {rope.current.freq_base:g} (NTK-aware scaling)"
        )
    if rope.freq_base_swa is not None and rope.architecture not in CONTEXT_BASE_WINDOWS:
        notes.append(f"the sliding-window layers use their own freq_base {rope.freq_base_swa:g}")
    elif rope.window and rope.architecture in DEFAULT_FREQ_BASE_SWA:
        notes.append(
            f"the sliding-window layers use freq_base {DEFAULT_FREQ_BASE_SWA[rope.architecture]:g} "
            "(llama.cpp's default: the file states no rope.freq_base_swa)"
        )
    window = window_note(rope.architecture, rope.window)
    if window and rope.window:
        notes.append(window)
    return notes
