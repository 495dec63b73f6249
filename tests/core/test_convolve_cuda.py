"""CUDA variants of the parity, gradient, non-finite and dtype tests (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import diffconv_core

from .conftest import (
    BROADCAST_PATTERNS,
    METHODS,
    MODE_PADDINGS,
    MODES,
    PADDINGS,
    check_locality,
    check_parity,
    make_pair,
    relative_error,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICE = "cuda"
SIZES = [(9, 3), (10, 4), (4, 7), (3, 8), (1, 4), (6, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_parity_cuda(mode, method, dtype):
    # float32 at 1e-5 also rules out TF32 convolutions/matmuls sneaking in on the GPU.
    for lead_x, lead_w, name in BROADCAST_PATTERNS:
        for seed, (T, K) in enumerate(SIZES):
            x, w = make_pair(lead_x, lead_w, T, K, dtype=dtype, device=DEVICE, seed=seed)
            check_parity(x, w, mode, "zeros", method, correlate=bool(seed % 2), extra=name)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("padding", PADDINGS[1:])
def test_padding_parity_cuda(padding, method):
    for seed, (T, K) in enumerate([(9, 3), (3, 8), (1, 5), (4, 17), (2000, 41)]):
        x, w = make_pair((2, 3), (3,), T, K, dtype=torch.float32, device=DEVICE, seed=seed)
        for mode in ("same", "full"):
            check_parity(x, w, mode, padding, method, correlate=bool(seed % 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("method", METHODS)
def test_long_signals_cuda(method, dtype):
    for seed, (T, K) in enumerate([(50_000, 31), (20_000, 256), (8192, 1023), (60, 900)]):
        x, w = make_pair((2,), (), T, K, dtype=dtype, device=DEVICE, seed=seed)
        for mode in MODES:
            check_parity(x, w, mode, "zeros", method, correlate=bool(seed % 2))
        x, w = make_pair((3,), (3,), T, K, dtype=dtype, device=DEVICE, seed=seed)
        check_parity(x, w, "same", "zeros", method, correlate=False, extra="per-signal")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("method", METHODS)
def test_half_types_cuda(method, dtype):
    # Power-of-two sizes (cuFFT takes half types) and others (it refuses them: float32 inside).
    for seed, (T, K) in enumerate([(256, 16), (1000, 33), (4096, 64), (777, 12)]):
        x, w = make_pair((2,), (), T, K, dtype=dtype, device=DEVICE, seed=seed)
        for mode in MODES:
            check_parity(x, w, mode, "zeros", method, correlate=False)
        check_parity(x, w, "same", "reflect", method, correlate=True)


@pytest.mark.parametrize("corr", [False, True], ids=["convolve", "correlate"])
@pytest.mark.parametrize("mode,padding", MODE_PADDINGS)
@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_cuda(method, mode, padding, corr):
    func = diffconv_core.correlate if corr else diffconv_core.convolve

    def f(x, w):
        return func(x, w, mode, padding=padding, method=method)

    for seed, (xs, ws) in enumerate([((3, 1, 5), (2, 3)), ((2, 3), (5,))]):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(*xs, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
        w = torch.randn(*ws, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
        config = f"{func.__name__} {xs} {ws} {mode} {padding} {method}"
        kw = dict(eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)
        assert gradcheck(f, (x, w), **kw), config
        assert gradgradcheck(f, (x, w), **kw), config


@pytest.mark.parametrize("method", METHODS)
def test_backward_avoids_cudnn_weight_gradient(method):
    # The issue: never autograd through cuDNN's depthwise weight gradient (~25x slower than an
    # FFT path). A backward that did would run aten::convolution_backward.
    from torch.profiler import ProfilerActivity, profile

    for lead_w, K in [((8,), 255), ((), 31), ((8,), 3)]:
        x, w = make_pair((8,), lead_w, 20_000, K, dtype=torch.float32, device=DEVICE)
        x.requires_grad_()
        w.requires_grad_()
        out = diffconv_core.convolve(x, w, "same", method=method)
        grad = torch.randn_like(out)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            out.backward(grad)
            torch.cuda.synchronize()
        names = {event.key for event in prof.key_averages()}
        offending = sorted(n for n in names if "convolution_backward" in n)
        assert not offending, (method, lead_w, K, offending)


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("mode,padding", MODE_PADDINGS)
@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_locality_cuda(method, mode, padding, value):
    gen = torch.Generator().manual_seed(0)
    for T, K, positions in [(40, 7, [(1, 0), (0, 20)]), (40, 6, [(1, 39)])]:
        x = torch.randn(2, T, generator=gen, dtype=torch.float64)
        w = torch.rand(K, generator=gen, dtype=torch.float64) + 0.1
        for r, i in positions:
            x[r, i] = value
        for corr in (False, True):
            check_locality(x, w, positions, mode, padding, method, corr, device=DEVICE)


@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_locality_long_cuda(method):
    gen = torch.Generator().manual_seed(1)
    T = 60_000
    positions = [(0, 0), (0, 4095), (0, 30_000), (1, 59_999)]
    x = torch.randn(2, T, generator=gen, dtype=torch.float64)
    w = torch.randn(129, generator=gen, dtype=torch.float64)
    for (r, i), v in zip(positions, ["nan", "inf", "-inf", "nan"], strict=True):
        x[r, i] = float(v)
    for mode, padding in [("same", "zeros"), ("full", "reflect"), ("valid", "zeros")]:
        check_locality(x, w, positions, mode, padding, method, corr=False, device=DEVICE)


def test_choose_method_for_cuda_tensors():
    x = torch.randn(4, 10_000, device=DEVICE)
    w = torch.randn(65, device=DEVICE)
    got = diffconv_core.choose_method(x.shape, w.shape, device=x.device, dtype=x.dtype)
    assert got in {"direct", "fft", "overlap"}
    out = diffconv_core.convolve(x, w, method="auto")
    assert out.device == x.device
    explicit = diffconv_core.convolve(x, w, method=got)
    assert relative_error(out, explicit.cpu().double().numpy()) <= 1e-5, got
    check_parity(x, w, "same", "zeros", "auto", correlate=False)


def test_magnitudes_read_ahead_on_cuda_match_the_cpu():
    # CUDA's read-ahead takes the extremes through pinned memory and an event: the values
    # read after further work was queued are the CPU's (NaN, Inf, mixed dtypes, empty).
    from diffconv_core import _nonfinite

    a = torch.tensor([1.0, -7.5, 2.0], dtype=torch.float64)
    b = torch.tensor([3.0, float("-inf")], dtype=torch.float32)
    c = torch.tensor([float("nan"), 1.0], dtype=torch.float32)
    empty = torch.empty(0)
    tensors = [a, b, c, empty]
    read = _nonfinite._magnitudes_later(*(t.to(DEVICE) for t in tensors))
    torch.randn(1 << 20, device=DEVICE).sum()  # work queued after the reductions
    got = read()
    want = _nonfinite._magnitudes(*tensors)
    assert got[:2] == want[:2] == [7.5, float("inf")]
    assert got[2] != got[2] and want[2] != want[2]  # NaN
    assert got[3] == want[3] == 0.0
