"""Direct (sliding dot product) convolution for short kernels.

On CPU, the shortest kernels run as shifted multiply-adds (``_shift_add``: up to 6 taps,
or 12 where the rows are not whole frames), longer ones as block-Toeplitz matrix products
(``_toeplitz``): in float32 one oneDNN convolution over every row for a shared kernel
(``_framed_conv``), else GEMMs in cache-sized pieces (batched for a kernel per row), several
times faster than ``conv1d`` there, with or without gradients. On
CUDA the forward pass is a fused Triton kernel (``_triton_direct``), or ``conv1d`` with the
flipped kernel where Triton is missing. Where a backward pass is needed it is written out
(:class:`_DirectRange`) rather than left to autograd: the signal gradient is again a direct
correlation (the fused kernel reading the taps in order on CUDA; the same Function where a
gradient of the gradient is wanted, or on CPU), the kernel gradient
a fused kernel of lagged products on CUDA (up to ``MAX_LAG_TAPS`` taps), on CPU oneDNN's
weight gradient (float32, a shared kernel) or the Toeplitz GEMMs' lagged products, else one
frequency-domain cross-correlation summed over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from diffconv_core import _framed_conv
from diffconv_core._autocast import autocast_off
from diffconv_core._fft import gradients_from_pieces
from diffconv_core._shift_add import MAX_SHIFT_ADD_TAPS, shift_add_correlate
from diffconv_core._toeplitz import toeplitz_correlate, toeplitz_lagged_products
from diffconv_core._triton_direct import lagged_dot, sliding_dot
from diffconv_core._validation import (
    batched_gradient,
    broadcast_shapes,
    carries_tangent,
    needs_graph,
    owned,
)

# Beyond this many taps the Toeplitz blocks (2P x P) grow too large to pay off.
MAX_TOEPLITZ_TAPS = 1024

#: From this many taps on, one oneDNN convolution over rows of whole frames beats the shifted
#: sums (2 cores, float32, interleaved medians, 7 taps: 0.75 against 0.90 ms for 4 x 480,000,
#: 1.74 against 2.47 for 1 x 4,194,304, 0.72 against 0.85 for 128 x 16,000, even for 512 x
#: 1,024 and 16 x 2,000; at 5 taps the sums were faster but on one signal of 4,194,304).
#: Rows that are not whole frames keep the sums up to ``MAX_SHIFT_ADD_TAPS`` (copied into
#: whole frames first, the convolution caught up only at 9-12 taps).
MIN_WHOLE_ROWS_TAPS = 7

# The most samples (rows x outputs x taps) one CPU conv1d call may unfold (512 MB of float64).
CONV1D_CPU_ELEMENTS = 1 << 26

#: Small calls of a shared kernel's direct convolution on the CPU are one call of torch's
#: native convolution, the rows as the lines of one image (:func:`tiny_range`): 8.5-11 us
#: where the shifted sums or the framed convolution took 24-32 (3 to 1,024 samples, 3-31
#: taps). It unfolds every product's sample into a work array (rows x outputs x taps items),
#: which must stay under glibc's default mmap threshold (128 KiB): larger ones were mapped
#: and faulted in afresh on every call of a training step (4 x 1,024 with 31 taps, 0.5 MiB:
#: 438 us a forward+backward against 287 by the framed convolution; 1 x 1,024 with 31
#: taps, 124 KiB: 151 against 241; 2 cores, interleaved, glibc's default allocator).
TINY_COLUMN_BYTES = 2**17 - 4096


def tiny_products(itemsize: int) -> int:
    """The most products (rows x outputs x taps) :func:`tiny_range` takes for items of this
    many bytes.

    Example:
        >>> tiny_products(4), tiny_products(8)  # float32: 1 x 1,024 samples with 31 taps
        (31744, 15872)
    """
    return TINY_COLUMN_BYTES // itemsize


def _source(x: torch.Tensor, K: int, lo: int, n_out: int) -> torch.Tensor:
    # A sliding dot product out[m] = sum_j v[j] src[m + j] with v the flipped kernel reads
    # x delayed by K - 1 - lo samples (negative pads crop), n_out + K - 1 samples long.
    left = K - 1 - lo
    return F.pad(x, (left, n_out + K - 1 - x.shape[-1] - left))


def _direct_forward(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    K = w.shape[-1]
    fused = sliding_dot(x, w, K - 1 - lo, hi - lo, taps_reversed=True)
    return fused if fused is not None else conv1d_range(x, w, lo, hi)


def conv1d_range(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Samples ``lo <= n < hi`` of the full linear convolution through ``F.conv1d``: plain
    differentiable torch operations (forward-mode AD, ``torch.func`` transforms included).
    On CPU, in pieces of the outputs of at most ``CONV1D_CPU_ELEMENTS`` unfolded samples.

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` -> ``(*broadcast(bx, bw), hi - lo)``.
    """
    K = w.shape[-1]
    n_out = hi - lo
    batch = broadcast_shapes(x.shape[:-1], w.shape[:-1])
    piece = max(1, CONV1D_CPU_ELEMENTS // max(1, math.prod(batch) * K))
    if x.device.type == "cpu" and torch.result_type(x, w) != torch.float32 and n_out > piece:
        # conv1d on CPU unfolds rows x outputs x taps samples where oneDNN does not take the
        # dtype (float64: 536 GB asked for 1,024 rows, 4,096 outputs, 4,000 taps): a piece
        # of the outputs at a time, each from only the samples under it. (float32 goes to
        # oneDNN whole: in pieces it was 3-9x slower.)
        ends = range(lo, hi, piece)
        return torch.cat([conv1d_range(x, w, a, min(a + piece, hi)) for a in ends], dim=-1)
    source = _source(x, K, lo, n_out)
    taps = w.flip(-1)
    n_src = source.shape[-1]
    with autocast_off(x.device.type):  # conv1d is on autocast's lower-precision lists
        if math.prod(w.shape[:-1]) == 1:  # one kernel shared by every signal
            out = F.conv1d(source.reshape(-1, 1, n_src), taps.reshape(1, 1, K))
        elif math.prod(x.shape[:-1]) == 1:  # one signal, many kernels
            out = F.conv1d(source.reshape(1, 1, n_src), taps.reshape(-1, 1, K))
        else:  # a kernel per signal: one group per channel
            channels = math.prod(batch)
            source = source.expand(*batch, n_src).reshape(1, channels, n_src)
            taps = taps.expand(*batch, K).reshape(channels, 1, K)
            out = F.conv1d(source, taps, groups=channels)
    return out.reshape(*batch, n_out)


def direct_range(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Samples ``lo <= n < hi`` of the full linear convolution of ``x`` and ``w``, directly.

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` -> ``(*broadcast(bx, bw), hi - lo)``;
        ``0 <= lo <= hi <= T + K - 1``.
    """
    K = w.shape[-1]
    fast = x.device.type == "cpu" and K <= MAX_TOEPLITZ_TAPS
    if fast and not needs_graph(x, w):
        return _cpu_range(x, w, lo, hi)
    return _DirectRange.apply(x, w, lo, hi, fast)


def direct_sums_alone(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> torch.Tensor | None:
    """:func:`direct_range` where it computes each output as its own sum of ``tap * sample``
    over exactly the samples under its window, else None.

    Such sums give NaN and Inf as the direct sum does, so the caller needs no separate
    handling of non-finite values, nor the host sync that looking for them costs. They are
    the CPU's shifted multiply-adds and the fused CUDA kernel, with nothing recorded for
    autograd (a kernel gradient mixes every sample). The Toeplitz GEMMs multiply whole
    frames, zeros included (0 * inf), and ``conv1d`` may too.
    """
    K = w.shape[-1]
    if K == 0 or needs_graph(x, w):
        return None
    if x.device.type == "cpu" and takes_shifted_sums(x, w, lo, hi):
        y = direct_range(x, w, lo, hi)
        if float(w.abs().amax()) > 1.0 and not math.isfinite(float(y.sum())):
            # Products that overflow where the sum need not (1e160 * 1e160 - 1e160 * 1e160)
            # gave Inf here but a finite value from every other path: those scale their
            # operands by powers of two first, so the caller takes that path. No product can
            # overflow with taps of at most 1 in magnitude (every unit-sum window), so only
            # other kernels pay for the check: one sum (a quarter of the shifted sums' time
            # at 3 taps, where isfinite().all() took four times theirs) finds the rare case;
            # a finite sum that overflows, or a NaN input, only reruns for the same values.
            return None
        return y
    return sliding_dot(x, w, K - 1 - lo, hi - lo, taps_reversed=True)  # None off CUDA


def shifted_sums_for(K: int, T: int, whole_rows: bool) -> bool:
    """Whether ``K`` taps over rows of ``T`` samples take the shifted multiply-adds, given
    whether one convolution can take all the rows at once (``whole_rows``): up to
    ``MAX_SHIFT_ADD_TAPS`` taps, but only below ``MIN_WHOLE_ROWS_TAPS`` where that convolution
    reads rows of whole frames as they lie (rows it copies first won only from 9-12 taps).
    The cost model prices by the same rule.

    Example:
        >>> shifted_sums_for(9, 1024, True), shifted_sums_for(9, 1000, True)
        (False, True)
    """
    if K > MAX_SHIFT_ADD_TAPS:
        return False
    return K < MIN_WHOLE_ROWS_TAPS or T % _framed_conv.FRAME != 0 or not whole_rows


def small_call(rows: int, n_out: int, K: int, dtype: torch.dtype) -> bool:
    """Whether ``rows`` rows of ``n_out`` outputs of ``K`` taps in ``dtype`` make a small
    call, one native convolution (:func:`tiny_range`): float32 or float64, at most
    :func:`tiny_products`, and a torch that exposes its native convolution. The direct path,
    ``choose_method`` and the cost model ask this one rule.

    Example:
        >>> small_call(1, 1024, 31, torch.float32), small_call(1, 1024, 31, torch.float64)
        (True, False)
    """
    return (
        dtype in (torch.float32, torch.float64)
        and rows * n_out * K <= tiny_products(dtype.itemsize)
        and _framed_conv._native_conv2d is not None
    )


def takes_tiny_range(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> bool:
    """Whether :func:`_cpu_range` takes :func:`tiny_range`: one kernel for every row, in
    the signal's dtype, on the CPU, in a :func:`small_call`."""
    K = w.shape[-1]
    rows = x.numel() // max(x.shape[-1], 1)
    return (
        w.numel() == K and x.dtype == w.dtype and x.is_cpu and small_call(rows, hi - lo, K, x.dtype)
    )


def rows_call(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> tuple[int, int, int] | None:
    """The plan (``_framed_conv.direct_rows_plan``) where a call past :func:`tiny_range`
    is one convolution over every row (:func:`rows_range`): one kernel for every row (at
    most ``MAX_TOEPLITZ_TAPS``, and where autograd records it
    ``_framed_conv.recorded_directly``) or a bank of kernels (:func:`is_bank`, at most
    ``MAX_BANK_TAPS``, nothing recorded); contiguous rows on the CPU, in float32 with
    oneDNN's exact settings or in float64 for native work (an unfold and a GEMM in double
    precision; oneDNN takes no float64), more taps than the shifted sums take; else None.

    Example:
        >>> rows_call(torch.ones(1, 4096), torch.ones(31), 15, 4111)
        (1, 1, 3)
        >>> rows_call(torch.ones(1, 4096), torch.ones(5), 2, 4098) is None  # shifted sums
        True
        >>> rows_call(torch.ones(8, 1, 4096), torch.ones(40, 31), 15, 4111)  # a bank
        (1, 1, 3)
    """
    K, T = w.shape[-1], x.shape[-1]
    kernels = w.numel() // max(K, 1)
    recorded = needs_graph(x, w)
    if kernels > 1:
        if recorded or K > MAX_BANK_TAPS or not is_bank(tuple(x.shape), tuple(w.shape)):
            return None
    elif K > MAX_TOEPLITZ_TAPS:  # conv1d's, as the direct method's (and the model's)
        return None
    float64 = x.dtype == torch.float64
    if not (
        w.dtype == x.dtype
        and (float64 or x.dtype == torch.float32)
        and x.device.type == "cpu"
        # float64 has no oneDNN, so its direct path takes the shifted sums as for rows that
        # are not whole frames
        and not shifted_sums_for(K, T, not float64)
        and x.is_contiguous()
        and (float64 or _framed_conv.usable(x))
    ):
        return None
    rows = x.numel() // max(T, 1)
    plan = _framed_conv.direct_rows_plan
    return plan(rows, T, K, hi - lo, K - 1 - lo, recorded, native_only=float64, kernels=kernels)


def rows_range(
    x: torch.Tensor, w: torch.Tensor, lo: int, hi: int, plan: tuple[int, int, int]
) -> torch.Tensor:
    """:func:`direct_range` for a :func:`rows_call` (its ``plan``): one convolution over
    every row with every kernel, recorded by autograd where the operands need it.

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` (one kernel, or a bank) ->
        ``(*broadcast(bx, bw), hi - lo)``.

    Example:
        >>> x, w = torch.arange(64.0), torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2.0])
        >>> rows_range(x, w, 0, 64, rows_call(x, w, 0, 64))[8:12].tolist()  # x[m] + 2 x[m - 10]
        [8.0, 9.0, 10.0, 13.0]
        >>> rows_range(x, w, 10, 74, rows_call(x, w, 10, 74))[:2].tolist()
        [10.0, 13.0]
        >>> bank = torch.eye(9)[[0, 4]]  # delays of 0 and 4 samples
        >>> rows_range(x, bank, 8, 72, rows_call(x, bank, 8, 72))[:, 8:10].tolist()  # n = 16
        [[16.0, 17.0], [12.0, 13.0]]
    """
    T, K, n_out = x.shape[-1], w.shape[-1], hi - lo
    out = _framed_conv.correlate_rows_direct(x.reshape(-1, T), w.reshape(-1, K), n_out, plan)
    return out.view(*broadcast_shapes(x.shape[:-1], w.shape[:-1]), n_out)


def is_bank(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> bool:
    """Whether kernels ``w_shape`` over signals ``x_shape`` are a bank: several kernels, each
    for every signal, the kernels' batch dimensions last in the result's (the signals' are
    1 or absent there), so the result is every signal by every kernel in that order.

    Example:
        >>> is_bank((8, 1, 16000), (40, 63)), is_bank((16000,), (40, 63))
        (True, True)
        >>> is_bank((8, 16000), (8, 63)), is_bank((8, 1, 16000), (63,))  # per row; shared
        (False, False)
    """
    kernel_batch = w_shape[:-1]
    if math.prod(kernel_batch) <= 1:
        return False
    signal_batch = x_shape[:-1]
    overlap = signal_batch[max(len(signal_batch) - len(kernel_batch), 0) :]
    return all(size == 1 for size in overlap)


#: A bank's one convolution up to this many taps, without a graph: forward 0.68-1.5x conv1d's
#: time and the fastest of the methods in 7 of 9 banks up to 63 taps (2 cores, interleaved:
#: 8 x 16,000 with 40 kernels of 63 taps 3.3 ms, conv1d 4.6, the batched GEMMs 8.5); with
#: 127 and 251 taps the FFT took 0.6-0.8x its time. Recorded, its backward (oneDNN's, 16
#: output channels a kernel) took 1.4x the FFT's for 31 taps, so a graph keeps the batched
#: GEMMs' Function.
MAX_BANK_TAPS = 63


def tiny_range(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """:func:`direct_range` for a small call on the CPU: torch's native convolution (an
    unfold and one GEMM) over every row at once, the rows as the lines of one image (as a
    batch, torch would send them to oneDNN: ~30 us a call). Recorded by autograd where the
    operands need it.

    Shape:
        x ``(*bx, T)``, w ``(K,)`` or ``(1, ..., 1, K)`` -> ``(*broadcast(bx, bw), hi - lo)``.

    Example:
        >>> tiny_range(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([0.0, 1.0, 0.5]), 0, 5)
        tensor([[0.0000, 1.0000, 2.5000, 4.0000, 1.5000]])
    """
    K, T = w.shape[-1], x.shape[-1]
    n_out = hi - lo
    source = x.reshape(1, 1, -1, T)  # the rows as the lines of one image
    left = K - 1 - lo
    if left >= 0 and n_out + K - 1 == T + 2 * left:
        # The same zeros on both sides ("full", "valid", "same" with an odd kernel): the
        # convolution's own padding, without a padded copy (~2 us of a ~20 us call).
        padding = (0, left)
    else:
        source, padding = _source(source, K, lo, n_out), (0, 0)
    taps = w.reshape(1, 1, 1, K).flip(-1)
    with autocast_off("cpu"):
        if needs_graph(x, w):
            # Recorded: conv2d, whose backward has forward-mode rules too (forward-over-
            # reverse Hessian products); torch takes its native convolution for a batch of
            # one this small.
            out = F.conv2d(source, taps, None, 1, padding)
        else:
            out = _framed_conv._native_conv2d(source, taps, (1, K), None, (1, 1), padding)
    if w.dim() == 1:
        return out.view(x.shape[:-1] + (n_out,))
    # A kernel (1, ..., 1, K) adds its leading ones to the result's shape, as broadcasting does.
    return out.view(*broadcast_shapes(x.shape[:-1], w.shape[:-1]), n_out)


# The weight gradient of torch's native convolution, where this torch exposes it by name.
_native_conv2d_backward = getattr(
    getattr(torch.ops.aten, "_slow_conv2d_backward", None), "output_mask", None
)


def tiny_lagged_products(g: torch.Tensor, x: torch.Tensor, lo: int, K: int) -> torch.Tensor | None:
    """``c[k] = sum over rows and m of g[m] * x[m + lo - k]`` for ``0 <= k < K`` (``x`` zero
    outside its samples), the gradient of a kernel shared by every row, for a small call:
    the weight gradient of :func:`tiny_range`'s native convolution, every row at once (7.6
    us for 1 x 1,024 with 31 taps, 14.5 for 4 x 1,024, where the framed convolution's took
    ~40). None past :func:`tiny_products`, or where :func:`tiny_range` would not take
    the dtypes.

    Shape:
        g ``(*batch, L)``, x ``(*bx, T)`` (broadcasting to ``batch``) -> ``(K,)``.

    Example:
        >>> g, x = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 10.0, 100.0])
        >>> tiny_lagged_products(g, x, 1, 2)  # c[k] = g[0] x[1 - k] + g[1] x[2 - k]
        tensor([210.,  21.])
    """
    L, T = g.shape[-1], x.shape[-1]
    grads = g.reshape(-1, L)
    R = grads.shape[0]
    if (
        _native_conv2d_backward is None
        or g.dtype != x.dtype
        or x.device.type != "cpu"
        or not small_call(R, L, K, x.dtype)
    ):
        return None
    source = _source(x.expand(*g.shape[:-1], T).reshape(R, T), K, lo, L)
    taps = source.new_empty(1, 1, 1, K)  # only its shape is read
    with autocast_off("cpu"):
        _, lags, _ = _native_conv2d_backward(
            grads.contiguous().view(1, 1, R, L),
            source.contiguous().view(1, 1, R, L + K - 1),  # one tap: x itself, maybe strided
            taps,
            [1, K],
            [1, 1],
            [0, 0],
            [False, True, False],
        )
    return lags.reshape(K).flip(0)  # the forward reads the taps reversed


def takes_shifted_sums(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> bool:
    """:func:`shifted_sums_for` these operands (one kernel for every row, in the signal's
    dtype, can take all rows at once: ``_framed_conv.takes_whole_rows``), where the call is
    not small enough for :func:`tiny_range`."""
    return not takes_tiny_range(x, w, lo, hi) and _past_tiny_takes_shifted_sums(x, w, lo, hi)


def _past_tiny_takes_shifted_sums(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> bool:
    # takes_shifted_sums for a call already known not to take tiny_range.
    K, T = w.shape[-1], x.shape[-1]
    whole_rows = (
        MIN_WHOLE_ROWS_TAPS <= K <= MAX_SHIFT_ADD_TAPS  # else the plan decides nothing
        and w.numel() == K
        and x.dtype == w.dtype
        and _framed_conv.takes_whole_rows(x, K, hi - lo, K - 1 - lo)
    )
    return shifted_sums_for(K, T, whole_rows)


def _cpu_range(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    # Nothing recorded (CPU): one kernel for every row as (K,), or a kernel per row.
    K = w.shape[-1]
    if takes_tiny_range(x, w, lo, hi):
        return tiny_range(x, w, lo, hi)
    taps = w.flip(-1) if w.numel() > K else w.flip(-1).reshape(K)
    shape = (*broadcast_shapes(x.shape[:-1], w.shape[:-1]), hi - lo)
    if _past_tiny_takes_shifted_sums(x, w, lo, hi):
        return shift_add_correlate(x, taps, hi - lo, K - 1 - lo).reshape(shape)
    return toeplitz_correlate(x, taps, hi - lo, K - 1 - lo).reshape(shape)


class _DirectRange(torch.autograd.Function):
    """:func:`direct_range` with gradients, on CUDA and for kernels too long for the CPU paths
    (``fast=False``: Triton or ``conv1d``), or on CPU (``fast=True``: the shifted sums or
    Toeplitz GEMMs in pieces, which autograd cannot see into).

    The backward pass is written out: autograd would route the kernel gradient through
    ``conv1d``'s weight gradient (an order of magnitude slower than an FFT on GPUs). The
    signal gradient is a correlation: the fused CUDA kernel with the taps read in order, or
    this same Function on the flipped kernel (on CPU, and for a second derivative); the kernel
    gradient is the lagged products of the fused CUDA kernel (:func:`lagged_dot`, up to
    ``MAX_LAG_TAPS`` taps) or on the fast CPU path of the GEMMs
    (:func:`toeplitz_lagged_products`), else one frequency-domain cross-correlation summed
    over the batch. For a second derivative (``create_graph``) both are built from
    differentiable pieces.
    """

    @staticmethod
    def forward(ctx, x, w, lo, hi, fast):  # noqa: D102
        ctx.save_for_backward(x, w)
        ctx.lo, ctx.fast = lo, fast
        return owned(_cpu_range(x, w, lo, hi) if fast else _direct_forward(x, w, lo, hi), x, w)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        # The CPU sums write in place, which vmap cannot batch; a tangent needs jvp rules.
        if batched_gradient(grad) or carries_tangent(grad):
            needed = (need_x, need_w)
            grad_x, grad_w = gradients_from_pieces(conv1d_range, grad, x, w, ctx.lo, needed)
            return grad_x, grad_w, None, None, None
        K = w.shape[-1]
        grad_x = grad_w = None
        if not torch.is_grad_enabled():  # no graph of the gradients wanted
            if need_w and ctx.fast:  # a small call's one convolution, or the GEMMs'
                per_row = w.numel() > K
                lags = None if per_row else tiny_lagged_products(grad, x, ctx.lo, K)
                if lags is None:
                    lags = toeplitz_lagged_products(grad, x, ctx.lo, K, per_row)
                grad_w = lags.sum_to_size(w.shape) if per_row else lags.reshape(w.shape)
            elif need_w:  # the fused CUDA kernel where it runs; None leaves it to the FFT below
                lags = lagged_dot(grad, x, ctx.lo, K)
                grad_w = None if lags is None else lags.sum_to_size(w.shape)
            if need_x and not ctx.fast:
                # A correlation with the kernel: the fused kernel reads the taps in order, so
                # neither a flipped copy nor this Function again (a launch and host time).
                sums = sliding_dot(grad, w, ctx.lo, x.shape[-1])
                grad_x = None if sums is None else sums.sum_to_size(x.shape)
        needed = (need_x and grad_x is None, need_w and grad_w is None)
        grad_x_pieces, grad_w_pieces = gradients_from_pieces(
            direct_range, grad, x, w, ctx.lo, needed
        )
        grad_x = grad_x if grad_x is not None else grad_x_pieces
        return grad_x, grad_w if grad_w is not None else grad_w_pieces, None, None, None
