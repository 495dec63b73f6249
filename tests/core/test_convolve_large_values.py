"""Huge finite values: a result the dtype can hold comes out finite and right whatever the
method, although an FFT's intermediate sums grow far beyond the result (~n times the
samples); the operands are scaled by powers of two inside, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffconv_core

from .conftest import METHODS, reference, relative_error


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "dtype, signal_scale, kernel_scale, tolerance",
    [
        (torch.float32, 1e34, 1.0, 1e-5),  # the FFTs overflowed here
        (torch.float32, 1e20, 1e15, 1e-5),  # both operands large
        (torch.float32, 1e-20, 1e36, 1e-5),  # a tiny signal under a huge kernel
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


def test_a_true_overflow_is_still_inf():
    x = torch.full((1, 100), 3e38)
    out = diffconv_core.convolve(x, torch.ones(3), method="fft")
    assert torch.isinf(out[0, 1:-1]).all() and (out > 0).all()


@pytest.mark.parametrize("method", METHODS)
def test_large_values_recorded_for_autograd_give_the_same_forward(method):
    # The scaling is in the graph too, so a recorded forward is the unrecorded one. (Its
    # backward is not scaled: gradients of such values can still overflow in the FFT
    # methods' own backward passes.)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 300, generator=gen) * 1e34
    w = torch.randn(17, generator=gen)
    with torch.no_grad():
        plain = diffconv_core.convolve(x, w, method=method)
    recorded = diffconv_core.convolve(x.requires_grad_(), w.requires_grad_(), method=method)
    assert torch.isfinite(plain).all()
    torch.testing.assert_close(recorded.detach(), plain, rtol=1e-6, atol=0)
