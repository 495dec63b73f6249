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
    REVERSED: tl.constexpr,
    LONG: tl.constexpr,
):
    # out[row, m] = sum of tap(j) * x[row, m + j - shift] over j with 0 <= m + j - shift < T,
    # tap(j) = taps[row, j], or taps[row, K - 1 - j] when REVERSED (a convolution kernel as
    # given: no flipped copy to make first).
    # Builtins only, no tl.cdiv or tl.zeros: those are jit functions of Triton's library, which
    # its interpreter cannot run when Triton was imported before TRITON_INTERPRET was set.
    # While loops, not range(K): Triton 3.6's interpreter converts a runtime K to an int
    # through a one-element array, which numpy >= 2.4 refuses.
    # A flat grid: rows times blocks can exceed the 65,535 limit of grid axes 1 and 2.
    # Offsets within a row in 32 bits unless LONG (a row near 2**31 samples): with 64-bit
    # ones the masked loop took 114 us for 4,096 x 1,024 samples and 31 taps on an H200,
    # with 32-bit ones 74 us. Rows are addressed in 64 bits.
    if LONG:
        program = tl.program_id(0).to(tl.int64)
    else:
        program = tl.program_id(0)
    blocks_per_row = (n_out + BLOCK - 1) // BLOCK
    row = (program // blocks_per_row).to(tl.int64)
    start = (program % blocks_per_row) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    x_row = x_ptr + row * x_row_stride
    taps_row = taps_ptr + row * taps_row_stride
    if REVERSED:
        taps_row += K - 1
        tap_step = -1
    else:
        tap_step = 1
    if WIDE:
        acc = tl.full([BLOCK], 0.0, dtype=tl.float64)
    else:
        acc = tl.full([BLOCK], 0.0, dtype=tl.float32)
    # Every block but those at a row's ends reads only samples inside the signal: a loop with
    # no masks or selects (31 taps over 16 x 480,000 on an H200: 127 us, against 187 us with
    # them on every tap).
    interior = (start - shift >= 0) & (start + BLOCK + K - 2 - shift < T) & (start + BLOCK <= n_out)
    if interior:
        source = x_row + (offsets - shift)
        j = 0
        while j < K:
            sample = tl.load(source + j).to(acc.dtype)
            acc += sample * tl.load(taps_row + j * tap_step).to(acc.dtype)
            j += 1
        tl.store(out_ptr + row * out_row_stride + offsets, acc)
    else:
        keep = offsets < n_out
        j = 0
        while j < K:
            index = offsets + (j - shift)
            inside = keep & (index >= 0) & (index < T)
            sample = tl.load(x_row + index, mask=inside, other=0.0).to(acc.dtype)
            tap = tl.load(taps_row + j * tap_step).to(acc.dtype)
            # Terms past the signal's ends are left out, not multiplied by a zero: an Inf tap
            # there would make 0 * inf = NaN where the direct sum has no such term.
            acc += tl.where(inside, sample * tap, 0.0)
            j += 1
        tl.store(out_ptr + row * out_row_stride + offsets, acc, mask=keep)


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def lagged_dot_kernel(
    g_ptr,
    x_ptr,
    part_ptr,
    T,
    L,
    lo,
    K,
    spans_per_row,
    SPAN: tl.constexpr,
    ROWS: tl.constexpr,
    KB: tl.constexpr,
    WIDE: tl.constexpr,
    LONG: tl.constexpr,
):
    # part[program, k] = sum of g[row, m] * x[row, m + lo - k] over this program's span of m
    # (m < L) and the terms with 0 <= m + lo - k < T, for k < K (KB >= K lanes, the rest 0):
    # the kernel gradient of the direct method, before the spans (and rows) are summed.
    # A tile of ROWS samples by KB lags accumulates in registers; one reduction a program.
    # Offsets within a row in 32 bits unless LONG, as in sliding_dot_kernel.
    if LONG:
        program = tl.program_id(0).to(tl.int64)
    else:
        program = tl.program_id(0)
    row = (program // spans_per_row).to(tl.int64)
    start = (program % spans_per_row) * SPAN
    g_row = g_ptr + row * L + start
    x_row = x_ptr + row * T
    lags = tl.arange(0, KB)
    if WIDE:
        acc = tl.full([ROWS, KB], 0.0, dtype=tl.float64)
    else:
        acc = tl.full([ROWS, KB], 0.0, dtype=tl.float32)
    step = 0
    while (step < SPAN) & (start + step < L):  # no tl.minimum: a jit function (see above)
        within = step + tl.arange(0, ROWS)
        here = (within < SPAN) & (start + within < L)
        g = tl.load(g_row + within, mask=here, other=0.0).to(acc.dtype)
        index = (start + within)[:, None] + (lo - lags)[None, :]
        inside = here[:, None] & (lags < K)[None, :] & (index >= 0) & (index < T)
        sample = tl.load(x_row + index, mask=inside, other=0.0).to(acc.dtype)
        # Terms past the signal's ends are left out, not multiplied by a zero (0 * inf).
        acc += tl.where(inside, g[:, None] * sample, 0.0)
        step += ROWS
    # tl.reduce with a combine function of this module: tl.sum is a jit function (see above)
    tl.store(part_ptr + program.to(tl.int64) * KB + lags, tl.reduce(acc, 0, _add))
