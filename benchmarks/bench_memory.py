#!/usr/bin/env python3
"""Peak extra memory of each convolution method, as a multiple of the input's size.

"Extra" is the peak during one forward call (no autograd) minus what was held before it
(input and kernel). The output itself is counted, since it must exist: a method that only
allocates its output scores 1.0x for "same". CPU peaks come from the kernel's VmHWM (reset
through /proc/self/clear_refs), CUDA peaks from torch.cuda.max_memory_allocated.

    python benchmarks/bench_memory.py --device cpu
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import torch

import diffconv_core


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = args.device
    if device.startswith("cuda"):
        cases = [(16, 480_000, 31), (16, 480_000, 4095), (1, 1 << 24, 31), (1, 1 << 24, 1023)]
    else:
        cases = [(4, 1 << 22, 31), (4, 1 << 22, 4095), (1, 1 << 24, 31), (1, 1 << 24, 1023)]
    print(f"## peak extra memory / input size, forward, device {device}\n")
    print("| B, T, K | input MB | direct | fft | overlap | auto picks |")
    print("|---|---|---|---|---|---|")
    for B, T, K in cases:
        x = torch.randn(B, T, device=device)
        w = torch.hann_window(K, periodic=False, device=device)
        size = x.numel() * x.element_size()
        cells = []
        for method in ("direct", "fft", "overlap"):
            with torch.no_grad():
                diffconv_core.convolve(x[..., :4096], w, method=method)  # warm up allocators
                extra = peak_extra(
                    lambda m=method, x=x, w=w: diffconv_core.convolve(x, w, method=m), device
                )
            cells.append(f"{extra / size:.2f}x")
        auto = diffconv_core.choose_method(x.shape, w.shape, device=device)
        print(f"| {B}, {T}, {K} | {size / 2**20:.0f} | " + " | ".join(cells) + f" | {auto} |")
        del x
        gc.collect()


if __name__ == "__main__":
    main()
