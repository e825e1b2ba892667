"""yarn_cli.rope.frequencies against an independent implementation of the YaRN reference formulas.

The reference implementation below is written from the formulas in
shared/reference/yarn.md section 1 (which follows jquesnelle/yarn's code), pair by pair
with plain Python floats, so that it shares no code with yarn_cli.rope.frequencies.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yarn_cli.rope import frequencies

BETA_FAST = 32
BETA_SLOW = 1
RTOL = 1e-12

# --------------------------------------------------------------------------------------
# Independent reference implementation (yarn.md section 1)
# --------------------------------------------------------------------------------------


def ref_theta(i: int, d: int, base: float) -> float:
    """theta_i = base^(-2i/d)."""
    return math.pow(base, -2.0 * i / d)


def ref_correction_dim(n_rot: float, d: int, base: float, L: int) -> float:
    """find_correction_dim(n_rot, d, base, L) = d * ln(L / (n_rot * 2*pi)) / (2 * ln(base))."""
    return d * math.log(L / (n_rot * 2 * math.pi)) / (2 * math.log(base))


def ref_low_high(d: int, base: float, L: int) -> tuple[int, int]:
    low = max(math.floor(ref_correction_dim(BETA_FAST, d, base, L)), 0)
    high = min(math.ceil(ref_correction_dim(BETA_SLOW, d, base, L)), d - 1)
    return low, high


def ref_ramp_value(i: int, low: float, high: float) -> float:
    """clamp((i - low) / (high - low), 0, 1); if high == low use high + 0.001."""
    if high == low:
        high = high + 0.001
    r = (i - low) / (high - low)
    return min(max(r, 0.0), 1.0)


def ref_mscale(s: float, attn_factor: float = 1.0) -> float:
    """0.1 * ln(s) + 1 (1 if s <= 1), times attn_factor."""
    return (1.0 if s <= 1 else 0.1 * math.log(s) + 1.0) * attn_factor


def ref_yarn(d: int, base: float, L: int, s: float) -> dict[str, object]:
    low, high = ref_low_high(d, base, L)
    ramp, ratio, theta, theta_new = [], [], [], []
    for i in range(d // 2):
        r = ref_ramp_value(i, low, high)
        mask = (1.0 - r) * 1.0  # extrapolation_factor = 1
        t = ref_theta(i, d, base)
        t_new = (t / s) * (1.0 - mask) + t * mask
        ramp.append(r)
        theta.append(t)
        theta_new.append(t_new)
        ratio.append(t_new / t)
    return {
        "low": low,
        "high": high,
        "ramp": np.array(ramp),
        "freq_ratio": np.array(ratio),
        "theta": np.array(theta),
        "inv_freq": np.array(theta_new),
        "mscale": ref_mscale(s),
    }


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------

dims_st = st.integers(min_value=4, max_value=128).map(lambda n: 2 * n)  # even, 8..256
base_st = st.floats(min_value=1e3, max_value=1e7, allow_nan=False, allow_infinity=False)
context_st = st.integers(min_value=256, max_value=1_048_576)
factor_st = st.floats(min_value=1.01, max_value=64.0, allow_nan=False, allow_infinity=False)

PROPERTY = settings(max_examples=150, deadline=None)


# --------------------------------------------------------------------------------------
# yarn_view against the reference implementation
# --------------------------------------------------------------------------------------


@PROPERTY
@given(d=dims_st, base=base_st, L=context_st, s=factor_st)
def test_yarn_view_matches_reference(d: int, base: float, L: int, s: float) -> None:
    ref = ref_yarn(d, base, L, s)
    view = frequencies.yarn_view(d, base, L, s)

    assert (view.low, view.high) == (ref["low"], ref["high"])
    assert isinstance(view.low, int) and isinstance(view.high, int)
    assert view.ramp.shape == view.freq_ratio.shape == view.inv_freq.shape == (d // 2,)
    assert np.allclose(view.ramp, ref["ramp"], rtol=RTOL, atol=1e-15)
    assert np.allclose(view.freq_ratio, ref["freq_ratio"], rtol=RTOL, atol=1e-15)
    assert np.allclose(view.inv_freq, ref["inv_freq"], rtol=RTOL, atol=0)
    assert math.isclose(view.mscale, ref["mscale"], rel_tol=RTOL)
    assert np.allclose(frequencies.inv_freq(d, base), ref["theta"], rtol=RTOL, atol=0)
    # the view keeps its inputs and the derived per-pair quantities
    assert (view.factor, view.dims, view.base, view.original_context) == (s, d, base, L)
    assert (view.beta_fast, view.beta_slow) == (BETA_FAST, BETA_SLOW)
    assert np.allclose(view.wavelength, 2 * math.pi / ref["theta"], rtol=RTOL, atol=0)
    assert np.allclose(view.rotations, L * ref["theta"] / (2 * math.pi), rtol=RTOL, atol=0)


@PROPERTY
@given(d=dims_st, base=base_st, L=context_st)
def test_correction_dims_match_reference(d: int, base: float, L: int) -> None:
    for n_rot in (BETA_FAST, BETA_SLOW, 2.5):
        assert math.isclose(
            frequencies.find_correction_dim(n_rot, d, base, L), ref_correction_dim(n_rot, d, base, L), rel_tol=RTOL
        )
    assert frequencies.find_correction_range(BETA_FAST, BETA_SLOW, d, base, L) == ref_low_high(d, base, L)


@PROPERTY
@given(d=dims_st, base=base_st, L=context_st, n_rot=st.floats(min_value=0.5, max_value=64))
def test_correction_dim_is_where_the_pair_turns_n_times(d: int, base: float, L: int, n_rot: float) -> None:
    """The (continuous) pair index x = find_correction_dim(n) has exactly n rotations in L tokens."""
    x = frequencies.find_correction_dim(n_rot, d, base, L)
    rotations = L * base ** (-2 * x / d) / (2 * math.pi)
    assert math.isclose(rotations, n_rot, rel_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    low=st.integers(min_value=-5, max_value=300),
    width=st.integers(min_value=0, max_value=300),
    n_pairs=st.integers(min_value=1, max_value=200),
)
def test_linear_ramp_matches_reference(low: int, width: int, n_pairs: int) -> None:
    high = low + width
    ramp = frequencies.linear_ramp(low, high, n_pairs)
    expected = np.array([ref_ramp_value(i, low, high) for i in range(n_pairs)])
    assert ramp.shape == (n_pairs,)
    assert np.allclose(ramp, expected, rtol=RTOL, atol=1e-15)


def test_linear_ramp_equal_bounds_widened_by_a_thousandth() -> None:
    ramp = frequencies.linear_ramp(3, 3, 6)
    # (i - 3) / 0.001 clamped: 0 at and below 3, 1 above
    assert ramp.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    ramp = frequencies.linear_ramp(2.9995, 2.9995, 4)
    assert np.allclose(ramp, [0.0, 0.0, 0.0, 0.5], rtol=1e-9)


# --------------------------------------------------------------------------------------
# Properties of the YaRN blend
# --------------------------------------------------------------------------------------


@PROPERTY
@given(d=dims_st, base=base_st, L=context_st, s=factor_st)
def test_freq_ratio_shape_of_the_blend(d: int, base: float, L: int, s: float) -> None:
    view = frequencies.yarn_view(d, base, L, s)
    i = np.arange(d // 2)
    assert 0 <= view.low <= view.high <= d - 1
    assert np.all((view.ramp >= 0) & (view.ramp <= 1))
    # pairs at or below `low` keep their frequency, pairs at or above `high` are divided by s
    assert np.all(view.freq_ratio[i <= view.low] == 1.0)
    assert np.allclose(view.freq_ratio[i >= view.high], 1.0 / s, rtol=RTOL, atol=0)
    # in between, a blend: never faster than the original, never slower than PI
    assert np.all(view.freq_ratio <= 1.0)
    assert np.all(view.freq_ratio >= 1.0 / s * (1 - 1e-12))
    assert np.all(np.diff(view.freq_ratio) <= 1e-15)  # monotone non-increasing in i
    assert np.all(np.diff(view.ramp) >= 0)
    # the new frequencies still decrease with i
    assert np.all(np.diff(view.inv_freq) < 0)
    # NTK-by-parts sits between the unscaled frequencies and linear interpolation
    assert np.all(view.inv_freq <= frequencies.inv_freq(d, base) * (1 + 1e-12))
    assert np.all(view.inv_freq >= frequencies.linear_inv_freq(d, base, s) * (1 - 1e-12))


@PROPERTY
@given(s1=factor_st, s2=factor_st, attn=st.floats(min_value=0.1, max_value=10))
def test_mscale_increasing_in_factor(s1: float, s2: float, attn: float) -> None:
    lo, hi = sorted((s1, s2))
    assert frequencies.yarn_mscale(lo) <= frequencies.yarn_mscale(hi)
    if hi > lo * (1 + 1e-9):  # closer factors may round to the same 0.1 * ln(s) + 1 (1.01 and its next float do)
        assert frequencies.yarn_mscale(lo) < frequencies.yarn_mscale(hi)
    assert frequencies.yarn_mscale(lo) > 1.0
    assert math.isclose(frequencies.yarn_mscale(s1), ref_mscale(s1), rel_tol=RTOL)
    assert math.isclose(frequencies.yarn_mscale(s1, attn), ref_mscale(s1) * attn, rel_tol=RTOL)
    assert math.isclose(
        frequencies.yarn_view(64, 1e4, 4096, s1, attn_factor=attn).mscale, ref_mscale(s1, attn), rel_tol=RTOL
    )


@settings(max_examples=50, deadline=None)
@given(s=st.floats(min_value=1e-6, max_value=1.0), attn=st.floats(min_value=0.1, max_value=10))
def test_mscale_is_one_for_factor_at_most_one(s: float, attn: float) -> None:
    assert frequencies.yarn_mscale(s) == 1.0
    assert frequencies.yarn_mscale(s, attn) == attn


@PROPERTY
@given(d=dims_st, base=base_st, s=factor_st)
def test_linear_inv_freq_is_inv_freq_over_factor(d: int, base: float, s: float) -> None:
    expected = np.array([ref_theta(i, d, base) / s for i in range(d // 2)])
    assert np.allclose(frequencies.linear_inv_freq(d, base, s), expected, rtol=RTOL, atol=0)
    assert np.allclose(frequencies.linear_inv_freq(d, base, s), frequencies.inv_freq(d, base) / s, rtol=RTOL, atol=0)


@PROPERTY
@given(d=dims_st, base=base_st, s=factor_st)
def test_ntk_freq_base_formula(d: int, base: float, s: float) -> None:
    expected = base * s ** (d / (d - 2))
    assert math.isclose(frequencies.ntk_freq_base(base, s, d), expected, rel_tol=RTOL)
    assert frequencies.ntk_freq_base(base, s, d) > base * s  # d/(d-2) > 1 and s > 1


@PROPERTY
@given(d=dims_st, base=base_st)
def test_wavelengths(d: int, base: float) -> None:
    expected = np.array([2 * math.pi / ref_theta(i, d, base) for i in range(d // 2)])
    assert np.allclose(frequencies.wavelengths(d, base), expected, rtol=RTOL, atol=0)
    assert frequencies.inv_freq(d, base)[0] == 1.0


# --------------------------------------------------------------------------------------
# Worked values from the reference
# --------------------------------------------------------------------------------------


def test_llama2_low_high() -> None:
    assert frequencies.find_correction_range(32, 1, 128, 1e4, 4096) == (20, 46)
    view = frequencies.yarn_view(128, 1e4, 4096, 16.0)
    assert (view.low, view.high) == (20, 46)
    assert view.freq_ratio[20] == 1.0
    assert view.freq_ratio[46] == pytest.approx(1 / 16, rel=1e-12)
    assert view.freq_ratio[33] == pytest.approx((1 / 16) * (13 / 26) + (13 / 26), rel=1e-12)


@pytest.mark.parametrize(("s", "expected"), [(2, 1.0693), (4, 1.1386), (8, 1.2079), (16, 1.2773), (32, 1.3466)])
def test_llama2_mscale_worked_values(s: float, expected: float) -> None:
    assert round(frequencies.yarn_mscale(s), 4) == expected
    assert round(frequencies.yarn_view(128, 1e4, 4096, s).mscale, 4) == expected


def test_smollm2_correction_dims() -> None:
    fast = frequencies.find_correction_dim(32, 64, 1e5, 8192)
    slow = frequencies.find_correction_dim(1, 64, 1e5, 8192)
    assert round(fast, 2) == 10.30
    assert round(slow, 2) == 19.94  # the reference prints the truncated 19.93
    assert slow == pytest.approx(19.9373, abs=1e-4)
    assert frequencies.find_correction_range(32, 1, 64, 1e5, 8192) == (10, 20)
    view = frequencies.yarn_view(64, 1e5, 8192, 4.0)
    assert (view.low, view.high) == (10, 20)


def test_ntk_freq_base_llama2() -> None:
    value = frequencies.ntk_freq_base(1e4, 2, 128)
    # 1e4 * 2^(128/126) = 20221.2617
    assert value == pytest.approx(20221.261689737912, rel=1e-12)
    assert round(value) == 20221


def test_linear_inv_freq_worked() -> None:
    assert np.allclose(frequencies.linear_inv_freq(128, 1e4, 4.0), frequencies.inv_freq(128, 1e4) / 4.0, rtol=0, atol=0)
    assert frequencies.inv_freq(4, 100.0).tolist() == [1.0, 0.1]


def test_factor_one_changes_nothing() -> None:
    view = frequencies.yarn_view(64, 1e5, 8192, 1.0)
    assert np.all(view.freq_ratio == 1.0)
    assert view.mscale == 1.0
