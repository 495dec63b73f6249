"""Fused Triton kernels for the direct method on CUDA (short kernels): the sliding dot product
of the forward pass and of the signal's gradient, and the kernel gradient's lagged products.

One program computes a block of outputs of one row: for each tap it loads the shifted block
of the signal (from L1/L2 after the first tap) and accumulates in registers, reading the
signal about once from memory and writing the output once. No padded copy is made: a load
mask stands for the samples past the ends, whose terms are left out of each sum, so every
output is its own direct sum and NaN/Inf need no separate handling (no host sync).

Blocks whose every term lies inside the signal (all but a row's first and last) run a loop
with no masks, and offsets within a row are 32-bit. Measured on H200s (kernel alone, float32;
``benchmarks/gpu_kernel_variants.py``, two runs): 16 x 480,000 samples take 20-30 us with 3
taps (a copy: 20 us) and 127-128 us with 31 (a masked loop on every block: 185-199 us). A row
of 1,024 outputs is one block, all masked: 4,096 of them with 31 taps took 74 us with 32-bit
offsets and 114-115 us with 64-bit ones.

The kernel gradient (:func:`lagged_dot`) sums ``g[m] * x[m + lo - k]`` for every lag ``k`` at
once: each program accumulates a tile of samples by lags in registers over a span of ``g``
and reduces it once; the spans' partial sums are added by one ``sum``. On an H200 it took a
training step of 16 x 4,194,304 samples and 15 taps to 3.32 ms (6.75 ms with two FFTs, in an
earlier tune on another H200).

Used only when Triton imports and the tensors are on a CUDA device; otherwise (and if a launch
ever fails) the caller falls back to ``conv1d`` or FFTs. ``DIFFCONV_NO_TRITON=1`` disables
them.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import types
import warnings
from collections.abc import Callable

import torch

from diffconv_core._validation import broadcast_shapes

_BLOCK = 1024
# On an H200 (torch 2.11, Triton 3.6) 1,024 outputs and 4 warps a block were the fastest or
# within 5% of it in every case measured with the mask-free interior loop (8 warps had been
# best with masks on every block); 2,048 outputs doubled the time for 4,096 rows of 1,024.
# Unrolling the tap loop 4-16 times was slower, not faster.
_WARPS = 4

# The module holding the compiled kernels once Triton has imported; the reason the fused path
# is off otherwise (Triton absent, or a launch that failed), after which it is never retried.
_kernels: types.ModuleType | None = None
_disabled_reason: str | None = None


def _kernel_module() -> types.ModuleType | None:
    """Import Triton and the kernels on first use: CPU-only work never pays for the import."""
    global _kernels, _disabled_reason
    if _kernels is None and _disabled_reason is None:
        try:  # Triton ships with torch's CUDA builds; the CPU build has none.
            _kernels = importlib.import_module("diffconv_core._triton_kernels")
        except Exception as error:  # absent or broken: conv1d serves instead, silently
            _disabled_reason = f"Triton does not import ({type(error).__name__}: {error})"
    return None if _disabled_reason is not None else _kernels


def _kernels_for(x: torch.Tensor) -> types.ModuleType | None:
    # Half types stay with cuDNN: the kernel's float16/bfloat16 path has not run on a GPU yet.
    if (
        not x.is_cuda
        or x.dtype not in (torch.float32, torch.float64)
        or os.environ.get("DIFFCONV_NO_TRITON") == "1"
    ):
        return None
    return _kernel_module()


#: Offsets within a row stay below this in 32-bit arithmetic; longer rows take 64-bit offsets.
_INT32_LIMIT = 2**31


def _needs_long_offsets(*sizes: int) -> bool:
    # The kernels' offsets within a row are sums of these at most (samples, outputs, taps,
    # shift, a block), so 32 bits hold them when their sum does.
    return sum(sizes) >= _INT32_LIMIT


def available(x: torch.Tensor) -> bool:
    """Whether the fused kernel can run on ``x``'s device and dtype."""
    return _kernels_for(x) is not None


def sliding_dot(
    x: torch.Tensor, taps: torch.Tensor, shift: int, n_out: int, *, taps_reversed: bool = False
) -> torch.Tensor | None:
    """``out[m] = sum_j taps[j] x[m + j - shift]`` over the terms with ``0 <= m + j - shift < T``
    (each output its own direct sum, NaN and Inf included), or None if unavailable.

    ``taps_reversed`` says that ``taps`` holds the taps last to first (a convolution kernel as
    given), read so in place instead of from a flipped copy (a launch of its own on CUDA).

    Shape:
        x ``(*bx, T)``, taps ``(*bt, K)`` -> ``(*broadcast(bx, bt), n_out)``.
    """
    kernels = _kernels_for(x)
    if kernels is None:
        return None
    T, K = x.shape[-1], taps.shape[-1]
    if taps.dim() == 1 and x.is_contiguous():
        # The common case in as few host operations as possible (each costs microseconds,
        # as much as the kernel on short signals): rows read in place, out in its final shape.
        x2, taps2, taps_stride = x, taps.contiguous(), 0
        rows, shape = math.prod(x.shape[:-1]), (*x.shape[:-1], n_out)
    else:
        batch = broadcast_shapes(x.shape[:-1], taps.shape[:-1])
        rows, shape = math.prod(batch), (*batch, n_out)
        x2 = x.expand(*batch, T).reshape(rows, T).contiguous()
        if taps[..., 0].numel() == 1:
            taps2, taps_stride = taps.reshape(1, K).contiguous(), 0
        else:
            taps2 = taps.expand(*batch, K).reshape(rows, K).contiguous()
            taps_stride = K
    out = torch.empty(shape, device=x.device, dtype=x.dtype)
    if out.numel() == 0:  # an empty grid is not a launch
        return out
    grid = (-(-n_out // _BLOCK) * rows,)
    launch = functools.partial(
        kernels.sliding_dot_kernel[grid],
        x2, taps2, out, T, n_out, shift, T, taps_stride, n_out, K,
        BLOCK=_BLOCK, WIDE=x.dtype == torch.float64, REVERSED=taps_reversed,
        LONG=_needs_long_offsets(T, n_out, K, abs(shift), 2 * _BLOCK), num_warps=_WARPS,
    )  # fmt: skip
    return out if _launched(launch, "direct kernel", "conv1d") else None


#: The kernel gradient's fused kernel takes kernels up to this long (its tile holds a lane a
#: tap); longer ones, rare on the direct method, keep the frequency-domain products.
MAX_LAG_TAPS = 64
# Samples of g each program of the kernel-gradient kernel sums over, and the tile's size.
_LAG_SPAN = 4096
_LAG_TILE = 4096


def lag_lanes(K: int) -> int:
    """The lags a tile of the kernel gradient holds for ``K`` taps: a power of two, at least
    16 (measured so on an H200; fewer for short kernels is a candidate in
    ``benchmarks/gpu_kernel_variants.py``).

    Example:
        >>> [lag_lanes(K) for K in (1, 3, 16, 17, 64)]
        [16, 16, 16, 32, 64]
    """
    return max(16, 1 << (K - 1).bit_length())


def lagged_dot(g: torch.Tensor, x: torch.Tensor, lo: int, K: int) -> torch.Tensor | None:
    """``c[..., k] = sum_m g[..., m] x[..., m + lo - k]`` for ``0 <= k < K`` over the terms
    with ``0 <= m + lo - k < T``: the kernel gradient of the direct method on a row each, as
    one fused kernel; None if unavailable or ``K > MAX_LAG_TAPS``.

    Shape:
        g ``(*batch, L)``, x ``(*bx, T)`` with ``bx`` broadcasting to ``batch`` ->
        ``(*batch, K)``.
    """
    kernels = _kernels_for(g)
    if kernels is None or not 0 < K <= MAX_LAG_TAPS:
        return None
    batch, L, T = g.shape[:-1], g.shape[-1], x.shape[-1]
    rows = math.prod(batch)
    g2 = g.to(x.dtype).contiguous()
    x2 = (x if x.shape[:-1] == batch else x.expand(*batch, T)).contiguous()
    lanes = lag_lanes(K)
    spans = -(-L // _LAG_SPAN)
    if rows * spans == 0:  # no term at all: an empty grid is not a launch
        return g.new_zeros(*batch, K, dtype=x.dtype)
    part = torch.empty(rows * spans, lanes, device=g.device, dtype=x.dtype)
    launch = functools.partial(
        kernels.lagged_dot_kernel[(rows * spans,)],
        g2, x2, part, T, L, lo, K, spans,
        SPAN=_LAG_SPAN, ROWS=_LAG_TILE // lanes, KB=lanes, WIDE=x.dtype == torch.float64,
        LONG=_needs_long_offsets(T, L, K, abs(lo), _LAG_SPAN), num_warps=_WARPS,
    )  # fmt: skip
    if not _launched(launch, "kernel-gradient kernel", "FFTs"):
        return None
    return part.view(rows, spans, lanes)[..., :K].sum(1).reshape(*batch, K)


def _launched(launch: Callable[[], object], kernel: str, fallback: str) -> bool:
    """Run one kernel launch; if it fails, turn the fused kernels off for the process, warn
    once, and say so (the caller then takes ``fallback``): a broken toolchain must not break
    a convolution or its backward pass."""
    global _disabled_reason
    try:
        launch()
    except Exception as error:
        _disabled_reason = f"{type(error).__name__}: {error}"
        warnings.warn(
            f"diffconv: the Triton {kernel} failed ({_disabled_reason}); "
            f"falling back to {fallback}",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True
