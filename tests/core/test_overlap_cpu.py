"""Overlap-save without autograd runs a chunk of blocks at a time into the output: every
chunk layout (down to one block a chunk, with a partial last block) and broadcast pattern
must give scipy's answer, call after call."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from diffconv_core import _overlap, convolve

from .conftest import saved_by_functions

PATTERNS = [
    ((2, 3), ()),  # one kernel for a batch
    ((), (3,)),  # kernels that add a batch dim the signal lacks
    ((2, 1), (3,)),  # both broadcast
    ((3,), (3,)),  # a kernel per signal
]


@pytest.mark.parametrize("chunk", [1, 4096, 1 << 20], ids=["block", "chunks", "whole"])
@pytest.mark.parametrize("lead_x, lead_w", PATTERNS)
@pytest.mark.parametrize("T, K", [(5000, 31), (3001, 64), (2048, 257), (700, 1000)])
def test_chunks_match_scipy(monkeypatch, chunk, lead_x, lead_w, T, K):
    monkeypatch.setattr(_overlap, "CHUNK_SAMPLES", chunk)
    rng = np.random.default_rng(T + K)
    x = rng.standard_normal((*lead_x, T))
    w = rng.standard_normal((*lead_w, K))
    xb, wb = np.broadcast_arrays(x[..., :1], w[..., :1])
    for mode in ("full", "same", "valid"):
        expected = np.stack(
            [
                scipy.signal.convolve(
                    np.broadcast_to(x, (*xb.shape[:-1], T)).reshape(-1, T)[i],
                    np.broadcast_to(w, (*wb.shape[:-1], K)).reshape(-1, K)[i],
                    mode=mode,
                    method="direct",
                )
                for i in range(xb[..., 0].size)
            ]
        ).reshape(*xb.shape[:-1], -1)
        for _ in range(2):  # a second call must not depend on what the first left behind
            got = convolve(torch.from_numpy(x), torch.from_numpy(w), mode, method="overlap")
            np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [1, 4096, 1 << 20], ids=["block", "chunks", "whole"])
@pytest.mark.parametrize("lead_x, lead_w", PATTERNS)
@pytest.mark.parametrize("T, K", [(5000, 31), (3001, 64), (2048, 257)])
def test_recorded_chunks_match_the_fft_method_forward_and_backward(
    monkeypatch, chunk, lead_x, lead_w, T, K
):
    # With autograd the blocks go a chunk at a time too (all at once they held 10-16x the
    # input through the backward pass): values and both gradients as the FFT method's.
    monkeypatch.setattr(_overlap, "CHUNK_SAMPLES", chunk)
    gen = torch.Generator().manual_seed(T + K)
    for mode in ("full", "same", "valid"):
        x = torch.randn(*lead_x, T, generator=gen, dtype=torch.float64, requires_grad=True)
        w = torch.randn(*lead_w, K, generator=gen, dtype=torch.float64, requires_grad=True)
        got = convolve(x, w, mode, method="overlap")
        want = convolve(x, w, mode, method="fft")
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        grad = torch.randn(got.shape, generator=gen, dtype=torch.float64)
        for g_got, g_want in zip(
            torch.autograd.grad(got, (x, w), grad),
            torch.autograd.grad(want, (x, w), grad),
            strict=True,
        ):
            torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-9)


def test_recorded_blocks_are_transformed_a_chunk_at_a_time(monkeypatch):
    # No transform of the recorded path spans the whole signal's blocks (forward or
    # backward): each is one chunk's, the backward pass's half the forward pass's.
    monkeypatch.setattr(_overlap, "CHUNK_SAMPLES", 1 << 14)
    sizes = []
    real = torch.fft.rfft

    def recorded(t, *args, **kwargs):
        sizes.append(t.numel())
        return real(t, *args, **kwargs)

    x = torch.randn(2, 200_000, dtype=torch.float64, requires_grad=True)
    w = torch.randn(255, dtype=torch.float64, requires_grad=True)
    n_fft = _overlap.overlap_fft_length(255, 200_000)
    monkeypatch.setattr(torch.fft, "rfft", recorded)
    y = convolve(x, w, method="overlap")
    forward = list(sizes)
    sizes.clear()
    torch.autograd.grad(y, (x, w), torch.ones_like(y))
    assert n_fft == 2048  # 2 rows: 4 blocks a chunk forward, 2 backward
    assert max(forward) == 1 << 14, forward
    assert max(sizes) == 1 << 13, sizes
    assert len(forward) > 10 and len(sizes) > 20  # many chunks each


def test_float32_and_float64_calls_in_turn():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 20_000))
    w = rng.standard_normal(101)
    expected = scipy.signal.convolve(x, w[None], mode="same")
    for dtype, tol in ((torch.float32, 1e-3), (torch.float64, 1e-10), (torch.float32, 1e-3)):
        got = convolve(
            torch.from_numpy(x).to(dtype), torch.from_numpy(w).to(dtype), method="overlap"
        )
        assert got.dtype == dtype
        np.testing.assert_allclose(got.double().numpy(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "rows, n_blocks, cpu_blocks",
    [
        (16, 2339, 32),  # chunks of CHUNK_SAMPLES points
        (256, 130, 2),  # one chunk holds two blocks of 256 rows
        (1, 9, 512),  # one chunk
        (4096, 1, 1),
        (4, 268, 34),  # an eighth of the blocks (4 x 480,000 with 255 taps)
        (16, 100, 16),  # no fewer than MIN_CPU_BLOCKS
        (4, 200, 128),  # within two chunks' points: chunks of CHUNK_SAMPLES
    ],
)
def test_cuda_takes_few_chunks_and_the_cpu_small_ones(rows, n_blocks, cpu_blocks):
    # A chunk is ~7 launches on CUDA (host time), a cache-sized piece on the CPU, at most an
    # eighth of a signal's blocks there unless the blocks are few.
    n_fft = 2048
    cuda = _overlap.blocks_per_chunk(n_fft, rows, n_blocks, "cuda")
    cpu = _overlap.blocks_per_chunk(n_fft, rows, n_blocks, "cpu")
    assert -(-n_blocks // cuda) <= _overlap.CUDA_CHUNKS
    assert cpu == cpu_blocks
    assert cpu <= max(1, _overlap.CHUNK_SAMPLES // (n_fft * rows))
    assert cuda >= cpu


@pytest.mark.parametrize("grad", [False, True])
def test_short_outputs_get_blocks_no_longer_than_one_fft_of_them(monkeypatch, grad):
    # Blocks had a floor of 2,048 points: 200,000 rows of 8 samples with a 3-tap kernel took
    # 4.7 GB and 26 s through method="overlap" (direct: 10 MB, 0.1 s).
    sizes = []
    real = torch.fft.rfft
    monkeypatch.setattr(
        _overlap.torch.fft,
        "rfft",
        lambda a, n=None, *r, **k: sizes.append(n) or real(a, n, *r, **k),
    )
    x = torch.randn(2000, 8, dtype=torch.float64, requires_grad=grad)
    w = torch.randn(3, dtype=torch.float64, requires_grad=grad)
    out = convolve(x, w, "full", method="overlap")
    assert sizes and max(sizes) <= 16
    expected = scipy.signal.convolve(x.detach().numpy(), w.detach().numpy()[None], "full")
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("K", [3, 31, 255, 300, 400, 600, 900, 1000, 1200, 1900, 3000, 6000])
def test_cpu_blocks_are_powers_of_two_that_hold_the_kernel(K):
    # The CPU takes the power of two just above the smooth length (at most 8% longer) or the
    # one below; CUDA keeps the smooth length. Every block holds at least twice the kernel.
    smooth = _overlap.block_fft_length(K, 10_000_000, "cuda")
    block = _overlap.block_fft_length(K, 10_000_000)
    assert block & (block - 1) == 0 and block >= max(2 * K, _overlap.MIN_BLOCK_FFT)
    assert smooth / 2 < block <= 1.08 * smooth
    assert smooth == _overlap.next_fast_len(max(2048, 8 * K), 8)


def test_cpu_blocks_keep_the_smooth_length_where_no_power_of_two_holds_the_kernel():
    # 40,000 taps: 80,000-point blocks (2K, past MAX_BLOCK_FFT); 65,536 is too short and
    # 131,072 1.6x longer.
    assert _overlap.block_fft_length(40_000, 10_000_000) == 80_000


@pytest.mark.parametrize("T, K", [(20_000, 300), (20_000, 1000), (30_000, 3000), (2000, 300)])
def test_power_of_two_blocks_match_scipy(T, K):
    rng = np.random.default_rng(K)
    x, w = rng.standard_normal((2, T)), rng.standard_normal(K)
    for mode in ("full", "same", "valid"):
        got = convolve(torch.from_numpy(x), torch.from_numpy(w), mode, method="overlap")
        want = np.stack([scipy.signal.convolve(row, w, mode=mode, method="direct") for row in x])
        np.testing.assert_allclose(got.numpy(), want, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_recorded_blocks_keep_only_the_inputs_for_the_backward_pass(mode):
    # Every block's spectrum, kept from the forward pass to the backward, held 1.1-2x the
    # input; the backward pass transforms each chunk's blocks again instead.
    x = torch.randn(3, 50_000, requires_grad=True)
    w = torch.randn(255, requires_grad=True)
    out = convolve(x, w, mode, method="overlap")
    saved = saved_by_functions(out)
    assert saved, "no custom Function in the graph"
    inputs = {x.data_ptr(), w.data_ptr()}
    assert all(t.data_ptr() in inputs for t in saved), [(t.shape, t.dtype) for t in saved]


def test_vmap_batched_gradient_after_the_chunked_forward_pass():
    # A vectorized Jacobian's backward cannot go in chunks: it transforms the blocks whole,
    # computing their spectra then (the forward pass kept none).
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 300, dtype=torch.float64, generator=gen)
    w = torch.randn(17, dtype=torch.float64, generator=gen)

    def overlap(x, w):
        return convolve(x, w, method="overlap")

    def fft(x, w):
        return convolve(x, w, method="fft")

    got = torch.autograd.functional.jacobian(overlap, (x, w), vectorize=True)
    want = torch.autograd.functional.jacobian(fft, (x, w))
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
