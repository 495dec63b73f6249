"""NaN/Inf locality: a non-finite sample affects exactly the outputs whose window covers it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffconv_core

from .conftest import METHODS, PADDINGS, coverage, reference, relative_error

pytestmark = pytest.mark.usefixtures("single_thread")

MODE_PADDINGS = [(mode, p) for mode in ("full", "same") for p in PADDINGS] + [("valid", "zeros")]
VALUES = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def check_locality(x, w, positions, mode, padding, method, corr, device="cpu"):
    """``x`` is (B, T) with non-finite values at ``positions`` (row, index) pairs."""
    func = diffconv_core.correlate if corr else diffconv_core.convolve
    config = (
        f"{func.__name__}(signal{tuple(x.shape)}, kernel{tuple(w.shape)}, mode={mode!r}, "
        f"padding={padding!r}, method={method!r}) non-finite at {positions} "
        f"values {[x[r, i].item() for r, i in positions]} device={device}"
    )
    out = func(x.to(device), w.to(device), mode, padding=padding, method=method)
    out = out.detach().cpu().to(torch.float64).numpy()
    T, K = x.shape[-1], w.shape[-1]
    x_np = x.detach().cpu().to(torch.float64).numpy()
    finite_x = np.where(np.isfinite(x_np), x_np, 0.0)
    expected = reference(finite_x, w, mode, padding, correlate=corr)
    assert out.shape == expected.shape, f"{config}: shape {out.shape} != {expected.shape}"
    for row in range(x.shape[0]):
        bad = [i for r, i in positions if r == row]
        covered = coverage(T, K, bad, mode, padding) if bad else np.zeros(out.shape[-1], bool)
        nonfinite = ~np.isfinite(out[row])
        wrong = np.flatnonzero(nonfinite != covered)
        assert wrong.size == 0, (
            f"{config}: row {row}: outputs {wrong.tolist()} are "
            f"{'non-finite' if nonfinite[wrong[0]] else 'finite'}, expected the opposite; "
            f"non-finite outputs {np.flatnonzero(nonfinite).tolist()}, "
            f"expected {np.flatnonzero(covered).tolist()}"
        )
        # A window that covers NaNs only (no Inf) is NaN, never a spurious Inf.
        nan_only = [i for i in bad if np.isnan(x_np[row, i])]
        if nan_only and len(nan_only) == len(bad):
            assert np.isnan(out[row][covered]).all(), f"{config}: row {row}: NaN became Inf"
        # The outputs it does not cover are exactly the finite signal's.
        err = relative_error(out[row][~covered], expected[row][~covered])
        assert err <= 1e-10, f"{config}: row {row}: finite outputs off by {err:.3g}"


@pytest.mark.parametrize("corr", [False, True], ids=["convolve", "correlate"])
@pytest.mark.parametrize("value", list(VALUES))
@pytest.mark.parametrize("mode,padding", MODE_PADDINGS)
@pytest.mark.parametrize("method", METHODS)
def test_single_nonfinite_is_local(method, mode, padding, value, corr):
    gen = torch.Generator().manual_seed(0)
    T = 40
    # Odd and even kernels; positions at both edges (mirrored into the pads) and inside.
    for K, pos in [(7, 0), (6, 19), (7, T - 1), (4, 2)]:
        x = torch.randn(2, T, generator=gen, dtype=torch.float64)
        w = torch.rand(K, generator=gen, dtype=torch.float64) + 0.1
        x[1, pos] = VALUES[value]
        check_locality(x, w, [(1, pos)], mode, padding, method, corr)


@pytest.mark.parametrize("method", METHODS)
def test_several_nonfinite_values_mixed(method):
    # NaN and +/-Inf in the same signals, near each other and far apart; kernel taps of both
    # signs and one zero tap (a zero tap over a NaN still gives NaN in a direct sum).
    gen = torch.Generator().manual_seed(1)
    T = 60
    w = torch.randn(9, generator=gen, dtype=torch.float64)
    w[4] = 0.0
    positions = [(0, 3), (0, 5), (0, 50), (2, 30), (2, 59)]
    x = torch.randn(3, T, generator=gen, dtype=torch.float64)
    for (r, i), v in zip(positions, ["nan", "inf", "-inf", "inf", "nan"], strict=True):
        x[r, i] = VALUES[v]
    for mode, padding in [("same", "zeros"), ("full", "reflect"), ("valid", "zeros")]:
        for corr in (False, True):
            check_locality(x, w, positions, mode, padding, method, corr)


@pytest.mark.parametrize("method", METHODS)
def test_long_signal_nonfinite_is_local(method):
    # Long enough for overlap-save's several blocks: the NaN at a block boundary region and
    # in the middle must not spread over a whole block, nor to another row.
    gen = torch.Generator().manual_seed(2)
    T = 6000
    positions = [(0, 0), (0, 2047), (0, 2050), (1, 4321), (1, T - 1)]
    for K in (33, 128):
        x = torch.randn(2, T, generator=gen, dtype=torch.float64)
        w = torch.randn(K, generator=gen, dtype=torch.float64)
        for (r, i), v in zip(positions, ["nan", "inf", "nan", "-inf", "nan"], strict=True):
            x[r, i] = VALUES[v]
        for mode, padding in [("same", "zeros"), ("full", "symmetric"), ("valid", "zeros")]:
            check_locality(x, w, positions, mode, padding, method, corr=(K == 128))


@pytest.mark.parametrize("method", METHODS)
def test_float32_nonfinite_is_local(method):
    x = torch.randn(2, 300, dtype=torch.float32)
    x[0, 150] = float("nan")
    x[1, 7] = float("inf")
    w = torch.rand(16, dtype=torch.float32) + 0.1
    out = diffconv_core.convolve(x, w, "same", method=method)
    assert out.dtype == torch.float32
    for row, pos in [(0, 150), (1, 7)]:
        covered = coverage(300, 16, [pos], "same")
        got = ~torch.isfinite(out[row]).numpy()
        assert np.array_equal(got, covered), (method, row, np.flatnonzero(got).tolist())


@pytest.mark.parametrize("method", METHODS)
def test_all_nan_signal(method):
    x = torch.full((1, 20), float("nan"), dtype=torch.float64)
    w = torch.ones(5, dtype=torch.float64)
    out = diffconv_core.convolve(x, w, "same", method=method)
    assert torch.isnan(out).all(), method
