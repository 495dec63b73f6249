"""Convolution that ``torch.func`` transforms and forward-mode AD can see through.

The methods' fast paths are custom autograd Functions with host-side decisions (which piece
plan, whether any sample is non-finite): ``vmap`` cannot run them ("Cannot access data
pointer"), and ``jacrev``, ``jacfwd``, ``jvp``, ``hessian`` or dual tensors refuse Functions
without ``setup_context``/``jvp``. Under any of these the core computes with plain torch
operations instead: ``conv1d`` for the direct method (and short kernels on a GPU under
"auto"), one rFFT product otherwise. Non-finite values keep the same semantics as everywhere
else (each output is its direct sum's IEEE value, and such outputs are constants to
autograd). The overflow scaling of huge values is not done here.
"""

from __future__ import annotations

import math

import torch

from diffconv_core._direct import conv1d_range
from diffconv_core._fft import plain_fft_range
from diffconv_core._nonfinite import _magnitudes, with_direct_sum_nonfinite
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
    # conv1d on one channel is slow on a CPU (64 x 8,000 with 31 taps: 4.2 ms, an rFFT 0.8 ms):
    # there only an explicit "direct" takes it.
    short = w.shape[-1] <= MAX_CONV1D_TAPS and x.device.type != "cpu"
    direct = method == "direct" or (method == "auto" and short)
    range_fn = conv1d_range if direct else plain_fft_range
    x_finite, w_finite = _finiteness(x, w)
    if x_finite and w_finite:
        return range_fn(x, w, lo, hi)

    def on_finite_parts(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return range_fn(a, b, lo, hi)

    return with_direct_sum_nonfinite(range_fn, x, w, lo, hi, x_finite, w_finite, on_finite_parts)


def _finiteness(x: torch.Tensor, w: torch.Tensor) -> tuple[bool, bool]:
    """Whether each operand is all finite, read from the tensors under the transforms' wrappers
    (``vmap`` refuses to read a batched value: "Cannot access data pointer"). Under vmap the
    answer covers the whole batch, one decision for every element. (False, False) where no
    value can be read: the non-finite handling then runs in any case."""
    try:
        x_max, w_max = _magnitudes(unwrapped(x), unwrapped(w))
    except RuntimeError:
        return False, False
    return math.isfinite(x_max), math.isfinite(w_max)
