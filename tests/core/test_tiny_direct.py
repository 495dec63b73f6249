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
    # "valid" with the kernel longer swaps the two: a batch of signals becomes kernels.
    swapped = mode == "valid" and K > shape[-1]
    per_row = swapped and len(shape) > 1
    products = int(np.prod(shape[:-1])) * expected.shape[-1] * (shape[-1] if swapped else K)
    small = products <= _direct.tiny_products(x.element_size())
    assert bool(tiny_calls) == (small and not per_row)


def test_taken_only_for_small_calls_of_one_kernel(tiny_calls):
    # Up to 124 KiB of unfolded products: 31,744 in float32, 15,872 in float64.
    x = torch.randn(1, 1024)
    convolve(x, torch.randn(31), method="direct")  # 31,744 products
    assert tiny_calls == [(1, 1024)]
    tiny_calls.clear()
    convolve(torch.randn(1, 1025), torch.randn(31), method="direct")  # one output more
    convolve(x.double(), torch.randn(31, dtype=torch.float64), method="direct")
    convolve(torch.randn(4, 1024), torch.randn(4, 31), method="direct")  # a kernel per row
    assert tiny_calls == []
    convolve(x.double(), torch.randn(15, dtype=torch.float64), method="direct")
    convolve(x, torch.randn(15, dtype=torch.float64), method="direct")  # promoted first
    assert tiny_calls == [(1, 1024), (1, 1024)]


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("shape, K", [((1, 1024), 31), ((3, 100), 7), ((2, 3, 50), 12)])
def test_kernel_gradient_of_a_small_call_is_one_native_convolution(
    monkeypatch, dtype, mode, shape, K
):
    # The kernel's gradient: lagged products of the output gradient with the signal, summed
    # over every row, by the native convolution's weight gradient (tiny_lagged_products) in
    # the direct method's Function (which convolve takes for a small call where the operands
    # need the careful path: NaN/Inf, or sums that could overflow).
    from diffconv_core.methods import output_range

    taken = []
    real = _direct.tiny_lagged_products

    def counted(g, x, lo, taps):
        lags = real(g, x, lo, taps)
        taken.append(lags is not None)
        return lags

    monkeypatch.setattr(_direct, "tiny_lagged_products", counted)
    rng = np.random.default_rng(K)
    x = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
    w = torch.from_numpy(rng.standard_normal(K)).to(dtype).requires_grad_()
    y = _direct.direct_range(x, w, *output_range(shape[-1], K, mode))
    g = torch.from_numpy(rng.standard_normal(tuple(y.shape))).to(dtype)
    (grad_w,) = torch.autograd.grad(y, w, g)
    (through_convolve,) = torch.autograd.grad(convolve(x, w, mode, method="direct"), w, g)
    torch.testing.assert_close(through_convolve, grad_w)
    del taken[1:]
    # d/dw[j] of sum(g * y) is the sum over rows of g correlated with x at lag j.
    x64, g64 = x.double().numpy().reshape(-1, shape[-1]), g.double().numpy()
    g64 = g64.reshape(-1, g64.shape[-1])
    expected = np.zeros(K)
    for j in range(K):
        e = np.zeros(K)
        e[j] = 1.0
        responses = reference(torch.from_numpy(x64), torch.from_numpy(e), mode)
        expected[j] = float((responses * g64).sum())
    scale = np.abs(g64).sum() * np.abs(x64).max()
    eps = torch.finfo(dtype).eps
    np.testing.assert_allclose(grad_w.double().numpy(), expected, rtol=0, atol=4 * eps * scale)
    products = g64.size * K  # float64 takes half as many: 1 x 1,024 with 31 taps is past it
    assert taken == [products <= _direct.tiny_products(x.element_size())]


def test_a_small_call_skips_the_pick_and_keeps_a_finite_output(monkeypatch, tiny_calls):
    # Small calls are all host time: auto and direct run the one convolution straight away,
    # and only a non-finite output sends them down the careful path (the pick, the scan).
    from diffconv_core import convolution

    picks = []
    pick = convolution.pick_method

    def counted_pick(*args):
        picks.append(args[:3])
        return pick(*args)

    monkeypatch.setattr(convolution, "pick_method", counted_pick)
    x, w = torch.randn(2, 300), torch.rand(9)
    for method in ("auto", "direct"):
        got = convolve(x, w, method=method)
        np.testing.assert_allclose(
            got.numpy(), reference(x.double(), w.double(), "same"), atol=1e-5
        )
    assert picks == [] and tiny_calls == [(2, 300), (2, 300)]
    x[1, 100] = float("nan")
    y = convolve(x, w)
    assert picks == [(2, 300, 9)]  # the careful path ran after the one convolution
    assert torch.isnan(y[1, 96:105]).all() and torch.isfinite(y[1, :96]).all()
    assert torch.isfinite(y[0]).all()
    with torch.enable_grad():
        convolve(x, w.requires_grad_())  # recorded: the pick as before
    assert len(picks) == 2


def _recorded_by(y: torch.Tensor) -> set[str]:
    # The autograd nodes within two steps of the output.
    nodes, names = [y.grad_fn], set()
    for _ in range(2):
        names |= {type(node).__name__ for node in nodes if node is not None}
        nodes = [n for node in nodes if node is not None for n, _ in node.next_functions]
    return names


def test_a_recorded_small_call_is_recorded_by_autograd_when_its_output_is_finite():
    # With a graph a small call is conv2d recorded by autograd (its backward a C++ node),
    # kept when its output is finite (no scan of the operands first); else the careful path.
    x = torch.randn(2, 100, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert "ConvolutionBackward0" in _recorded_by(convolve(x, w))
    assert torch.autograd.gradcheck(lambda a, b: convolve(a, b, "full"), (x, w))
    assert torch.autograd.gradgradcheck(lambda a, b: convolve(a, b, "same"), (x, w))
    # Operands near the dtype's limit whose direct sums stay finite: recorded as they are,
    # values and both gradients exactly the ordinary operands' scaled by the same powers
    # of two (which the careful path's scaling would give).
    scale = 2.0**1010
    huge = (x.detach() * scale).requires_grad_()
    g = torch.randn(2, 100, dtype=torch.float64)
    y_huge = convolve(huge, w)
    assert "ConvolutionBackward0" in _recorded_by(y_huge)
    grad_huge, grad_w_huge = torch.autograd.grad(y_huge, (huge, w), g)
    y, (grad_x, grad_w) = convolve(x, w), torch.autograd.grad(convolve(x, w), (x, w), g)
    assert torch.equal(y_huge.detach(), y.detach() * scale)
    assert torch.equal(grad_huge, grad_x) and torch.equal(grad_w_huge, grad_w * scale)
    # Sums that overflow (every sample 2**1021, 13 unit taps: 13 * 2**1021 > max, the first
    # output's 7 terms not): the careful path, whose scaling gives the true overflow, Inf,
    # where it is one, and finite gradients of the finite outputs.
    flat = torch.full((2, 100), 2.0**1021, dtype=torch.float64, requires_grad=True)
    ones = torch.full((13,), 1.0, dtype=torch.float64, requires_grad=True)
    y_flat = convolve(flat, ones)
    assert "ConvolutionBackward0" not in _recorded_by(y_flat)
    assert torch.isinf(y_flat[:, 6:-6]).all()
    assert torch.equal(y_flat[:, 0].detach(), torch.full((2,), 7 * 2.0**1021, dtype=torch.float64))
    grad_flat, grad_ones = torch.autograd.grad(y_flat[:, 0].sum(), (flat, ones))
    assert torch.equal(grad_flat[:, :7], torch.ones(2, 7, dtype=torch.float64))
    # the first output's terms: taps 0-6, each over one sample of each row
    want = torch.zeros(13, dtype=torch.float64)
    want[:7] = 2 * 2.0**1021
    assert torch.equal(grad_ones, want)
    nan = x.detach().clone()
    nan[0, 50] = float("nan")
    y = convolve(nan.requires_grad_(), w)  # NaN kept local, its outputs constants
    assert "ConvolutionBackward0" not in _recorded_by(y)
    (grad_w,) = torch.autograd.grad(y[1].sum() + y[0, :40].sum(), w)
    assert torch.isfinite(grad_w).all()


@pytest.mark.parametrize("case", ["nan", "mixed dtypes", "float16"])
def test_one_tap_over_transposed_rows_has_gradients(case):
    # With one tap the native weight gradient read the signal itself, stored transposed, and
    # its view raised ("view size is not compatible with input tensor's size and stride")
    # wherever the careful path's Function ran: NaN samples, mixed or half dtypes.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=gen, dtype=torch.float64).t()  # (3, 20), time stride 3
    w = torch.randn(1, generator=gen, dtype=torch.float64)
    if case == "nan":
        x[1, 4] = float("nan")
    elif case == "mixed dtypes":
        w = w.float()
    else:
        x, w = x.half(), w.half()
    for mode in ("same", "full", "valid"):
        grads = []
        for signal in (x, x.contiguous()):
            xs, ws = signal.detach().requires_grad_(True), w.detach().clone().requires_grad_(True)
            convolve(xs, ws, mode).nan_to_num(0.0).sum().backward()
            grads.append((xs.grad, ws.grad))
        (gx, gw), (cx, cw) = grads
        assert torch.equal(gx, cx) and torch.allclose(gw, cw, equal_nan=True), mode
