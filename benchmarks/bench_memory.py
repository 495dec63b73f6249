#!/usr/bin/env python3
"""Peak extra memory of each convolution method, as a multiple of the input's size.

"Extra" is the peak during one forward call (no autograd) minus what was held before it
(input and kernel). The output itself is counted, since it must exist: a method that only
allocates its output scores 1.0x for "same". CPU peaks come from the kernel's VmHWM (reset
through /proc/self/clear_refs), each measured in a fresh process: memory that an earlier
measurement freed but the C allocator kept resident would otherwise be reused without
raising the peak (one shared-process run reported 0.01x for a method that allocates its
whole output). CUDA peaks come from torch.cuda.max_memory_allocated.

``--backward`` measures one forward and backward pass instead (signal and kernel requiring
gradients, the output gradient allocated before): the output and the signal's gradient are
counted, so 2.0x is its floor.

    python benchmarks/bench_memory.py --device cpu
    python benchmarks/bench_memory.py --device cpu --backward
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
from pathlib import Path

import torch

import diffconv_core
from diffconv_core.smooth import smooth


def _rss_peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_now_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_extra(fn, device: str) -> int:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        del out
        return peak
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter
    before = _rss_now_bytes()
    out = fn()
    peak = _rss_peak_bytes() - before
    del out
    return peak


#: ``--smooth``'s methods: ``smooth`` with a K-tap Hann window under each NaN policy, on a
#: signal with one NaN in 10,000 samples (where "omit" does its work).
SMOOTH_POLICIES = ("smooth-propagate", "smooth-omit")


def call(method: str, x: torch.Tensor, K: int):
    """The call measured for ``method``: a convolution, or one of :data:`SMOOTH_POLICIES`."""
    if method in SMOOTH_POLICIES:
        policy = method.split("-", 1)[1]
        return lambda signal: smooth(signal, "hann", K, nan_policy=policy)
    w = torch.hann_window(K, periodic=False, device=x.device)
    return lambda signal: diffconv_core.convolve(signal, w, method=method)


def forward_and_backward(method: str, x: torch.Tensor, K: int):
    """The call ``--backward`` measures for ``method``: a convolution and its backward pass
    with a gradient for the signal and the kernel, given the output's gradient. It returns
    the signal's gradient (counted, as the forward call's output is)."""
    w = torch.hann_window(K, periodic=False, dtype=x.dtype, device=x.device).requires_grad_()
    leaf = x.detach().requires_grad_()

    def run(grad: torch.Tensor) -> torch.Tensor:
        out = diffconv_core.convolve(leaf, w, method=method)
        out.backward(grad)
        grad_x = leaf.grad
        leaf.grad = w.grad = None
        return grad_x

    return run


def measure_backward(B: int, T: int, K: int, method: str, device: str) -> float:
    """Peak extra memory of one forward and backward pass, as a multiple of the input's size
    (the output gradient allocated before it)."""
    x = torch.randn(B, T, device=device)
    grad = torch.randn(B, T, device=device)
    run = forward_and_backward(method, x, K)
    # Warm up on two short rows: a warm-up as large as the batch (512 x 4,096 sliced to 4,096
    # samples is all of it) leaves its freed arrays resident, and the peak reads low.
    warm = forward_and_backward(method, x[:2, :2048], K)
    warm(grad[:2, :2048])
    extra = peak_extra(lambda: run(grad), device)
    return extra / (x.numel() * x.element_size())


def measure(B: int, T: int, K: int, method: str, device: str) -> float:
    """Peak extra memory of one forward call, as a multiple of the input's size."""
    x = torch.randn(B, T, device=device)
    if method in SMOOTH_POLICIES:
        gaps = torch.randint(0, B * T, (max(1, B * T // 10_000),), generator=torch.Generator())
        x.view(-1)[gaps.to(device)] = float("nan")
    run = call(method, x, K)
    with torch.no_grad():
        run(x[..., :4096])  # warm up allocators
        extra = peak_extra(lambda: run(x), device)
    return extra / (x.numel() * x.element_size())


def measure_in_fresh_process(B: int, T: int, K: int, method: str, backward: bool) -> float:
    flags = ["--backward"] if backward else []
    done = subprocess.run(
        [sys.executable, __file__, "--one", str(B), str(T), str(K), method, "--device", "cpu"]
        + flags,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", nargs=4, metavar=("B", "T", "K", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--rows", action="store_true", help="a few rows up to 2**20 points (CPU: one transform)"
    )
    parser.add_argument(
        "--smooth", action="store_true", help="smooth() under each NaN policy, not convolve()"
    )
    parser.add_argument(
        "--backward",
        action="store_true",
        help="forward and backward (output and signal gradient counted: 2.0x floor)",
    )
    args = parser.parse_args()
    device = args.device
    if args.backward and args.smooth:
        parser.error("--backward measures convolve(), not smooth()")
    one = measure_backward if args.backward else measure
    if args.one:
        B, T, K, method = args.one
        print(one(int(B), int(T), int(K), method, device))
        return
    if args.rows:  # the FFT method's complex transforms of half the length on the CPU
        cases = [(1, 1_000_000, 65535), (1, 1_000_000, 16383), (4, 262_144, 16383)]
    elif device.startswith("cuda"):
        cases = [(16, 480_000, 31), (16, 480_000, 4095), (1, 1 << 24, 31), (1, 1 << 24, 1023)]
    else:
        cases = [(4, 1 << 22, 31), (4, 1 << 22, 4095), (1, 1 << 24, 31), (1, 1 << 24, 1023)]
    methods = SMOOTH_POLICIES if args.smooth else ("direct", "fft", "overlap")
    if args.smooth:
        cases = [(4, 1 << 21, 1023), (512, 8192, 63)]
    if args.backward:  # and batches of many rows, which the FFT method takes
        cases = [*cases, (4, 480_000, 1023), (1024, 4096, 255), (512, 8192, 1023)]
    passes = "forward and backward" if args.backward else "forward"
    print(f"## peak extra memory / input size, {passes}, device {device}\n")
    print(f"| B, T, K | input MB | {' | '.join(methods)} | auto picks |")
    print("|---|---|" + "---|" * len(methods) + "---|")
    for B, T, K in cases:
        cells = []
        for method in methods:
            if args.backward and method == "direct" and K > 1024:
                cells.append("-")  # conv1d's backward for so many taps: minutes, never auto's
                continue
            if device.startswith("cuda"):
                ratio = one(B, T, K, method, device)
            else:
                ratio = measure_in_fresh_process(B, T, K, method, args.backward)
            cells.append(f"{ratio:.2f}x")
        auto = diffconv_core.choose_method((B, T), (K,), device=device, requires_grad=args.backward)
        size_mb = B * T * 4 / 2**20
        print(f"| {B}, {T}, {K} | {size_mb:.0f} | " + " | ".join(cells) + f" | {auto} |")
        gc.collect()


if __name__ == "__main__":
    main()
