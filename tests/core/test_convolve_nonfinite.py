"""NaN/Inf locality: a non-finite sample affects exactly the outputs whose window covers it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffconv_core

from .conftest import (
    METHODS,
    MODE_PADDINGS,
    check_locality,
    coverage,
    reference,
    relative_error,
    same_mode_gradients,
)

pytestmark = pytest.mark.usefixtures("single_thread", "nonfinite_order")

VALUES = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def every_case(test):
    """Run ``test(method, mode, padding, corr)`` for convolve and correlate, every mode and
    padding, every method."""
    test = pytest.mark.parametrize("method", METHODS)(test)
    test = pytest.mark.parametrize("mode,padding", MODE_PADDINGS)(test)
    return pytest.mark.parametrize("corr", [False, True], ids=["convolve", "correlate"])(test)


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


@every_case
def test_nonfinite_outputs_are_what_the_direct_sum_gives(method, mode, padding, corr):
    # Clusters of Infs of one sign under taps of both signs (inf * 2 + inf * -1 is NaN, not
    # Inf, whatever the weights add up to), a tap far smaller than the others (inf * 1e-12 is
    # still Inf), zero taps, and NaNs: each output's NaN / +Inf / -Inf must be exactly the
    # IEEE direct sum's (scipy's direct method), the finite ones its value.
    gen = torch.Generator().manual_seed(3)
    T = 48
    kernels = [
        torch.tensor([2.0, -1.0]),
        torch.tensor([1.0, 1e-12, 1.0]),
        torch.tensor([0.5, 0.0, -0.25, 0.0, 1.0]),
        torch.randn(7, generator=gen),
        # the most taps the shifted sums take (they skip the finiteness check), one zero
        torch.randn(12, generator=gen) * (torch.arange(12) != 5),
        # the ways covered outputs are found: a window's run of positive taps (a running
        # count) and its two zero ends (shifted copies); signs scattered over many taps and
        # many scattered zeros (indicator convolutions)
        torch.hann_window(21, periodic=False, dtype=torch.float64),
        torch.randn(30, generator=gen),
        torch.randn(30, generator=gen) * (torch.arange(30) % 3 != 0),
    ]
    for K, w in enumerate(kernels):
        w = w.to(torch.float64)
        x = torch.randn(3, T, generator=gen, dtype=torch.float64)
        x[0, 10:13] = torch.inf
        x[0, 30] = -torch.inf
        x[1, [0, 1, T - 1]] = torch.tensor([torch.inf, -torch.inf, torch.inf], dtype=x.dtype)
        x[2, 20] = torch.nan
        x[2, 22] = -torch.inf
        x[2, 5 + K] = torch.inf
        func = diffconv_core.correlate if corr else diffconv_core.convolve
        out = func(x, w, mode, padding=padding, method=method).numpy()
        expected = reference(x.numpy(), w.numpy(), mode, padding, correlate=corr)
        config = f"{func.__name__} w={w.tolist()} {mode} {padding} {method}"
        for name, test in [("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)]:
            mismatch = np.argwhere(test(out) != test(expected)).tolist()
            assert not mismatch, f"{config}: {name} differs at (row, output) {mismatch}"
        finite = np.isfinite(expected)
        assert relative_error(out[finite], expected[finite]) <= 1e-10, config


def _assert_direct_sum(out: torch.Tensor, expected: np.ndarray, config: str) -> None:
    """NaN, +Inf and -Inf exactly where the IEEE direct sum has them; the rest its value."""
    out = out.numpy()
    assert out.shape == expected.shape, f"{config}: shape {out.shape} != {expected.shape}"
    for name, test in [("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)]:
        mismatch = np.argwhere(test(out) != test(expected)).tolist()
        assert not mismatch, f"{config}: {name} differs at {mismatch}"
    finite = np.isfinite(expected)
    assert relative_error(out[finite], expected[finite]) <= 1e-10, config


@pytest.mark.parametrize("corr", [False, True], ids=["convolve", "correlate"])
@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_signal_shorter_than_kernel_in_valid_mode(method, corr):
    # "valid" with K > T swaps the operands (as scipy does): the signal's NaN/Inf must still
    # give the direct sum's values, not NaN everywhere (an FFT over a non-finite operand).
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(9, generator=gen, dtype=torch.float64)
    w[3] = 0.0
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    x[0, 1] = torch.inf
    x[1, 3] = -torch.inf
    x[2, 0] = torch.nan
    func = diffconv_core.correlate if corr else diffconv_core.convolve
    out = func(x, w, "valid", method=method)
    expected = reference(x.numpy(), w.numpy(), "valid", "zeros", correlate=corr)
    _assert_direct_sum(out, expected, f"{func.__name__} valid K > T {method}")


@every_case
def test_nonfinite_kernel_taps_give_the_direct_sum(method, mode, padding, corr):
    # An Inf or NaN tap reaches only the outputs whose window puts it over a signal sample
    # (in "same"/"full" with zeros, not those where it hangs past the ends), and a zero sample
    # under an Inf tap is NaN, as in scipy's direct sum; the signal may be non-finite too.
    gen = torch.Generator().manual_seed(5)
    T = 30
    for K, bad in [(5, {1: torch.inf}), (16, {0: -torch.inf, 9: torch.nan}), (3, {2: torch.inf})]:
        w = torch.randn(K, generator=gen, dtype=torch.float64)
        for tap, value in bad.items():
            w[tap] = value
        x = torch.randn(3, T, generator=gen, dtype=torch.float64)
        x[1, 12] = 0.0
        x[2, 20] = -torch.inf
        func = diffconv_core.correlate if corr else diffconv_core.convolve
        out = func(x, w, mode, padding=padding, method=method)
        expected = reference(x.numpy(), w.numpy(), mode, padding, correlate=corr)
        _assert_direct_sum(
            out, expected, f"{func.__name__} w={w.tolist()} {mode} {padding} {method}"
        )


@pytest.mark.parametrize("K", [3, 12, 20])
@pytest.mark.parametrize(
    "mode,padding", [("same", "zeros"), ("full", "reflect"), ("valid", "zeros")]
)
@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_with_a_kernel_per_row_is_the_direct_sum(method, mode, padding, K):
    # A kernel per row (the shifted sums with weight columns up to 12 taps, batched GEMMs
    # beyond): Inf and NaN in signals and in taps, zero taps, rows of their own.
    gen = torch.Generator().manual_seed(K)
    x = torch.randn(2, 3, 40, generator=gen, dtype=torch.float64)
    w = torch.randn(3, K, generator=gen, dtype=torch.float64)
    x[0, 0, 7] = torch.inf
    x[1, 2, 20:23] = -torch.inf
    x[1, 1, 30] = torch.nan
    w[0, 1] = 0.0
    w[1, K - 1] = torch.inf
    w[2, 0] = torch.nan
    out = diffconv_core.convolve(x, w, mode, padding=padding, method=method)
    expected = reference(x.numpy(), w.numpy(), mode, padding)
    _assert_direct_sum(out, expected, f"kernel per row K={K} {mode} {padding} {method}")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_loss_that_leaves_out_the_nonfinite_outputs_has_finite_gradients(method, dtype):
    # The outputs that a NaN or Inf reaches are constants to autograd. A loss over the other
    # outputs (a mask, as with gappy sensor data) then gets the gradients of exactly those
    # outputs: a plain direct sum's kernel gradient would be NaN there (0 * nan).
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 500, generator=gen, dtype=torch.float64)
    x[0, 100], x[0, 101], x[1, 300] = float("nan"), float("inf"), float("-inf")
    w = torch.randn(9, generator=gen, dtype=torch.float64)
    x, w = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
    y = diffconv_core.convolve(x, w, method=method)
    kept = torch.isfinite(y.detach())
    assert kept.sum() == 2 * 500 - 10 - 9  # exactly the covered outputs are left out
    g = torch.randn(2, 500, generator=gen, dtype=torch.float64).to(dtype) * kept
    (y * g).nan_to_num(0.0).sum().backward()  # the product is NaN where y is: no gradient
    # Every output the loss keeps sees only finite samples: zeros stand in for the others.
    expected_x, expected_w = same_mode_gradients(x.detach().nan_to_num(0, 0, 0), w, g)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-10
    assert torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()
    assert relative_error(x.grad, expected_x) <= tolerance
    assert relative_error(w.grad, expected_w) <= tolerance


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("method", ["fft", "overlap"])
def test_reading_ahead_runs_the_method_once_and_reads_values_once(monkeypatch, method, graph):
    # CUDA's order (forced here on the CPU): finite operands cost one run of the method and
    # one read of their magnitudes (a host sync there), queued before the method.
    from diffconv_core import _nonfinite, convolution

    monkeypatch.setattr(_nonfinite, "reads_ahead", lambda x: True)
    events, method_fn = [], convolution._RANGE_FUNCTIONS[method]
    magnitudes_later = _nonfinite._magnitudes_later

    def queue(*tensors):
        events.append(f"queue {len(tensors)}")
        read = magnitudes_later(*tensors)

        def counted():
            events.append("read")
            return read()

        return counted

    def run(*args):
        events.append(method)
        return method_fn(*args)

    monkeypatch.setattr(_nonfinite, "_magnitudes_later", queue)
    monkeypatch.setitem(convolution._RANGE_FUNCTIONS, method, run)
    x = torch.randn(3, 200, dtype=torch.float64, requires_grad=graph)
    w = torch.randn(9, dtype=torch.float64)
    y = diffconv_core.convolve(x, w, method=method)
    np.testing.assert_allclose(y.detach().numpy(), reference(x.detach(), w, "same"), atol=1e-12)
    assert events == ["queue 2", method, "read"]


@pytest.mark.parametrize("method", ["fft", "overlap"])
@pytest.mark.parametrize("trouble", ["nan", "inf", "huge"])
def test_reading_ahead_recomputes_for_operands_that_need_the_scanned_path(
    monkeypatch, method, trouble
):
    # A NaN, an Inf or values near float32's limit (whose transforms are scaled): the output
    # computed ahead is dropped and the scanned path's taken, with the magnitudes already read.
    from diffconv_core import _nonfinite, convolution

    monkeypatch.setattr(_nonfinite, "reads_ahead", lambda x: True)
    runs, method_fn = [], convolution._RANGE_FUNCTIONS[method]

    def run(*args):
        runs.append(method)
        return method_fn(*args)

    monkeypatch.setitem(convolution._RANGE_FUNCTIONS, method, run)
    x = torch.full((2, 100), 1e37 if trouble == "huge" else 1.0, dtype=torch.float32)
    if trouble != "huge":
        x[1, 50] = float(trouble)
    w = torch.ones(3, dtype=torch.float32)
    y = diffconv_core.convolve(x, w, "valid", method=method)
    want = np.stack([np.convolve(row, w.double().numpy(), "valid") for row in x.double().numpy()])
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=0)  # np.convolve: direct sums
    assert len(runs) == 2  # ahead, then on the scanned path (finite parts, or scaled)
