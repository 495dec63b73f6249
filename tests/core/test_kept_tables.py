"""Tables kept between calls (index tables, twiddles; ``_workspace.kept_tensors``) serve
every later call whatever mode made them: inference mode, no_grad, or with gradients."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from diffconv_core import _toeplitz, convolve, correlate

from .conftest import reference


def test_index_tables_first_made_under_inference_mode_serve_later_gradients():
    # The cached index and twiddle tables, first built under torch.inference_mode(), were
    # inference tensors; the same shape with gradients then failed ("Inference tensors cannot
    # be saved for backward"), the gather's index being saved for its backward.
    from diffconv_core import _framed_conv, _half_fft

    cpu = torch.device("cpu")
    tables = {
        _framed_conv._filter_taps: (3, 16, cpu),
        _framed_conv._filters_index: (21, 0, 3, 1, cpu),
        _toeplitz._toeplitz_index: (31, 16, cpu, 3),
        _half_fft._kept_twiddles: (4096, torch.float32),
    }
    for table, args in tables.items():
        table.cache_clear()
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
    for table in tables:
        table.cache_clear()
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
