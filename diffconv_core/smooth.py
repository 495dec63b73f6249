"""Smoothing: convolution with a unit-sum window, with edge and NaN handling.

:func:`smooth` is the function behind ``diffconv smooth``: it builds a window from the
registry (:mod:`diffconv_core.windows`), normalised to unit DC gain, and convolves it with
the signal in "same" mode (centred as ``scipy.signal.convolve`` centres it, even lengths
included), so the output has the input's length.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from diffconv_core import _window_build as _b
from diffconv_core._compile import recording_graph
from diffconv_core._transforms import transforms_active
from diffconv_core._validation import PADDINGS, check_choice, check_tensor
from diffconv_core.convolution import convolve
from diffconv_core.padding import pad
from diffconv_core.windows import get_window

__all__ = ["smooth", "EDGES", "NAN_POLICIES"]

EDGES = (*PADDINGS, "renormalize")
NAN_POLICIES = ("propagate", "omit", "raise")


def smooth(
    signal: Tensor,
    window: str | tuple | float = "hann",
    length: int = 31,
    *,
    edges: str = "reflect",
    nan_policy: str = "propagate",
    sym: bool = True,
    width: float | Tensor | None = None,
    method: str = "auto",
    **window_params: Any,
) -> Tensor:
    """Smooth along the last axis with a unit-sum window; the output has the input's length.

    Args:
        signal: real floating-point tensor, time last.
        window: a window name, ``(name, *params)`` tuple or Kaiser beta, as
            :func:`diffconv_core.windows.get_window` takes it (symmetric by default).
        length: window length in taps, >= 1. An even length is centred as scipy's "same"
            mode centres it (half a sample towards the start).
        edges: how the signal continues past its ends: any ``padding`` of
            :func:`diffconv_core.convolve` ("zeros", "reflect", "symmetric", "replicate",
            "circular"), or "renormalize": zero padding, with each output divided by the
            part of the window that lies inside the signal (no droop at the ends).
        nan_policy: "propagate" (a NaN spoils the outputs whose window covers it), "omit"
            (NaNs are ignored and each output is renormalised over the valid samples under
            its window, as astropy's convolution does; an output whose window holds no valid
            sample stays NaN) or "raise" (a ValueError if the signal has a NaN).
        sym: symmetric (default) or periodic window.
        width: fractional window width (see :func:`diffconv_core.windows.get_window`).
        method: convolution method for :func:`diffconv_core.convolve`.
        **window_params: the window's parameters (``std=``, ``beta=`` ...), numbers or
            tensors (differentiable).

    With "renormalize" or "omit" the divisor is a partial sum of the window: for windows
    with negative taps (flattop, lanczos) it can get close to zero near gaps and ends. An
    output whose valid samples (inside the signal with "renormalize", not NaN with "omit")
    carry less than 1e-3 of the window's weight (a Gaussian's far tails across a long gap, a
    narrow periodic Gaussian's last tap at an end) is summed directly, so its ratio is as
    exact as its own terms allow whatever the method.

    Shape:
        - signal: ``(..., T)``
        - output: ``(..., T)`` (window parameters of shape ``S`` broadcast as leading dims)

    Example:
        >>> import torch
        >>> from diffconv_core.smooth import smooth
        >>> x = torch.tensor([0.0, 0.0, 3.0, 0.0, 0.0])
        >>> smooth(x, "boxcar", 3, edges="zeros")
        tensor([0., 1., 1., 1., 0.])
        >>> y = torch.tensor([2.0, float("nan"), 4.0, 4.0])
        >>> smooth(y, "boxcar", 3, edges="renormalize", nan_policy="omit")
        tensor([2., 3., 4., 4.])
    """
    check_tensor("signal", signal)
    length = _b.check_length(length)
    w = get_window(
        window,
        length,
        sym=sym,
        normalize="sum",
        width=width,
        dtype=signal.dtype,
        device=signal.device,
        **window_params,
    )
    return smooth_with_window(signal, w, edges=edges, nan_policy=nan_policy, method=method)


def smooth_with_window(
    signal: Tensor,
    w: Tensor,
    *,
    edges: str = "reflect",
    nan_policy: str = "propagate",
    method: str = "auto",
) -> Tensor:
    """:func:`smooth` with a window already built (unit sum; e.g. once for a whole stream).

    Shape:
        - signal: ``(..., T)``, w: ``(..., K)`` (leading dims broadcast)
        - output: ``(..., T)``

    Example:
        >>> import torch
        >>> from diffconv_core.smooth import smooth_with_window
        >>> box = torch.full((3,), 1 / 3)
        >>> smooth_with_window(torch.tensor([0.0, 3.0, 0.0]), box, edges="zeros")
        tensor([1., 1., 1.])
    """
    check_tensor("signal", signal)
    check_choice("edges", edges, EDGES)
    check_choice("nan_policy", nan_policy, NAN_POLICIES)
    # Only "raise" and "omit" look for NaNs; "propagate" leaves them to the convolution.
    missing = torch.isnan(signal) if nan_policy != "propagate" else None
    has_nan = _any_nan(missing, nan_policy) if missing is not None else False
    if nan_policy == "raise" and has_nan:
        count = int(missing.sum())
        first = missing.reshape(-1, signal.shape[-1]).any(0).nonzero()[0].item()
        raise ValueError(
            f"signal contains {count} NaN sample(s) (first at time index {first}); "
            "use nan_policy='omit' to skip them or 'propagate' to keep them"
        )
    pad_mode = "zeros" if edges == "renormalize" else edges
    if has_nan is False:
        if edges != "renormalize":
            return convolve(signal, w, padding=pad_mode, method=method)
        inside = torch.ones(signal.shape[-1], dtype=signal.dtype, device=signal.device)
        weight = convolve(inside, w, padding="zeros", method=method)
        if not _has_slivers(weight, w, method):
            return _divide_finite(convolve(signal, w, padding="zeros", method=method), weight)
        # Near an end, the part of the window inside the signal is a sliver of it (a narrow
        # periodic Gaussian: one tap of 1e-22): a transform's round-off swamps that divisor
        # (-inf where the exact output is the edge sample). The NaN-aware path sums such
        # outputs directly; with no sample missing, a NaN there still spreads as "propagate"
        # has it.
        missing = torch.zeros_like(signal, dtype=torch.bool)

    # "omit": zero the NaNs, then divide by the weight of the valid samples under the window.
    # Next to a long gap both are sums of a few small terms; an FFT's round-off is relative
    # to the whole signal instead, so in single precision the ratio could lose three digits.
    # Below float64 the ratio is therefore formed in float64, and outputs whose valid weight
    # is a sliver of the window's are summed directly (see _omit_sums).
    # Intermediates are dropped as soon as they are used: all alive, a float32 batch peaked at
    # 24x its size (4 x 2,097,152 with 1,023 taps; float64 copies of every array).
    result_dtype = signal.dtype
    work = torch.float64
    w = w.to(work)
    K = w.shape[-1]
    left, right = K // 2, (K - 1) // 2  # "same" mode's reach, as convolve extends a signal
    filled = torch.where(missing, 0.0, signal).to(work)
    filled_ext = pad(filled, left, right, pad_mode)
    del filled
    valid = (~missing).to(work)
    del missing
    if edges == "zeros":
        # The zeros past the ends are values, not gaps: only NaNs take weight away.
        valid_ext = F.pad(valid, (left, right), value=1.0)
    else:
        # Padding the validity mask as the signal is padded keeps the two consistent; with
        # "renormalize" the zero padding marks everything past the ends as missing.
        valid_ext = pad(valid, left, right, pad_mode)
    del valid
    # How many valid samples lie under the non-zero taps (exact: a sum of small integers).
    support = (w.detach() != 0).to(work)
    empty = convolve(valid_ext, support, "valid", method=method) < 0.5
    numerator, weight = _omit_sums(filled_ext, valid_ext, w, method, empty)
    del filled_ext, valid_ext
    out = _divide_finite(numerator, torch.where(empty, 1.0, weight))
    del numerator, weight
    return torch.where(empty, float("nan"), out).to(result_dtype)


def _has_slivers(weight: Tensor, w: Tensor, method: str) -> bool:
    """Whether some output's window weight ``weight`` is a sliver of the window ``w``'s
    (under ``_SLIVER`` of its absolute sum), where ``method`` is not the direct sums, which
    are exact anyway; False where the values cannot be read (``torch.func``, an exported
    graph, the meta device)."""
    if method == "direct" or weight.device.type == "meta":
        return False
    if transforms_active(weight, w) or recording_graph():
        return False
    return bool(_slivers(weight, w).any())


def _slivers(weight: Tensor, w: Tensor) -> Tensor:
    """Which outputs' window weight ``weight`` is under ``_SLIVER`` of the window ``w``'s
    absolute sum: those a transform's round-off would swamp, summed directly instead."""
    return weight.detach().abs() < _SLIVER * w.detach().abs().sum(-1, keepdim=True)


def _divide_finite(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` whose gradient stays finite for the finite outputs.

    A quotient's gradient with respect to the denominator is ``-grad * out / den**2``: at a
    non-finite output that the loss leaves out, ``0 * inf`` is NaN, and the denominator (the
    window's weight, a function of its parameters) sums it into every parameter's gradient.
    Those outputs are divided by a detached denominator instead (same values).

    Example:
        >>> den = torch.tensor([2.0, 4.0], requires_grad=True)
        >>> out = _divide_finite(torch.tensor([float("inf"), 2.0]), den)
        >>> out.detach()
        tensor([   inf, 0.5000])
        >>> torch.autograd.grad(out[1], den)[0]  # a plain quotient: tensor([nan, -0.1250])
        tensor([-0.0000, -0.1250])
    """
    bad = ~torch.isfinite(numerator)
    quotient = torch.where(bad, torch.zeros_like(numerator), numerator) / denominator
    return torch.where(bad, numerator / denominator.detach(), quotient)


# Outputs whose valid weight is below this fraction of the window's absolute sum are summed
# directly: a transform's round-off is relative to the whole window (about 1e-15 of its sum in
# float64), so above it the ratio keeps about 12 digits, below it it could keep none (a
# Gaussian's far taps next to a long gap weigh 1e-22).
_SLIVER = 1e-3
# At most this many window samples are gathered at a time for those direct sums.
_GATHERED = 1 << 22


def _omit_sums(
    filled_ext: Tensor, valid_ext: Tensor, w: Tensor, method: str, empty: Tensor
) -> tuple[Tensor, Tensor]:
    """The "omit" numerator and weight: the NaN-zeroed signal and its validity mask (both
    extended by "same" mode's reach) under the window, each output's weight accurate to the
    round-off of its own terms (``empty`` marks the outputs with no valid sample, left out).

    Shape:
        filled_ext, valid_ext ``(..., T + K - 1)``, w ``(..., K)``, empty ``(..., T)`` ->
        two ``(..., T)``.
    """
    if transforms_active(filled_ext, valid_ext, w) or recording_graph():
        # No data-dependent selection under torch.func or in an exported graph: direct sums
        # for every output.
        method = "direct"
    numerator = convolve(filled_ext, w, "valid", method=method)
    weight = convolve(valid_ext, w, "valid", method=method)
    if method == "direct":  # each output already its own sum
        return numerator, weight
    sliver = _slivers(weight, w) & ~empty
    if not bool(sliver.any()):
        return numerator, weight
    at = sliver.nonzero(as_tuple=True)
    batch, T, K = sliver.shape[:-1], sliver.shape[-1], w.shape[-1]
    # Views of every output's window (nothing copied until indexed).
    taps = w.flip(-1).unsqueeze(-2).expand(*batch, T, K)
    samples = filled_ext.unfold(-1, K, 1).expand(*batch, T, K)
    marks = valid_ext.unfold(-1, K, 1).expand(*batch, T, K)
    sums: tuple[list[Tensor], list[Tensor]] = ([], [])
    step = max(1, _GATHERED // K)  # a signal that is mostly gaps: memory stays bounded
    for first in range(0, at[0].numel(), step):
        part = tuple(index[first : first + step] for index in at)
        these_taps, these_samples = taps[part], samples[part]
        # An infinite sample times a tap: its gradient to the tap is inf times the output's
        # (zero where the loss leaves that non-finite output out), a NaN. Such outputs take
        # their sums with detached taps, the others with those samples zeroed (same values).
        finite = torch.isfinite(these_samples)
        clean = torch.where(finite, these_samples, torch.zeros_like(these_samples))
        sums[0].append(
            torch.where(
                finite.all(-1),
                (clean * these_taps).sum(-1),
                (these_samples * these_taps.detach()).sum(-1),
            )
        )
        sums[1].append((marks[part] * these_taps).sum(-1))
    numerator = numerator.index_put(at, torch.cat(sums[0]))
    weight = weight.index_put(at, torch.cat(sums[1]))
    return numerator, weight


def _any_nan(missing: Tensor, nan_policy: str) -> bool | None:
    """Whether ``missing`` marks a sample; None inside ``torch.func.vmap`` or while
    ``torch.export`` records, which cannot answer a question about the data ("omit" then
    takes its NaN-aware path, exact either way).
    False on the meta device, which has no data: both paths give the same shape and dtype."""
    if missing.device.type == "meta":
        return False
    if recording_graph():  # a graph serves any data: "omit" takes its NaN-aware path, exact anyway
        if nan_policy == "raise":
            raise ValueError(
                "nan_policy='raise' must look at the data, which a graph torch.export "
                "records cannot do; use nan_policy='omit' or 'propagate' in exported models"
            )
        return None
    try:
        return bool(missing.any())
    except RuntimeError:
        if not transforms_active(missing):
            raise
        if nan_policy == "raise":
            raise ValueError(
                "nan_policy='raise' must look at the data, which torch.func.vmap does not "
                "allow; use nan_policy='omit' or 'propagate' under vmap"
            ) from None
        return None
