"""Direct (sliding dot product) convolution for short kernels.

On CPU it runs as block-Toeplitz matrix products (``_toeplitz``), several times faster than
``conv1d`` there, or for up to 12 taps without autograd as shifted multiply-adds
(``_shift_add``). On CUDA the forward pass is a fused Triton kernel (``_triton_direct``), or
``conv1d`` with the flipped kernel where Triton is missing; the backward pass is written out
rather than left to autograd, because autograd would route the kernel gradient through
cuDNN's depthwise weight gradient, which is an order of magnitude slower than an FFT on GPUs.
The signal gradient is again a direct convolution (this same Function, so the gradient of the
gradient exists); the kernel gradient is one frequency-domain cross-correlation summed over
the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from diffconv_core._fft import fft_lagged_products
from diffconv_core._shift_add import MAX_SHIFT_ADD_TAPS, shift_add_correlate
from diffconv_core._toeplitz import toeplitz_correlate, toeplitz_lagged_products
from diffconv_core._triton_direct import sliding_dot
from diffconv_core._validation import broadcast_shapes, needs_graph

# Beyond this many taps the Toeplitz blocks (2P x P) grow too large to pay off.
MAX_TOEPLITZ_TAPS = 1024


def _source(x: torch.Tensor, K: int, lo: int, n_out: int) -> torch.Tensor:
    # A sliding dot product out[m] = sum_j v[j] src[m + j] with v the flipped kernel reads
    # x delayed by K - 1 - lo samples (negative pads crop), n_out + K - 1 samples long.
    left = K - 1 - lo
    return F.pad(x, (left, n_out + K - 1 - x.shape[-1] - left))


def _direct_forward(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    K = w.shape[-1]
    n_out = hi - lo
    fused = sliding_dot(x, w.flip(-1), K - 1 - lo, n_out)
    if fused is not None:
        return fused
    batch = broadcast_shapes(x.shape[:-1], w.shape[:-1])
    source = _source(x, K, lo, n_out)
    taps = w.flip(-1)
    n_src = source.shape[-1]
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


class _DirectRange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, lo, hi):  # noqa: D102
        ctx.save_for_backward(x, w)
        ctx.lo = lo
        return _direct_forward(x, w, lo, hi)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, w = ctx.saved_tensors
        lo, T, K = ctx.lo, x.shape[-1], w.shape[-1]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # d/dx: correlate the output gradient with the kernel (convolve with it flipped)
            grad_x = direct_range(grad, w.flip(-1), K - 1 - lo, K - 1 - lo + T)
            grad_x = grad_x.sum_to_size(x.shape)
        if ctx.needs_input_grad[1]:
            grad_w = fft_lagged_products(grad, x, lo, K, reduce_to=tuple(w.shape[:-1]))
            grad_w = grad_w.sum_to_size(w.shape)
        return grad_x, grad_w, None, None


def direct_range(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Samples ``lo <= n < hi`` of the full linear convolution of ``x`` and ``w``, directly.

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` -> ``(*broadcast(bx, bw), hi - lo)``;
        ``0 <= lo <= hi <= T + K - 1``.
    """
    K = w.shape[-1]
    if x.device.type == "cpu" and K <= MAX_TOEPLITZ_TAPS:
        if w.numel() > K:  # a kernel per row: batched GEMMs, differentiable as written
            return toeplitz_correlate(x, w.flip(-1), hi - lo, shift=K - 1 - lo)
        if needs_graph(x, w):
            return _SharedKernelRange.apply(x, w, lo, hi)
        return _shared_kernel_range(x, w, lo, hi)
    return _DirectRange.apply(x, w, lo, hi)


def _shared_kernel_range(x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    # One kernel for every row, nothing recorded (CPU): the fast paths take it as (K,).
    K = w.shape[-1]
    taps, shift = w.flip(-1).reshape(K), K - 1 - lo
    shape = (*broadcast_shapes(x.shape[:-1], w.shape[:-1]), hi - lo)
    if K <= MAX_SHIFT_ADD_TAPS:
        return shift_add_correlate(x, taps, hi - lo, shift).reshape(shape)
    return toeplitz_correlate(x, taps, hi - lo, shift).reshape(shape)


class _SharedKernelRange(torch.autograd.Function):
    """:func:`direct_range` on CPU for one kernel shared by every row, with gradients.

    The forward pass is the fast path without autograd (shifted sums or Toeplitz GEMMs in
    pieces); so is the signal gradient, a direct correlation with the kernel; the kernel
    gradient is the GEMMs' lagged products (:func:`toeplitz_lagged_products`). Recorded
    through autograd instead, the whole-batch Toeplitz GEMMs cost about twice as much. For a
    second derivative (``create_graph``) the gradients are built from differentiable pieces.
    """

    @staticmethod
    def forward(ctx, x, w, lo, hi):  # noqa: D102
        ctx.save_for_backward(x, w)
        ctx.lo = lo
        return _shared_kernel_range(x, w, lo, hi)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, w = ctx.saved_tensors
        lo, T, K = ctx.lo, x.shape[-1], w.shape[-1]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # d/dx: correlate the output gradient with the kernel (this same Function, or the
            # fast path when no graph is being built)
            grad_x = direct_range(grad, w.flip(-1), K - 1 - lo, K - 1 - lo + T)
            grad_x = grad_x.sum_to_size(x.shape)
        if ctx.needs_input_grad[1]:
            if torch.is_grad_enabled():  # create_graph: a differentiable kernel gradient
                grad_w = fft_lagged_products(grad, x, lo, K, reduce_to=())
            else:
                grad_w = toeplitz_lagged_products(grad, x, lo, K)
            grad_w = grad_w.reshape(w.shape)
        return grad_x, grad_w, None, None
