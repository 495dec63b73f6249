"""Huge finite values: a result the dtype can hold comes out finite and right whatever the
method, although an FFT's intermediate sums grow far beyond the result (~n times the
samples); the operands are scaled by powers of two inside, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffconv_core
from diffconv_core._direct import direct_range
from diffconv_core._fft import fft_range
from diffconv_core._nonfinite import _PowerOfTwoScaled
from diffconv_core._overlap import overlap_range

from .conftest import METHODS, reference, relative_error, same_mode_gradients

pytestmark = pytest.mark.usefixtures("nonfinite_order")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "dtype, signal_scale, kernel_scale, tolerance",
    [
        (torch.float32, 1e34, 1.0, 1e-5),  # the FFTs overflowed here
        (torch.float32, 1e20, 1e15, 1e-5),  # both operands large
        (torch.float32, 1e-20, 1e36, 1e-5),  # a tiny signal under a huge kernel
        (torch.float32, 1e36, 1e-9, 1e-5),  # the signal's own spectrum overflowed
        (torch.float32, 1e-30, 1e37, 1e-5),  # the kernel's own spectrum overflowed
        (torch.float64, 1e306, 1e-30, 1e-12),
        (torch.float64, 1e300, 1.0, 1e-12),
    ],
)
def test_large_values_do_not_overflow(method, dtype, signal_scale, kernel_scale, tolerance):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 4000, generator=gen, dtype=torch.float64) * signal_scale).to(dtype)
    w = (torch.randn(31, generator=gen, dtype=torch.float64) * kernel_scale).to(dtype)
    expected = reference(x.double(), w.double(), "same")
    assert np.abs(expected).max() < torch.finfo(dtype).max / 100  # representable
    out = diffconv_core.convolve(x, w, method=method)
    assert out.dtype == dtype
    assert torch.isfinite(out).all(), f"{method}: non-finite outputs from finite inputs"
    assert relative_error(out, expected) <= tolerance


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "dtype, signal_scale, kernel_scale, tolerance",
    [
        (torch.float32, 1e36, 1e-9, 1e-5),
        (torch.float32, 1e-9, 1e36, 1e-5),
        (torch.float64, 1e306, 1e-30, 1e-12),
    ],
)
def test_one_operands_own_spectrum_does_not_overflow(
    method, dtype, signal_scale, kernel_scale, tolerance
):
    # All positive: the DC bin is the sum of the samples, T times the largest, an Inf for
    # 4,000 float32 samples near 1e36 although the result (1e28) is far from the limit.
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 4000, generator=gen, dtype=torch.float64) * signal_scale).to(dtype)
    w = (torch.rand(31, generator=gen, dtype=torch.float64) * kernel_scale).to(dtype)
    expected = reference(x.double(), w.double(), "same")
    out = diffconv_core.convolve(x, w, method=method)
    assert torch.isfinite(out).all(), f"{method}: non-finite outputs from finite inputs"
    assert relative_error(out, expected) <= tolerance


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("zeros", ["kernel", "signal"])
@pytest.mark.parametrize("dtype, scale", [(torch.float32, 4e36), (torch.float64, 3e304)])
def test_zeros_against_an_operand_whose_own_spectrum_overflows_give_zeros(
    method, zeros, dtype, scale
):
    # The guard skipped its own-spectrum check when the other operand's largest value was 0:
    # an Inf DC bin times 0 made every output and the kernel's gradient NaN.
    large = torch.full((3000,), scale, dtype=dtype)
    if zeros == "kernel":
        x, w, mode, lo = large.expand(2, -1), torch.zeros(40, dtype=dtype), "valid", 39
    else:
        x, w, mode, lo = torch.zeros(2, 300, dtype=dtype), large, "full", 0
    x, w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = diffconv_core.convolve(x, w, mode, method=method)
    assert torch.equal(out, torch.zeros_like(out)), f"{method}: {out.flatten()[:3]}"
    g = torch.full_like(out, 1e-6)  # the gradients' sums of the large samples stay finite
    grad_x, grad_w = torch.autograd.grad(out, (x, w), g)
    # Each operand's gradient correlates g, placed back in the full range, with the other.
    xs, ws = x.detach().double().numpy(), w.detach().double().numpy()
    g_full = np.zeros((2, xs.shape[-1] + ws.shape[-1] - 1))
    g_full[:, lo : lo + out.shape[-1]] = 1e-6
    expected_x = np.stack([np.correlate(row, ws, "valid") for row in g_full])
    expected_w = sum(np.correlate(gr, xr, "valid") for gr, xr in zip(g_full, xs, strict=True))
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10  # sums of 3,000 equal products
    for got, expected in ((grad_x, expected_x), (grad_w, expected_w)):
        assert torch.isfinite(got).all(), f"{method}: non-finite gradient"
        assert relative_error(got, expected) <= tolerance


def test_the_direct_sums_are_not_scaled_for_a_spectrum_they_never_form():
    # The guard against one operand's own spectrum overflowing is for the transforms: the
    # direct sums scaled by 2**-120 pushed the small samples beside a 1e36 spike into
    # subnormals (1.8e-6 relative error instead of 2.3e-7).
    from diffconv_core._nonfinite import _may_overflow

    x = torch.full((1, 5000), 1e-3)
    x[0, 0] = 1e36
    w = torch.full((64,), 1e-9)
    assert _may_overflow(x, w, 1e36, 1e-9, transforms=True)
    assert not _may_overflow(x, w, 1e36, 1e-9, transforms=False)
    out = diffconv_core.convolve(x, w, method="direct")
    expected = reference(x.double(), w.double(), "same")
    far = slice(100, None)  # beyond the spike's reach
    assert relative_error(out[..., far], expected[..., far]) <= 1e-6


def test_a_true_overflow_is_still_inf():
    x = torch.full((1, 100), 3e38)
    out = diffconv_core.convolve(x, torch.ones(3), method="fft")
    assert torch.isinf(out[0, 1:-1]).all() and (out > 0).all()


@pytest.mark.parametrize("recorded", [False, True], ids=["plain", "recorded"])
@pytest.mark.parametrize("method", METHODS)
def test_a_float32_result_past_the_dtypes_range_keeps_its_small_outputs_finite(method, recorded):
    # Samples near 1e30 in the first quarter, zeros after, under 1e20 taps: the outputs near
    # the samples are ~1e50 (Inf in float32), the others exactly 0. The transforms' round-off,
    # a fraction of 1e50 once scaled back, made 2,680 of those zeros Inf with the FFT method.
    gen = torch.Generator().manual_seed(3)
    x = torch.zeros(2, 4000)
    x[:, :1000] = torch.randn(2, 1000, generator=gen) * 1e30
    w = torch.hann_window(255, periodic=False) * 1e20
    expected = reference(x.double(), w.double(), "same")
    out = diffconv_core.convolve(x, w.requires_grad_(recorded), method=method).detach()
    largest = float(torch.finfo(torch.float32).max)
    small, huge = np.abs(expected) < largest / 2, np.abs(expected) > 2 * largest
    assert small.sum() > 5000 and huge.sum() > 1000
    assert torch.isfinite(out[small]).all(), f"{method}: Inf where the result is small"
    assert relative_error(out[small], expected[small], scale=np.abs(expected).max()) < 1e-12
    assert torch.equal(out[huge], torch.from_numpy(expected[huge]).float())  # +-Inf
    if recorded:  # the kernel's gradient (~1e32) is finite and right
        g = torch.randn(2, 4000, generator=gen)
        diffconv_core.convolve(x, w, method=method).backward(g)
        assert w.grad.dtype == torch.float32
        assert relative_error(w.grad, same_mode_gradients(x, w, g)[1]) < 1e-5


@pytest.mark.parametrize("recorded", [False, True], ids=["plain", "recorded"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("K", [2, 5, 12])
def test_products_that_overflow_give_every_paths_sums(K, mode, method, recorded):
    # Samples of 0 and +-1e160, taps of +-1e160: each output is (sum of signs) * 1e320, an Inf
    # of that sign or a 0 whose products overflow. The shifted sums without autograd (up to
    # 12 taps) did not scale their operands as the other paths do: Inf for some of the zeros.
    gen = torch.Generator().manual_seed(K)
    x_signs = torch.randint(-1, 2, (2, 40), generator=gen).double()
    w_signs = torch.randint(0, 2, (K,), generator=gen).double() * 2 - 1
    x, w = x_signs * 1e160, w_signs * 1e160
    signs = diffconv_core.convolve(x_signs, w_signs, mode, method="direct")  # exact integers
    assert (signs == 0).any() and (signs != 0).any()
    out = diffconv_core.convolve(x, w.requires_grad_(recorded), mode, method=method).detach()
    assert torch.equal(torch.isposinf(out), signs > 0)
    assert torch.equal(torch.isneginf(out), signs < 0)
    # The zeros come out as round-off of the scaled products (~1e-16 of 1e320, as the FFT's).
    assert (out[signs == 0].abs() * 2.0**-1064 < 1e-12).all()


@pytest.mark.parametrize("method", METHODS)
def test_large_values_recorded_for_autograd_give_the_same_forward(method):
    # The scaled path records its own backward, so a recorded forward is the unrecorded one.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 300, generator=gen) * 1e34
    w = torch.randn(17, generator=gen)
    with torch.no_grad():
        plain = diffconv_core.convolve(x, w, method=method)
    recorded = diffconv_core.convolve(x.requires_grad_(), w.requires_grad_(), method=method)
    assert torch.isfinite(plain).all()
    # "auto" may pick another method when recording (the backward's cost counts): then the
    # two agree to that method's round-off, relative to the largest output.
    atol = 1e-6 * float(plain.abs().max()) if method == "auto" else 0.0
    torch.testing.assert_close(recorded.detach(), plain, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "signal_scale, kernel_scale",
    [(1e34, 1.0), (1e30, 1.0), (1e-20, 1e36), (1.0, 1e34)],
)
def test_gradients_of_large_values_do_not_overflow(method, signal_scale, kernel_scale):
    # float32 samples near 1e34 under a unit kernel: the signal's gradient is only the
    # kernel's sum, yet the FFT methods' backward gave NaN; near 1e30 the kernel's gradient
    # (~1e33) did too. Each finite true gradient must come out finite and right.
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand(2, 3000, generator=gen, dtype=torch.float64) * signal_scale).float()
    w = (torch.rand(31, generator=gen, dtype=torch.float64) * kernel_scale).float()
    g = torch.randn(2, 3000, generator=gen)
    x.requires_grad_(True)
    w.requires_grad_(True)
    diffconv_core.convolve(x, w, method=method).backward(g)
    expected_x, expected_w = same_mode_gradients(x, w, g)
    largest = torch.finfo(torch.float32).max
    for name, got, expected in (("signal", x.grad, expected_x), ("kernel", w.grad, expected_w)):
        if np.abs(expected).max() < largest / 100:
            assert torch.isfinite(got).all(), f"{method}: non-finite {name} gradient"
            assert relative_error(got, expected) <= 1e-5, f"{method}: {name} gradient"
        elif np.abs(expected).max() > largest * 2:  # a true overflow stays one
            assert not torch.isfinite(got).all(), f"{method}: {name} gradient"


@pytest.mark.parametrize("range_fn", [direct_range, fft_range, overlap_range])
@pytest.mark.parametrize("lo, hi", [(0, 20), (3, 14), (6, 14)])
def test_scaled_path_first_and_second_derivatives(range_fn, lo, hi):
    # Values near the dtype's limit take this path and finite differences cannot be taken
    # there, so its scaling arithmetic is checked at ordinary magnitudes, exponents forced.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 14, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, generator=gen, dtype=torch.float64, requires_grad=True)

    def scaled(a, b):
        return _PowerOfTwoScaled.apply(a, b, range_fn, lo, hi, 70, -9)

    torch.testing.assert_close(scaled(x, w), range_fn(x, w, lo, hi))
    assert torch.autograd.gradcheck(scaled, (x, w))
    assert torch.autograd.gradgradcheck(scaled, (x, w))


@pytest.mark.parametrize("method", METHODS)
def test_vectorized_jacobian_of_large_values(method):
    # torch.autograd.functional.jacobian(vectorize=True) hands the scaled path's backward a
    # gradient batched under vmap, whose largest value cannot be read ('Batching rule not
    # implemented for aten::detach'). The Jacobians are the convolution matrices: with
    # respect to the signal the kernel's (independent of the huge samples), with respect to
    # the kernel the signal's.
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(25, generator=gen, dtype=torch.float64) * 1e36).float()
    w = torch.randn(6, generator=gen, dtype=torch.float64).float()

    def conv(a, b):
        return diffconv_core.convolve(a, b, method=method)

    got_x, got_w = torch.autograd.functional.jacobian(conv, (x, w), vectorize=True)
    lo = (6 - 1) // 2
    by_x, by_w = np.zeros((25, 25)), np.zeros((25, 6))
    for m in range(25):
        for k in range(6):
            if 0 <= m + lo - k < 25:
                by_x[m, m + lo - k] = w[k]
                by_w[m, k] = x[m + lo - k]
    assert relative_error(got_x, by_x) <= 1e-6
    assert relative_error(got_w, by_w) <= 1e-6
