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
    # out[row, m] = sum of taps[row, j] * x[row, m + j - shift] over j with 0 <= m + j - shift < T
    # Builtins only, no tl.cdiv or tl.zeros: those are jit functions of Triton's library, which
    # its interpreter cannot run when Triton was imported before TRITON_INTERPRET was set.
    # A while loop, not range(K): Triton 3.6's interpreter converts a runtime K to an int
    # through a one-element array, which numpy >= 2.4 refuses.
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
    j = 0
    while j < K:
        index = offsets + (j - shift)
        inside = keep & (index >= 0) & (index < T)
        sample = tl.load(x_row + index, mask=inside, other=0.0).to(acc.dtype)
        tap = tl.load(taps_row + j).to(acc.dtype)
        # Terms past the signal's ends are left out, not multiplied by a zero: an Inf tap
        # there would make 0 * inf = NaN where the direct sum has no such term.
        acc += tl.where(inside, sample * tap, 0.0)
        j += 1
    tl.store(out_ptr + row * out_row_stride + offsets, acc, mask=keep)
