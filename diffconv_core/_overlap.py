"""Overlap-save convolution: blocked FFTs for long signals with shorter kernels.

The zero-extended signal is cut into overlapping blocks with ``unfold`` (a view), all blocks
go through one batched ``rfft``, are multiplied by the kernel spectrum (computed once) and
inverted; the first K - 1 samples of each block, which wrapped around, are dropped. Written in
differentiable torch ops: the backward pass is blocked FFTs too, and the kernel gradient is
summed over blocks and batch in the frequency domain before one inverse FFT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffconv_core._fft import next_fast_len

# Block FFT length bounds: big enough to amortise the K - 1 overlap, small enough to stay
# in cache. Measured on CPU and CUDA by benchmarks/bench_core.py.
MIN_BLOCK_FFT = 2048
MAX_BLOCK_FFT = 1 << 16


def block_fft_length(kernel_length: int, output_length: int) -> int:
    """The FFT length of one overlap-save block for a kernel of ``kernel_length`` taps.

    Example:
        >>> block_fft_length(31, 10_000_000)
        2048
        >>> block_fft_length(4095, 10_000_000)
        32768
    """
    target = max(MIN_BLOCK_FFT, 8 * kernel_length)
    # no point in blocks much longer than the output itself
    target = min(target, max(MIN_BLOCK_FFT, output_length + kernel_length - 1))
    return next_fast_len(min(max(target, 2 * kernel_length), max(MAX_BLOCK_FFT, 2 * kernel_length)))


def overlap_range(
    x: torch.Tensor, w: torch.Tensor, lo: int, hi: int, block_fft: int | None = None
) -> torch.Tensor:
    """Samples ``lo <= n < hi`` of the full linear convolution of ``x`` and ``w``, blocked.

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` -> ``(*broadcast(bx, bw), hi - lo)``;
        ``0 <= lo <= hi <= T + K - 1``.
    """
    T, K = x.shape[-1], w.shape[-1]
    n_out = hi - lo
    n_fft = block_fft or block_fft_length(K, n_out)
    step = n_fft - K + 1  # output samples per block
    n_blocks = -(-n_out // step)
    # Output n reads x[n - K + 1 .. n]: the source starts K - 1 - lo samples before x[0]
    # (a negative pad crops), and must hold n_blocks * step + K - 1 samples.
    left = K - 1 - lo
    right = n_blocks * step + K - 1 - (T + left)
    source = F.pad(x, (left, right))
    blocks = source.unfold(-1, n_fft, step)  # (*bx, n_blocks, n_fft), a view
    spectrum = torch.fft.rfft(blocks, n_fft) * torch.fft.rfft(w, n_fft).unsqueeze(-2)
    kept = torch.fft.irfft(spectrum, n_fft)[..., K - 1 :]
    out = kept.reshape(*kept.shape[:-2], n_blocks * step)
    return out[..., :n_out]
