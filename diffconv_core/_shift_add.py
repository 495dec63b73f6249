"""Direct convolution for the shortest kernels as shifted multiply-adds (CPU, no autograd).

With a handful of taps there is too little arithmetic for a GEMM to pay for its frame
layout (a Toeplitz frame of 16 samples does 32 multiply-adds per output for 3 taps): K
in-place multiply-adds, each over the whole stretch where one tap's shifted source overlaps
the output, read and write every sample K times from cache and come within a few copies of
memory speed. Nothing is copied: the source is read where it lies, and the ends of the
signal are simply where a tap's stretch stops.
"""

from __future__ import annotations

import torch

from diffconv_core._pieces import even_step

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
    source zero outside its samples; one kernel ``taps`` ``(K,)`` for every signal.

    Shape:
        source ``(*batch, T)``, taps ``(K,)`` -> ``(*batch, n_out)``.

    Example:
        >>> shift_add_correlate(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 10.0]), 3)
        tensor([21., 32.,  3.])
    """
    weights = taps.tolist()  # Python numbers: the in-place ops take them without a tensor
    T = source.shape[-1]
    rows = source.reshape(-1, T)
    out = rows.new_empty(rows.shape[0], n_out)
    if n_out <= BLOCK_SAMPLES:
        # Short signals: several whole rows to a block.
        group = max(1, BLOCK_SAMPLES // max(n_out, 1))
        for first in range(0, rows.shape[0], group):
            last = first + group
            _accumulate(rows[first:last], out[first:last], weights, shift, 0, n_out)
    else:
        # Long ones: even blocks along time (no sliver that costs K calls for a few samples).
        step = even_step(n_out, BLOCK_SAMPLES)
        for source_row, out_row in zip(rows, out, strict=True):
            for start in range(0, n_out, step):
                stop = min(n_out, start + step)
                _accumulate(source_row, out_row, weights, shift, start, stop)
    return out.reshape(*source.shape[:-1], n_out)


def _accumulate(
    source: torch.Tensor, out: torch.Tensor, weights: list[float], shift: int, start: int, stop: int
) -> None:
    """Fill ``out[..., start:stop]``: tap ``j`` adds ``weights[j] * source[m + j - shift]``
    wherever that sample exists."""
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
        if j != first and b > a:
            out[..., a:b].add_(source[..., a + j - shift : b + j - shift], alpha=weights[j])
