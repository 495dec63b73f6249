"""Where the time of one ``convolve`` call goes on a CUDA device: each piece timed alone.

Small GPU cases are dominated by host time (each PyTorch launch costs ~15-20 us of it on the
device tool's machines), so this times the pieces of a call with a synchronize after each:
the NaN/Inf scan (``_magnitudes``, one host sync), ``choose_method``, the direct method's range
function, whole calls per method and forward+backward steps ("train") of the direct and FFT
methods, beside ``conv1d``, the plain power-of-two FFT of ``bench_core`` and an empty
synchronize. Then transforms at the power-of-two length CUDA takes now against shorter
3- and 5-smooth ones (``fft_size_table``): time and peak memory.

    python3 benchmarks/gpu_call_costs.py        (needs a CUDA device)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import diffconv_core as dc
from diffconv_core import _direct, _nonfinite
from diffconv_core.methods import choose_method

SHAPES = [(1, 1024, 31), (16, 480000, 3), (4096, 1024, 255), (16, 480000, 255)]


def pieces(B: int, T: int, K: int, device: str = "cuda") -> dict:
    """The timed callables for one shape (any device: the tests run them on the CPU)."""
    import bench_core  # beside this script

    x = torch.randn(B, T, device=device)
    w = torch.randn(K, device=device)
    grad = torch.randn(B, T, device=device)
    lo = (K - 1) // 2
    return {
        "sync alone": lambda: None,
        "conv1d": lambda: F.conv1d(x[:, None], w.flip(0)[None, None], padding=K // 2),
        "torch_fft": lambda: bench_core.run_torch_fft(x, w),
        "magnitudes": lambda: _nonfinite._magnitudes(x, w),
        "choose_method": lambda: choose_method(x.shape, w.shape, device=x.device),
        "direct_range": lambda: _direct.direct_range(x, w, lo, lo + T),
        **{
            f"convolve {m}": (lambda m=m: dc.convolve(x, w, method=m))
            for m in ("direct", "fft", "overlap", "auto")
        },
        **{f"train {m}": bench_core.fwd_bwd(_method(m), x, w, grad) for m in ("direct", "fft")},
    }


def _method(name: str):
    return lambda x, w: dc.convolve(x, w, method=name)


def main() -> None:
    import bench_core  # beside this script: its timer synchronizes after every call

    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}; median us a call")
    for B, T, K in SHAPES:
        costs = ", ".join(
            f"{name} {bench_core.median_time(fn, 'cuda', budget_s=0.1) * 1e6:.0f}"
            for name, fn in pieces(B, T, K).items()
        )
        print(f"- {B},{T},{K}: {costs}", flush=True)
    print(fft_size_table("cuda"))


def fft_sizes(n: int) -> dict[str, int]:
    """Candidate transform lengths for ``n`` points: the power of two CUDA takes now, and the
    smallest ``2**a * 3`` and 5-smooth multiple of 8 at least ``n`` where shorter than it
    (fewer points, maybe slower ones; half the memory for a length just past a power of two).

    Example:
        >>> fft_sizes(16_777_246)
        {'power of two': 33554432, '2**a * 3': 25165824, '5-smooth x 8': 16796160}
        >>> fft_sizes(480_030)
        {'power of two': 524288, '5-smooth x 8': 486000}
    """
    from diffconv_core._fft import next_fast_len

    power = 1 << (n - 1).bit_length()
    three = 3
    while three < n:
        three *= 2
    shorter = {"2**a * 3": three, "5-smooth x 8": next_fast_len(n, 8)}
    return {"power of two": power, **{k: v for k, v in shorter.items() if v < power}}


def fft_size_table(device: str, shapes=((16, 480_030), (1, 16_777_246), (4096, 1_054))) -> str:
    """rfft + multiply + irfft of a batch at each candidate length (``fft_sizes``): median
    time and peak extra memory (CUDA), so the length rule can be decided on measurements."""
    import bench_core  # beside this script

    lines = ["| rows, points | length rule | length | ms | peak MB |", "|---|---|---|---|---|"]
    for rows, n in shapes:
        for rule, size in fft_sizes(n).items():
            x = torch.randn(rows, n, device=device)
            k = torch.randn(1, size // 2 + 1, dtype=torch.complex64, device=device)

            def run(x=x, k=k, size=size):
                return torch.fft.irfft(torch.fft.rfft(x, size) * k, size)

            seconds = bench_core.median_time(run, device, budget_s=0.1)
            peak = ""
            if device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                run()
                torch.cuda.synchronize()
                peak = f"{(torch.cuda.max_memory_allocated() - before) / 2**20:.0f}"
            lines.append(f"| {rows}, {n} | {rule} | {size} | {seconds * 1e3:.2f} | {peak} |")
            del x, k
    return "\n".join(lines)


if __name__ == "__main__":
    main()
