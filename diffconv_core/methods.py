"""Which algorithm computes a convolution fastest: ``choose_method`` and its cost model.

Three algorithms compute the same result (see ``diffconv_core.convolve``):

- "direct": a sliding dot product, ``B * L * K`` multiply-adds; best for short kernels.
- "fft": one FFT of about ``T + K`` samples per signal; best when both are moderate.
- "overlap": overlap-save, blocked FFTs of a few thousand samples; best for very long signals
  with much shorter kernels, where one huge FFT falls out of cache.

The model below prices each in "nanoseconds" with per-device constants measured by
``benchmarks/bench_core.py``. ``diffconv tune`` can measure a device and cache the winners;
when such a cache exists for the device it is consulted first (``diffconv_core.tuning``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from diffconv_core._fft import next_fast_len
from diffconv_core._overlap import block_fft_length
from diffconv_core._validation import MODES, check_choice

# Cost constants per device type: (direct per multiply-add, FFT per n*log2(n) element,
# fixed overhead per call). Rough first calibration, refined by the benchmarks.
_COSTS = {
    "cpu": {"direct": 2.0, "fft": 0.9, "overhead_fft": 20_000.0, "overhead_direct": 5_000.0},
    "cuda": {"direct": 0.002, "fft": 0.004, "overhead_fft": 30_000.0, "overhead_direct": 10_000.0},
}


def output_length(T: int, K: int, mode: str) -> int:
    """Output length of a convolution of ``T`` samples with ``K`` taps in ``mode``.

    Example:
        >>> [output_length(100, 7, m) for m in ("full", "same", "valid")]
        [106, 100, 94]
    """
    if mode == "full":
        return T + K - 1
    if mode == "same":
        return T
    return max(T, K) - min(T, K) + 1


def estimate_costs(batch: int, T: int, K: int, mode: str, device_type: str) -> dict[str, float]:
    """Modelled cost of each method (arbitrary units; lower is faster)."""
    c = _COSTS.get(device_type, _COSTS["cuda"])
    if mode == "valid" and K > T:
        T, K = K, T
    L = output_length(T, K, mode)
    direct = c["overhead_direct"] + c["direct"] * batch * L * K
    n_fft = next_fast_len(T + K)
    fft = c["overhead_fft"] + c["fft"] * batch * 3 * n_fft * math.log2(max(n_fft, 2))
    block = block_fft_length(K, L)
    n_blocks = math.ceil(L / (block - K + 1))
    overlap = c["overhead_fft"] * 1.5 + c["fft"] * batch * n_blocks * 2 * block * math.log2(block)
    return {"direct": direct, "fft": fft, "overlap": overlap}


def choose_method(
    signal_shape: Sequence[int] | torch.Size,
    kernel_shape: Sequence[int] | torch.Size,
    *,
    mode: str = "same",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> str:
    """The fastest method ("direct", "fft" or "overlap") for a convolution of these shapes.

    ``method="auto"`` in :func:`diffconv_core.convolve` calls this. A cache written by
    ``diffconv tune`` for the device takes precedence over the built-in cost model.

    Shape:
        signal_shape ``(..., T)``, kernel_shape ``(..., K)`` (leading dims broadcast).

    Example:
        >>> choose_method((1, 64), (3,))
        'direct'
        >>> choose_method((1, 1 << 22), (1023,))
        'overlap'
    """
    check_choice("mode", mode, MODES)
    signal_shape, kernel_shape = tuple(signal_shape), tuple(kernel_shape)
    if len(signal_shape) == 0 or len(kernel_shape) == 0:
        raise ValueError(
            "signal_shape and kernel_shape need at least one dimension (time last); "
            f"got {signal_shape} and {kernel_shape}"
        )
    T, K = int(signal_shape[-1]), int(kernel_shape[-1])
    if T < 1 or K < 1:
        raise ValueError(f"signal and kernel lengths must be positive; got T={T}, K={K}")
    try:
        batch_shape = torch.broadcast_shapes(signal_shape[:-1], kernel_shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"shapes do not broadcast: signal {signal_shape}, kernel {kernel_shape}"
        ) from None
    device_type = torch.device(device).type
    batch = math.prod(batch_shape)
    from diffconv_core import tuning  # the measured cache, if any

    cached = tuning.lookup(device_type, batch, T, K, mode, dtype, device=device)
    if cached is not None:
        return cached
    costs = estimate_costs(batch, T, K, mode, device_type)
    return min(costs, key=costs.__getitem__)
