"""A fused Triton kernel for the direct method on CUDA (short kernels).

One program computes a block of outputs of one row: for each tap it loads the shifted block
of the signal (from L1/L2 after the first tap) and accumulates in registers, reading the
signal about once from memory and writing the output once — close to the copy floor, where
cuDNN's single-channel convolution is several times slower. The zero extension past the
signal's ends is a load mask, so no padded copy is made.

Used only when Triton imports and the tensors are on a CUDA device; otherwise (and if a launch
ever fails) the caller falls back to ``conv1d``. ``DIFFCONV_NO_TRITON=1`` disables it.
"""

from __future__ import annotations

import os
import warnings

import torch

from diffconv_core._validation import broadcast_shapes

try:  # Triton ships with torch's CUDA builds; the CPU build has none.
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - depends on the installation
    triton = None

_disabled_reason: str | None = None


def available(x: torch.Tensor) -> bool:
    """Whether the fused kernel can run on ``x``'s device."""
    # Half types stay with cuDNN: the kernel's float16/bfloat16 path has not run on a GPU yet.
    return (
        triton is not None
        and x.is_cuda
        and x.dtype in (torch.float32, torch.float64)
        and _disabled_reason is None
        and os.environ.get("DIFFCONV_NO_TRITON") != "1"
    )


if triton is not None:

    @triton.jit
    def _sliding_dot_kernel(
        x_ptr,
        taps_ptr,
        out_ptr,
        T,
        n_out,
        shift,
        x_row_stride,
        taps_row_stride,
        out_row_stride,
        K,
        BLOCK: tl.constexpr,
        WIDE: tl.constexpr,
    ):
        # out[row, m] = sum_j taps[row, j] * x[row, m + j - shift], x zero outside [0, T)
        # A flat grid: rows times blocks can exceed the 65,535 limit of grid axes 1 and 2.
        program = tl.program_id(0).to(tl.int64)
        blocks_per_row = tl.cdiv(n_out, BLOCK)
        row = program // blocks_per_row
        offsets = (program % blocks_per_row) * BLOCK + tl.arange(0, BLOCK)
        keep = offsets < n_out
        x_row = x_ptr + row * x_row_stride
        taps_row = taps_ptr + row * taps_row_stride
        if WIDE:
            acc = tl.zeros([BLOCK], dtype=tl.float64)
        else:
            acc = tl.zeros([BLOCK], dtype=tl.float32)
        for j in range(0, K):
            index = offsets + (j - shift)
            inside = keep & (index >= 0) & (index < T)
            sample = tl.load(x_row + index, mask=inside, other=0.0)
            tap = tl.load(taps_row + j)
            acc += sample.to(acc.dtype) * tap.to(acc.dtype)
        tl.store(out_ptr + row * out_row_stride + offsets, acc, mask=keep)


def sliding_dot(x: torch.Tensor, taps: torch.Tensor, shift: int, n_out: int) -> torch.Tensor | None:
    """``out[m] = sum_j taps[j] x[m + j - shift]`` (x zero outside), or None if unavailable.

    Shape:
        x ``(*bx, T)``, taps ``(*bt, K)`` -> ``(*broadcast(bx, bt), n_out)``.
    """
    global _disabled_reason
    if not available(x):
        return None
    T, K = x.shape[-1], taps.shape[-1]
    batch = broadcast_shapes(x.shape[:-1], taps.shape[:-1])
    rows = 1
    for size in batch:
        rows *= size
    x2 = x.expand(*batch, T).reshape(rows, T).contiguous()
    if taps.dim() == 1 or taps[..., 0].numel() == 1:
        taps2, taps_stride = taps.reshape(1, K).contiguous(), 0
    else:
        taps2 = taps.expand(*batch, K).reshape(rows, K).contiguous()
        taps_stride = K
    out = torch.empty(rows, n_out, device=x.device, dtype=x.dtype)
    block = 1024
    grid = (triton.cdiv(n_out, block) * rows,)
    try:
        _sliding_dot_kernel[grid](
            x2, taps2, out, T, n_out, shift, T, taps_stride, n_out, K,
            BLOCK=block, WIDE=x.dtype == torch.float64,
        )  # fmt: skip
    except Exception as error:  # a broken toolchain must not break convolution
        _disabled_reason = f"{type(error).__name__}: {error}"
        warnings.warn(
            f"diffconv: the Triton direct kernel failed ({_disabled_reason}); "
            "falling back to conv1d",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return out.reshape(*batch, n_out)
