"""``convolve`` and ``correlate``: the public entry points of the core.

Layered as scipy.signal does it: validate and normalise the arguments, reduce every mode and
padding to one question — "which samples of the full linear convolution of a (possibly
extended) signal do we need?" — and answer it with the chosen method's range function.
"""

from __future__ import annotations

import math

import torch

from diffconv_core import _direct
from diffconv_core._compile import eager_under_compile, recording_graph
from diffconv_core._direct import conv1d_range, direct_range, direct_sums_alone
from diffconv_core._export import exported_convolution
from diffconv_core._nonfinite import with_nonfinite_locality
from diffconv_core._overlap import fft_method_range, overlap_range
from diffconv_core._transforms import empty_range, transformable_range, transforms_active
from diffconv_core._validation import (
    HALF_DTYPES,
    METHODS,
    MODES,
    PADDINGS,
    check_choice,
    check_pair,
    check_tensor,
    needs_graph,
)
from diffconv_core.methods import extended_range, output_length, pick_method, reaching_taps
from diffconv_core.padding import fold_positions

_RANGE_FUNCTIONS = {"direct": direct_range, "fft": fft_method_range, "overlap": overlap_range}


def _run(x: torch.Tensor, w: torch.Tensor, mode: str, padding: str, method: str) -> torch.Tensor:
    if torch.jit.is_tracing():
        # Its sizes arrive as tensors there, and a trace keeps one path whatever the values.
        raise RuntimeError(
            "torch.jit.trace cannot record diffconv's convolution: its handling of NaN, Inf "
            "and overflow is a data-dependent branch, which a trace would freeze; use "
            "torch.export.export, which records it (torch.cond)"
        )
    out_dtype = torch.promote_types(x.dtype, w.dtype)
    batch = check_pair(x, w)
    if mode == "valid" and w.shape[-1] > x.shape[-1]:
        # Convolution commutes; scipy swaps too, so "valid" with K > T has K - T + 1 samples.
        x, w = w, x
    T, K = x.shape[-1], w.shape[-1]
    if math.prod(batch) == 0:
        # An empty batch (a data loader's last, filtered batch): an empty result, shaped and
        # typed as any other and connected to both operands for autograd.
        return empty_range(x, w, output_length(T, K, mode)).to(out_dtype)
    if recording_graph():  # torch.export (or "graph" compiles): no value read on the host
        compute_dtype = torch.float32 if out_dtype in HALF_DTYPES else out_dtype
        x, w = x.to(compute_dtype), w.to(compute_dtype)
        return exported_convolution(method, x, w, mode, padding).to(out_dtype)
    if _takes_edges_apart(x, w, mode, padding):
        return _edges_apart(x, w, mode, padding, method)
    x, lo, hi = extended_range(x, K, mode, padding)
    first, stop = reaching_taps(x.shape[-1], K, lo, hi)
    if stop - first < K:
        # Taps that reach no sample kept ("same" with a kernel over twice the signal's
        # length) are cut, so that no method transforms or sums them (4,096 x 1,024 samples
        # with 65,535 taps asked the FFT for 4,096 rows of 33,792 points, and its backward
        # for a gigabyte). Each kept sample is the same sum; the cut taps' gradient is 0.
        w, lo, hi, K = w[..., first:stop], lo - first, hi - first, stop - first
    if padding == "zeros" and K > T and _shorter_as_kernel(method, K):
        # With zeros past the ends the full convolution is symmetric in its operands.
        x, w = w, x
        T, K = K, T
    if x.is_meta:
        # Shapes without values (model construction on the meta device, shape inference):
        # conv1d gives the output's shape, dtype and autograd graph; no method has anything
        # to choose, and the non-finite scan has nothing to read.
        compute_dtype = torch.float32 if out_dtype in HALF_DTYPES else out_dtype
        return conv1d_range(x.to(compute_dtype), w.to(compute_dtype), lo, hi).to(out_dtype)
    if transforms_active(x, w):  # torch.func or forward-mode AD: plain torch operations
        compute_dtype = torch.float32 if out_dtype in HALF_DTYPES else out_dtype
        x, w = x.to(compute_dtype), w.to(compute_dtype)
        return transformable_range(method, x, w, lo, hi).to(out_dtype)
    if method in ("auto", "direct") and _direct.takes_tiny_range(x, w, lo, hi):
        y = _one_convolution(x, w, lo, hi, None)
        if y is not None:
            return y
    if method == "auto":
        shared = w.dim() == 1 or math.prod(w.shape[:-1]) == 1
        method = pick_method(
            math.prod(batch),
            x.shape[-1],
            K,
            "valid" if lo == K - 1 and hi == x.shape[-1] else mode,
            x.device,
            out_dtype,
            needs_graph(x, w),
            shared,
            not shared and _direct.is_bank(tuple(x.shape), tuple(w.shape)),
        )
    # The direct method's one convolution over every row (with every kernel of a bank), asked
    # for only once direct is the method (asked before the pick, it cost auto ~3 us where
    # the pick was a transform).
    rows_plan = _direct.rows_call(x, w, lo, hi) if method == "direct" else None
    if rows_plan is not None:
        y = _one_convolution(x, w, lo, hi, rows_plan)
        if y is not None:
            return y
    # Half types: the CPU FFT refuses them and cuFFT only takes powers of two; conv1d on CPU
    # is slow and inexact in them. Compute in float32 and return the input's dtype.
    compute_dtype = out_dtype
    if out_dtype in HALF_DTYPES and (method != "direct" or x.device.type == "cpu"):
        compute_dtype = torch.float32
    if x.dtype != compute_dtype or w.dtype != compute_dtype:  # a no-op .to still costs 1 us
        x, w = x.to(compute_dtype), w.to(compute_dtype)
    # Every method but the direct sums mixes samples beyond a window's reach (an FFT spreads
    # over the signal, a Toeplitz GEMM over a frame), so non-finite samples are handled
    # outside the method; the direct sums are already each output's IEEE value.
    y = direct_sums_alone(x, w, lo, hi) if method == "direct" else None
    if y is None:
        y = with_nonfinite_locality(_RANGE_FUNCTIONS[method], x, w, lo, hi)
    return y if y.dtype == out_dtype else y.to(out_dtype)


#: Signals of at least this many samples (rows x length) are convolved with a padding other
#: than zeros by :func:`_edges_apart` without autograd, not through an extended copy.
EDGES_APART_SAMPLES = 1 << 20


def _takes_edges_apart(x: torch.Tensor, w: torch.Tensor, mode: str, padding: str) -> bool:
    # Where the edges are a small part of the output (T >= 2K) and the signal is large enough
    # for its copy to cost more than two more calls (512 x 1,024 with 31 taps, reflect: 0.81
    # ms apart, 0.65 through the copy; 2 cores). Not while autograd records: the edges'
    # writes into the output cost a copy of its gradient in the backward pass, which made
    # forward+backward 1.1-1.5x slower (4 x 480,000 with 255 taps 17.4 against 15.1 ms, 1 x
    # 4,194,304 with 31 taps 27.5 against 24.4), for the same peak memory. Nor for shapes
    # without values, nor under torch.func (plain operations, no writes into an output).
    T, K = x.shape[-1], w.shape[-1]
    return (
        padding != "zeros"
        and mode != "valid"
        and 1 < K
        and 2 * K <= T
        and x.numel() >= EDGES_APART_SAMPLES
        and not needs_graph(x, w)
        and not x.is_meta
        and not transforms_active(x, w)
    )


def _edges_apart(
    x: torch.Tensor, w: torch.Tensor, mode: str, padding: str, method: str
) -> torch.Tensor:
    """The convolution with ``padding`` past the ends, without an extended copy of ``x``:
    with zeros past the ends, which is already right wherever the kernel stays inside the
    signal, then each edge's outputs again from the few extended samples they read.

    The extended copy cost a pass over the signal and its memory: 4 x 480,000 samples with
    31 taps, reflect, took 2.16 ms through it and 1.66 apart, 1 x 4,194,304 4.18 against
    2.34 (2 cores, interleaved); 4 x 4,194,304 with 1,023 taps peaked at 2.2-2.4x the input
    through it (the output counted), 1.2-1.4x apart. Each output is the same sum as through
    the copy.

    Shape:
        x ``(..., T)``, w ``(..., K)`` with ``2K <= T`` -> as :func:`convolve` in ``mode``.
    """
    T, K = x.shape[-1], w.shape[-1]
    left, right = (K // 2, (K - 1) // 2) if mode == "same" else (K - 1, K - 1)
    out = _run(x, w, mode, "zeros", method)
    n_out = out.shape[-1]
    # The first `left` outputs read extended positions -left .. K - 2, the last `right` ones
    # T - K + 1 .. T + right - 1 (position p is x[p] inside the signal).
    for positions, kept in (
        (torch.arange(-left, K - 1, device=x.device), slice(0, left)),
        (torch.arange(T - K + 1, T + right, device=x.device), slice(n_out - right, n_out)),
    ):
        if kept.start < kept.stop:
            edge = x.index_select(-1, fold_positions(positions, T, padding))
            out[..., kept] = _run(edge, w, "valid", "zeros", method)
    return out


def _shorter_as_kernel(method: str, K: int) -> bool:
    """Whether ``method`` computes a convolution faster with the operands swapped when the
    kernel (``K`` taps) is longer than the signal (2 cores, one thread, "full"): overlap-save
    always (its blocks outgrow the kernel: 1 x 30,000 samples with 60,000 taps 2.9 against
    1.7 ms, 8 x 50 with 5,000 taps 0.37 against 0.13); direct sums past the Toeplitz GEMMs'
    taps, where conv1d sums every tap (16 x 300 with 2,000 taps 25 against 0.95 ms, with
    20,000 taps 2.2 s against 0.04 s). Up to those taps a shared kernel's one convolution
    over the rows beat the swapped operands' kernel per row (3 x 700 with 1,024 taps 0.14
    against 0.63 ms, 64 x 200 with 600 taps 0.36 against 1.75)."""
    return method == "overlap" or (method == "direct" and K > _direct.MAX_TOEPLITZ_TAPS)


def _one_convolution(
    x: torch.Tensor,
    w: torch.Tensor,
    lo: int,
    hi: int,
    rows_plan: tuple[int, int, int] | None,
) -> torch.Tensor | None:
    # The direct method as one convolution over every row, straight away: without the NaN/Inf
    # handling's layers (nor, for the smallest calls, the method's pick, which says "direct"
    # for them), or None where the careful path must run. The taps unfolded for a small call
    # (tiny_range; rows_plan None), else the rows in frames with every kernel (rows_range,
    # given its plan).
    # Its output is kept when one sum over it is finite, as the methods' are without a graph
    # (_nonfinite.checks_after): its sums are direct sums, so a NaN or Inf in an operand, or
    # an overflow, leaves an output non-finite. With a graph autograd records the convolution
    # itself, its backward a C++ node (a training step of 1 x 1,024 with 31 taps took 71 us,
    # 132 through the direct method's Function); its backward is direct sums too, which the
    # careful path's scaling near the dtype's limit would not spare an overflow but where
    # partial sums cancel. The operands' scan that preceded it cost 8-15 us of a small
    # training step's 59-129 (2 cores: 1 x 256 with 7 taps, 1 x 1,024 and 1 x 4,096 with 31).
    if rows_plan is None:
        y = _direct.tiny_range(x, w, lo, hi)
    else:
        y = _direct.rows_range(x, w, lo, hi, rows_plan)
    return y if math.isfinite(float(y.detach().sum())) else None


# Under torch.compile the convolution runs eagerly, a graph break of its own: its method
# choice and piece plans depend on the shapes, so traced it recompiled for every new signal
# length (3-6 s each on 2 cores) and met fake-tensor limits on strided blocks. Its kernels are
# already what a compiler would emit.
_dispatch = eager_under_compile(_run)


def _check_options(mode: str, padding: str, method: str) -> None:
    check_choice("mode", mode, MODES)
    check_choice("padding", padding, PADDINGS)
    check_choice("method", method, METHODS)
    if mode == "valid" and padding != "zeros":
        raise ValueError(
            f"padding={padding!r} has no effect in mode 'valid' (no sample past the ends is "
            "used); use padding='zeros' with 'valid', or mode 'same'/'full'"
        )


def convolve(
    signal: torch.Tensor,
    kernel: torch.Tensor,
    mode: str = "same",
    *,
    padding: str = "zeros",
    method: str = "auto",
) -> torch.Tensor:
    """Convolve signals with kernels along the last axis, differentiably.

    True convolution (the kernel is flipped, unlike ``torch.nn.functional.conv1d``), equal to
    ``scipy.signal.convolve`` for every mode, even kernels and kernels longer than the signal
    included. Differentiable with respect to both inputs, twice; also under ``torch.func``
    transforms (``vmap``, ``grad``, ``jacrev``, ``jacfwd``, ``jvp``, ``hessian``) and
    forward-mode AD, where it runs as plain torch operations (``conv1d`` or one rFFT). There,
    huge values whose sums overflow inside the method are computed in float64 (float32) or
    scaled by powers of two as in eager mode (float64), but as recorded products: a float64
    reverse-mode gradient taken under a transform can overflow near the dtype's limit where
    eager's (which rescales it) stays finite.
    ``torch.export`` records it as graph operations, eager mode's NaN/Inf and overflow
    handling included (a ``torch.cond``), static or dynamic shapes; ``torch.jit.trace`` is
    refused.

    Args:
        signal: real floating-point tensor, time last.
        kernel: ``(K,)``, one kernel shared by every signal, or ``(..., K)`` whose leading dims
            broadcast against the signal's (a kernel per channel or per signal).
        mode: "full" (T + K - 1 samples), "same" (T samples, centred as scipy centres them) or
            "valid" (max(T, K) - min(T, K) + 1 samples, only where the two overlap fully).
        padding: how the signal continues past its ends in "same" and "full": "zeros"
            (scipy's behaviour), "reflect" (mirror, edge sample not repeated), "symmetric"
            (mirror, edge sample repeated), "replicate" (edge sample repeated) or "circular".
            Any pad width works, also wider than the signal. Only "zeros" with "valid".
        method: "direct", "fft" (one transform a row; on the CPU, rows past 2**20 points go
            in overlap-save's blocks, 6-18x faster there and a third of the memory, and one to
            16 rows past 8,192 points as complex transforms of half the length), "overlap"
            (overlap-save: long signals, shorter kernels) or "auto" (asks
            :func:`diffconv_core.choose_method`). All agree to float round-off.

    Returns:
        The broadcast leading dims, then the mode's length, in the promoted dtype of the
        inputs (float16/bfloat16 are computed in float32 where needed and returned as given).
        A NaN or Inf in the signal (or the kernel) affects exactly the outputs whose direct
        sum has a term with it, which get that sum's IEEE value (NaN for ``inf - inf`` or
        ``inf * 0``). Those outputs are constants to autograd: a loss that leaves them out
        gets finite gradients (a plain direct sum's kernel gradient would be NaN, 0 * nan).

    Shape:
        - signal: ``(..., T)``
        - kernel: ``(K,)`` or ``(..., K)``
        - output: ``(*broadcast(signal.shape[:-1], kernel.shape[:-1]), L)`` with ``L`` as above.

    Example:
        >>> import torch
        >>> from diffconv_core import convolve
        >>> signals = torch.randn(3, 1000, requires_grad=True)
        >>> window = torch.hann_window(31, periodic=False, requires_grad=True)
        >>> smoothed = convolve(signals, window / 15)
        >>> smoothed.shape
        torch.Size([3, 1000])
        >>> smoothed.pow(2).sum().backward()
        >>> signals.grad.shape, window.grad.shape
        (torch.Size([3, 1000]), torch.Size([31]))
        >>> convolve(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 0.5]), "full")
        tensor([0.0000, 1.0000, 2.5000, 4.0000, 1.5000])
    """
    _check_options(mode, padding, method)
    return _dispatch(
        check_tensor("signal", signal), check_tensor("kernel", kernel), mode, padding, method
    )


def correlate(
    signal: torch.Tensor,
    kernel: torch.Tensor,
    mode: str = "same",
    *,
    padding: str = "zeros",
    method: str = "auto",
) -> torch.Tensor:
    """Cross-correlate signals with kernels along the last axis (the kernel is not flipped).

    Equal to ``scipy.signal.correlate(signal, kernel, mode)`` and to ``convolve`` with the
    kernel reversed; arguments, shapes, dtypes and gradients as in :func:`convolve`.

    Shape:
        - signal: ``(..., T)``
        - kernel: ``(K,)`` or ``(..., K)``
        - output: ``(*broadcast(signal.shape[:-1], kernel.shape[:-1]), L)``.

    Example:
        >>> import torch
        >>> from diffconv_core import correlate
        >>> correlate(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 0.5]), "full")
        tensor([0.5000, 2.0000, 3.5000, 3.0000, 0.0000])
    """
    _check_options(mode, padding, method)
    signal = check_tensor("signal", signal)
    kernel = check_tensor("kernel", kernel)
    return _dispatch(signal, kernel.flip(-1), mode, padding, method)
