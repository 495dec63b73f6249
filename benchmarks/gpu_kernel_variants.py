"""Candidate designs of the fused direct kernel, timed against the shipped one on a GPU.

The shipped kernel (``diffconv_core/_triton_kernels.py``) runs a mask-free tap loop on every
block whose terms all lie inside the signal. The candidate here is the design it replaced,
kept as the baseline that shows what that is worth on the machine at hand:

- ``masked``: every tap of every block computes its index, three comparisons, a masked load
  and a select (on an H200: 187 us for 31 taps over 16 x 480,000, against 127 us shipped).

The shipped kernel is timed at blocks of 256-2,048 outputs: a row of 1,024 outputs is a
single block at the shipped 1,024 (its first and last, so all masked), while smaller blocks
give such rows interior blocks too.

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
    copies = []
    for B, T, _ in shapes:
        x = torch.randn(B, T, device="cuda")
        copies.append(do_bench(functools.partial(torch.clone, x), warmup=10, rep=30) * 1e3)
    print("| copy (clone) | " + " | ".join(f"{t:.1f} us" for t in copies) + " |")
    lag_sweep()


if __name__ == "__main__":
    main()
