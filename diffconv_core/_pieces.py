"""Run a sliding dot product a cache-sized piece at a time (CPU, without autograd; the
Toeplitz GEMMs of ``_toeplitz``).

A whole-batch operation streams every intermediate through main memory; cut into pieces of a
few hundred thousand samples, the padded source, the partial products and the output of a
piece stay in cache. Short signals are taken several whole rows to a piece; long ones are cut
along time, each piece reading its own stretch of source (zero outside the signal).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from diffconv_core._workspace import scratch


def pieces(
    source: torch.Tensor,
    n_out: int,
    shift: int,
    source_length: Callable[[int], int],
    *,
    piece_samples: int,
    align: int = 1,
) -> Iterator[tuple[slice, int, int, torch.Tensor]]:
    """Cut the outputs ``0 <= m < n_out`` of every row, where output ``m`` reads source
    samples from ``m - shift`` on, into pieces ``(rows, start, stop, piece)``: the piece
    serves outputs ``start`` to ``stop`` of those rows (a slice of the flattened batch); it
    is ``source_length(stop - start)`` samples long, its first sample lined up with output
    ``start``, zero outside the signal, and may be a view of ``source`` (read it, never
    write it). Pieces read about ``piece_samples`` source samples; a row cut along time is
    cut at multiples of ``align`` samples.

    Shape:
        source ``(*batch, T)``; piece ``(rows, source_length(stop - start))``.
    """
    T = source.shape[-1]
    rows = source.reshape(-1, T)
    if n_out == 0 or rows.shape[0] == 0:
        return
    length = source_length(n_out)
    if length <= piece_samples:
        signals = piece_samples // length
        for first in range(0, rows.shape[0], signals):
            block = rows[first : first + signals]
            work = scratch("piece", block.shape[0] * length, source.dtype, source.device)
            piece = zero_extended(block, -shift, length - shift, out=work)
            yield slice(first, first + block.shape[0]), 0, n_out, piece
        return
    starts = _piece_starts(n_out, T, shift, source_length, piece_samples, align)
    for index, signal in enumerate(rows):
        for start, stop_out in itertools.pairwise(starts):
            begin = start - shift
            stop = begin + source_length(stop_out - start)
            # A piece inside the signal is read in place; only the ends need zeros.
            inside = begin >= 0 and stop <= T
            piece = signal[begin:stop] if inside else zero_extended(signal, begin, stop)
            yield slice(index, index + 1), start, stop_out, piece[None]


def _piece_starts(
    n_out: int,
    T: int,
    shift: int,
    source_length: Callable[[int], int],
    piece_samples: int,
    align: int,
) -> list[int]:
    """Where the pieces of one long row start (and, last, ``n_out``).

    The outputs whose source lies wholly inside the signal are cut evenly into aligned
    pieces read in place; the few outputs at either end that reach past it form pieces of
    their own, so that only those small ones are copied with zeros around them.
    """
    margin = source_length(align) - align  # source read beyond an aligned piece's outputs
    head = min(n_out, _ceil_div(max(shift, 0), align) * align)
    inner = max(0, T + shift - margin - head) // align * align
    bounds = [0, head, min(n_out, head + inner), n_out]
    starts = []
    for first, last in itertools.pairwise(bounds):
        if last > first:
            starts += range(first, last, even_step(last - first, piece_samples, align))
    return [*starts, n_out]


def even_step(n: int, budget: int, align: int = 1) -> int:
    """Length of the pieces that cut ``n`` samples evenly into as few as ``budget`` allows,
    each a multiple of ``align``: a row just over the budget becomes two halves, not a full
    piece and a sliver that costs a whole call.

    Example:
        >>> even_step(1000, 600), even_step(1000, 600, align=64), even_step(500, 600)
        (500, 512, 500)
    """
    count = _ceil_div(n, max(align, budget))
    return _ceil_div(_ceil_div(n, count), align) * align


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def zero_extended(
    x: torch.Tensor, start: int, stop: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``x[..., start:stop]`` with zeros where the range leaves ``x``'s samples (a copy,
    written into ``out``'s first elements when given).

    Example:
        >>> zero_extended(torch.tensor([1.0, 2.0, 3.0]), -2, 2).tolist()
        [0.0, 0.0, 1.0, 2.0]
    """
    T = x.shape[-1]
    inside = x[..., min(max(start, 0), T) : max(min(stop, T), 0)]
    before = min(max(-start, 0), stop - start)
    after = stop - start - before - inside.shape[-1]
    if out is None:
        return F.pad(inside, (before, after))
    result = out[: x[..., :1].numel() * (stop - start)].view(*x.shape[:-1], stop - start)
    result[..., :before].zero_()
    result[..., before : before + inside.shape[-1]].copy_(inside)
    result[..., stop - start - after :].zero_()
    return result
