"""Candidate designs of the fused direct kernel, timed against the shipped one on a GPU.

The shipped kernel (``diffconv_core/_triton_kernels.py``) runs a mask-free tap loop on every
block whose terms all lie inside the signal. The candidate here is the design it replaced,
kept as the baseline that shows what that is worth on the machine at hand:

- ``masked``: every tap of every block computes its index, three comparisons, a masked load
  and a select (on an H200: 187 us for 31 taps over 16 x 480,000, against 127 us shipped).

The shipped kernel is timed at blocks of 256-2,048 outputs: a row of 1,024 outputs is a
single block at the shipped 1,024 (its first and last, so all masked), while smaller blocks
give such rows interior blocks too.

A second kind of candidate computes the sums as matrix products (``toeplitz_kernel``): a
block of ``R x F`` outputs is ``A @ B``, ``A[r, j]`` the samples from output ``r * F`` on and
``B[j, f]`` tap ``j - f`` (zero off the band), so ``tl.dot`` does the multiply-adds with its
operands reused from registers or on tensor cores (``tf32x3``: three TF32 products, about
float32's accuracy) where the shipped loop loads a sample per tap and output. It does
``2 * F`` multiply-adds an output instead of ``K`` and, multiplying whole rows, makes a NaN or
Inf spread over up to two rows of ``F`` outputs: shipped, it would need the NaN/Inf scan
(one sync, read ahead of the method) that the shipped kernel's own direct sums do without.
Unmeasured on a GPU so far; ``toeplitz_settings`` lists what is timed.

The kernel gradient's kernel is timed with its shipped lanes and tile and with candidates
(``lag_settings``: a lane a tap rounded to a power of two, at least 4; tiles of 2,048-8,192
cells), after checking each against the FFT's lagged products.

Each candidate is checked against ``conv1d`` (float32 and float64) before it is timed;
``tests/test_benchmarks.py`` runs them under Triton's interpreter on the CPU. A candidate
that wins on every shape should replace the shipped kernel (then rerun gpu_session.sh).

    python3 benchmarks/gpu_kernel_variants.py        (needs a CUDA device and Triton)
"""

from __future__ import annotations

import functools
import itertools

import triton
import triton.language as tl


@triton.jit
def masked_kernel(
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
    # The shipped kernel's sums with its edge loop on every block, as it was: taps in order
    # only, 64-bit offsets always (REVERSED and LONG are taken for the shipped signature).
    program = tl.program_id(0).to(tl.int64)
    blocks_per_row = (n_out + BLOCK - 1) // BLOCK
    row = program // blocks_per_row
    offsets = (program % blocks_per_row) * BLOCK + tl.arange(0, BLOCK)
    keep = offsets < n_out
    if WIDE:
        acc = tl.full([BLOCK], 0.0, dtype=tl.float64)
    else:
        acc = tl.full([BLOCK], 0.0, dtype=tl.float32)
    j = 0
    while j < K:
        index = offsets + (j - shift)
        inside = keep & (index >= 0) & (index < T)
        sample = tl.load(x_ptr + row * x_row_stride + index, mask=inside, other=0.0)
        tap = tl.load(taps_ptr + row * taps_row_stride + j).to(acc.dtype)
        acc += tl.where(inside, sample.to(acc.dtype) * tap, 0.0)
        j += 1
    tl.store(out_ptr + row * out_row_stride + offsets, acc, mask=keep)


CANDIDATES = {"masked": masked_kernel}


@triton.jit
def toeplitz_kernel(
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
    ROWS: tl.constexpr,
    F: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # out[n] = sum_j taps[j] x[n + j - shift] for n = start + r * F + f, as A @ B with
    # A[r, i] = x[start + r * F + i - shift] and B[i, f] = taps[i - f] (i < 2F >= F + K - 1).
    program = tl.program_id(0)
    blocks_per_row = (n_out + ROWS * F - 1) // (ROWS * F)
    row = program // blocks_per_row
    start = (program % blocks_per_row) * (ROWS * F)
    r = tl.arange(0, ROWS)
    i = tl.arange(0, 2 * F)
    f = tl.arange(0, F)
    index = start - shift + r[:, None] * F + i[None, :]
    a = tl.load(x_ptr + row * x_row_stride + index, mask=(index >= 0) & (index < T), other=0.0)
    lag = i[:, None] - f[None, :]
    b = tl.load(taps_ptr + row * taps_row_stride + lag, mask=(lag >= 0) & (lag < K), other=0.0)
    sums = tl.dot(a, b, input_precision=PRECISION)
    n = start + r[:, None] * F + f[None, :]
    tl.store(out_ptr + row * out_row_stride + n, sums, mask=n < n_out)


def toeplitz_width(K: int) -> int:
    """``F``, the outputs a row of ``toeplitz_kernel``'s product holds for ``K`` taps: a power
    of two with ``2 * F >= F + K - 1``, so ``F >= K - 1`` (``tl.dot`` wants at least 16).

    Example:
        >>> [toeplitz_width(K) for K in (3, 17, 18, 33, 34, 65)]
        [16, 16, 32, 32, 64, 64]
    """
    return max(16, 1 << max(K - 2, 0).bit_length())


def launch_toeplitz(
    x, taps, shift: int, n_out: int, block: int = 4096, warps: int = 4, precision="tf32x3", out=None
):
    """:func:`launch`'s sums through ``toeplitz_kernel`` with about ``block`` outputs a program
    (at least 16 rows of ``F``), into ``out`` if given; rows of ``x`` and ``out`` may be
    strided, samples and taps contiguous."""
    import torch

    rows, T = x.shape
    width = toeplitz_width(taps.shape[-1])
    product_rows = max(16, block // width)
    if out is None:
        out = torch.empty(rows, n_out, device=x.device, dtype=x.dtype)
    grid = (-(-n_out // (product_rows * width)) * rows,)
    toeplitz_kernel[grid](x, taps, out, T, n_out, shift, x.stride(0), 0, out.stride(0),
                          taps.shape[-1], ROWS=product_rows, F=width, PRECISION=precision,
                          num_warps=warps)  # fmt: skip
    return out


def toeplitz_settings() -> list[tuple[int, int, str]]:
    """(outputs a program, warps, ``tl.dot`` precision) of the matrix-product candidate timed:
    on tensor cores (``tf32x3``) and on the FMA units (``ieee``, float32 products exactly as
    the shipped loop forms them)."""
    return [(2048, 4, "tf32x3"), (4096, 4, "tf32x3"), (4096, 8, "tf32x3"), (4096, 4, "ieee")]


def launch(
    kernel, x, taps, shift: int, n_out: int, block: int = 1024, warps: int = 8, long: bool = False
):
    """``out[r, m] = sum_j taps[j] x[r, m + j - shift]`` for a 2-D ``x`` and a 1-D ``taps``."""
    import torch

    rows, T = x.shape
    out = torch.empty(rows, n_out, device=x.device, dtype=x.dtype)
    grid = (-(-n_out // block) * rows,)
    kernel[grid](x, taps, out, T, n_out, shift, T, 0, n_out, taps.shape[-1],
                 BLOCK=block, WIDE=x.dtype == torch.float64, REVERSED=False, LONG=long,
                 num_warps=warps)  # fmt: skip
    return out


def launch_lags(kernel, g, x, lo: int, K: int, lanes: int, tile: int, span: int = 4096):
    """``c[r, k] = sum_m g[r, m] x[r, m + lo - k]`` (terms inside ``x``) through the kernel
    gradient's kernel with ``lanes`` lags by ``tile // lanes`` samples a tile; 2-D g and x."""
    import torch

    rows, L = g.shape
    spans = -(-L // span)
    part = torch.empty(rows * spans, lanes, device=g.device, dtype=g.dtype)
    kernel[(rows * spans,)](g, x, part, x.shape[-1], L, lo, K, spans, SPAN=span,
                            ROWS=tile // lanes, KB=lanes, WIDE=g.dtype == torch.float64,
                            LONG=False, num_warps=4)  # fmt: skip
    return part.view(rows, spans, lanes)[..., :K].sum(1)


def toeplitz_row(setting: tuple[int, int, str], checks, shapes) -> str:
    """One table row for the matrix-product candidate: checked against ``conv1d`` on
    ``checks`` (relative error 1e-5), then timed on ``shapes`` (K up to 65; a setting that
    fails to compile or launch, e.g. out of shared memory, reads as its error, so the rest of
    the session still runs)."""
    import torch
    import torch.nn.functional as F
    from triton.testing import do_bench

    block, warps, precision = setting
    cells = []
    try:
        for B, T, K in checks:
            x, taps = torch.randn(B, T, device="cuda"), torch.randn(K, device="cuda")
            want = F.conv1d(F.pad(x[:, None], (K // 2, K - 1 - K // 2)), taps[None, None])[:, 0]
            got = launch_toeplitz(x, taps, K // 2, T, block, warps, precision)
            err = (got - want).abs().max().item() / want.abs().max().item()
            if not err < 1e-5:
                raise AssertionError(f"{B},{T},{K}: relative error {err:.1e}")
        for B, T, K in shapes:
            if K > 65:
                cells.append("-")
                continue
            x, taps = torch.randn(B, T, device="cuda"), torch.randn(K, device="cuda")
            run = functools.partial(launch_toeplitz, x, taps, K // 2, T, block, warps, precision)
            cells.append(f"{do_bench(run, warmup=10, rep=30) * 1e3:.1f} us")
    except Exception as error:  # noqa: BLE001 - reported in the table, the sweep goes on
        cells.append(f"{type(error).__name__}: {str(error)[:80]}")
    return f"| toeplitz {precision}, {block}, {warps}, 32-bit | " + " | ".join(cells) + " |"


def lag_settings(K: int) -> dict[str, tuple[int, int]]:
    """(lanes, tile) of the shipped kernel gradient and its candidates for ``K`` taps: the
    shipped tile has at least 16 lanes (3 taps leave 13 of them masked)."""
    from diffconv_core import _triton_direct

    fitted = max(4, 1 << (K - 1).bit_length())
    return {
        "shipped": (_triton_direct.lag_lanes(K), _triton_direct._LAG_TILE),
        "fitted lanes 2048": (fitted, 2048),
        "fitted lanes 4096": (fitted, 4096),
        "fitted lanes 8192": (fitted, 8192),
    }


def lag_sweep() -> None:
    """Check, then time, the kernel gradient's settings (``lag_settings``)."""
    import torch
    from triton.testing import do_bench

    from diffconv_core._fft import fft_lagged_products
    from diffconv_core._triton_kernels import lagged_dot_kernel

    for B, L, K, lo in [(3, 9000, 3, 1), (2, 5000, 31, 15), (1, 300, 17, 20)]:
        g = torch.randn(B, L, device="cuda", dtype=torch.float64)
        x = torch.randn(B, L, device="cuda", dtype=torch.float64)
        want = fft_lagged_products(g, x, lo, K)
        for name, (lanes, tile) in lag_settings(K).items():
            got = launch_lags(lagged_dot_kernel, g, x, lo, K, lanes, tile)
            err = (got - want).abs().max().item()
            assert err < 1e-8, (name, B, L, K, err)
    print("every kernel-gradient setting agrees with the FFT's lagged products")
    shapes = [(16, 480000, 3), (16, 480000, 15), (16, 480000, 31), (4096, 1024, 3),
              (4096, 1024, 31), (1, 16777216, 31)]  # fmt: skip
    print("| kernel gradient (lanes >= K) | " + " | ".join(f"{B},{T},{K}" for B, T, K in shapes))
    print("|---" * (len(shapes) + 1) + "|")
    for setting in lag_settings(3):
        cells = []
        for B, T, K in shapes:
            lanes, tile = lag_settings(K)[setting]
            g, x = torch.randn(B, T, device="cuda"), torch.randn(B, T, device="cuda")
            run = functools.partial(launch_lags, lagged_dot_kernel, g, x, K // 2, K, lanes, tile)
            cells.append(f"{do_bench(run, warmup=10, rep=30) * 1e3:.1f} us")
        print(f"| {setting} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    import torch
    import torch.nn.functional as F
    from triton.testing import do_bench

    from diffconv_core._triton_kernels import sliding_dot_kernel

    kernels = {"shipped": sliding_dot_kernel, **CANDIDATES}
    checks = [(3, 5000, 31), (2, 3000, 7), (1, 2049, 16), (2, 40, 31)]
    for dtype, (B, T, K) in itertools.product((torch.float32, torch.float64), checks):
        x = torch.randn(B, T, device="cuda", dtype=dtype)
        taps = torch.randn(K, device="cuda", dtype=dtype)
        want = F.conv1d(F.pad(x[:, None], (K // 2, K - 1 - K // 2)), taps[None, None])[:, 0]
        for name, kernel in kernels.items():
            err = (launch(kernel, x, taps, K // 2, T) - want).abs().max().item()
            assert err < (1e-4 if dtype == torch.float32 else 1e-10), (name, dtype, B, T, K, err)
    print("every kernel agrees with conv1d")
    shapes = [(16, 480000, 3), (16, 480000, 31), (1, 16777216, 31), (4096, 1024, 31),
              (16, 480000, 127), (1, 1024, 31)]  # fmt: skip
    print(
        "| kernel, block, warps, offsets | "
        + " | ".join(f"{B},{T},{K}" for B, T, K in shapes)
        + " |"
    )
    settings = {
        # The shipped kernel's interior loop needs blocks inside a row: rows of 1,024 outputs
        # are one block (first and last, all masked) unless blocks are smaller.
        # (block, warps, 64-bit offsets); 1,024, 4 and 32-bit offsets ship.
        "shipped": [*itertools.product((256, 512, 1024, 2048), (4, 8), (False,)), (1024, 4, True)],
        "masked": list(itertools.product((1024,), (4, 8), (True,))),
    }
    for name, kernel in kernels.items():
        for block, warps, long in settings[name]:
            times = []
            for B, T, K in shapes:
                x, taps = torch.randn(B, T, device="cuda"), torch.randn(K, device="cuda")
                run = functools.partial(launch, kernel, x, taps, K // 2, T, block, warps, long)
                times.append(do_bench(run, warmup=10, rep=30) * 1e3)
            cells = " | ".join(f"{t:.1f} us" for t in times)
            bits = 64 if long else 32
            print(f"| {name}, {block}, {warps}, {bits}-bit | {cells} |", flush=True)
    for setting in toeplitz_settings():
        print(toeplitz_row(setting, checks, shapes), flush=True)
    copies = []
    for B, T, _ in shapes:
        x = torch.randn(B, T, device="cuda")
        copies.append(do_bench(functools.partial(torch.clone, x), warmup=10, rep=30) * 1e3)
    print("| copy (clone) | " + " | ".join(f"{t:.1f} us" for t in copies) + " |")
    lag_sweep()


if __name__ == "__main__":
    main()
