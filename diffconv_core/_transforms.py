"""Convolution that ``torch.func`` transforms and forward-mode AD can see through.

The methods' fast paths are custom autograd Functions with host-side decisions (which piece
plan, whether any sample is non-finite): ``vmap`` cannot run them ("Cannot access data
pointer"), and ``jacrev``, ``jacfwd``, ``jvp``, ``hessian`` or dual tensors refuse Functions
without ``setup_context``/``jvp``. Under any of these the core computes with plain torch
operations instead: ``conv1d`` for the direct method (and short kernels on a GPU under
"auto"), one rFFT product otherwise. Non-finite values keep the same semantics as everywhere
else (each output is its direct sum's IEEE value, and such outputs are constants to
autograd). Where huge finite values overflowed inside the method, it is run again: float32
in float64, whose range holds all its sums; float64 on operands scaled by powers of two, as
eager mode does (here plain multiplications, which every transform sees through). The values
and tangents then match eager's, but float64's reverse-mode gradients taken under a transform
go through those recorded multiplications (the incoming gradient times the result's scale)
and can overflow where eager's, which rescale that gradient, do not.
"""

from __future__ import annotations

import math

import torch

from diffconv_core._direct import conv1d_range
from diffconv_core._fft import plain_fft_range
from diffconv_core._nonfinite import (
    RangeFn,
    _magnitudes,
    _may_overflow,
    _scaled_range,
    _transforms,
    with_direct_sum_nonfinite,
)
from diffconv_core._validation import carries_tangent, unwrapped

# Under "auto" on a GPU, conv1d's direct sums up to this many taps, one rFFT product beyond.
MAX_CONV1D_TAPS = 64


def transforms_active(*tensors: torch.Tensor) -> bool:
    """Whether a ``torch.func`` transform is running, or one of ``tensors`` carries a
    forward-mode tangent (``torch.autograd.forward_ad.make_dual``)."""
    # Any running transform, not only wrapped operands: vmap refuses custom Functions
    # whatever their inputs, so tensors captured from outside (a learnable kernel that
    # autograd records) must take the plain path as well.
    if torch._C._are_functorch_transforms_active():
        return True
    return any(carries_tangent(t) for t in tensors)


def empty_range(x: torch.Tensor, w: torch.Tensor, length: int) -> torch.Tensor:
    """The result for an empty batch: shaped from both operands, so autograd sees them.

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` with an empty ``broadcast(bx, bw)`` ->
        ``(*broadcast(bx, bw), length)``.

    Example:
        >>> empty_range(torch.ones(0, 10), torch.ones(3), 10).shape
        torch.Size([0, 10])
    """
    none = x.sum(-1, keepdim=True) * w.sum(-1, keepdim=True) * 0
    return none.expand(*none.shape[:-1], length)


def transformable_range(
    method: str, x: torch.Tensor, w: torch.Tensor, lo: int, hi: int
) -> torch.Tensor:
    """Samples ``lo <= n < hi`` of the full linear convolution, in plain torch operations.

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` -> ``(*broadcast(bx, bw), hi - lo)``.
    """
    if unwrapped(x).numel() == 0 or unwrapped(w).numel() == 0:
        # vmap over an empty batch: nothing to compute, and MKL refuses an empty FFT plan
        # (conv1d's reshape as well).
        return empty_range(x, w, hi - lo)
    range_fn = plain_range_function(method, x, w)
    x_max, w_max = _largest(x, w)
    x_finite, w_finite = math.isfinite(x_max), math.isfinite(w_max)
    if x_finite and w_finite:
        return _rescaled_if_overflowed(range_fn, x, w, lo, hi, x_max, w_max)

    def on_finite_parts(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _rescaled_if_overflowed(range_fn, a, b, lo, hi, *_largest(a, b))

    return with_direct_sum_nonfinite(range_fn, x, w, lo, hi, x_finite, w_finite, on_finite_parts)


def plain_range_function(method: str, x: torch.Tensor, w: torch.Tensor) -> RangeFn:
    """The range function of plain torch operations that stands for ``method``:
    ``conv1d_range`` for "direct" (and, under "auto", kernels of up to ``MAX_CONV1D_TAPS``
    taps off the CPU), else ``plain_fft_range``.

    Example:
        >>> plain_range_function("auto", torch.ones(8), torch.ones(3)).__name__
        'plain_fft_range'
    """
    # conv1d on one channel is slow on a CPU (64 x 8,000 with 31 taps: 4.2 ms, an rFFT 0.8 ms):
    # there only an explicit "direct" takes it.
    short = w.shape[-1] <= MAX_CONV1D_TAPS and x.device.type != "cpu"
    direct = method == "direct" or (method == "auto" and short)
    return conv1d_range if direct else plain_fft_range


def _rescaled_if_overflowed(
    range_fn: RangeFn,
    x: torch.Tensor,
    w: torch.Tensor,
    lo: int,
    hi: int,
    x_max: float,
    w_max: float,
) -> torch.Tensor:
    # Eager mode's power-of-two scaling (_nonfinite._without_overflow) without its autograd
    # Function, which the transforms refuse: an rFFT of 1,000 float32 samples near 1e37
    # overflowed to Inf, and every output to NaN, where the result (~3e35) is finite.
    if not (math.isfinite(x_max) and math.isfinite(w_max)):
        return range_fn(x, w, lo, hi)  # nothing readable: left unscaled, as before
    y = range_fn(x, w, lo, hi)
    if not _may_overflow(x, w, x_max, w_max, _transforms(range_fn)):
        return y
    # The scalings are recorded as plain products: a backward pass through them multiplies
    # the incoming gradient by the result's scale. Eager mode's (largest values near 1:
    # 2**121 for float32 1e36 under a unit kernel) then overflowed in the FFT where the
    # unscaled gradient (31) did not. So they are used only where the unscaled sums did
    # overflow (one reduction, readable under vmap), and only as far as the bounds need.
    try:
        (y_max,) = _magnitudes(unwrapped(y))
    except RuntimeError:
        return y
    if math.isfinite(y_max):
        return y
    if x.dtype == torch.float32 and _transforms(range_fn):
        # float32 through a transform: in float64, whose range holds every sum of float32
        # values, nothing is scaled, so no recorded product meets a backward pass, and a
        # result past float32's range keeps its small outputs finite (scaled, 1e30 samples
        # under 1e20 taps gave Inf for most of their exact zeros; eager mode's rule too).
        y = range_fn(x.to(torch.float64), w.to(torch.float64), lo, hi)
        return y.to(torch.float32)
    return _scaled_range(range_fn, x, w, lo, hi, *_least_scaling(x, w, x_max, w_max, range_fn))


def _least_scaling(
    x: torch.Tensor, w: torch.Tensor, x_max: float, w_max: float, range_fn: RangeFn
) -> tuple[int, int]:
    """Powers of two to divide ``x`` and ``w`` by (>= 0 each), just enough that
    :func:`_nonfinite._may_overflow`'s bounds hold, with a margin of 2**4."""
    n, K = x.shape[-1] + w.shape[-1], w.shape[-1]
    limit = math.log2(torch.finfo(x.dtype).max) - 6
    x_log, w_log = math.log2(x_max), math.log2(w_max)
    x_exp = w_exp = 0
    if _transforms(range_fn):  # each operand's own spectrum
        x_exp = max(0, math.ceil(x_log + math.log2(n) - limit))
        w_exp = max(0, math.ceil(w_log + math.log2(n) - limit))
    worst = x_log - x_exp + w_log - w_exp + math.log2(K) + 2 * math.log2(n)
    rest = max(0, math.ceil(worst - limit))
    # The rest from the larger operand first, then evenly: neither nearer the subnormals.
    gap = (x_log - x_exp) - (w_log - w_exp)
    to_x = min(rest, max(0, math.floor(gap))) if gap > 0 else 0
    to_w = min(rest, max(0, math.floor(-gap))) if gap < 0 else 0
    even = rest - to_x - to_w
    return x_exp + to_x + even // 2, w_exp + to_w + even - even // 2


def _largest(x: torch.Tensor, w: torch.Tensor) -> tuple[float, float]:
    """Each operand's largest magnitude (NaN or Inf where it has a non-finite value), read from
    the tensors under the transforms' wrappers (``vmap`` refuses to read a batched value:
    "Cannot access data pointer"). Under vmap it covers the whole batch, one decision for
    every element. (NaN, NaN) where no value can be read: the non-finite handling then runs
    in any case, unscaled."""
    try:
        x_max, w_max = _magnitudes(unwrapped(x), unwrapped(w))
    except RuntimeError:
        return math.nan, math.nan
    return x_max, w_max
