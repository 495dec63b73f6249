"""dtype behaviour: never downcast, torch's promotion, half types computed in float32 on CPU."""

from __future__ import annotations

import itertools

import pytest
import torch

import diffconv_core

from .conftest import METHODS, MODES, TOLERANCE, check_parity, make_pair

pytestmark = pytest.mark.usefixtures("single_thread")

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DTYPE_IDS = [str(d).removeprefix("torch.") for d in DTYPES]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_same_dtype_in_and_out(mode, method, dtype):
    # Sizes that are not powers of two (torch's CPU FFT refuses half types at any size).
    for seed, (lead_x, lead_w, T, K) in enumerate(
        [((3,), (), 100, 7), ((2, 2), (2,), 77, 12), ((2,), (), 1500, 33)]
    ):
        x, w = make_pair(lead_x, lead_w, T, K, dtype=dtype, seed=seed)
        # check_parity: output dtype == input dtype, error vs the float64 reference of the
        # very same (rounded) inputs within TOLERANCE[dtype].
        check_parity(x, w, mode, "zeros", method, correlate=bool(seed % 2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("padding", ["reflect", "symmetric", "replicate", "circular"])
def test_half_types_with_padding(padding, dtype):
    x, w = make_pair((2,), (), 50, 9, dtype=dtype, seed=1)
    for method in METHODS:
        check_parity(x, w, "same", padding, method, correlate=False)
        check_parity(x, w, "full", padding, method, correlate=True)


@pytest.mark.parametrize(
    "signal_dtype,kernel_dtype",
    [(a, b) for a, b in itertools.product(DTYPES, DTYPES) if a != b],
    ids=[
        f"{a}-{b}"
        for a, b in itertools.product(DTYPE_IDS, DTYPE_IDS)
        if a != b  # same order as the values
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_mixed_dtypes_promote_as_torch(method, signal_dtype, kernel_dtype):
    expected = torch.promote_types(signal_dtype, kernel_dtype)
    x, _ = make_pair((2,), (), 60, 5, dtype=signal_dtype, seed=3)
    _, w = make_pair((2,), (), 60, 5, dtype=kernel_dtype, seed=4)
    for mode in MODES:
        out = diffconv_core.convolve(x, w, mode, method=method)
        assert out.dtype == expected, (method, mode, signal_dtype, kernel_dtype, out.dtype)
        # check_parity asserts the promoted dtype and the promoted dtype's tolerance.
        check_parity(x, w, mode, "zeros", method, correlate=(mode == "full"))


@pytest.mark.parametrize("method", METHODS)
def test_float64_is_not_computed_in_float32(method):
    # A float64 result at 1e-10 rules out a float32 detour (which would be ~1e-7).
    x, w = make_pair((2,), (), 1000, 101, seed=5)
    check_parity(x, w, "same", "zeros", method, correlate=False)
    x2 = x + 1e6  # large offset: float32 arithmetic would lose the small variations
    check_parity(x2, w, "same", "reflect", method, correlate=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("method", METHODS)
def test_gradients_keep_input_dtypes(method, dtype):
    x64, w64 = make_pair((2,), (), 40, 6, seed=6)
    x = x64.to(dtype).requires_grad_()
    w = w64.to(dtype).requires_grad_()
    out = diffconv_core.convolve(x, w, "same", method=method)
    g = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)
    out.backward(g.to(out.dtype))
    assert x.grad.dtype == dtype and w.grad.dtype == dtype, (x.grad.dtype, w.grad.dtype)
    # Reference gradients: float64 on the same rounded inputs (gradcheck covers float64).
    xr = x.detach().double().requires_grad_()
    wr = w.detach().double().requires_grad_()
    diffconv_core.convolve(xr, wr, "same", method=method).backward(g.to(out.dtype).double())
    tol = TOLERANCE[dtype]
    for got, ref, name in [(x.grad, xr.grad, "signal"), (w.grad, wr.grad, "kernel")]:
        err = (got.double() - ref).abs().max() / ref.abs().max()
        # The kernel gradient sums over the batch and time: allow a few roundings more.
        assert err <= 4 * tol, f"{method} {dtype} {name} gradient error {err:.3g}"


@pytest.mark.parametrize("method", METHODS)
def test_mixed_dtype_gradients(method):
    x64, w64 = make_pair((3,), (), 30, 5, seed=7)
    x = x64.float().requires_grad_()
    w = w64.clone().requires_grad_()
    out = diffconv_core.correlate(x, w, "full", method=method)
    assert out.dtype == torch.float64
    out.sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float64
    xr = x.detach().double().requires_grad_()
    wr = w.detach().clone().requires_grad_()
    diffconv_core.correlate(xr, wr, "full", method=method).sum().backward()
    assert torch.allclose(x.grad.double(), xr.grad, rtol=1e-6, atol=1e-6)
    assert torch.allclose(w.grad, wr.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "lead_x, lead_w, T, K",
    [
        ((3,), (), 2000, 31),
        ((2,), (2,), 2000, 31),
        ((2,), (), 3000, 1100),
        ((2,), (2,), 3000, 1100),
        ((1,), (3,), 3000, 1100),
    ],
    ids=["shared", "per-row", "long-shared", "long-per-row", "one-signal-many-kernels"],
)
def test_float32_stays_float32_under_cpu_autocast(autocast_dtype, method, lead_x, lead_w, T, K):
    # autocast lowers the float32 operands of conv1d/conv2d/matmul to bfloat16 or float16 and
    # still returns float32: the direct paths through those ops (oneDNN frames up to 1,024
    # taps, conv1d beyond) must keep float32 numerics, forward and backward.
    x, w = make_pair(lead_x, lead_w, T, K, dtype=torch.float32, seed=K)
    with torch.autocast("cpu", dtype=autocast_dtype):
        check_parity(x, w, "same", "zeros", method, correlate=False)
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        out = diffconv_core.convolve(xg, wg, "same", method=method)
        out.backward(torch.ones_like(out))
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    out64 = diffconv_core.convolve(x64, w64, "same", method=method)
    out64.backward(torch.ones_like(out64))
    for got, expected in ((xg.grad, x64.grad), (wg.grad, w64.grad)):
        scale = expected.abs().max().item()
        assert (got.double() - expected).abs().max().item() <= 1e-5 * scale
