"""Where a ``convolve`` call's time goes on a CUDA device, op by op: host (CPU) time against
device time under ``torch.profiler``, forward and forward+backward, for the small cases that
the host's launches dominate.

    python3 benchmarks/gpu_profile.py        (needs a CUDA device)
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

import diffconv_core as dc

SHAPES = [(1, 1024, 31), (16, 480000, 3), (4096, 1024, 31), (4096, 1024, 255), (16, 480000, 255)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def report(B: int, T: int, K: int, device: str = "cuda", calls: int = 20) -> str:
    """Markdown tables of the busiest ops of a forward and a forward+backward call (any
    device: the tests run it on the CPU)."""
    x = torch.randn(B, T, device=device)
    w = torch.hann_window(K, periodic=False, device=device)
    grad = torch.randn(B, T, device=device)

    def forward():
        with torch.no_grad():
            dc.convolve(x, w)

    def both():
        xg, wg = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
        dc.convolve(xg, wg).backward(grad)

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    lines = []
    for label, step in (("fwd", forward), ("fwd+bwd", both)):
        for _ in range(3):
            step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            step()
            _sync(device)
        wall = (time.perf_counter() - start) / calls * 1e6
        with profile(activities=activities) as prof:
            for _ in range(calls):
                step()
                _sync(device)
        events = prof.key_averages()
        on_device = sum(e.self_device_time_total for e in events) / calls
        lines += [
            f"\n## {B}, {T}, {K} {label}: {wall:.0f} us a call, {on_device:.0f} us on the device\n",
            "| op | calls a step | host us a step | device us a step |",
            "|---|---|---|---|",
        ]
        busiest = sorted(events, key=lambda e: -(e.self_cpu_time_total + e.self_device_time_total))
        lines += [
            f"| {e.key[:60]} | {e.count / calls:g} | {e.self_cpu_time_total / calls:.1f} "
            f"| {e.self_device_time_total / calls:.1f} |"
            for e in busiest[:14]
        ]
    return "\n".join(lines)


def main() -> None:
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for B, T, K in SHAPES:
        print(report(B, T, K), flush=True)


if __name__ == "__main__":
    main()
