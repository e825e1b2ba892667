"""RoPE frequency math for the scaling methods yarn-cli writes and evaluates.

Pure numpy, no I/O. The YaRN functions follow the paper's reference code
(jquesnelle/yarn, ``scaled_rope/LlamaYaRNScaledRotaryEmbedding.py``), which
differs slightly from the r-formula printed in arXiv 2309.00071; llama.cpp and
HF transformers (``_compute_yarn_parameters``) follow the code as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_BETA_FAST = 32.0
DEFAULT_BETA_SLOW = 1.0


def inv_freq(dims: int, base: float) -> np.ndarray:
    """theta_i = base^(-2i/d) for each rotary pair i (RoPE, arXiv 2104.09864)."""
    return 1.0 / (base ** (np.arange(0, dims, 2, dtype=np.float64) / dims))


def wavelengths(dims: int, base: float) -> np.ndarray:
    """lambda_i = 2*pi / theta_i: tokens per full turn of pair i."""
    return 2.0 * math.pi / inv_freq(dims, base)


def find_correction_dim(n_rotations: float, dims: int, base: float, original_context: int) -> float:
    """Pair index whose wavelength fits ``n_rotations`` times into the original context.

    Reference code: ``find_correction_dim``; llama.cpp: ``ggml_rope_yarn_corr_dim``.
    """
    return (dims * math.log(original_context / (n_rotations * 2 * math.pi))) / (2 * math.log(base))


def find_correction_range(
    beta_fast: float, beta_slow: float, dims: int, base: float, original_context: int
) -> tuple[int, int]:
    """Integer (low, high) pair bounds of the YaRN ramp, clamped to [0, d-1] (reference code)."""
    low = math.floor(find_correction_dim(beta_fast, dims, base, original_context))
    high = math.ceil(find_correction_dim(beta_slow, dims, base, original_context))
    return max(low, 0), min(high, dims - 1)


def linear_ramp(low: float, high: float, n_pairs: int) -> np.ndarray:
    """clamp((i - low) / (high - low), 0, 1); ``high == low`` is widened by 0.001 (reference code)."""
    if low == high:
        high += 0.001
    ramp = (np.arange(n_pairs, dtype=np.float64) - low) / (high - low)
    return np.clip(ramp, 0.0, 1.0)


def yarn_mscale(factor: float, attn_factor: float = 1.0) -> float:
    """Attention temperature 0.1*ln(s) + 1 (1 for s <= 1), times ``attn_factor`` (paper eq. 22)."""
    base = 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0
    return base * attn_factor


def temperature_cancel(factor: float) -> float:
    """NTK-by-parts in llama.cpp: the ``rope.scaling.attn_factor`` that cancels YaRN's temperature, 1 / (0.1 ln s + 1).

    llama.cpp multiplies the file's attn_factor into the attention factor of every YaRN load, whose
    temperature it computes itself (a run-time ``yarn_attn_factor`` is overwritten), so YaRN x s with
    this key rotates q and k as NTK-by-parts does, their magnitude unchanged.
    """
    return 1.0 / yarn_mscale(factor)


def ntk_freq_base(base: float, factor: float, dims: int) -> float:
    """NTK-aware base b' = b * s^(d/(d-2)) (paper section 3.1)."""
    return base * factor ** (dims / (dims - 2))


def linear_inv_freq(dims: int, base: float, factor: float) -> np.ndarray:
    """Position Interpolation: every frequency divided by s (arXiv 2306.15595)."""
    return inv_freq(dims, base) / factor


@dataclass(frozen=True)
class YarnView:
    """Everything YaRN derives for one model and one factor, per rotary pair."""

    factor: float
    dims: int
    base: float
    original_context: int
    beta_fast: float
    beta_slow: float
    low: int
    high: int
    mscale: float
    wavelength: np.ndarray
    rotations: np.ndarray
    ramp: np.ndarray
    freq_ratio: np.ndarray

    @property
    def inv_freq(self) -> np.ndarray:
        return inv_freq(self.dims, self.base) * self.freq_ratio


def yarn_view(
    dims: int,
    base: float,
    original_context: int,
    factor: float,
    *,
    beta_fast: float = DEFAULT_BETA_FAST,
    beta_slow: float = DEFAULT_BETA_SLOW,
    attn_factor: float = 1.0,
) -> YarnView:
    """YaRN's per-pair frequencies: theta'_i = (theta_i/s)(1-mask) + theta_i*mask, mask = 1 - ramp."""
    low, high = find_correction_range(beta_fast, beta_slow, dims, base, original_context)
    ramp = linear_ramp(low, high, dims // 2)
    mask = 1.0 - ramp  # extrapolation factor 1: pairs below `low` keep theta_i
    freq_ratio = (1.0 / factor) * (1.0 - mask) + mask
    lam = wavelengths(dims, base)
    return YarnView(
        factor=factor,
        dims=dims,
        base=base,
        original_context=original_context,
        beta_fast=beta_fast,
        beta_slow=beta_slow,
        low=low,
        high=high,
        mscale=yarn_mscale(factor, attn_factor),
        wavelength=lam,
        rotations=original_context / lam,
        ramp=ramp,
        freq_ratio=freq_ratio,
    )
