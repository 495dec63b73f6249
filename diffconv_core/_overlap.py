"""Overlap-save convolution: blocked FFTs for long signals with shorter kernels.

The zero-extended signal is cut into overlapping blocks with ``unfold`` (a view), all blocks
go through one batched ``rfft``, are multiplied by the kernel spectrum (computed once) and
inverted; the first K - 1 samples of each block, which wrapped around, are dropped. The
backward pass (:class:`_OverlapRange`) is blocked FFTs too, and the kernel gradient is summed
over blocks and batch in the frequency domain before one inverse FFT.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from diffconv_core._fft import (
    CPU_FFT_MULTIPLE,
    circular_convolution,
    cpu_fast_length,
    fft_range,
    gradients_from_pieces,
    next_fast_len,
    plain_fft_range,
    range_fft_length,
)
from diffconv_core._half_fft import half_fft_shape, takes_half_fft
from diffconv_core._validation import (
    broadcast_shapes,
    carries_tangent,
    needs_graph,
    owned,
    under_vmap,
)

# Block FFT length bounds: big enough to amortise the K - 1 overlap, small enough to stay
# in cache. Measured on CPU and CUDA by benchmarks/bench_core.py.
MIN_BLOCK_FFT = 2048
MAX_BLOCK_FFT = 1 << 16


def block_fft_length(kernel_length: int, output_length: int, device_type: str = "cpu") -> int:
    """The FFT length of one overlap-save block for a kernel of ``kernel_length`` taps on
    ``device_type``: about eight times the kernel, a smooth length (5-smooth, a multiple of
    8), which the CPU takes as a power of two (:func:`_cpu_block_length`).

    Example:
        >>> block_fft_length(31, 10_000_000)
        2048
        >>> block_fft_length(4095, 10_000_000)
        32768
        >>> block_fft_length(1000, 10_000_000), block_fft_length(1000, 10_000_000, "cuda")
        (8192, 8000)
        >>> block_fft_length(3000, 10_000_000), block_fft_length(3000, 10_000_000, "cuda")
        (16384, 24000)
    """
    target = max(MIN_BLOCK_FFT, 8 * kernel_length)
    # no point in blocks much longer than the output itself
    target = min(target, max(MIN_BLOCK_FFT, output_length + kernel_length - 1))
    length = min(max(target, 2 * kernel_length), max(MAX_BLOCK_FFT, 2 * kernel_length))
    smooth = next_fast_len(length, CPU_FFT_MULTIPLE)
    return _cpu_block_length(smooth, kernel_length) if device_type == "cpu" else smooth


def _cpu_block_length(smooth: int, kernel_length: int) -> int:
    # The power of two just above a smooth length (at most CPU_POWER_OF_TWO_MARGIN longer),
    # else the one below, where it still holds twice the kernel and MIN_BLOCK_FFT: MKL's
    # power-of-two transforms outran the extra blocks. Overlap-save, 2 cores, interleaved
    # rounds, two or three seeds, the power of two's time over the smooth length's:
    # 8,000 -> 8,192 points (1,000 taps) 0.84-0.87; 15,360 -> 16,384 (1,900) 0.85-0.89;
    # 32,000 -> 32,768 (3,900) 0.85-0.87; 64,000 -> 65,536 (7,800) 0.96-0.97; the one below:
    # 2,400 -> 2,048 (300 taps) 0.87-0.89; 3,200 -> 2,048 (400) 0.90-0.91; 4,800 -> 4,096
    # (600) 0.84-0.86; 7,200 -> 4,096 (900) 0.87-0.90; 9,600 -> 8,192 (1,200) 0.85-0.87;
    # 12,000 -> 8,192 (1,500) 0.86; 20,000 -> 16,384 (2,500) 0.85-0.87; 24,000 -> 16,384
    # (3,000) 0.81-0.85; 48,000 -> 32,768 (6,000) 0.85-0.86 (4 x 480,000, 1 x 2,000,000,
    # 1 x 4,194,304, 16 x 100,000 and 32 x 48,000 samples). The power of two above instead
    # was less even (0.81-1.03).
    above = cpu_fast_length(smooth)
    if above != smooth:
        return above
    below = 1 << (smooth.bit_length() - 1)
    return below if below >= max(2 * kernel_length, MIN_BLOCK_FFT) else smooth


def overlap_fft_length(kernel_length: int, output_length: int, device_type: str = "cpu") -> int:
    """The block FFT length :func:`overlap_range` takes (and the cost model prices) on
    ``device_type``: :func:`block_fft_length`, but never longer than one FFT of the whole
    output needs.

    Example:
        >>> block_fft_length(3, 8), overlap_fft_length(3, 8)
        (2048, 16)
    """
    # With block_fft_length's floor of MIN_BLOCK_FFT alone, 200,000 rows of 8 samples became
    # 2,048-point blocks (4.7 GB).
    full = next_fast_len(
        max(output_length + kernel_length - 1, 2 * kernel_length), CPU_FFT_MULTIPLE
    )
    return min(block_fft_length(kernel_length, output_length, device_type), full)


# Without autograd, blocks are processed a chunk at a time into a preallocated output, so the
# work arrays stay a fraction of the input (peak extra memory ~ the output plus one chunk).
CHUNK_SAMPLES = 1 << 20

# On CUDA a chunk costs about seven launches, ~100 us of host time on the H200 machines, and
# chunks of CHUNK_SAMPLES made the forward pass the slowest path there: 16 rows of 4M samples
# took 11.2 ms in 73 chunks where the recorded path (no chunks) ran forward and backward in
# 4.5 ms. There the blocks go in at most this many chunks, whose work arrays stay about a
# sixteenth of the blocked signal. (The CPU path under this rule peaked at 1.2-1.9x the
# input, RSS, on bench_memory's shapes; GPU memory under it is still to be measured.)
CUDA_CHUNKS = 16

# On the CPU a signal of a few chunks kept a third or a half of itself in every work array: 4
# x 480,000 with 255 taps peaked at 3.1x the input forward (the output counted), in three
# chunks. A chunk of a signal past two chunks' points takes at most an eighth of its blocks,
# but no fewer than MIN_CPU_BLOCKS blocks (long kernels' few long blocks: 4,095 and 16,383
# taps slowed 1.3-1.5x in chunks of 2 or 1 blocks). Smaller signals keep CHUNK_SAMPLES: a
# lone row of 480,000 samples with 255 or 511 taps took 1.2-1.3x as long forward in three
# chunks as in one.
CPU_CHUNKS = 8
MIN_CPU_BLOCKS = 16


def blocks_per_chunk(n_fft: int, rows: int, n_blocks: int, device_type: str) -> int:
    """How many blocks of every row one chunk of the no-autograd path transforms.

    Example:
        >>> blocks_per_chunk(2048, 16, 2339, "cpu"), blocks_per_chunk(2048, 16, 2339, "cuda")
        (32, 147)
    """
    per_chunk = max(1, CHUNK_SAMPLES // (n_fft * rows))
    if device_type != "cpu":
        return max(per_chunk, -(-n_blocks // CUDA_CHUNKS))
    if rows * n_blocks * n_fft <= 2 * CHUNK_SAMPLES:
        return per_chunk
    return min(per_chunk, max(MIN_CPU_BLOCKS, -(-n_blocks // CPU_CHUNKS)))


def _blocked(
    source: torch.Tensor,
    circular: Callable[[torch.Tensor], torch.Tensor],
    n_fft: int,
    step: int,
    K: int,
) -> torch.Tensor:
    """Overlap-save over every block of ``source``, each convolved circularly with the kernel
    by ``circular``; returns ``n_blocks * step`` samples."""
    blocks = source.unfold(-1, n_fft, step)  # (*bx, n_blocks, n_fft), a view
    kept = circular(blocks)[..., K - 1 :]
    return kept.reshape(*kept.shape[:-2], kept.shape[-2] * step)


def _chunk_source(
    x: torch.Tensor, lo: int, K: int, step: int, first: int, count: int
) -> torch.Tensor:
    """The samples that blocks ``first .. first + count - 1`` read: block b's source starts
    at x[lo - (K - 1) + b * step], ``count * step + K - 1`` samples in all, zeros past
    either end of ``x``."""
    T = x.shape[-1]
    start = lo - (K - 1) + first * step
    stop = start + count * step + K - 1
    return F.pad(x[..., max(start, 0) : min(stop, T)], (max(0, -start), max(0, stop - T)))


def blocks_in_half_length(rows: int, n_fft: int, blocks_at_once: int) -> bool:
    """Whether overlap-save's blocks of ``n_fft`` points, ``blocks_at_once`` at a time, of
    ``rows`` rows go through complex transforms of half the length (for real float32/float64
    rows with one kernel on the CPU): a lone row's few long blocks. The cost model asks this
    too.

    Example:
        >>> blocks_in_half_length(1, 17_280, 3), blocks_in_half_length(4, 17_280, 3)
        (True, False)
    """
    # On 2 cores a lone row's blocks were 1.13-1.22x faster so (1 x 65,536 with 8,193 taps:
    # 0.92 ms, 1.12 by rfft/irfft; 1 x 480,000 with 16,383: 1.35 against 1.54). A batch's
    # were mixed (2 x 131,072 with 16,385 taps 1.15x faster, 4 x 65,536 with 8,193 1.2x
    # slower, 4 x 480,000 with 16,383 1.16x slower): batches keep rfft/irfft.
    return rows == 1 and half_fft_shape(n_fft, blocks_at_once)


def overlap_range(
    x: torch.Tensor, w: torch.Tensor, lo: int, hi: int, block_fft: int | None = None
) -> torch.Tensor:
    """Samples ``lo <= n < hi`` of the full linear convolution of ``x`` and ``w``, blocked.

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` -> ``(*broadcast(bx, bw), hi - lo)``;
        ``0 <= lo <= hi <= T + K - 1``.
    """
    K = w.shape[-1]
    n_out = hi - lo
    n_fft = block_fft or overlap_fft_length(K, n_out, x.device.type)
    step = n_fft - K + 1  # output samples per block
    n_blocks = -(-n_out // step)
    # Output n reads x[n - K + 1 .. n]: block b's source starts at x[lo - (K - 1) + b * step]
    # and spans n_fft samples; zeros stand in past either end.
    if needs_graph(x, w):
        return _OverlapRange.apply(x, w, lo, hi, n_fft)
    batch = broadcast_shapes(x.shape[:-1], w.shape[:-1])
    rows = max(1, math.prod(batch))
    out = torch.empty(*batch, n_out, dtype=x.dtype, device=x.device)
    per_chunk = blocks_per_chunk(n_fft, rows, n_blocks, x.device.type)
    at_once = min(per_chunk, n_blocks)
    half_length = blocks_in_half_length(rows, n_fft, at_once)
    half_length = half_length and takes_half_fft(x, w, n_fft, at_once)
    # Kernels of their own face the blocks of their rows: (*bw, 1, K).
    circular = circular_convolution(w if w.dim() == 1 else w.unsqueeze(-2), n_fft, half_length)
    for first in range(0, n_blocks, per_chunk):
        count = min(per_chunk, n_blocks - first)
        source = _chunk_source(x, lo, K, step, first, count)
        begin = first * step
        end = min(begin + count * step, n_out)
        out[..., begin:end] = _blocked(source, circular, n_fft, step, K)[..., : end - begin]
        del source  # before the next chunk's is made
    return out


#: On the CPU, one transform of a row longer than this many points is slower and far larger
#: than overlap-save's blocks: a row of 4,194,304 samples with 1,023 taps took 95 ms by one
#: transform against 7.1 ms in blocks, 1 x 16,777,216 with 1,023 taps 488 against 47 ms, 4 x
#: 4,194,304 with 4,095 taps 311 against 54 (2 cores, torch 2.13, MKL), and the one transform
#: peaked at 2.3-5x the input's size (MKL's work arrays span the whole row) where the blocks
#: peak at 1.2-1.5x. From 2**18 points the blocks were faster for every shape timed (1 and 4
#: rows, 255 and 8,191 taps: 1.2-16x); this bound keeps the FFT method's one transform for
#: rows up to 4 MiB of float32, where its work arrays are small in any case.
MAX_CPU_TRANSFORM = 1 << 20
_CPU = torch.device("cpu")


def transforms_in_blocks(T: int, K: int, lo: int, hi: int, device_type: str) -> bool:
    """Whether the FFT method computes samples ``lo <= n < hi`` of ``T`` samples convolved
    with ``K`` taps in overlap-save's blocks: on the CPU, where its one transform would pass
    ``MAX_CPU_TRANSFORM`` points and the blocks stay within it (more than one block).

    Example:
        >>> transforms_in_blocks(4_194_304, 1023, 511, 4_194_815, "cpu")
        True
        >>> transforms_in_blocks(480_000, 1023, 511, 480_511, "cpu")  # one transform
        False
        >>> transforms_in_blocks(4_194_304, 1023, 511, 4_194_815, "cuda")  # cuFFT: one
        False
    """
    if device_type != "cpu" or range_fft_length(T, K, lo, hi, _CPU) <= MAX_CPU_TRANSFORM:
        return False
    block = overlap_fft_length(K, hi - lo)
    return block <= MAX_CPU_TRANSFORM and hi - lo > block - K + 1


def fft_method_range(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """The FFT method (``convolve(method="fft")``): :func:`~diffconv_core._fft.fft_range`'s
    one transform a row, or overlap-save's blocks on the CPU for rows past
    ``MAX_CPU_TRANSFORM`` points (:func:`transforms_in_blocks`).

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` -> ``(*broadcast(bx, bw), hi - lo)``.
    """
    if transforms_in_blocks(x.shape[-1], w.shape[-1], lo, hi, x.device.type):
        return overlap_range(x, w, lo, hi)
    return fft_range(x, w, lo, hi)


class _OverlapRange(torch.autograd.Function):
    """:func:`overlap_range` with a backward pass of its own.

    Autograd through the blocks' ``rfft`` inverts it with full complex transforms. Here each
    block's share of the output gradient goes through one real FFT; times the kernel spectrum
    and inverted, it is that block's source gradient (overlapping blocks added back where they
    came from, the adjoint of ``unfold``); times the saved block spectra and summed over blocks
    and batch, one inverse FFT gives the kernel gradient. For a second derivative
    (``create_graph``) the gradients are recomputed from differentiable pieces instead.
    """

    @staticmethod
    def forward(ctx, x, w, lo, hi, n_fft):  # noqa: D102
        T, K = x.shape[-1], w.shape[-1]
        step = n_fft - K + 1
        n_blocks = -(-(hi - lo) // step)
        pads = (K - 1 - lo, n_blocks * step + lo - T)  # source: n_blocks * step + K - 1 long
        ctx.geometry = (lo, hi, n_fft, pads)
        if _in_chunks(x):
            # The unrecorded blocks, a chunk at a time; the backward pass transforms each
            # chunk's blocks again rather than keep every block's spectrum, which held
            # 1.1-2x the input (n_fft / step of it) from the forward pass to the backward.
            ctx.save_for_backward(x, w, None)
            return overlap_range(x, w, lo, hi, n_fft)
        kernel_spectrum = torch.fft.rfft(w, n_fft).unsqueeze(-2)
        blocks = F.pad(x, pads).unfold(-1, n_fft, step)  # (*bx, n_blocks, n_fft), a view
        block_spectra = torch.fft.rfft(blocks, n_fft)
        ctx.save_for_backward(x, w, block_spectra)
        kept = torch.fft.irfft(block_spectra * kernel_spectrum, n_fft)[..., K - 1 :]
        return owned(kept.reshape(*kept.shape[:-2], n_blocks * step)[..., : hi - lo])

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, w, block_spectra = ctx.saved_tensors
        lo, hi, n_fft, pads = ctx.geometry
        K = w.shape[-1]
        need_x, need_w = ctx.needs_input_grad[:2]
        needed = (need_x, need_w)
        if carries_tangent(grad):  # forward-over-reverse: plain operations, with jvp rules
            pieces = gradients_from_pieces(plain_fft_range, grad, x, w, lo, needed)
            return *pieces, None, None, None
        if torch.is_grad_enabled():  # create_graph: every piece must be differentiable
            # Under vmap (batched gradients) the blocks' chunks, written into an output,
            # have no batching rule: plain transforms there.
            pieces_range = plain_fft_range if under_vmap(grad) else overlap_range
            pieces = gradients_from_pieces(pieces_range, grad, x, w, lo, needed)
            return *pieces, None, None, None
        kernel_spectrum = torch.fft.rfft(w, n_fft).unsqueeze(-2)
        if _in_chunks(grad):
            grad_x, grad_w = _chunked_backward(grad, x, w, kernel_spectrum, ctx.geometry, needed)
            return grad_x, grad_w, None, None, None
        grad_x = grad_w = None
        step = n_fft - K + 1
        if block_spectra is None:  # a vmap-batched gradient after the chunked forward pass
            block_spectra = torch.fft.rfft(F.pad(x, pads).unfold(-1, n_fft, step), n_fft)
        n_blocks = block_spectra.shape[-2]
        # Block b's outputs are its last `step` samples: the gradient goes back in place.
        # reshape, not unflatten: vmap has no batching rule for unflatten (a batched gradient).
        shares = F.pad(grad, (0, n_blocks * step - (hi - lo)))
        shares = shares.reshape(*shares.shape[:-1], n_blocks, step)
        spectra = torch.fft.rfft(F.pad(shares, (K - 1, 0)), n_fft)  # (*batch, n_blocks, bins)
        if need_x:
            product = spectra * kernel_spectrum.conj()
            product = product.sum_to_size(*block_spectra.shape[:-1], product.shape[-1])
            block_grads = torch.fft.irfft(product, n_fft)
            source_shape = (*x.shape[:-1], n_blocks * step + K - 1)
            source_grad = torch.ops.aten.unfold_backward(block_grads, source_shape, -1, n_fft, step)
            grad_x = F.pad(source_grad, (-pads[0], -pads[1]))
        if need_w:
            product = (spectra * block_spectra.conj()).sum(-2)
            product = product.sum_to_size(*w.shape[:-1], product.shape[-1])
            grad_w = torch.fft.irfft(product, n_fft)[..., :K]
        return grad_x, grad_w, None, None, None


def _in_chunks(t: torch.Tensor) -> bool:
    # On the CPU the recorded blocks go a chunk at a time, as the unrecorded ones do: all at
    # once, forward and backward held 10-16x the input (1 x 4,194,304 with 1,023 taps: 11x,
    # every block's padded gradient, spectra, products and inverses alive together). On CUDA
    # every chunk costs launches (CUDA_CHUNKS), and a vmap-batched gradient cannot be written
    # into slices: those take the blocks whole.
    return t.device.type == "cpu" and not under_vmap(t)


def _chunked_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    kernel_spectrum: torch.Tensor,
    geometry: tuple,
    needed: tuple[bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:class:`_OverlapRange`'s backward pass a chunk of blocks at a time: each chunk's share
    of the output gradient through one real FFT, its source gradient added where its blocks
    came from; for the kernel's gradient the chunk's blocks of ``x`` are transformed again,
    their products with the gradient's spectra summed over blocks before the one inverse.

    Shape:
        grad ``(*batch, hi - lo)`` -> grad_x ``x.shape``, grad_w ``w.shape`` (None where not
        ``needed``).
    """
    lo, hi, n_fft, pads = geometry
    K = w.shape[-1]
    step = n_fft - K + 1
    n_out = hi - lo
    n_blocks = -(-n_out // step)
    bins = n_fft // 2 + 1
    need_x, need_w = needed
    T = x.shape[-1]
    # The signal's gradient itself, each chunk's source gradient added where its samples lie
    # (the zeros padded past the ends have none): no padded copy to cut down afterwards.
    grad_x = grad.new_zeros(x.shape) if need_x else None
    kernel_sum = None
    # Chunks of half the forward pass's samples: each keeps about twice its arrays alive (the
    # gradient's spectra, and the signal's again for the kernel). Forward and backward of 4 x
    # 480,000 (2 cores, median of 15, two fresh processes each), chunks of 2**20 / 2**19 /
    # 2**18 samples: 255 taps 18.1-18.6 / 14.7-14.8 / 14.5-15.5 ms, 4,095 taps 19.7-23.5 /
    # 18.1-19.4 / 20.2-22.4, 16,383 taps 26.2-29.2 / 24.0-26.0 / 25.1-29.5; 1 x 4,194,304
    # with 1,023 taps 33.1-35.2 / 32.8-32.9 / 34.2-36.8.
    rows = max(1, math.prod(grad.shape[:-1]))
    per_chunk = max(1, blocks_per_chunk(n_fft, rows, n_blocks, "cpu") // 2)
    for first in range(0, n_blocks, per_chunk):
        count = min(per_chunk, n_blocks - first)
        begin = first * step
        end = min(begin + count * step, n_out)
        # Block b's outputs are its last `step` samples: the gradient goes back in place.
        shares = F.pad(grad[..., begin:end], (0, begin + count * step - end))
        shares = shares.reshape(*shares.shape[:-1], count, step)
        spectra = torch.fft.rfft(F.pad(shares, (K - 1, 0)), n_fft)  # (*batch, count, bins)
        if need_x:
            product = (spectra * kernel_spectrum.conj()).sum_to_size(*x.shape[:-1], count, bins)
            block_grads = torch.fft.irfft(product, n_fft)
            span = (*x.shape[:-1], count * step + K - 1)
            source = torch.ops.aten.unfold_backward(block_grads, span, -1, n_fft, step)
            start = begin - pads[0]  # the chunk's source starts at this sample of x
            inside = slice(max(start, 0), min(start + span[-1], T))
            if inside.start < inside.stop:
                grad_x[..., inside] += source[..., inside.start - start : inside.stop - start]
            del product, block_grads, source
        if need_w:
            source = _chunk_source(x, lo, K, step, first, count)
            chunk_spectra = torch.fft.rfft(source.unfold(-1, n_fft, step), n_fft)
            del source
            product = (spectra * chunk_spectra.conj()).sum(-2)
            del chunk_spectra
            kernel_sum = product if kernel_sum is None else kernel_sum + product
        # Each chunk's arrays go before the next chunk's are made: rebinding the names
        # afterwards kept two chunks' alive at once.
        del shares, spectra
    grad_w = None
    if need_w:
        kernel_sum = kernel_sum.sum_to_size(*w.shape[:-1], bins)
        grad_w = torch.fft.irfft(kernel_sum, n_fft)[..., :K]
    return grad_x, grad_w
