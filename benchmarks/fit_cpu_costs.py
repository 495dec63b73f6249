"""Refit the CPU cost model of ``choose_method`` (forward, no autograd) from fresh timings.

Times every method of ``diffconv_core.convolve`` on a grid of batch, length and kernel sizes,
fits the constants of ``diffconv_core.methods._COSTS["cpu"]`` to them (least squares on
relative error, one method and path at a time, with the same features the model uses;
float32, whose direct method takes the shifted sums for the fewest taps, then oneDNN's
convolutions, over all rows at once where they are whole frames of 16 samples, in pieces
elsewhere; and that method again by the Toeplitz GEMMs that other dtypes take, for their
terms) and prints the fitted table, how often the model then picks a method within 10% of
the measured fastest, and each case's timings. Nothing is written: paste the table into
``methods.py`` and the output into ``benchmarks/results/``.

    python benchmarks/fit_cpu_costs.py            # about 4 minutes on 2 cores
    python benchmarks/fit_cpu_costs.py --from-log run.txt  # refit an earlier run's timings
    cat run1.txt run2.txt > both.txt  # then --from-log both.txt: several runs at once
    python benchmarks/fit_cpu_costs.py --backward # the backward factors, about 4 minutes
    python benchmarks/fit_cpu_costs.py --per-row  # a kernel per row, about 3 minutes

``--per-row`` instead times the three methods with a kernel per row (the batched GEMMs of
the direct method), fits ``_COSTS["cpu_autograd"]``'s direct terms to the timings of 13 to 63
taps and prints the agreement of both tables up to 255 taps.

``--backward`` instead times each method's recorded forward pass and its forward+backward
(gradients to signal and kernel) on another grid, prints each method's median ratio (the
model's ``_BACKWARD_FACTOR``) and how often ``choose_method(..., requires_grad=True)`` picks a
method within 10% of the fastest forward+backward.

Freed memory is retained (``diffconv_core.memory.retain_freed_memory``, as the ``diffconv``
command does): under glibc's default policy a call's page faults depend on the process's
history, which made the same case 1x-4x slower between runs.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import statistics

import bench_core  # beside this script
import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

import diffconv_core
from diffconv_core import _direct, _framed_conv, methods
from diffconv_core._direct import MAX_TOEPLITZ_TAPS, shifted_sums_for, small_call
from diffconv_core._fft import range_fft_length, rows_per_chunk
from diffconv_core._half_fft import half_fft_shape
from diffconv_core._overlap import blocks_in_half_length, blocks_per_chunk, overlap_fft_length
from diffconv_core._shift_add import MAX_SHIFT_ADD_TAPS
from diffconv_core._toeplitz import gemm_work
from diffconv_core.memory import retain_freed_memory

SHAPES = [(4, 480_000), (1, 4_194_304), (512, 1024), (64, 8000), (16, 2000), (1, 20_000)]
SHAPES += [(8, 100_000), (1, 2000), (128, 16_000)]
# Rows that are not whole frames of 16 samples: copied to whole frames for one convolution
# (up to _framed_conv.PADDED_ROWS_BYTES), else the convolutions in pieces.
SHAPES += [(512, 1000), (4, 480_008), (64, 8004)]
# Small calls, where the call costs decide and the direct method's convolution is torch's
# native one (_framed_conv.NATIVE_MAX_WORK): a row or a few of 256-16,384 samples.
SMALL_SHAPES = [(1, 256), (1, 1024), (4, 1024), (1, 4096), (16, 512), (2, 8192), (1, 16384)]
SHAPES += SMALL_SHAPES
TAPS = [3, 5, 8, 13, 31, 63, 127, 255, 511, 1023]
METHODS = ("direct", "fft", "overlap")


def median_time(fn, budget_s: float) -> float:
    return bench_core.median_time(fn, "cpu", budget_s)


def direct_path(B: int, T: int, K: int) -> str | None:
    """Which terms the direct method's float32 time of mode "same" fits: "tiny" (one native
    convolution, for small calls), "shift" (the shifted sums), "whole" (one oneDNN
    convolution over all rows), "native" (that convolution by torch's native one, for small
    work) or "pieces" (convolutions in pieces, for rows that are not whole frames)."""
    if small_call(B, T, K, torch.float32):
        return "tiny"
    plan = _framed_conv.whole_rows_plan(T, K, T, K - 1 - (K - 1) // 2, B)
    if shifted_sums_for(K, T, plan is not None):
        return "shift"
    if plan is None:
        return "pieces"
    return "native" if _framed_conv.runs_native(B, T, plan[2]) else "whole"


def features(method: str, B: int, T: int, K: int, path: str | None = None) -> list[float]:
    """The model's terms for one method and case (see ``methods.estimate_costs``); for
    "direct" only where it takes ``path`` (see :func:`direct_path`)."""
    L = T  # mode "same"
    if method == "direct":
        if direct_path(B, T, K) != path:
            return []
        if path == "tiny":
            return [1.0, B * L * K]
        if path == "shift":
            return [1.0, B * L, B * L * K]
        if path == "pieces":
            return [1.0, B * L, B * L * _framed_conv.work(K)]
        plan = _framed_conv.whole_rows_plan(T, K, L, K - 1 - (K - 1) // 2, B)
        # float32: one convolution over all rows (oneDNN's, or torch's native one for small
        # work), J frames of P samples per output
        return [1.0, B * L, B * L * plan[2] * _framed_conv.FRAME]
    if method == "fft":
        if methods.fft_runs_blocks(T, K, "same", "cpu"):
            return []  # the FFT method runs overlap-save's blocks there, priced as such
        n = range_fft_length(T, K, *methods.output_range(T, K, "same"), torch.device("cpu"))
        log_n = math.log2(n)
        half = half_fft_shape(n, min(B, rows_per_chunk(n)))
        if half != (path == "half"):
            return []
        if half:
            return half_features(B, n)
        work = B * 3 * n * log_n * methods.single_row_factor(B, n)
        return [1.0, work, work * max(0.0, log_n - 11)]
    block = overlap_fft_length(K, L)
    n_blocks = math.ceil(L / (block - K + 1))
    at_once = min(n_blocks, blocks_per_chunk(block, B, n_blocks, "cpu"))
    half = blocks_in_half_length(B, block, at_once)
    if half != (path == "half"):
        return []
    if half:
        return half_features(B * n_blocks, block)
    units = B * n_blocks * 2 * block * math.log2(block)
    if block > methods._SINGLE_ROW_FFT_CLIFF:  # a lone block past the cliff, as the model
        units *= methods.single_row_factor(B * n_blocks, block)
    streamed = B * L > methods.OVERLAP_IN_CACHE_SAMPLES
    return [1.0, units, units if streamed else 0.0]


def half_features(rows: int, n: int) -> list[float]:
    """The terms of complex transforms of half the length (``methods._half_fft_cost``):
    a call, per point, then per ``n log2 n`` of a lone row, of each of a few rows, and of
    each of those per octave past 2**16 points (out of cache)."""
    log_n = math.log2(n)
    lone, few = (1.0, 0.0) if rows == 1 else (0.0, float(rows))
    return [
        1.0,
        rows * n,
        lone * n * log_n,
        few * n * log_n,
        few * n * log_n * max(0.0, log_n - 16),
    ]


def direct_by_gemms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The direct method with the Toeplitz GEMMs where float32 would take oneDNN's
    convolutions (the path of other dtypes, or of a torch without oneDNN), also for small
    calls (which every dtype hands to one native convolution)."""
    usable, tiny = _framed_conv.usable, _direct.TINY_COLUMN_BYTES
    _framed_conv.usable, _direct.TINY_COLUMN_BYTES = (lambda x: False), 0
    try:
        return diffconv_core.convolve(x, w, method="direct")
    finally:
        _framed_conv.usable, _direct.TINY_COLUMN_BYTES = usable, tiny


def fit(rows: list[tuple[list[float], float]]) -> np.ndarray:
    # Non-negative: a negative call cost (unconstrained, the pieces' fit gave -27 us) makes
    # the model's price of a small call negative, so it would always win there.
    A = np.array([f for f, _ in rows])
    y = np.array([t for _, t in rows])
    coef, _ = nnls(A / y[:, None], np.ones_like(y))
    return coef


FORWARD_LINE = re.compile(r"# (\d+) x (\d+), (\d+) taps: ((?:direct|fft) .*)")
GEMMS_TIME = re.compile(r"\(direct by GEMMs ([\d.]+) ms\)")


def _forward_lines(path: str) -> list:
    """``(B, T, K, {method: seconds}, GEMM seconds or None)`` of every forward timing line an
    earlier run printed ("# B x T, K taps: direct ... ms, fft ... ms, overlap ... ms")."""
    lines = []
    for line in open(path):
        match = FORWARD_LINE.match(line)
        if match:
            B, T, K = (int(v) for v in match.groups()[:3])
            found = re.findall(r"(direct|fft|overlap) ([\d.]+) ms", match.group(4))
            gemms = GEMMS_TIME.search(match.group(4))
            gemm_s = None if gemms is None else float(gemms.group(1)) / 1e3
            lines.append((B, T, K, {m: float(v) / 1e3 for m, v in found}, gemm_s))
    return lines


def timings_from_log(path: str) -> tuple[list, list]:
    """The cases timed by all three methods (and their GEMM timings) of an earlier run's
    printed timing lines, as the main fit takes them."""
    whole = [line for line in _forward_lines(path) if set(line[3]) == set(METHODS)]
    return [line[:4] for line in whole], [(B, T, K, gemms) for B, T, K, _, gemms in whole]


def forward_cases_from_log(path: str) -> list:
    """The forward timings ``(B, T, K, {method: seconds})`` an earlier run printed, also
    those without the direct method (``--half-fft`` runs past 1,023 taps)."""
    return [line[:4] for line in _forward_lines(path)]


def forward_times(x, w, timed, budget_s: float, label: str) -> dict[str, float]:
    """Forward seconds of each method in ``timed``, interleaved in rounds, printed as a
    timing line ("# B x T, <label>: method t ms, ...")."""
    fns = {m: (lambda m=m: diffconv_core.convolve(x, w, method=m)) for m in timed}
    times = bench_core.interleaved_medians(fns, "cpu", budget_s)
    B, T = math.prod(x.shape[:-1]), x.shape[-1]
    print(
        f"# {B} x {T}, {label}: " + ", ".join(f"{m} {s * 1e3:.3f} ms" for m, s in times.items()),
        flush=True,
    )
    return times


def check_logs(paths: list[str], settings: list[str]) -> None:
    """How often the current table picks within 10% of the fastest on earlier runs' printed
    forward timings, and with each ``NAME=VALUE`` of ``settings`` (in ``_COSTS["cpu"]``)
    instead: a change to one term checked against every run at hand, nothing timed."""
    tables = {"current": methods._COSTS["cpu"]}
    for setting in settings:
        name, value = setting.split("=")
        tables[setting] = dict(methods._COSTS["cpu"], **{name: float(value)})
    for label, table in tables.items():
        results = []
        for path in paths:
            cases = forward_cases_from_log(path)
            near, misses = agreement(table, cases)
            results.append(f"{path}: {near} of {len(cases)} ({misses[-1]})")
        print(f"{label}:\n  " + "\n  ".join(results))


BACKWARD_SHAPES = [(4, 480_000), (1, 1_048_576), (512, 1024), (64, 8000), (16, 20_000)]
BACKWARD_SHAPES += [(8, 100_000)]
BACKWARD_TAPS = [3, 31, 127, 255, 511, 2047, 8191]


def fit_backward(budget_s: float) -> None:
    """Time recorded forward and forward+backward per method; print the factors (the direct
    method's split at ``_framed_conv.MAX_GRADIENT_TAPS``) and how often the model's pick with
    gradients is within 10% of the fastest, with the current and the fitted factors."""
    factors: dict[str, list[float]] = {name: [] for name in methods._BACKWARD_FACTOR}
    cases = []
    for (B, T), K in itertools.product(BACKWARD_SHAPES, BACKWARD_TAPS):
        x = torch.randn(B, T, requires_grad=True)
        w = torch.hann_window(K, periodic=False).requires_grad_()
        grad = torch.randn(B, T)
        both = {}
        for m in METHODS:
            if m == "direct" and K > MAX_TOEPLITZ_TAPS:
                continue  # conv1d: minutes, never the fastest

            def forward_only(m=m, x=x, w=w):
                diffconv_core.convolve(x, w, method=m)

            def step(m=m, x=x, w=w, grad=grad):
                diffconv_core.convolve(x, w, method=m).backward(grad)

            forward = median_time(forward_only, budget_s)
            both[m] = median_time(step, budget_s)
            long = m == "direct" and K > _framed_conv.MAX_GRADIENT_TAPS
            factors["direct_long" if long else m].append(both[m] / forward)
        cases.append((B, T, K, both))
        print(
            f"# {B} x {T}, {K} taps, fwd+bwd: "
            + ", ".join(f"{m} {s * 1e3:.2f} ms" for m, s in both.items())
        )
    fitted = {name: round(statistics.median(v), 2) for name, v in factors.items() if v}
    print("\n_BACKWARD_FACTOR (medians) = {")
    for name, value in fitted.items():
        print(f"    {name!r}: {value:.2f},")
    print("}")
    for label, table in (("current", methods._BACKWARD_FACTOR), ("fitted", fitted)):
        saved = methods._BACKWARD_FACTOR
        methods._BACKWARD_FACTOR = {**saved, **table}
        try:
            near, misses = near_fastest(
                cases, lambda B, T, K: diffconv_core.choose_method((B, T), (K,), requires_grad=True)
            )
        finally:
            methods._BACKWARD_FACTOR = saved
        print(
            f"\n{label} factors: pick within 10% of the fastest fwd+bwd in {near} of {len(cases)}"
        )
        for line in misses:
            print(f"  {line}")


# Small training steps: where the direct method's recorded forward is one native convolution
# in frames (_direct.rows_range, its backward torch's), and the transforms' recorded
# paths cost most of their time in host work.
SMALL_TRAINING_SHAPES = [(1, 256), (1, 1024), (4, 1024), (1, 4096), (16, 512), (2, 8192)]
SMALL_TRAINING_SHAPES += [(1, 16384), (1, 2000), (4, 1000)]
SMALL_TRAINING_TAPS = [8, 13, 31, 63, 127, 255, 511]


def check_small_training(budget_s: float) -> None:
    """Time forward+backward of each method (gradients to signal and kernel) in interleaved
    rounds, for the small calls whose direct method is one native convolution over every row,
    and print how often ``choose_method(..., requires_grad=True)`` is within 10% of the
    fastest (the "cpu_autograd" transforms' call costs are set by these)."""
    cases = []
    for (B, T), K in itertools.product(SMALL_TRAINING_SHAPES, SMALL_TRAINING_TAPS):
        lo, hi = methods.output_range(T, K, "same")
        x = torch.randn(B, T, requires_grad=True)
        w = torch.hann_window(K, periodic=False).requires_grad_()
        if _direct.rows_call(x, w, lo, hi) is None or small_call(B, T, K, x.dtype):
            continue
        grad = torch.randn(B, T)

        def step(m, x=x, w=w, grad=grad):
            return lambda: torch.autograd.grad(diffconv_core.convolve(x, w, method=m), (x, w), grad)

        times = bench_core.interleaved_medians({m: step(m) for m in METHODS}, "cpu", budget_s)
        cases.append((B, T, K, times))
        print(
            f"# {B} x {T}, {K} taps, fwd+bwd: "
            + ", ".join(f"{m} {s * 1e3:.3f} ms" for m, s in times.items())
        )
    near, misses = near_fastest(
        cases, lambda B, T, K: diffconv_core.choose_method((B, T), (K,), requires_grad=True)
    )
    print(f"\npick within 10% of the fastest fwd+bwd in {near} of {len(cases)}")
    for line in misses:
        print(f"  {line}")


# One row or a few of more than 8,192 points, where the FFT method's transforms are complex
# ones of half the length (_half_fft), with short and long kernels.
HALF_FFT_BATCHES = [1, 2, 3, 4, 8, 16]
HALF_FFT_LENGTHS = [8192, 12_000, 16_384, 32_768, 65_536, 131_072, 262_144, 480_000]
HALF_TERMS = ("half_call", "half_sample", "half_row_unit", "half_rows_unit", "half_rows_octave")


def fit_half_fft(budget_s: float) -> None:
    """Time the three methods in interleaved rounds where the FFT method takes complex
    transforms of half the length, fit ``_COSTS["cpu"]``'s half-transform terms to the
    timings of the FFT method and of overlap-save's few long blocks (the same transforms),
    and print how often the model picks within 10% of the fastest, with the
    current and the fitted terms."""
    cases = []
    with torch.no_grad():
        for B, T in itertools.product(HALF_FFT_BATCHES, HALF_FFT_LENGTHS):
            if B * T > 1 << 21:
                continue
            for K in sorted({255, 1023, T // 8 + 1, T // 32 + 1}):
                x = torch.randn(B, T)
                w = torch.hann_window(K, periodic=False)
                # conv1d past MAX_TOEPLITZ_TAPS: seconds, never the fastest
                timed = [m for m in METHODS if m != "direct" or K <= MAX_TOEPLITZ_TAPS]
                cases.append((B, T, K, forward_times(x, w, timed, budget_s, f"{K} taps")))
    terms = HALF_TERMS
    rows = [
        (features(m, B, T, K, "half"), times[m] * 1e9)
        for B, T, K, times in cases
        for m in ("fft", "overlap")
        if features(m, B, T, K, "half")
    ]
    table = dict(methods._COSTS["cpu"])
    table.update(zip(terms, (float(c) for c in fit(rows)), strict=True))
    print(
        "\n_COSTS['cpu'] half-transform terms: " + ", ".join(f"{n} {table[n]:.4g}" for n in terms)
    )
    for label, costs in (("current", methods._COSTS["cpu"]), ("fitted", table)):
        near, misses = agreement(costs, cases)
        print(f"\n{label} table: pick within 10% of the fastest in {near} of {len(cases)} cases")
        for line in misses:
            print(f"  {line}")


FLOAT64_SHAPES = [(1, 256), (1, 1024), (4, 1024), (1, 4096), (16, 512), (2, 8192)]
FLOAT64_SHAPES += [(1, 16384), (64, 1024), (8, 8192)]
FLOAT64_TAPS = [8, 13, 31, 63, 127, 255]


def check_float64(budget_s: float) -> None:
    """Time each method's float64 forward in interleaved rounds on small and mid-size calls
    and print how often the model's pick is within 10% of the fastest (float64 is priced
    from the float32 terms: the GEMMs by _FLOAT64_GEMM_FACTOR, the native convolution as
    float32's)."""
    cases = []
    with torch.no_grad():
        for (B, T), K in itertools.product(FLOAT64_SHAPES, FLOAT64_TAPS):
            x = torch.randn(B, T, dtype=torch.float64)
            w = torch.hann_window(K, periodic=False, dtype=torch.float64)
            cases.append((B, T, K, forward_times(x, w, METHODS, budget_s, f"{K} taps, float64")))
    near, misses = near_fastest(
        cases, lambda B, T, K: diffconv_core.choose_method((B, T), (K,), dtype=torch.float64)
    )
    print(f"\nfloat64: pick within 10% of the fastest in {near} of {len(cases)}")
    for line in misses:
        print(f"  {line}")


# Filter banks: B signals (B, 1, T) with F kernels (F, K) -> (B, F, T).
BANKS = [(16, 3200, 80, 251), (16, 3200, 80, 63), (8, 16000, 40, 63), (1, 16000, 40, 63)]
BANKS += [(32, 1024, 16, 31), (4, 8000, 64, 127), (64, 1024, 8, 15), (1, 4096, 8, 31)]
BANKS += [(128, 400, 40, 31)]
_BANK_COUNTS = {(B, T, K): count for B, T, count, K in BANKS}


def check_banks(budget_s: float) -> None:
    """Time each method on filter banks, forward and forward+backward, with ``conv1d`` (one
    input channel, a filter per output channel) beside them, and print how often the pick
    is within 10% of the fastest method."""
    for grad in (False, True):
        cases = []
        for B, T, count, K in BANKS:
            x = torch.randn(B, 1, T, requires_grad=grad)
            w = torch.randn(count, K, requires_grad=grad)
            g = torch.randn(B, count, T)

            def step(fn, x=x, w=w, g=g, grad=grad):
                if grad:
                    return lambda: torch.autograd.grad(fn(x, w), (x, w), g)
                return lambda: fn(x, w)

            def conv1d(x, w):
                return F.conv1d(x, w.flip(-1).unsqueeze(1), padding=w.shape[-1] // 2)

            fns = {
                m: step(lambda x, w, m=m: diffconv_core.convolve(x, w, method=m)) for m in METHODS
            }
            fns["conv1d"] = step(conv1d)
            with torch.set_grad_enabled(grad):
                times = bench_core.interleaved_medians(fns, "cpu", budget_s)
            peer = times.pop("conv1d")
            cases.append((B, T, K, times, count))
            pick = diffconv_core.choose_method((B, 1, T), (count, K), requires_grad=grad)
            print(
                f"# {B} x {T}, {count} kernels of {K} taps, {'fwd+bwd' if grad else 'fwd'}: "
                + ", ".join(f"{m} {s * 1e3:.2f} ms" for m, s in times.items())
                + f", conv1d {peer * 1e3:.2f} ms; auto {times[pick] / peer:.2f}x conv1d"
            )
        near, misses = near_fastest(
            [case[:4] for case in cases],
            lambda B, T, K, grad=grad: diffconv_core.choose_method(
                (B, 1, T), (_BANK_COUNTS[B, T, K], K), requires_grad=grad
            ),
        )
        kind = "fwd+bwd" if grad else "fwd"
        print(f"\nbanks, {kind}: pick within 10% of the fastest in {near} of {len(cases)}")
        for line in misses:
            print(f"  {line}")


PER_ROW_SHAPES = [(32, 16_000), (128, 4000), (8, 100_000), (4, 480_000), (256, 1024)]
PER_ROW_SHAPES += [(2, 20_000)]
PER_ROW_TAPS = [7, 15, 31, 63, 127, 255]


def fit_per_row(budget_s: float) -> None:
    """Time the methods with a kernel per row; refit the direct terms of "cpu_autograd"."""
    cases = []
    with torch.no_grad():
        for (R, T), K in itertools.product(PER_ROW_SHAPES, PER_ROW_TAPS):
            x, w = torch.randn(R, T), torch.randn(R, K)
            times = {
                m: median_time(
                    lambda m=m, x=x, w=w: diffconv_core.convolve(x, w, method=m), budget_s
                )
                for m in METHODS
            }
            cases.append((R, T, K, times))
            print(
                f"# {R} x {T}, {K} taps per row: "
                + ", ".join(f"{m} {s * 1e3:.3f} ms" for m, s in times.items())
            )
    rows = [
        ([1.0, R * T, R * T * gemm_work(K)], times["direct"] * 1e9)
        for R, T, K, times in cases
        if MAX_SHIFT_ADD_TAPS < K <= 63  # fewer taps take the shifted sums
    ]
    names = ("direct_call", "direct_sample", "direct_gemm_tap")
    table = dict(methods._COSTS["cpu_autograd"])
    table.update(zip(names, (float(c) for c in fit(rows)), strict=True))
    print(
        "\n_COSTS['cpu_autograd'] direct terms: " + ", ".join(f"{n} {table[n]:.4g}" for n in names)
    )
    for label, costs in (("current", methods._COSTS["cpu_autograd"]), ("fitted", table)):
        near, misses = agreement(costs, cases, "cpu_autograd", shared_kernel=False)
        print(f"\n{label} table: pick within 10% of the fastest in {near} of {len(cases)} cases")
        for line in misses:
            print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per timing")
    parser.add_argument("--backward", action="store_true", help="fit the backward factors")
    parser.add_argument("--per-row", action="store_true", help="fit a kernel per row's terms")
    parser.add_argument(
        "--small-training", action="store_true", help="check small calls' fwd+bwd picks"
    )
    parser.add_argument("--float64", action="store_true", help="check float64 picks")
    parser.add_argument("--banks", action="store_true", help="check filter banks' picks")
    parser.add_argument("--half-fft", action="store_true", help="fit the half transforms' terms")
    parser.add_argument("--from-log", help="refit from the timings an earlier run printed")
    parser.add_argument(
        "--check-logs", nargs="+", metavar="LOG", help="check picks on earlier runs' timings"
    )
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="NAME=VALUE", help="with --check-logs"
    )
    args = parser.parse_args()
    if args.check_logs:
        check_logs(args.check_logs, args.set)
        return
    retain_freed_memory()
    torch.manual_seed(0)
    modes = {
        "backward": fit_backward,
        "per_row": fit_per_row,
        "small_training": check_small_training,
        "float64": check_float64,
        "banks": check_banks,
        "half_fft": fit_half_fft,
    }
    for name, run in modes.items():
        if getattr(args, name):
            run(args.budget)
            return
    cases, gemm_cases = timings_from_log(args.from_log) if args.from_log else ([], [])
    with torch.no_grad():
        for (B, T), K in [] if args.from_log else itertools.product(SHAPES, TAPS):
            x = torch.randn(B, T)
            w = torch.hann_window(K, periodic=False)
            times = {
                m: median_time(
                    lambda m=m, x=x, w=w: diffconv_core.convolve(x, w, method=m), args.budget
                )
                for m in METHODS
            }
            gemms = None
            if MAX_SHIFT_ADD_TAPS < K <= MAX_TOEPLITZ_TAPS:
                gemms = median_time(lambda x=x, w=w: direct_by_gemms(x, w), args.budget)
            cases.append((B, T, K, times))
            gemm_cases.append((B, T, K, gemms))
            print(
                f"# {B} x {T}, {K} taps: "
                + ", ".join(f"{m} {s * 1e3:.3f} ms" for m, s in times.items())
                + ("" if gemms is None else f" (direct by GEMMs {gemms * 1e3:.3f} ms)")
            )
    names = {
        ("direct", "tiny"): ("tiny_call", "tiny_product"),
        ("direct", "shift"): ("shift_call", "shift_sample", "shift_tap"),
        ("direct", "whole"): ("whole_call", "whole_sample", "whole_tap"),
        ("direct", "native"): ("native_call", "native_sample", "native_tap"),
        ("direct", "pieces"): ("framed_call", "framed_sample", "framed_tap"),
        ("fft", None): ("fft_call", "fft_unit", "fft_unit_per_octave"),
        ("fft", "half"): HALF_TERMS,
        ("overlap", None): ("overlap_call", "overlap_unit", "overlap_unit_streamed"),
    }
    table = dict(methods._COSTS["cpu"])
    for (method, path), terms in names.items():
        rows = [
            (features(method, B, T, K, path), times[method] * 1e9)
            for B, T, K, times in cases
            if features(method, B, T, K, path)
        ]
        if rows:  # (no shape of this run took the path: its terms stay)
            table.update(zip(terms, (float(c) for c in fit(rows)), strict=True))
    # The GEMMs' terms, for other dtypes or without oneDNN: the same cases, timed alike.
    rows = [
        ([1.0, B * T, B * T * gemm_work(K)], gemms * 1e9)
        for B, T, K, gemms in gemm_cases
        if gemms is not None
    ]
    names_gemm = ("direct_call", "direct_sample", "direct_gemm_tap")
    table.update(zip(names_gemm, (float(c) for c in fit(rows)), strict=True))
    print("\n_COSTS['cpu'] = {")
    for key, value in table.items():
        print(f"    {key!r}: {value:.4g},")
    print("}")
    for label, costs in (("current", methods._COSTS["cpu"]), ("fitted", table)):
        near, misses = agreement(costs, cases)
        print(f"\n{label} table: pick within 10% of the fastest in {near} of {len(cases)} cases")
        for line in misses:
            print(f"  {line}")


def near_fastest(cases: list, pick) -> tuple[int, list[str]]:
    """How many of the timed ``cases`` ``(B, T, K, {method: seconds})`` ``pick(B, T, K)``
    answers with a method within 10% of the fastest, and a line for each it misses, then
    one with the geometric mean and the worst of the picked method's time over the fastest."""
    near, misses, ratios = 0, [], []
    for B, T, K, times in cases:
        picked = pick(B, T, K)
        fastest = min(times, key=times.__getitem__)
        ratios.append(times[picked] / times[fastest])
        if times[picked] <= 1.1 * times[fastest]:
            near += 1
        else:
            misses.append(
                f"{B} x {T}, {K} taps: picked {picked} {times[picked] * 1e3:.3f} ms, "
                f"{fastest} {times[fastest] * 1e3:.3f} ms"
            )
    if ratios:
        geomean = math.exp(statistics.fmean(math.log(r) for r in ratios))
        misses.append(f"picked / fastest: geometric mean {geomean:.3f}, worst {max(ratios):.2f}x")
    return near, misses


def agreement(
    table: dict[str, float], cases: list, key: str = "cpu", shared_kernel: bool = True
) -> tuple[int, list[str]]:
    """How often ``choose_method``'s model with this table (as ``_COSTS[key]``) picks a method
    within 10% of the measured fastest, and the cases where it does not."""
    saved = methods._COSTS[key]
    methods._COSTS[key] = table
    methods.estimate_costs.cache_clear()

    def pick(B: int, T: int, K: int) -> str:
        costs = methods.estimate_costs(
            B, T, K, "same", "cpu", shared_kernel=shared_kernel, framed_conv=shared_kernel
        )
        return methods.cheapest(costs)

    try:
        return near_fastest(cases, pick)
    finally:
        methods._COSTS[key] = saved
        methods.estimate_costs.cache_clear()


if __name__ == "__main__":
    main()
