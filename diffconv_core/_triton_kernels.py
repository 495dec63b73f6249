"""The Triton kernels themselves, in their own module so that Triton is imported only when a
CUDA tensor first reaches the direct method (importing it costs ~0.2 s of start-up).

Imported by :mod:`diffconv_core._triton_direct`; nothing else should import this module.
"""

import triton
import triton.language as tl


@triton.jit
def sliding_dot_kernel(
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
    # Builtins only, no tl.cdiv or tl.zeros: those are jit functions of Triton's library, which
    # its interpreter cannot run when Triton was imported before TRITON_INTERPRET was set.
    # A flat grid: rows times blocks can exceed the 65,535 limit of grid axes 1 and 2.
    program = tl.program_id(0).to(tl.int64)
    blocks_per_row = (n_out + BLOCK - 1) // BLOCK
    row = program // blocks_per_row
    offsets = (program % blocks_per_row) * BLOCK + tl.arange(0, BLOCK)
    keep = offsets < n_out
    x_row = x_ptr + row * x_row_stride
    taps_row = taps_ptr + row * taps_row_stride
    if WIDE:
        acc = tl.full([BLOCK], 0.0, dtype=tl.float64)
    else:
        acc = tl.full([BLOCK], 0.0, dtype=tl.float32)
    for j in range(0, K):
        index = offsets + (j - shift)
        inside = keep & (index >= 0) & (index < T)
        sample = tl.load(x_row + index, mask=inside, other=0.0)
        tap = tl.load(taps_row + j)
        acc += sample.to(acc.dtype) * tap.to(acc.dtype)
    tl.store(out_ptr + row * out_row_stride + offsets, acc, mask=keep)
