"""The FFT method's transforms of half the length (``_half_fft``): one real row's circular
convolution through complex FFTs of n / 2 points, which torch's CPU rfft makes 1.1-2.3x
faster for one to sixteen rows past 8,192 points. Every check is against scipy in float64,
or numpy's FFT of the same circular convolution."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from diffconv_core import _fft, _half_fft, _overlap, convolve
from diffconv_core._half_fft import MAX_ROWS, MIN_POINTS, half_fft_circular, kernel_factors

from .conftest import TOLERANCE, reference


def circular_reference(x: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    """Rows of ``x`` convolved circularly with ``w`` over ``n`` points, in float64."""
    full = np.stack(
        [scipy.signal.convolve(row, w, method="direct") for row in x.reshape(-1, x.shape[-1])]
    )
    wrapped = np.zeros((full.shape[0], n))
    for start in range(0, full.shape[-1], n):
        part = full[:, start : start + n]
        wrapped[:, : part.shape[-1]] += part
    return wrapped.reshape(*x.shape[:-1], n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("T", "K", "n"),
    [
        (3, 3, 6),
        (5, 1, 8),
        (100, 7, 106),
        (17, 17, 40),
        (64, 64, 64),
        (500, 301, 600),
        (9000, 255, 9216),
    ],
    ids=["tiny", "one-tap", "short", "equal", "aliased-whole", "wrapped", "long"],
)
def test_circular_convolution_matches_numpy(dtype, T, K, n):
    # Lengths shorter than the linear convolution wrap around: the identity is a circular
    # convolution of n points, whatever n is (even).
    rng = np.random.default_rng(T + K + n)
    x = rng.standard_normal((2, T))
    w = rng.standard_normal(K)
    xt, wt = torch.from_numpy(x).to(dtype), torch.from_numpy(w).to(dtype)
    got = half_fft_circular(xt, kernel_factors(wt, n), n)
    expected = circular_reference(xt.double().numpy(), wt.double().numpy(), n)
    scale = np.abs(expected).max()
    assert got.shape == (2, n) and got.dtype == dtype
    assert np.abs(got.double().numpy() - expected).max() <= TOLERANCE[dtype] * scale


@pytest.mark.parametrize("T", [9000, 9216], ids=["zero-extended", "whole length"])
@pytest.mark.parametrize(
    "layout",
    ["1-D", "3-D", "strided", "odd offset", "transposed"],
)
def test_any_layout_of_rows(layout, T):
    # The rows are copied into a buffer of their own before their complex view is taken:
    # strided, offset and transposed inputs give the same answer as contiguous ones.
    rng = np.random.default_rng(7)
    base = torch.from_numpy(rng.standard_normal((4, 2 * T + 2)))
    x = {
        "1-D": base[0, :T],
        "3-D": base[:, :T].reshape(2, 2, T),
        "strided": base[:, ::2][:, :T],
        "odd offset": base[:, 1 : T + 1],
        "transposed": base[:, :T].t().contiguous().t(),
    }[layout]
    w = torch.from_numpy(rng.standard_normal(255))
    n = 9216
    got = half_fft_circular(x, kernel_factors(w, n), n)
    expected = circular_reference(x.numpy(), w.numpy(), n)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10 * np.abs(expected).max())


def test_which_calls_take_it():
    x, w = torch.ones(1, 10), torch.ones(3)
    assert _half_fft.takes_half_fft(x, w, MIN_POINTS + 1, 1)
    assert _half_fft.takes_half_fft(x, w, MIN_POINTS + 1, MAX_ROWS)
    assert not _half_fft.takes_half_fft(x, w, MIN_POINTS + 1, MAX_ROWS + 1)
    assert not _half_fft.takes_half_fft(x, w, MIN_POINTS - 1, 1)
    assert not _half_fft.takes_half_fft(x, w, 10_241, 1)  # an odd length
    assert not _half_fft.takes_half_fft(x, w.double(), 10_240, 1)
    assert not _half_fft.takes_half_fft(x.to("meta"), w.to("meta"), 10_240, 1)
    assert not _half_fft.takes_half_fft(x, torch.ones(2, 3), 10_240, 1)


def _rows_per_identity_call(monkeypatch) -> list[int]:
    # The number of rows (or blocks) each call of the identity transformed: the FFT method
    # and overlap-save both reach it through _fft.circular_convolution.
    calls = []
    original = _fft.half_fft_circular

    def recording(rows, factors, n_fft):
        calls.append(rows.numel() // rows.shape[-1])
        return original(rows, factors, n_fft)

    monkeypatch.setattr(_fft, "half_fft_circular", recording)
    return calls


@pytest.fixture
def half_fft_calls(monkeypatch):
    """The number of rows each call of the identity transformed, in fft_range."""
    return _rows_per_identity_call(monkeypatch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize(("lead", "K"), [((), 1023), ((1,), 4095), ((2, 8), 511)])
def test_fft_method_takes_it_and_matches_scipy(half_fft_calls, dtype, mode, lead, K):
    rng = np.random.default_rng(K + len(mode))
    x = rng.standard_normal((*lead, 12_000))
    w = rng.standard_normal(K)
    xt, wt = torch.from_numpy(x).to(dtype), torch.from_numpy(w).to(dtype)
    y = convolve(xt, wt, mode, method="fft")
    expected = reference(xt.double(), wt.double(), mode)
    assert half_fft_calls, "the identity was not used"
    assert y.shape == expected.shape and y.dtype == dtype
    scale = np.abs(expected).max()
    assert np.abs(y.double().numpy() - expected).max() <= TOLERANCE[dtype] * scale


@pytest.mark.parametrize("padding", ["reflect", "circular"])
def test_fft_method_with_paddings(half_fft_calls, padding):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(10_000), rng.standard_normal(2000)
    y = convolve(torch.from_numpy(x), torch.from_numpy(w), "same", padding=padding, method="fft")
    assert half_fft_calls
    np.testing.assert_allclose(y.numpy(), reference(x, w, "same", padding), atol=1e-9)


def test_short_rows_and_many_rows_keep_the_real_transforms(half_fft_calls):
    # Below MIN_POINTS, and past MAX_ROWS rows, rfft/irfft were faster.
    convolve(torch.randn(1, 4000), torch.randn(255), method="fft")
    convolve(torch.randn(MAX_ROWS + 1, 10_000), torch.randn(255), method="fft")
    assert half_fft_calls == []


def test_no_grad_with_leaves_that_require_grad(half_fft_calls):
    # Inside no_grad nothing is recorded: the identity serves leaves that require grad too.
    x = torch.randn(1, 10_000, dtype=torch.float64, requires_grad=True)
    w = torch.randn(999, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        y = convolve(x, w, method="fft")
    assert half_fft_calls == [1]
    np.testing.assert_allclose(y.numpy(), reference(x.detach(), w.detach()), atol=1e-9)


def test_recorded_calls_keep_their_own_backward(half_fft_calls):
    x = torch.randn(1, 10_000, dtype=torch.float64, requires_grad=True)
    w = torch.randn(999, dtype=torch.float64, requires_grad=True)
    convolve(x, w, method="fft").sum().backward()
    assert half_fft_calls == []
    assert x.grad is not None and w.grad is not None


def test_nonfinite_samples_stay_local(half_fft_calls):
    # The non-finite handling is outside the method: a NaN among 10,000 samples still
    # reaches only the outputs whose sums contain it.
    x = torch.randn(1, 10_000, dtype=torch.float64)
    x[0, 5000] = float("nan")
    w = torch.randn(101, dtype=torch.float64)
    y = convolve(x, w, method="fft")
    assert half_fft_calls
    nan_at = torch.nonzero(torch.isnan(y[0])).flatten()
    assert nan_at.tolist() == list(range(5000 - 50, 5000 + 51))
    finite = x.clone()
    finite[0, 5000] = 0.0
    expected = reference(finite, w)
    keep = ~torch.isnan(y)
    np.testing.assert_allclose(y[keep].numpy(), expected[keep.numpy()], atol=1e-9)


@pytest.mark.parametrize("rows", [1, 3, MAX_ROWS])
def test_rows_in_chunks_of_huge_transforms(monkeypatch, half_fft_calls, rows):
    # Huge transforms go one row at a time (fft_range's chunks), each through the identity.
    monkeypatch.setattr(_fft, "HUGE_FFT", 8192)
    monkeypatch.setattr(_fft, "CHUNK_SAMPLES", 10_000)
    monkeypatch.setattr(_fft, "WHOLE_BATCH_POINTS", 0)
    x, w = torch.randn(rows, 9000, dtype=torch.float64), torch.randn(255, dtype=torch.float64)
    y = _fft.fft_range(x, w, 127, 127 + 9000)
    assert half_fft_calls == [1] * rows
    np.testing.assert_allclose(y.numpy(), reference(x, w), atol=1e-9)


@pytest.fixture
def overlap_half_calls(monkeypatch):
    """The number of blocks each call of the identity transformed, in overlap-save."""
    return _rows_per_identity_call(monkeypatch)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("lead", [(), (1,), (1, 1)])
def test_overlap_save_takes_it_for_a_lone_rows_long_blocks(overlap_half_calls, mode, lead):
    # 40,000 samples with 2,049 taps: blocks of 17,280 points, 3 of them.
    rng = np.random.default_rng(len(lead))
    x, w = rng.standard_normal((*lead, 40_000)), rng.standard_normal(2049)
    y = convolve(torch.from_numpy(x), torch.from_numpy(w), mode, method="overlap")
    assert overlap_half_calls == [3]
    np.testing.assert_allclose(y.numpy(), reference(x, w, mode), atol=1e-9)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_overlap_save_batches_keep_real_transforms(overlap_half_calls, mode):
    # A batch's long blocks were as often slower as faster by the identity: rfft/irfft.
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((3, 40_000)), rng.standard_normal(2049)
    y = convolve(torch.from_numpy(x), torch.from_numpy(w), mode, method="overlap")
    assert overlap_half_calls == []
    np.testing.assert_allclose(y.numpy(), reference(x, w, mode), atol=1e-9)


def test_overlap_save_many_blocks_or_a_kernel_per_row_keep_real_transforms(overlap_half_calls):
    # Many short blocks (2,048 points), and a kernel per row: the real transforms.
    x = torch.randn(2, 40_000, dtype=torch.float64)
    w = torch.randn(2, 2049, dtype=torch.float64)
    convolve(x, torch.randn(31, dtype=torch.float64), method="overlap")
    y = convolve(x, w, method="overlap")
    assert overlap_half_calls == []
    np.testing.assert_allclose(y.numpy(), reference(x, w), atol=1e-9)


def test_overlap_save_in_chunks_of_few_blocks(monkeypatch, overlap_half_calls):
    # Chunks of few blocks each take the identity, the kernel's factors computed once.
    block = _overlap.overlap_fft_length(2049, 100_000)  # 16,384 points: 7 blocks
    monkeypatch.setattr(_overlap, "CHUNK_SAMPLES", 2 * block)
    factor_calls = []
    original_factors = _fft.kernel_factors
    monkeypatch.setattr(
        _fft, "kernel_factors", lambda w, n: factor_calls.append(n) or original_factors(w, n)
    )
    x, w = torch.randn(100_000, dtype=torch.float64), torch.randn(2049, dtype=torch.float64)
    y = convolve(x, w, method="overlap")
    assert overlap_half_calls == [2, 2, 2, 1] and len(factor_calls) == 1
    np.testing.assert_allclose(y.numpy(), reference(x, w), atol=1e-9)


def test_half_rfft_and_irfft_match_torch():
    for dtype in (torch.float32, torch.float64):
        for n, T in [(6, 4), (10_000, 9_000), (17_496, 16_384), (8, 8)]:
            x = torch.randn(3, T, dtype=torch.float64)
            expected = np.fft.rfft(x.numpy(), n)
            got = _half_fft.half_rfft(x.to(dtype), n).to(torch.complex128).numpy()
            scale = np.abs(expected).max()
            assert np.abs(got - expected).max() <= TOLERANCE[dtype] * scale
            complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
            back = _half_fft.half_irfft(torch.from_numpy(expected).to(complex_dtype), n)
            expected_back = np.fft.irfft(expected, n)
            assert np.abs(back.numpy() - expected_back).max() <= TOLERANCE[dtype] * scale


def gradients_reference(x, w, g, mode):
    """dL/dx and dL/dw of L = sum(g * convolve(x, w, mode)), from scipy in float64: the
    output gradient placed where mode's samples lie in the full convolution, correlated
    with the other operand."""
    T, K = x.shape[-1], w.shape[-1]
    lo = {"full": 0, "same": (K - 1) // 2, "valid": K - 1}[mode]
    placed = np.zeros(T + K - 1)
    placed[lo : lo + g.shape[-1]] = g
    return (
        scipy.signal.correlate(placed, w, mode="valid", method="direct"),
        scipy.signal.correlate(placed, x, mode="valid", method="direct"),
    )


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_recorded_single_row_takes_half_transforms(monkeypatch, mode):
    # One row and one kernel, recorded: the FFT method's own Function transforms with the
    # half-length complex FFTs, forward and backward, and its gradients are scipy's.
    used = []
    for name in ("half_rfft", "half_irfft"):
        original = getattr(_fft, name)
        monkeypatch.setattr(
            _fft, name, lambda *a, original=original, name=name: used.append(name) or original(*a)
        )
    rng = np.random.default_rng(len(mode))
    x_np, w_np = rng.standard_normal(10_000), rng.standard_normal(999)
    x = torch.from_numpy(x_np).requires_grad_()
    w = torch.from_numpy(w_np).requires_grad_()
    y = convolve(x, w, mode, method="fft")
    g = rng.standard_normal(y.shape[-1])
    y.backward(torch.from_numpy(g))
    assert used.count("half_rfft") == 3 and used.count("half_irfft") == 3
    np.testing.assert_allclose(y.detach().numpy(), reference(x_np, w_np, mode), atol=1e-9)
    grad_x, grad_w = gradients_reference(x_np, w_np, g, mode)
    np.testing.assert_allclose(x.grad.numpy(), grad_x, atol=1e-9)
    np.testing.assert_allclose(w.grad.numpy(), grad_w, atol=1e-9)


def test_recorded_batches_keep_torch_transforms(monkeypatch):
    used = []
    monkeypatch.setattr(_fft, "half_rfft", lambda *a: used.append(a))
    x = torch.randn(2, 10_000, dtype=torch.float64, requires_grad=True)
    w = torch.randn(999, dtype=torch.float64, requires_grad=True)
    convolve(x, w, method="fft").sum().backward()
    assert used == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_twiddles_computed_per_call_past_the_kept_lengths(monkeypatch, dtype):
    # Past CACHED_POINTS the twiddle table is computed per call (no table is kept): the same
    # answers, and nothing added to the cache.
    monkeypatch.setattr(_half_fft, "CACHED_POINTS", 64)
    _half_fft._kept_twiddles.cache_clear()
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((2, 900)), rng.standard_normal(101)
    xt, wt = torch.from_numpy(x).to(dtype), torch.from_numpy(w).to(dtype)
    n = 1000
    got = half_fft_circular(xt, kernel_factors(wt, n), n)
    expected = circular_reference(xt.double().numpy(), wt.double().numpy(), n)
    scale = np.abs(expected).max()
    assert np.abs(got.double().numpy() - expected).max() <= TOLERANCE[dtype] * scale
    spectrum = _half_fft.half_rfft(xt, n)
    assert np.abs(spectrum.numpy() - np.fft.rfft(xt.double().numpy(), n)).max() <= (
        TOLERANCE[dtype] * np.abs(spectrum.numpy()).max()
    )
    back = _half_fft.half_irfft(spectrum, n)[..., :900]
    assert np.abs(back.double().numpy() - x).max() <= TOLERANCE[dtype] * np.abs(x).max() * 10
    assert _half_fft._kept_twiddles.cache_info().currsize == 0


@pytest.mark.parametrize("T", [9000, 9216], ids=["zero-extended", "whole length"])
def test_the_callers_tensors_are_never_written(T):
    # The transforms run in place over buffers of their own, never over the inputs.
    x = torch.randn(2, T, dtype=torch.float64)
    w = torch.randn(255, dtype=torch.float64)
    x_before, w_before = x.clone(), w.clone()
    half_fft_circular(x, kernel_factors(w, 9216), 9216)
    spectrum = _half_fft.half_rfft(x, 9216)
    spectrum_before = spectrum.clone()
    _half_fft.half_irfft(spectrum, 9216)
    assert torch.equal(x, x_before) and torch.equal(w, w_before)
    assert torch.equal(spectrum, spectrum_before)


def test_recorded_single_row_with_batched_gradients():
    # autograd.grad(..., is_grads_batched=True) runs the backward under vmap, where the
    # transforms cannot write in place: the same gradients as one at a time.
    x = torch.randn(10_000, dtype=torch.float64, requires_grad=True)
    w = torch.randn(999, dtype=torch.float64, requires_grad=True)
    y = convolve(x, w, method="fft")
    grads = torch.randn(3, *y.shape, dtype=torch.float64)
    batched = torch.autograd.grad(y, (x, w), grads, is_grads_batched=True)
    for i in range(3):
        one = torch.autograd.grad(convolve(x, w, method="fft"), (x, w), grads[i])
        torch.testing.assert_close(batched[0][i], one[0], rtol=0, atol=1e-10)
        torch.testing.assert_close(batched[1][i], one[1], rtol=0, atol=1e-10)


def test_recorded_single_row_second_derivative_matches_finite_differences():
    # A Hessian-vector product through the half-length transforms (create_graph) against
    # central differences of the first gradient, in float64.
    torch.manual_seed(3)
    x = torch.randn(10_000, dtype=torch.float64, requires_grad=True)
    w = torch.randn(999, dtype=torch.float64, requires_grad=True)
    v_x, v_w = torch.randn_like(x), torch.randn_like(w)

    def gradient(x, w, create_graph=False):
        loss = convolve(x, w, method="fft").pow(2).sum() / 2
        return torch.autograd.grad(loss, (x, w), create_graph=create_graph)

    g_x, g_w = gradient(x, w, create_graph=True)
    hvp = torch.autograd.grad((g_x * v_x).sum() + (g_w * v_w).sum(), (x, w))
    eps = 1e-4
    with torch.no_grad():
        plus = [t.detach().requires_grad_() for t in (x + eps * v_x, w + eps * v_w)]
        minus = [t.detach().requires_grad_() for t in (x - eps * v_x, w - eps * v_w)]
    g_plus, g_minus = gradient(*plus), gradient(*minus)
    for analytic, up, down in zip(hvp, g_plus, g_minus, strict=True):
        numeric = (up - down) / (2 * eps)
        torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-6 * numeric.abs().max())
