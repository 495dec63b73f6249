"""Tables kept between calls (index tables, twiddles; ``_workspace.kept_tensors``) serve
every later call whatever mode made them: inference mode, no_grad, or with gradients."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffconv_core import _framed_conv, _half_fft, _toeplitz, convolve, correlate

from .conftest import reference, same_mode_gradients

#: Every table kept between calls, with arguments that build one.
_CPU = torch.device("cpu")
TABLES = {
    _framed_conv._filter_taps: (3, 16, _CPU),
    _framed_conv._filters_index: (21, 0, 3, 1, _CPU),
    _toeplitz._toeplitz_index: (31, 16, _CPU, 3),
    _half_fft._kept_twiddles: (4096, torch.float32, _CPU),
}


def _clear_tables() -> None:
    for table in TABLES:
        table.cache_clear()


def test_index_tables_first_made_under_inference_mode_serve_later_gradients():
    # The cached index and twiddle tables, first built under torch.inference_mode(), were
    # inference tensors; the same shape with gradients then failed ("Inference tensors cannot
    # be saved for backward"), the gather's index being saved for its backward.
    _clear_tables()
    for table, args in TABLES.items():
        with torch.inference_mode():
            assert not table(*args).is_inference(), table.__name__
    gen = torch.Generator().manual_seed(1)
    double = torch.float64
    cases = [  # (signal, kernel, method): framed convolutions, GEMMs, half-length FFTs
        (torch.randn(2000, generator=gen), torch.randn(21, generator=gen), "direct"),
        (torch.randn(2, 44100, generator=gen), torch.randn(31, generator=gen), "direct"),
        (
            torch.randn(2, 44100, generator=gen, dtype=double),
            torch.randn(31, generator=gen, dtype=double),
            "direct",
        ),
        (torch.randn(60000, generator=gen), torch.randn(4095, generator=gen), "fft"),
    ]
    _clear_tables()
    with torch.inference_mode():
        for x, w, method in cases:
            convolve(x, w, method=method)
    grads = [(False, True), (True, False), (True, True)]  # the recorded and custom paths
    for (x, w, method), (to_x, to_w) in itertools.product(cases, grads):
        signal, kernel = x.clone().requires_grad_(to_x), w.clone().requires_grad_(to_w)
        out = convolve(signal, kernel, method=method)
        np.testing.assert_allclose(out.detach(), reference(x, w), rtol=0, atol=1e-3)
        out.sum().backward()
        if to_x:  # the kernel's taps summed over each sample's reach
            expected = correlate(torch.ones_like(x), w)
            torch.testing.assert_close(signal.grad, expected, rtol=1e-5, atol=1e-3)
        if to_w:  # tap k: the samples x[n + lo - k] summed over the outputs n < T
            T, K = x.shape[-1], w.shape[-1]
            lo = (K - 1) // 2
            sums = np.concatenate([[0.0], np.cumsum(x.double().numpy().reshape(-1, T), -1).sum(0)])
            first, last = np.clip(lo - np.arange(K), 0, T), np.clip(T + lo - np.arange(K), 0, T)
            np.testing.assert_allclose(kernel.grad, sums[last] - sums[first], rtol=1e-4, atol=1e-2)


def test_tables_first_made_inside_a_default_device_context_serve_later_calls():
    # The half-length FFT's twiddles followed torch's default device rather than the
    # operands': one call inside `with torch.device("meta")` (building a model on the meta
    # device) failed, and kept its meta table, so the same call failed after the context too
    # ("Tensor on device meta is not on the expected device cpu!").
    gen = torch.Generator().manual_seed(2)
    cases = [  # (signal, kernel, method): half-length FFTs, framed convolutions, GEMMs
        (torch.randn(1, 10000, generator=gen), torch.randn(31, generator=gen), "fft"),
        (torch.randn(60000, generator=gen), torch.randn(4095, generator=gen), "fft"),
        (torch.randn(2000, generator=gen), torch.randn(21, generator=gen), "direct"),
        (torch.randn(2, 44100, generator=gen), torch.randn(31, generator=gen), "direct"),
    ]
    _clear_tables()
    for x, w, method in cases:
        with torch.device("meta"):
            inside = convolve(x, w, method=method)
        after = convolve(x, w, method=method)
        for out in (inside, after):
            assert out.device == x.device
            np.testing.assert_allclose(out, reference(x, w), rtol=0, atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    # Sizes drawn from those where the CPU paths change hands, not hypothesis's small ones.
    T=st.sampled_from([1, 5, 64, 700, 2000, 3000, 20000]),
    K=st.sampled_from([1, 3, 12, 13, 21, 31, 64, 255, 1023]),
    method=st.sampled_from(["direct", "fft", "overlap", "auto"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    layout=st.sampled_from(["contiguous", "transposed", "strided"]),
    grads=st.sampled_from([(False, True), (True, False), (True, True)]),
    first=st.sampled_from(["inference_mode", "no_grad", "grad"]),
    seed=st.integers(0, 2**16),
)
def test_random_calls_after_another_mode_give_the_reference_and_its_gradients(
    T, K, method, dtype, layout, grads, first, seed
):
    # Each call's tables and work arrays first made in another autograd mode (the helper's
    # fuzzing found the inference-mode one), then a call with gradients, its values and
    # both gradients against float64 references. Sizes reach every CPU path: tiny calls,
    # framed convolutions, GEMMs, shifted sums, one-chunk and kept-array FFTs, blocks.
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(T, 2, dtype=torch.float64, generator=gen)
    x = {
        "contiguous": rows.t().contiguous(),
        "transposed": rows.t(),
        "strided": torch.randn(2, 2 * T, dtype=torch.float64, generator=gen)[:, ::2],
    }[layout].to(dtype)
    w = torch.randn(K, dtype=torch.float64, generator=gen).to(dtype)
    _clear_tables()
    context = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad}.get(first)
    with context() if context else torch.enable_grad():
        convolve(x, w.clone().requires_grad_(first == "grad"), method=method)
    signal = x.detach().clone().requires_grad_(grads[0])
    kernel = w.clone().requires_grad_(grads[1])
    out = convolve(signal, kernel, method=method)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    expected = reference(x, w)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(out.detach().double(), expected, rtol=0, atol=tolerance * scale)
    g = torch.randn(out.shape, dtype=torch.float64, generator=gen).to(dtype)
    out.backward(g)
    want_x, want_w = same_mode_gradients(x, w, g)
    for got, want, needed in ((signal.grad, want_x, grads[0]), (kernel.grad, want_w, grads[1])):
        if needed:
            bound = tolerance * max(1.0, float(np.abs(want).max())) * max(1, K, T) ** 0.5
            np.testing.assert_allclose(got.double(), want, rtol=0, atol=bound)
