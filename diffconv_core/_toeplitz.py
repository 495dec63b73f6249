"""Direct convolution for short kernels as matrix products (block-Toeplitz GEMM).

The output is cut into frames of P samples; output frame q reads the source frames from q on,
and is those samples times a Toeplitz matrix built from the taps. A GEMM runs near the
machine's peak, where ``conv1d`` on one channel does not (on CPU it is several times slower
than an FFT even for three taps).

:func:`frame_plan` picks frames of P samples read J at a time (short frames waste fewer
multiply-adds, long ones run the GEMM nearer its peak). The GEMMs read the source in place
through strided views, a cache-sized piece at a time: one GEMM per residue of the frame index
mod J for a kernel shared by every signal, written straight into the result, or one batched
GEMM per residue for a kernel per signal. In float32 with oneDNN, a kernel shared by every
signal takes one convolution per piece instead (``_framed_conv``), with frames of its own
length, or one for all rows where they are whole frames. Nothing here is recorded by
autograd: gradients take the same paths through ``_direct._DirectRange``, a shared kernel's
own gradient as :func:`toeplitz_lagged_products`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from diffconv_core import _framed_conv
from diffconv_core._pieces import pieces
from diffconv_core._validation import broadcast_shapes
from diffconv_core._workspace import kept_tensors, scratch

#: Without autograd, the work goes in pieces of about this many bytes of signal: small enough
#: to keep the work arrays of stacked short rows in cache, large enough that the few ops per
#: piece cost little. Since the GEMMs read the source in place, 4 MiB beat 1 and 2 MiB on
#: every case tried (2 cores, interleaved: 512 x 1,024 with 31 taps 0.73 against 0.93 ms,
#: 4 x 480,000 with 63 taps 3.9 against 4.8 ms, 64 x 80,000 with 31 taps 8.0 against 9.3 ms).
CHUNK_BYTES = 2**22


@kept_tensors(maxsize=64)
def _toeplitz_index(K: int, P: int, device: torch.device, J: int) -> torch.Tensor:
    # Entry (c, i) of the (J * P, P) matrix holds tap c - i, or the zero appended at index K.
    lag = torch.arange(J * P, device=device)[:, None] - torch.arange(P, device=device)
    return torch.where((lag >= 0) & (lag < K), lag, K)


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


def _piece_samples(P: int, J: int, element_size: int) -> int:
    return max(J * P, CHUNK_BYTES // element_size)


def _frames_source_length(P: int, J: int) -> Callable[[int], int]:
    def source_length(n: int) -> int:
        return (-(-n // P) + J - 1) * P  # the frames n outputs read

    return source_length


def toeplitz_correlate(
    source: torch.Tensor, taps: torch.Tensor, n_out: int, shift: int = 0
) -> torch.Tensor:
    """``out[m] = sum_j taps[j] * source[m + j - shift]`` for ``0 <= m < n_out``, with the
    source zero outside its samples (``shift`` delays it; a negative one advances it), without
    autograd: taps ``(K,)`` shared by every signal, or ``(*bt, K)`` one kernel per signal; a
    cache-sized piece at a time (see :mod:`diffconv_core._pieces`).

    With frames of ``P`` samples, output frame ``q`` is the ``J * P`` source samples from
    frame ``q`` on times a ``(J * P, P)`` Toeplitz matrix. The frames ``q = j, j + J, ...``
    of one residue ``j`` read disjoint, evenly spaced stretches of the source, so they are
    one GEMM over a strided view of it, written into an evenly strided view of the output:
    ``J`` GEMMs per piece, no framed copy of the source and, for a piece inside a long
    signal, none of the output either. A kernel per row has a matrix per row: a piece of
    one row still takes plain GEMMs; several rows take one batched GEMM per residue, into a
    work array (a batched GEMM into a strided output ran 60 times slower).
    In float32 with oneDNN a shared kernel's products are one convolution a piece instead
    (:mod:`diffconv_core._framed_conv`).

    Shape:
        source ``(*bs, T)``, taps ``(*bt, K)`` -> ``(*broadcast(bs, bt), n_out)``.

    Example:
        >>> toeplitz_correlate(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 10.0]), 3)
        tensor([21., 32.,  3.])
        >>> toeplitz_correlate(torch.ones(2, 3), torch.tensor([[1.0, 1.0], [1.0, -1.0]]), 3)
        tensor([[2., 2., 1.],
                [0., 0., 1.]])
    """
    K = taps.shape[-1]
    batch = broadcast_shapes(source.shape[:-1], taps.shape[:-1])
    per_row = taps.dim() > 1
    framed = not per_row and taps.dtype == source.dtype and _framed_conv.usable(source)
    if framed:
        whole = _framed_conv.correlate_rows(
            source.reshape(-1, source.shape[-1]), taps, n_out, shift
        )
        if whole is not None:
            return whole.reshape(*batch, n_out)
    P, J = _framed_conv.frame_plan(K) if framed else frame_plan(K)
    if per_row:
        source = source.expand(*batch, source.shape[-1])
        taps = taps.expand(*batch, K).reshape(-1, K)
    matrices = F.pad(taps, (0, 1))[..., _toeplitz_index(K, P, taps.device, J)]  # (J*P, P)
    weight = _framed_conv.filters(matrices, P, J) if framed else None
    out = torch.empty(math.prod(source.shape[:-1]), n_out, dtype=source.dtype, device=source.device)
    for rows, start, stop, piece in pieces(
        source,
        n_out,
        shift,
        _frames_source_length(P, J),
        piece_samples=_piece_samples(P, J, source.element_size()),
        align=P,
    ):
        count_rows, length = piece.shape
        n = stop - start
        dest = out[rows, start:stop]
        piece = piece.contiguous()  # a view but for a strided source
        if weight is not None:
            dest.copy_(_framed_conv.correlate_frames(piece, weight)[:, :n])
            continue
        batched = per_row and count_rows > 1
        # The GEMMs write whole frames: straight into the result where it has whole frames
        # in rows of its own (a batched GEMM's frames are copied there from a work array).
        into_result = n % P == 0 and (dest.is_contiguous() if count_rows == 1 else batched)
        if into_result:
            target = dest
        else:
            target = scratch("gemm out", piece.numel(), piece.dtype, piece.device)
            target = target.view(count_rows, length)
        if batched:
            products = scratch("gemm rows", count_rows * length, piece.dtype, piece.device)
            for windows, frames in _by_residue_rows(piece, target, -(-n // P), P, J):
                part = products[: frames.numel()].view(frames.shape)
                frames.copy_(torch.bmm(windows, matrices[rows], out=part))
        else:
            # One matrix: several rows stacked, output frames that straddle two rows are
            # computed and dropped, as is the end of a last frame that runs past the piece.
            matrix = matrices[rows.start] if per_row else matrices
            flat = piece.view(-1)
            n_frames = n // P if into_result else flat.numel() // P - J + 1
            for windows, frames in _by_residue(flat, target.view(-1), n_frames, P, J):
                torch.mm(windows, matrix, out=frames)
        if not into_result:
            dest.copy_(target[:, :n])
    return out.reshape(*batch, n_out)


def toeplitz_lagged_products(
    g: torch.Tensor, x: torch.Tensor, lo: int, K: int, per_row: bool = False
) -> torch.Tensor:
    """``c[k] = sum over rows and m of g[m] * x[m + lo - k]`` for ``0 <= k < K`` (``x`` zero
    outside its samples): the gradient of one kernel shared by every row, as GEMMs; with
    ``per_row``, each row's own sum (the gradient of a kernel per row).

    With ``s[i] = x[i + lo - K + 1]``, ``c[K - 1 - j]`` is the correlation of ``s`` with ``g``
    at lag ``j``. Framed as in :func:`frame_plan`, the products of each gradient frame with
    the ``J * P`` source samples from its start sum (one GEMM per residue, over strided views
    as in the forward pass, a cache-sized piece at a time) into a ``(J * P, P)`` matrix whose
    diagonals are the lags: one matrix for all rows, or one per row (batched GEMMs).

    Shape:
        g ``(*batch, L)``, x ``(*bx, T)`` (broadcasting to ``batch``) -> ``(K,)``, or
        ``(*batch, K)`` with ``per_row``.

    Example:
        >>> g, x = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 10.0, 100.0])
        >>> toeplitz_lagged_products(g, x, 1, 2)  # c[k] = g[0] x[1 - k] + g[1] x[2 - k]
        tensor([210.,  21.])
        >>> toeplitz_lagged_products(torch.stack([g, -g]), x, 1, 2, per_row=True)
        tensor([[ 210.,   21.],
                [-210.,  -21.]])
    """
    L = g.shape[-1]
    if g.numel() == 0:
        return g.new_zeros(*g.shape[:-1] if per_row else (), K)
    x = x.expand(*g.shape[:-1], x.shape[-1])
    grads = g.reshape(-1, L)
    products = None
    if not per_row and g.dtype == x.dtype and x.is_contiguous() and _framed_conv.usable(x):
        products = _framed_conv.gradient_products_rows(grads, x.reshape(len(grads), -1), lo, K)
    if products is None:
        products = _products_in_pieces(grads, x, lo, K, per_row)
    # lags[..., j] = sum_i products[..., i + j, i]
    P = products.shape[-1]
    lags = products.as_strided(
        (*products.shape[:-2], K, P), (*products.stride()[:-2], P, P + 1)
    ).sum(-1)
    return lags.flip(-1).reshape(*g.shape[:-1], K) if per_row else lags.flip(-1)


def _products_in_pieces(
    grads: torch.Tensor, x: torch.Tensor, lo: int, K: int, per_row: bool
) -> torch.Tensor:
    """The ``(J * P, P)`` matrix of lagged products that :func:`toeplitz_lagged_products`
    sums along its diagonals (one per row with ``per_row``), a cache-sized piece at a time:
    oneDNN's weight gradient for stacked rows, else GEMMs.

    Shape:
        grads ``(rows, L)``, x ``(*batch, T)`` with ``rows`` rows -> ``(J * P, P)`` or
        ``(rows, J * P, P)``.
    """
    L = grads.shape[-1]
    framed = _stacked_rows_framed(grads, x, K, per_row)
    P, J = _framed_conv.frame_plan(K) if framed else frame_plan(K)
    products = torch.zeros(
        *grads.shape[:1] if per_row else (), J * P, P, dtype=grads.dtype, device=grads.device
    )
    for rows, start, stop, piece in pieces(
        x,
        L,
        K - 1 - lo,
        _frames_source_length(P, J),
        piece_samples=_piece_samples(P, J, x.element_size()),
        align=P,
    ):
        count_rows, length = piece.shape
        n = stop - start
        piece = piece.contiguous()  # a view but for a strided source
        # Each row's gradient, then zeros: to whole frames for the convolution; for the GEMMs
        # laid out like the piece, so that windows running into the next row (or stopping
        # short at the very end) add nothing.
        width = -(-n // P) * P if framed else length
        frames = scratch("lag grad", count_rows * width, grads.dtype, grads.device).view(
            count_rows, width
        )
        frames[:, :n].copy_(grads[rows, start:stop])
        frames[:, n:].zero_()
        if framed:
            products += _framed_conv.frame_products(piece, frames, P, J)
        elif per_row:
            for windows, grad_frames in _by_residue_rows(piece, frames, -(-n // P), P, J):
                products[rows].baddbmm_(windows.transpose(1, 2), grad_frames)
        else:
            frames, source = frames.view(-1), piece.view(-1)
            n_frames = frames.numel() // P - J + 1
            for windows, grad_frames in _by_residue(source, frames, n_frames, P, J):
                products.addmm_(windows.t(), grad_frames)
    return products


def _stacked_rows_framed(grads: torch.Tensor, x: torch.Tensor, K: int, per_row: bool) -> bool:
    """Whether a shared kernel's gradient takes oneDNN's weight gradient: in float32, up to
    ``_framed_conv.MAX_GRADIENT_TAPS``, where its pieces hold whole rows, two or more (for
    one long row a piece the GEMMs were as fast or faster)."""
    if per_row or K > _framed_conv.MAX_GRADIENT_TAPS or grads.shape[0] < 2:
        return False
    if grads.dtype != x.dtype or not _framed_conv.usable(x):
        return False
    P, J = _framed_conv.frame_plan(K)
    row_samples = _frames_source_length(P, J)(grads.shape[-1])
    return 2 * row_samples <= _piece_samples(P, J, x.element_size())


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


def _by_residue_rows(
    source: torch.Tensor, frames: torch.Tensor, n_frames: int, P: int, J: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`_by_residue` for each row of ``source`` and ``frames`` ``(rows, length)``
    (rows of contiguous samples), ``n_frames`` frames a row: views ``(rows, count, J * P)``
    and ``(rows, count, P)``."""
    rows = source.shape[0]
    for j in range(min(J, n_frames)):
        count = -(-(n_frames - j) // J)
        yield (
            source.as_strided(
                (rows, count, J * P), (source.stride(0), J * P, 1), source.storage_offset() + j * P
            ),
            frames.as_strided(
                (rows, count, P), (frames.stride(0), J * P, 1), frames.storage_offset() + j * P
            ),
        )
