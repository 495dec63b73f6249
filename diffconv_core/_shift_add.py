"""Direct convolution for the shortest kernels as shifted multiply-adds (CPU, no autograd).

With a handful of taps there is too little arithmetic for a GEMM to pay for its frame
layout (a Toeplitz frame of 16 samples does 32 multiply-adds per output for 3 taps): K
in-place multiply-adds, each over the whole stretch where one tap's shifted source overlaps
the output, read and write every sample K times from cache and come within a few copies of
memory speed. Nothing is copied (but a source whose samples are not contiguous): the source
is read where it lies, and the ends of the signal are simply where a tap's stretch stops. A
kernel per row multiplies by a column of weights per tap instead of a number.
"""

from __future__ import annotations

import torch

from diffconv_core._pieces import even_step
from diffconv_core._validation import broadcast_shapes

#: Up to this many taps the shifted sums beat the Toeplitz GEMMs (2 cores, float32, fastest
#: of interleaved runs: 4 x 480,000 with 12 taps 1.80 against 1.96 ms, 1 x 4,194,304 4.58
#: against 4.51 ms; with 16 taps the GEMMs win everywhere but on the smallest batches).
MAX_SHIFT_ADD_TAPS = 12
#: Outputs per block, about 4 MB of float32: the K passes over a block run from cache, and a
#: block is large enough to amortise the per-call cost of its K ops (2 cores, 4 x 480,000,
#: 3 taps: 0.49 ms in blocks of 2**20 against 0.85 ms in 2**18 and 1.37 ms for the earlier
#: copied 2**18-sample pieces).
BLOCK_SAMPLES = 2**20


def shift_add_correlate(
    source: torch.Tensor, taps: torch.Tensor, n_out: int, shift: int = 0
) -> torch.Tensor:
    """``out[m] = sum_j taps[j] * source[m + j - shift]`` for ``0 <= m < n_out``, with the
    source zero outside its samples; one kernel ``taps`` ``(K,)`` for every signal, or one
    per signal ``(*bt, K)`` (broadcast against the signals).

    Shape:
        source ``(*bs, T)``, taps ``(*bt, K)`` -> ``(*broadcast(bs, bt), n_out)``.

    Example:
        >>> shift_add_correlate(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 10.0]), 3)
        tensor([21., 32.,  3.])
        >>> shift_add_correlate(torch.ones(2, 3), torch.tensor([[1.0, 1.0], [1.0, -1.0]]), 3)
        tensor([[2., 2., 1.],
                [0., 0., 1.]])
    """
    T, K = source.shape[-1], taps.shape[-1]
    batch = broadcast_shapes(source.shape[:-1], taps.shape[:-1])
    rows = source.expand(*batch, T).reshape(-1, T)
    if rows.stride(-1) != 1:
        # Elementwise ops over a strided or broadcast source (the gradient of a sum is one
        # value expanded) take a slow path: one copy is cheaper than K slow passes.
        rows = rows.contiguous()
    if taps.dim() == 1:
        weights = taps.tolist()  # Python numbers: the in-place ops take them without a tensor
    else:
        # A column of weights per tap, one entry per row: the ops broadcast it along time.
        weights = taps.expand(*batch, K).reshape(-1, K).t().unsqueeze(-1)  # (K, rows, 1)
    out = rows.new_empty(rows.shape[0], n_out)
    if n_out <= BLOCK_SAMPLES:
        # Short signals: several whole rows to a block.
        group = max(1, BLOCK_SAMPLES // max(n_out, 1))
        for first in range(0, rows.shape[0], group):
            last = first + group
            block_weights = weights if taps.dim() == 1 else weights[:, first:last]
            _accumulate(rows[first:last], out[first:last], block_weights, shift, 0, n_out)
    else:
        # Long ones: even blocks along time (no sliver that costs K calls for a few samples).
        step = even_step(n_out, BLOCK_SAMPLES)
        for index, (source_row, out_row) in enumerate(zip(rows, out, strict=True)):
            row_weights = weights if taps.dim() == 1 else weights[:, index, 0].tolist()
            for start in range(0, n_out, step):
                stop = min(n_out, start + step)
                _accumulate(source_row, out_row, row_weights, shift, start, stop)
    return out.reshape(*batch, n_out)


def _accumulate(
    source: torch.Tensor,
    out: torch.Tensor,
    weights: list[float] | torch.Tensor,
    shift: int,
    start: int,
    stop: int,
) -> None:
    """Fill ``out[..., start:stop]``: tap ``j`` adds ``weights[j] * source[m + j - shift]``
    wherever that sample exists (``weights[j]`` a number, or a column with one per row)."""
    T = source.shape[-1]
    spans = [(max(start, shift - j), min(stop, T + shift - j)) for j in range(len(weights))]
    # A tap that reaches every output of the block writes it first; otherwise (the ends in
    # "full" mode, or a signal shorter than the kernel) the block starts from zeros.
    first = next((j for j, span in enumerate(spans) if span == (start, stop)), None)
    if first is None:
        out[..., start:stop].zero_()
    else:
        begin = start + first - shift
        torch.mul(
            source[..., begin : begin + stop - start], weights[first], out=out[..., start:stop]
        )
    for j, (a, b) in enumerate(spans):
        if j == first or b <= a:
            continue
        shifted = source[..., a + j - shift : b + j - shift]
        if isinstance(weights, torch.Tensor):
            out[..., a:b].addcmul_(shifted, weights[j])
        else:
            out[..., a:b].add_(shifted, alpha=weights[j])
