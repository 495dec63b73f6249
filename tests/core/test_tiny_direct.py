"""Small CPU calls of the direct method run as one native convolution (``_direct.tiny_range``):
taken where it applies, scipy's answer in every mode and dtype, exact for a delta, NaN kept
local, and the same gradients as float64 finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffconv_core import _direct, _framed_conv, convolve

from .conftest import reference

pytestmark = pytest.mark.skipif(
    _framed_conv._native_conv2d is None, reason="this torch exposes no native convolution"
)


@pytest.fixture
def tiny_calls(monkeypatch):
    """The operands' shapes of each call of ``tiny_range``."""
    calls = []
    real = _direct.tiny_range

    def counted(x, w, lo, hi):
        calls.append(tuple(x.shape))
        return real(x, w, lo, hi)

    monkeypatch.setattr(_direct, "tiny_range", counted)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("K", [1, 2, 3, 7, 31, 64, 255])
@pytest.mark.parametrize("shape", [(1,), (3,), (256,), (2, 3, 100), (4, 1024)])
def test_matches_float64_scipy(tiny_calls, dtype, mode, K, shape):
    rng = np.random.default_rng(K + shape[-1])
    x = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
    w = torch.from_numpy(rng.standard_normal(K)).to(dtype)
    got = convolve(x, w, mode, method="direct")
    expected = reference(x.double(), w.double(), mode)
    scale = max(float(np.abs(expected).max()), 1.0)
    eps = torch.finfo(dtype).eps
    atol = 8 * eps * scale * K**0.5
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=0, atol=atol)
    products = int(np.prod(shape[:-1])) * expected.shape[-1] * K
    # "valid" with the kernel longer swaps the two: a batch of signals becomes kernels.
    per_row = mode == "valid" and K > shape[-1] and len(shape) > 1
    assert bool(tiny_calls) == (products <= _direct.TINY_PRODUCTS and not per_row)


def test_taken_only_for_small_calls_of_one_kernel(tiny_calls):
    x = torch.randn(4, 1024)
    convolve(x, torch.randn(31), method="direct")  # 126,976 products
    assert tiny_calls == [(4, 1024)]
    tiny_calls.clear()
    convolve(torch.randn(16, 4096), torch.randn(31), method="direct")  # 2 million
    convolve(x, torch.randn(4, 31), method="direct")  # a kernel per row
    convolve(x.double(), torch.randn(31), method="direct")  # mixed dtypes: promoted first
    assert tiny_calls == [(4, 1024)]  # only the last, after promotion to float64


def test_a_delta_returns_the_signal_exactly():
    x = torch.randn(3, 500)
    delta = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
    assert torch.equal(convolve(x, delta, method="direct"), x)
    assert torch.equal(convolve(x, delta), x)  # and auto, which takes direct for small calls
    zeros = convolve(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 0.5]), "full")
    assert zeros[0] == 0.0


def test_a_strided_signal_is_read_as_it_is(tiny_calls):
    base = torch.randn(6, 600)
    x = base[::2, ::3]
    w = torch.randn(9)
    got = convolve(x, w, method="direct")
    np.testing.assert_allclose(
        got.numpy(), reference(x.double(), w.double(), "same"), rtol=0, atol=1e-5
    )
    assert tiny_calls


def test_nan_stays_within_the_kernels_reach(tiny_calls):
    x = torch.randn(2, 200)
    x[1, 100] = float("nan")
    x[0, 10] = float("inf")
    w = torch.rand(7) + 0.1
    y = convolve(x, w, method="direct")
    assert tiny_calls
    assert torch.isnan(y[1, 97:104]).all() and torch.isfinite(y[1, :97]).all()
    assert torch.isfinite(y[1, 104:]).all()
    assert torch.isposinf(y[0, 7:14]).all() and torch.isfinite(y[0, 14:]).all()


def test_gradients_match_finite_differences(tiny_calls):
    x = torch.randn(2, 40, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    for mode in ("full", "same", "valid"):
        assert torch.autograd.gradcheck(
            lambda a, b, m=mode: convolve(a, b, m, method="direct"), (x, w)
        )
        assert torch.autograd.gradgradcheck(
            lambda a, b, m=mode: convolve(a, b, m, method="direct"), (x, w)
        )
    assert tiny_calls
