"""The FFT method on rows past ``_overlap.MAX_CPU_TRANSFORM`` points: overlap-save's blocks
instead of one transform a row (6-18x faster there, and its peak memory 1.2-1.7x the input's
size where one transform took 2.3-5x). Every mode and layout must still give scipy's answer,
with and without autograd, and no transform may pass the bound."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch

from diffconv_core import _overlap, choose_method, convolve
from diffconv_core.methods import estimate_costs, output_range

from .conftest import reference

_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def transform_lengths(monkeypatch):
    """The lengths of every real FFT the convolution takes."""
    lengths = []
    rfft = torch.fft.rfft

    def recording_rfft(input, n=None, *args, **kwargs):
        lengths.append(n if n is not None else input.shape[-1])
        return rfft(input, n, *args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfft", recording_rfft)
    return lengths


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
def test_rows_past_the_bound_match_scipy_in_blocks(monkeypatch, transform_lengths, mode, lead):
    # A small bound stands in for 2**20 points, so that many shapes run in a few ms.
    monkeypatch.setattr(_overlap, "MAX_CPU_TRANSFORM", 4096)
    rng = np.random.default_rng(len(lead) + len(mode))
    x = rng.standard_normal((*lead, 20_000))
    w = rng.standard_normal(31)
    y = convolve(torch.from_numpy(x), torch.from_numpy(w), mode, method="fft")
    np.testing.assert_allclose(y.numpy(), reference(x, w, mode), rtol=1e-10, atol=1e-10)
    assert transform_lengths and max(transform_lengths) <= 4096


def test_rows_within_the_bound_keep_one_transform(monkeypatch, transform_lengths):
    monkeypatch.setattr(_overlap, "MAX_CPU_TRANSFORM", 4096)
    x, w = torch.randn(2, 3000, dtype=torch.float64), torch.randn(31, dtype=torch.float64)
    y = convolve(x, w, method="fft")
    assert set(transform_lengths) == {_overlap.range_fft_length(3000, 31, 15, 3015, x.device)}
    np.testing.assert_allclose(y.numpy(), reference(x, w, "same"), atol=1e-10)


def test_gradients_past_the_bound_match_the_direct_sums(monkeypatch, transform_lengths):
    monkeypatch.setattr(_overlap, "MAX_CPU_TRANSFORM", 4096)
    torch.manual_seed(0)
    x = torch.randn(2, 12_000, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 63, dtype=torch.float64, requires_grad=True)  # a kernel per row
    g = torch.randn(2, 12_000, dtype=torch.float64)
    grads = {}
    for method in ("fft", "direct"):
        y = convolve(x, w, method=method)
        grads[method] = torch.autograd.grad(y, (x, w), g)
        if method == "fft":
            assert max(transform_lengths) <= 4096
    for ours, expected in zip(grads["fft"], grads["direct"], strict=True):
        torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)


def test_the_real_bound_on_one_long_row(transform_lengths):
    # Just past 2**20 points: one transform would be 1,049,760 points long.
    rng = np.random.default_rng(7)
    x = rng.standard_normal(_overlap.MAX_CPU_TRANSFORM + 3).astype(np.float32)
    w = np.hanning(255).astype(np.float32)
    y = convolve(torch.from_numpy(x), torch.from_numpy(w), method="fft")
    expected = scipy.signal.oaconvolve(x.astype(np.float64), w.astype(np.float64), mode="same")
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=2e-4)
    assert max(transform_lengths) <= _overlap.MAX_CPU_TRANSFORM


@pytest.mark.parametrize(
    "T, K, blocks",
    [
        (1 << 20, 255, True),  # 1,049,760 points for "same"
        ((1 << 20) - 200, 255, False),  # 1,048,376 points: one transform
        (1 << 22, 1 << 19, True),  # blocks of 2**20 points
        (1 << 22, (1 << 19) + 1, False),  # the blocks would pass the bound themselves
        (1 << 20, 1 << 20, False),  # one block: the transform itself
    ],
)
def test_which_rows_go_in_blocks(T, K, blocks):
    lo, hi = output_range(T, K, "same")
    assert _overlap.transforms_in_blocks(T, K, lo, hi, "cpu") is blocks
    assert _overlap.transforms_in_blocks(T, K, lo, hi, "cuda") is False


@pytest.mark.parametrize("grad", [False, True])
def test_the_model_never_names_fft_for_its_blocks(grad):
    for B, T, K in [(1, 1 << 20, 255), (4, 1 << 22, 4095), (1, 1 << 24, 1023)]:
        costs = estimate_costs(B, T, K, "same", "cpu", grad, True, True)
        assert costs["fft"] > costs["overlap"]
        assert choose_method((B, T), (K,), requires_grad=grad) != "fft"
    # Within the bound the FFT keeps its own price: 4 x 480,000 with 16,383 taps.
    costs = estimate_costs(4, 480_000, 16_383, "same", "cpu")
    assert costs["fft"] != costs["overlap"] + 1.0


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's VmHWM")
def test_peak_memory_of_one_long_row_stays_under_twice_its_size():
    # bench_memory.py in a fresh process: one 64 MiB row (its table's size: blocks' work
    # arrays are a fixed few MiB, 2.2x a 16 MiB row's size), the FFT method's peak RSS above
    # what it held before, output included. One transform peaked at 5.0x.
    done = subprocess.run(
        [sys.executable, str(_ROOT / "benchmarks" / "bench_memory.py"), "--one"]
        + ["1", str(1 << 24), "255", "fft", "--device", "cpu"],
        capture_output=True,
        text=True,
        check=True,
    )
    ratio = json.loads(done.stdout.split()[-1])
    assert 1.0 <= ratio < 2.0, done.stdout
