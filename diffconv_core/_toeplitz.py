"""Direct convolution for short kernels as matrix products (block-Toeplitz GEMM).

The output is cut into frames of P samples; output frame q reads the source frames from q on,
and is those samples times a Toeplitz matrix built from the taps. A GEMM runs near the
machine's peak, where ``conv1d`` on one channel does not (on CPU it is several times slower
than an FFT even for three taps).

- For a kernel per signal (or one kernel while autograd records, as :func:`toeplitz_correlate`
  is written), P is at least K - 1, so frame q reads frames q and q + 1: two GEMMs with two
  P x P matrices in differentiable torch ops, whose backward pass is GEMMs too.
- For one kernel shared by every signal, :func:`frame_plan` picks shorter frames read J at a
  time (fewer wasted multiply-adds); the GEMMs read the source in place through strided views
  and write straight into the result, a cache-sized piece at a time. Gradients take the same
  path (``_direct._DirectRange``), the kernel's as :func:`toeplitz_lagged_products`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from diffconv_core._pieces import in_pieces, pieces
from diffconv_core._validation import needs_graph
from diffconv_core._workspace import scratch

#: Without autograd, the work goes in pieces of about this many bytes of signal: small enough
#: to keep the work arrays of stacked short rows in cache, large enough that the few ops per
#: piece cost little. Since the GEMMs read the source in place, 4 MiB beat 1 and 2 MiB on
#: every case tried (2 cores, interleaved: 512 x 1,024 with 31 taps 0.73 against 0.93 ms,
#: 4 x 480,000 with 63 taps 3.9 against 4.8 ms, 64 x 80,000 with 31 taps 8.0 against 9.3 ms).
CHUNK_BYTES = 2**22


def frame_length(K: int) -> int:
    """Frame length P for K taps: at least K - 1, rounded up for GEMM efficiency.

    Example:
        >>> frame_length(3), frame_length(31), frame_length(100)
        (16, 32, 112)
    """
    return max(16, -(-(K - 1) // 16) * 16)


@functools.lru_cache(maxsize=64)
def _toeplitz_index(K: int, P: int, device: torch.device, J: int = 2) -> torch.Tensor:
    # Entry (c, i) of the stacked blocks holds tap c - i, or the zero appended at index K.
    lag = torch.arange(J * P, device=device)[:, None] - torch.arange(P, device=device)
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
        return _correlate_in_pieces(source, taps, n_out, shift)
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


def frame_plan(K: int) -> tuple[int, int]:
    """Frame length ``P`` and frames per row ``J`` of the GEMMs without autograd, for K taps.

    Output frame ``q`` reads source frames ``q .. q + J - 1`` (``J = 1 + ceil((K - 1) / P)``),
    so each output costs ``J * P`` multiply-adds against ``K`` for a plain sliding sum. Short
    frames waste fewer of them, longer ones run the GEMM nearer its peak; the plan minimises
    ``J * P`` times the measured cost of a multiply-add at that width.

    Example:
        >>> frame_plan(3), frame_plan(31), frame_plan(127), frame_plan(255)
        ((16, 2), (16, 3), (32, 5), (32, 9))
    """
    P = min(_MULTIPLY_ADD_COST, key=lambda P: _frames_read(K, P) * P * _MULTIPLY_ADD_COST[P])
    return P, _frames_read(K, P)


# Seconds per multiply-add of an (M, J * P) @ (J * P, P) GEMM, relative, by frame length P:
# 2 cores (AMD EPYC, MKL), float32, 2**18 outputs at 15-255 taps. Narrower frames than 16 fall
# off (P = 8 ran at a fifth of the rate of P = 32), and widths that are not powers of two
# (48, 96) were slower than both neighbours.
_MULTIPLY_ADD_COST = {16: 3.8, 32: 3.2, 64: 3.1, 128: 2.75, 256: 2.66}


def gemm_work(K: int) -> float:
    """Multiply-adds per output of the GEMMs without autograd (``J * P`` of
    :func:`frame_plan`), weighted by their cost relative to 32-sample frames: the cost
    model's measure of the direct path's work per output.

    Example:
        >>> round(gemm_work(31), 2)  # 3 frames of 16, a multiply-add there costing 3.8 / 3.2
        57.0
    """
    P, J = frame_plan(K)
    return J * P * _MULTIPLY_ADD_COST[P] / _MULTIPLY_ADD_COST[32]


def _frames_read(K: int, P: int) -> int:
    return 1 + -(-(K - 1) // P)


def _correlate_in_pieces(
    source: torch.Tensor, taps: torch.Tensor, n_out: int, shift: int
) -> torch.Tensor:
    """:func:`toeplitz_correlate` for one kernel without autograd, a cache-sized piece at a
    time (see :mod:`diffconv_core._pieces`).

    With frames of ``P`` samples, output frame ``q`` is the ``J * P`` source samples from
    frame ``q`` on times one ``(J * P, P)`` Toeplitz matrix. The frames ``q = j, j + J, ...``
    of one residue ``j`` read disjoint, evenly spaced stretches of the source, so they are
    one GEMM over a strided view of it, written into an evenly strided view of the output:
    ``J`` GEMMs per piece, no framed copy of the source and, for a piece inside a long
    signal, none of the output either.
    """
    P, J = frame_plan(taps.shape[-1])
    index = _toeplitz_index(taps.shape[-1], P, taps.device, J)
    matrix = F.pad(taps, (0, 1))[index]  # (J * P, P)

    def source_length(n: int) -> int:
        return (-(-n // P) + J - 1) * P  # the frames n outputs read

    def convolve_piece(piece: torch.Tensor, dest: torch.Tensor) -> None:
        rows, length = piece.shape
        n = dest.shape[-1]
        flat = piece.contiguous().view(-1)  # a view but for a strided source
        into_result = rows == 1 and n % P == 0 and dest.is_contiguous()
        if into_result:
            target, n_frames = dest.view(-1), n // P
        else:
            # Several rows stacked: output frames that straddle two rows are computed and
            # dropped, as is the end of a last frame that runs past the piece.
            target = scratch("gemm out", flat.numel(), flat.dtype, flat.device)
            n_frames = flat.numel() // P - J + 1
        for windows, out in _by_residue(flat, target, n_frames, P, J):
            torch.mm(windows, matrix, out=out)
        if not into_result:
            dest.copy_(target.view(rows, length)[:, :n])

    return in_pieces(
        source,
        n_out,
        shift,
        source_length,
        convolve_piece,
        piece_samples=max(J * P, CHUNK_BYTES // source.element_size()),
        align=P,
    )


def toeplitz_lagged_products(g: torch.Tensor, x: torch.Tensor, lo: int, K: int) -> torch.Tensor:
    """``c[k] = sum over rows and m of g[m] * x[m + lo - k]`` for ``0 <= k < K`` (``x`` zero
    outside its samples): the gradient of one kernel shared by every row, as GEMMs.

    With ``s[i] = x[i + lo - K + 1]``, ``c[K - 1 - j]`` is the correlation of ``s`` with ``g``
    at lag ``j``. Framed as in :func:`frame_plan`, the products of each gradient frame with
    the ``J * P`` source samples from its start sum (one GEMM per residue, over strided views
    as in the forward pass, a cache-sized piece at a time) into a ``(J * P, P)`` matrix whose
    diagonals are the lags.

    Shape:
        g ``(*batch, L)``, x ``(*batch, T)`` (as many rows) -> ``(K,)``.

    Example:
        >>> g, x = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 10.0, 100.0])
        >>> toeplitz_lagged_products(g, x, 1, 2)  # c[k] = g[0] x[1 - k] + g[1] x[2 - k]
        tensor([210.,  21.])
    """
    P, J = frame_plan(K)
    L = g.shape[-1]
    if g.numel() == 0:
        return torch.zeros(K, dtype=g.dtype, device=g.device)
    grads = g.reshape(-1, L)
    products = torch.zeros(J * P, P, dtype=g.dtype, device=g.device)

    def source_length(n: int) -> int:
        return (-(-n // P) + J - 1) * P  # a stretch's frames plus the J - 1 its windows reach

    for rows, start, stop, piece in pieces(
        x,
        L,
        K - 1 - lo,
        source_length,
        piece_samples=max(J * P, CHUNK_BYTES // x.element_size()),
        align=P,
    ):
        # The gradient laid out like the piece: each row's stretch, then zeros, so windows
        # that run into the next row (or stop short at the very end) add nothing.
        count_rows, length = piece.shape
        n = stop - start
        frames = scratch("lag grad", count_rows * length, g.dtype, g.device).view(
            count_rows, length
        )
        frames[:, :n].copy_(grads[rows, start:stop])
        frames[:, n:].zero_()
        frames, source = frames.view(-1), piece.contiguous().view(-1)
        n_frames = frames.numel() // P - J + 1
        for windows, grad_frames in _by_residue(source, frames, n_frames, P, J):
            products.addmm_(windows.t(), grad_frames)
    lags = products.as_strided((K, P), (P, P + 1)).sum(-1)  # lags[j] = sum_i products[i + j, i]
    return lags.flip(0)


def _by_residue(
    source: torch.Tensor, frames: torch.Tensor, n_frames: int, P: int, J: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """For each residue ``j < J``, the frames ``q = j, j + J, ...`` below ``n_frames`` as two
    strided views: of the flat ``source``, the ``J * P`` samples from each frame's start
    ``(count, J * P)``, and of the flat ``frames``, each frame's own ``P`` samples
    ``(count, P)``. The rows of each view are disjoint and evenly spaced, so a GEMM takes them
    as they lie."""
    for j in range(min(J, n_frames)):
        count = -(-(n_frames - j) // J)
        yield (
            source.as_strided((count, J * P), (J * P, 1), source.storage_offset() + j * P),
            frames.as_strided((count, P), (J * P, 1), frames.storage_offset() + j * P),
        )
