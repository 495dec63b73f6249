#!/usr/bin/env python3
"""What an exported graph costs: ``torch.export`` programs against eager ``convolve``.

An exported graph computes with plain torch operations (one rFFT product, or ``conv1d`` for
"direct"), plus the finiteness and overflow checks that pick its branch; eager mode has the
core's methods (direct sums, overlap-save, complex transforms of half the length). With
dynamic shapes (time, and the batch where B > 1) the graph's FFT takes the full length
T + K - 1, not a smooth one, and a fixed batch of several rows complex transforms. Times are
medians of interleaved rounds (``bench_core.interleaved_medians``); ratio = graph / eager.

    python benchmarks/bench_export.py
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch
from torch.export import Dim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import interleaved_medians  # noqa: E402

from diffconv_core import convolve  # noqa: E402

CASES = [(4, 480_000, 31), (4, 480_000, 1023), (512, 1024, 255), (64, 8000, 63), (1, 1024, 31)]


class Convolution(torch.nn.Module):
    def __init__(self, kernel: torch.Tensor):
        super().__init__()
        self.register_buffer("kernel", kernel)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return convolve(signal, self.kernel)


def main() -> None:
    torch.manual_seed(0)
    print("| B, T, K | eager (ms) | static graph (ms) | ratio | dynamic graph (ms) | ratio |")
    print("|---|---|---|---|---|---|")
    for B, T, K in CASES:
        # Each case from a clean slate: after the earlier cases' exports in this process,
        # 1 x 1,024's dynamic export met a guard "time != 1024" (torch's caches of the
        # cond branches' traces, not reproduced alone or after 512 x 1,024 alone).
        torch._dynamo.reset()
        x = torch.randn(B, T)
        kernel = torch.hann_window(K + 2, periodic=False)[1:-1]
        module = Convolution(kernel)
        static = torch.export.export(module, (x,)).module()
        dims = {1: Dim("time", min=K + 1, max=1 << 23)}
        if B > 1:  # a dynamic batch is traced with at least 2 rows (torch's 0/1 rule)
            dims[0] = Dim("batch", max=4096)
        shapes = (dims,)
        example = x[:2, : T - 1].clone()  # a view would carry its base's strides
        dynamic = torch.export.export(module, (example,), dynamic_shapes=shapes).module()
        with torch.no_grad():
            times = interleaved_medians(
                {
                    "eager": partial(module, x),
                    "static": partial(static, x),
                    "dynamic": partial(dynamic, x),
                },
                "cpu",
                budget_s=0.5,
            )
        eager = times["eager"]
        print(
            f"| {B}, {T}, {K} | {eager * 1e3:.2f} | {times['static'] * 1e3:.2f} | "
            f"{times['static'] / eager:.2f}x | {times['dynamic'] * 1e3:.2f} | "
            f"{times['dynamic'] / eager:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
