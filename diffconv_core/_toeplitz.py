"""Direct convolution for short kernels as matrix products (block-Toeplitz GEMM).

The output is cut into frames of P samples. Frame q of a sliding dot product with K <= P + 1
taps reads only source frames q and q + 1, so all frames come from two matrix products of the
framed source with two P x P Toeplitz matrices built from the taps. A GEMM runs near the
machine's peak, where ``conv1d`` on one channel does not (on CPU it is several times slower
than an FFT even for three taps). Written in differentiable torch ops: the backward pass is
GEMMs too and double backward comes for free.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from diffconv_core._pieces import in_pieces
from diffconv_core._validation import needs_graph

#: Without autograd, the work goes in pieces of about this many bytes of signal, so that
#: the source, the GEMM outputs and their sum stay in cache (on 2 cores, a 50 x 80,000
#: batch with 31 taps went from 12 ms whole to 5-6 ms in 256 KiB-sample pieces).
CHUNK_BYTES = 2**20


def frame_length(K: int) -> int:
    """Frame length P for K taps: at least K - 1, rounded up for GEMM efficiency.

    Example:
        >>> frame_length(3), frame_length(31), frame_length(100)
        (16, 32, 112)
    """
    return max(16, -(-(K - 1) // 16) * 16)


@functools.lru_cache(maxsize=64)
def _toeplitz_index(K: int, P: int, device: torch.device) -> torch.Tensor:
    # Entry (c, i) of the stacked blocks holds tap c - i, or the zero appended at index K.
    lag = torch.arange(2 * P, device=device)[:, None] - torch.arange(P, device=device)
    return torch.where((lag >= 0) & (lag < K), lag, K)


def _toeplitz_blocks(taps: torch.Tensor, P: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrices ``(A, B)`` with ``out_frame = src_frame @ A + next_src_frame @ B``.

    ``A[c, i] = taps[c - i]`` and ``B[c, i] = taps[P + c - i]`` where the index lies in
    ``[0, K)``, else 0.
    """
    index = _toeplitz_index(taps.shape[-1], P, taps.device)
    both = F.pad(taps, (0, 1))[..., index]  # (..., 2P, P), one gather
    return both[..., :P, :], both[..., P:, :]


def toeplitz_correlate(
    source: torch.Tensor, taps: torch.Tensor, n_out: int, shift: int = 0
) -> torch.Tensor:
    """``out[m] = sum_j taps[j] * source[m + j - shift]`` for ``0 <= m < n_out``, with the
    source zero outside its samples (``shift`` delays it; a negative one advances it).

    Shape:
        source ``(*bs, T)``, taps ``(*bt, K)`` -> ``(*broadcast(bs, bt), n_out)``.
    """
    K = taps.shape[-1]
    P = frame_length(K)
    n_frames = -(-n_out // P)
    if taps.dim() == 1 and not needs_graph(source, taps):
        return _correlate_in_pieces(source, taps, n_out, shift, P)
    # n_frames output frames read n_frames + 1 source frames; one pad (negative widths crop)
    # both aligns the source and lays it out as contiguous frames.
    n_src = (n_frames + 1) * P
    source = F.pad(source, (shift, n_src - source.shape[-1] - shift))
    A, B = _toeplitz_blocks(taps, P)
    batch_s = source.shape[:-1]
    if taps.dim() == 1:
        # One kernel for every signal: stack all signals' frames into one tall matrix and
        # run two big GEMMs over it (rows that straddle two signals are dropped afterwards).
        frames = source.reshape(-1, P)
        ahead = frames[1:]
        out = torch.addmm(frames[:-1] @ A, ahead, B)  # frame r reads rows r and r + 1
        out = F.pad(out, (0, 0, 0, 1)).reshape(*batch_s, n_frames + 1, P)[..., :n_frames, :]
    else:
        # A kernel per signal: batched GEMMs, batch dims broadcast by matmul.
        frames = source.reshape(*batch_s, n_frames + 1, P)
        out = frames[..., :-1, :] @ A + frames[..., 1:, :] @ B
    return out.reshape(*out.shape[:-2], n_frames * P)[..., :n_out]


def _correlate_in_pieces(
    source: torch.Tensor, taps: torch.Tensor, n_out: int, shift: int, P: int
) -> torch.Tensor:
    """:func:`toeplitz_correlate` for one kernel without autograd, a cache-sized piece at a
    time (see :mod:`diffconv_core._pieces`)."""
    A, B = _toeplitz_blocks(taps, P)
    scratch = torch.empty(0, dtype=source.dtype, device=source.device)

    def source_length(n: int) -> int:
        return (-(-n // P) + 1) * P  # the frames n outputs read

    def convolve_piece(piece: torch.Tensor, dest: torch.Tensor) -> None:
        # Output frame r reads source frames r and r + 1. Frame q of signal s is row
        # s * span / P + q of the tall frame matrix, so each signal's outputs are the first
        # samples of its stretch of rows (its last row, straddling two signals, is unused).
        nonlocal scratch
        if scratch.numel() < piece.numel():
            scratch = torch.empty_like(piece).view(-1)  # reused by every later piece
        frames, out = piece.reshape(-1, P), scratch[: piece.numel()]
        result = out[: piece.numel() - P].view(-1, P)
        torch.mm(frames[:-1], A, out=result)
        result.addmm_(frames[1:], B)
        dest.copy_(out.view(piece.shape)[:, : dest.shape[-1]])

    return in_pieces(
        source,
        n_out,
        shift,
        source_length,
        convolve_piece,
        piece_samples=max(2 * P, CHUNK_BYTES // source.element_size()),
        align=P,
    )
