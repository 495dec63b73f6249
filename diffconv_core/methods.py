"""Which algorithm computes a convolution fastest: ``choose_method`` and its cost model.

Three algorithms compute the same result (see ``diffconv_core.convolve``):

- "direct": a sliding dot product, ``B * L * K`` multiply-adds; best for short kernels.
- "fft": one FFT of about ``T + K`` samples per signal; best when both are moderate.
- "overlap": overlap-save, blocked FFTs of a few thousand samples; best for very long signals
  with much shorter kernels, where one huge FFT falls out of cache.

The model below prices each in "nanoseconds" with per-device constants measured by
``benchmarks/bench_core.py``. ``diffconv tune`` can measure a device and cache the winners;
when such a cache exists for the device it is consulted first (``diffconv_core.tuning``).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence

import torch

from diffconv_core import _framed_conv
from diffconv_core._direct import (
    MAX_BANK_TAPS,
    MAX_TOEPLITZ_TAPS,
    MIN_WHOLE_ROWS_TAPS,
    is_bank,
    shifted_sums_for,
    small_call,
)
from diffconv_core._fft import fft_length, range_fft_length, rows_per_chunk
from diffconv_core._half_fft import half_fft_shape
from diffconv_core._overlap import (
    block_fft_length,
    blocks_in_half_length,
    blocks_per_chunk,
    overlap_fft_length,
    transforms_in_blocks,
)
from diffconv_core._toeplitz import gemm_work
from diffconv_core._triton_direct import MAX_LAG_TAPS
from diffconv_core._validation import (
    HALF_DTYPES,
    MODES,
    broadcast_shapes,
    check_choice,
    check_device,
)
from diffconv_core.padding import pad

# The CPU table's fft_power_of_two applies from this many points on; shorter power-of-two
# transforms are priced as fitted, as the fit's small calls include them (16 x 2,000 with up
# to 95 taps runs at 2,048 points, 0.070-0.075 ms as modelled, where the factor took it over
# the direct method's 0.057-0.062).
_POWER_OF_TWO_PRICED_FROM = 4096

# Per-device constants of the cost model, in nanoseconds: a fixed cost per call, then per
# output sample (direct) or per n*log2(n) unit of transform (fft, overlap). CUDA numbers are
# from an H200 (torch 2.11, Triton direct kernel, power-of-two cuFFT), CPU numbers from this
# project's 2-core machines (torch 2.13). On the CPU the paths without autograd differ from
# the recorded ones (the direct path's one convolution or pieces, the shifted sums, batched
# FFTs in chunks), so each has its own table: "cpu" is fitted by benchmarks/fit_cpu_costs.py
# (relative least squares, non-negative, 190 float32 shapes: batch 1-512, length
# 256-4,194,304, 3-1,023 taps, 70 of them small calls of 1-16 rows, freed memory retained;
# refit on 2026-11-29 to two runs' timings at once, after convolve began calling the direct
# method's one convolution over every row straight away): small calls' one native
# convolution ("tiny", up to 124 KiB of unfolded products: _direct.tiny_products), the
# shifted sums' terms ("shift", up to 6 taps, or 12 where rows are not whole frames), the
# one convolution over rows of whole frames (_direct.rows_range) by oneDNN ("whole") or, for
# small work, by torch's native convolution ("native"), the convolutions in pieces
# elsewhere ("framed"; from an earlier fit, as no shape of these grids takes them; its grid
# had no small call to fix a call cost, the fit's 0 is replaced by the one convolution's),
# the GEMMs ("direct", for other dtypes or without oneDNN) and the transforms, all from the
# same two runs;
# "cpu_autograd" prices the recorded forward of the FFT methods and of a kernel per row (one
# shared kernel takes the fast path also when recorded), and _BACKWARD_FACTOR the backward.
# benchmarks/results/ holds the measurements.
_COSTS = {
    "cpu": {
        "tiny_call": 19_160.0,  # small calls: one native convolution (_direct.tiny_range)
        "tiny_product": 0.01166,  # per row, output and tap
        "shift_call": 43_880.0,
        "shift_sample": 0.01144,
        "shift_tap": 0.05322,  # per output sample and tap
        "direct_call": 82_060.0,
        "direct_sample": 0.0504,
        "direct_gemm_tap": 0.01356,  # GEMM: per output and multiply-add (_toeplitz.gemm_work)
        "whole_call": 59_060.0,
        "whole_sample": 0.05072,
        "whole_tap": 0.004842,  # one convolution: per output and multiply-add (J * P)
        # Recorded where autograd does not record it as it stands (_framed_conv.
        # recorded_directly), the direct method's own Function runs that convolution, with its
        # layers: the call cost fitted before convolve called it straight away
        # (cpu_2core_fit_costs_native_rows.md).
        "whole_recorded_call": 99_600.0,
        "native_call": 29_070.0,  # the same convolution by torch's native one (small work)
        "native_sample": 0.0,
        "native_tap": 0.01961,
        "framed_call": 60_740.0,
        "framed_sample": 0.4243,
        "framed_tap": 0.004305,  # in pieces: per output and multiply-add (_framed_conv.work)
        "fft_call": 35_190.0,
        "fft_unit": 0.03235,
        "fft_unit_per_octave": 0.005989,  # above 2**11 points
        # The unit of a power-of-two length, relative: MKL runs those 5-20% faster a point
        # than the smooth lengths (_fft.CPU_POWER_OF_TWO_MARGIN), where the fit (mostly smooth
        # lengths) priced a power of two up to 8% longer as dearer: auto took the direct
        # method for 64 x 3,700 with 255 taps (0.37 ms) over the FFT at 4,096 points (0.31),
        # and overlap-save for 128 x 16,000 with 511 (3.3-3.8 ms; the FFT at 16,384 points
        # 2.6-2.8). On this day's six fit runs it picked within 10% of the fastest in 184,
        # 184, 184, 182, 182 and 180 of 190, one more in each than 1.0 (`fit_cpu_costs.py
        # --check-logs`).
        "fft_power_of_two": 0.85,  # from _POWER_OF_TWO_PRICED_FROM points on
        # Overlap-save's call cost: not 48,990 as fitted with the rest, which priced a row or
        # a few of 8,192-480,000 samples with 255-1,023 taps up to 40% below their time (1 x
        # 8,192 with 255 taps: 0.09-0.11 ms, modelled 0.06, so auto took it over the direct
        # method's 0.08-0.09). Of 49k, 70k, 85k, 100k, 120k and 150k (`fit_cpu_costs.py
        # --check-logs`), 120k picked best in each of the three `--half-fft` runs (165, 170
        # and 169 of 180 within 10% of the fastest; 158, 129 and 130 at 49k) and as well as
        # any on the main grid's two runs (363 of 380; 360 at 49k).
        "overlap_call": 120_000.0,
        "overlap_unit": 0.05072,
        "overlap_unit_streamed": 0.01394,  # added past OVERLAP_IN_CACHE_SAMPLES outputs
        # The FFT method's complex transforms of half the length (_half_fft: up to 16 rows
        # of more than 8,192 points, also overlap-save's few long blocks): per call, per
        # point and row, per n*log2(n) of one row (a lone row's transforms spread over the
        # threads) or of each of a few rows, and that per octave past 2**16 points. Fitted
        # by `fit_cpu_costs.py --half-fft` to 180 shapes of 1-16 rows of 8,192-480,000
        # samples and 255 to T/8 taps (2026-11-29): picks within 10% of the fastest in 156,
        # geometric mean 1.03x, worst 1.40x (benchmarks/results/cpu_2core_fit_half_fft.md).
        "half_call": 130_800.0,
        "half_sample": 0.0,
        "half_row_unit": 0.2593,
        "half_rows_unit": 0.1377,
        "half_rows_octave": 0.03671,
    },
    "cpu_autograd": {
        # A kernel per row (batched GEMMs in pieces, recorded or not, its own backward):
        # fitted to 24 timings of 2-256 rows of 1,024-480,000 samples and 13-63 taps (up to
        # 12 take the shifted sums), freed memory retained, refit on 2026-11-29 with the
        # "cpu" table, the same hour (first fitted 2026-11-28: before, terms from a machine
        # 1.5-2x slower picked the transforms in 10 of 36 shapes where direct was up to 2.6x
        # faster); picks within 10% of the fastest in 35 of 36 shapes up to 255 taps
        # (`fit_cpu_costs.py --per-row`, benchmarks/results/cpu_2core_fit_per_row.md).
        "direct_call": 92_310.0,
        "direct_sample": 0.06059,
        "direct_gemm_tap": 0.0131,  # per output and multiply-add (_toeplitz.gemm_work)
        # The transforms' recorded forward: set by hand, the call cost since 2026-11-29 to
        # small training steps (`fit_cpu_costs.py --small-training`, 42 shapes of 1-16 rows,
        # whose direct forward+backward is one native convolution each way: 0.14-0.24 ms;
        # fft's 0.13-0.23 ms up to 4,096 samples, 0.39-0.67 ms beyond): picks within 10% of
        # the fastest in 38-40 of 42, worst 1.25x, where 25 us picked 31, worst 1.71x
        # (benchmarks/results/cpu_2core_small_training.md). One near-tie of the backward
        # fit's grid moved with it: 8 x 100,000 with 8,191 taps, overlap (7.6 ms) for fft (6.2).
        "fft_call": 66_000.0,
        "fft_unit": 0.1,
        "fft_unit_per_octave": 0.02,
        "overlap_call": 60_000.0,
        "overlap_unit": 0.14,
    },
    "cuda": {
        "direct_call": 60_000.0,
        "direct_sample": 0.0,
        "direct_tap": 5.5e-4,  # Triton: per output sample and tap
        "fft_call": 90_000.0,
        "fft_unit": 6e-4,
        "fft_unit_per_octave": 0.0,
        "overlap_call": 200_000.0,
        "overlap_unit": 5e-3,
    },
}


# CUDA, forward + backward (gradients to both inputs), as whole times: each method's terms
# (training_terms_cuda) weighted by these, in nanoseconds. Fitted by benchmarks/fit_cuda_costs.py
# (relative least squares, non-negative) to the 24 shapes `diffconv tune --quick` timed on an
# H200 (torch 2.11, Triton 3.6; benchmarks/results/gpu_h200_tune_v3.json, the direct method's
# kernel gradient a fused kernel): the pick was within 10% of the fastest in 17 of 24, 7% slower
# in geometric mean, at worst 1.46x (one signal of 262,144 samples, 3 taps: 1.88 ms, where
# overlap-save took 1.28 ms). Small calls are host-bound (0.8-1.1 ms for every method) and
# their timings swing by 20% from run to run, which decides most of the misses.
_CUDA_TRAINING_COSTS = {
    "direct": (1_023_000.0, 1.236e-3, 1.056e-4),  # call, per output and tap, FFT unit
    "fft": (975_700.0, 8.711e-4),  # call, FFT unit
    "overlap": (1_282_000.0, 1.984e-3),  # call, block-FFT unit
}


def training_terms_cuda(method: str, batch: int, T: int, K: int, mode: str) -> list[float]:
    """The terms of the CUDA forward+backward model of ``method`` (see _CUDA_TRAINING_COSTS):
    a call, then the direct sums' multiply-adds and the transforms' ``n log2 n`` units (the
    direct method's kernel gradient is an FFT past ``MAX_LAG_TAPS`` taps).

    Example:
        >>> from diffconv_core.methods import training_terms_cuda
        >>> training_terms_cuda("fft", 1, 1000, 25, "same")
        [1.0, 67584.0]
    """
    if mode == "valid" and K > T:
        T, K = K, T
    L = output_length(T, K, mode)
    n_fft = fft_length(T + K, torch.device("cuda"))
    transform = batch * 3 * n_fft * math.log2(max(n_fft, 2))
    if method == "direct":  # its kernel gradient is a fused kernel up to MAX_LAG_TAPS taps
        return [1.0, batch * L * K, transform if K > MAX_LAG_TAPS else 0.0]
    if method == "fft":
        return [1.0, transform]
    block = block_fft_length(K, L, "cuda")
    n_blocks = math.ceil(L / (block - K + 1))
    return [1.0, batch * n_blocks * 2 * block * math.log2(block)]


def training_costs_cuda(
    batch: int, T: int, K: int, mode: str, weights: dict | None = None
) -> dict[str, float]:
    """Modelled CUDA forward+backward time of each method in nanoseconds: its terms times
    ``weights`` (default ``_CUDA_TRAINING_COSTS``; ``benchmarks/fit_cuda_costs.py`` passes
    fitted ones).

    Example:
        >>> from diffconv_core.methods import training_costs_cuda
        >>> costs = training_costs_cuda(256, 262_144, 127, "same")
        >>> min(costs, key=costs.get)
        'overlap'
    """
    weights = _CUDA_TRAINING_COSTS if weights is None else weights
    return {
        name: sum(map(operator.mul, terms, training_terms_cuda(name, batch, T, K, mode)))
        for name, terms in weights.items()
    }


@functools.lru_cache(maxsize=4096)
def _cuda_training_pick(batch: int, T: int, K: int, mode: str) -> str:
    # Remembered: choose_method runs in every CUDA training step, where its ~10 us of host
    # time would add to a step that small shapes make host-bound.
    costs = training_costs_cuda(batch, T, K, mode)
    return min(costs, key=costs.__getitem__)


# Forward + backward (gradients to both inputs) over the recorded forward alone, measured on
# CPU (medians over 33-42 shapes, 3-8,191 taps): the direct method's backward is two more
# passes (the signal gradient, then the kernel gradient's products, which waste more
# multiply-adds than the forward's shifted sums), the FFT's reuses the forward spectra, and
# overlap-save's adds block gradients back (unfold's adjoint). Direct's factor is the median
# of 36 shapes after its float32 forward and kernel gradient became oneDNN's convolutions
# (3.66, and 3.65 again over 42 shapes after rows of whole frames took one convolution each
# way). Past MAX_GRADIENT_TAPS (191) its kernel gradient is the GEMMs' lagged products, which
# cost 2-3x the forward alone ("direct_long"): their median ratio is 5.4, but with it auto
# still took direct for 255-511 taps where fft or overlap-save ran 1.2-2.5x faster (the
# forward model prices those rows of whole frames cheaply); 10 puts the pick within 10% of
# the fastest in all 42 shapes of that run (35 of 42 at 5.4, 33 at 3.7; the measured
# direct_long ratios reach 7.0). benchmarks/results/cpu_2core_fit_backward_whole_rows.md.
_BACKWARD_FACTOR = {"direct": 3.7, "direct_long": 10.0, "fft": 2.0, "overlap": 3.8}


def backward_factor(method: str, K: int) -> float:
    """Forward+backward over the recorded forward of ``method`` on the CPU, for ``K`` taps:
    the direct method's kernel gradient is oneDNN's weight gradient up to
    ``_framed_conv.MAX_GRADIENT_TAPS`` taps and the GEMMs' lagged products past them
    ("direct_long").

    Example:
        >>> from diffconv_core.methods import backward_factor
        >>> backward_factor("fft", 31) == backward_factor("fft", 4095)
        True
    """
    if method == "direct" and K > _framed_conv.MAX_GRADIENT_TAPS:
        return _BACKWARD_FACTOR["direct_long"]
    return _BACKWARD_FACTOR[method]


# float64 over float32 on the CPU GEMMs, relative to the transforms (the constants above are
# float32 fits): the direct GEMMs took 3.28x their float32 time, the faster of fft and
# overlap-save 2.17x (medians, one thread, min of 9 reps, 24 shapes: 1-512 rows of
# 1,024-1,048,576 samples, 13-255 taps), so direct is 1.5x dearer against them in float64.
# Priced as float32, auto kept direct at (64, 8000) * 63 taps (4.1 ms where fft took 2.3).
_FLOAT64_GEMM_FACTOR = 1.5

# The shifted sums with a kernel per row (a column of weights per tap) over one shared
# kernel's: 1.2-1.5x (one thread, 256-4 rows of 1,024-480,000 samples, 3-12 taps).
_PER_ROW_SHIFT_FACTOR = 1.25


# Overlap-save's blocks cost more per transform unit once the batch's outputs no longer stay
# in cache between its passes: priced as fitted alone, 4 x 480,000, 1 x 4,194,304 and 128 x
# 16,000 with 255 taps were modelled 24-36% under their measured 3.3, 6.6 and 3.7 ms (and
# picked over the one convolution's 2.8, 5.7 and 3.1), where batches of up to 800,000
# outputs were within 10%. A term of its own past 2**20 outputs (4 MiB of float32), fitted
# to those batches' timings with the other terms kept: picks within 10% of the fastest in
# 116 and 115 of the 120 shapes of two runs, from 112 and 111
# (benchmarks/results/cpu_2core_fit_costs_whole_rows.md).
OVERLAP_IN_CACHE_SAMPLES = 2**20


# A lone row's rfft+irfft (torch on the CPU, without autograd) costs more per point past
# 8,192 points: 7.0-7.2 ns per point up to 8,192, then 19.1-20.2 from 8,640 to 262,144 at one
# thread and 8.0-11.2 at two, while 4 rows cost 2.2-2.5 per point at two threads on either side
# (5-smooth multiples of 8, min of 15 timings). Batches of rows have no such cliff, so only
# one row's transforms are stepped: a batch of 1 on the FFT path, and overlap-save's single
# block (then priced like that row). 1.5x is the step at two threads for 8,640-20,000 points,
# where fft and overlap-save are close: (1, 8193) * 255 "same" took 0.23 ms by fft and 0.11 by
# overlap-save (min of 150, interleaved), which auto now picks. Two or three rows take the
# step too (fewer than _FEW_ROWS): each thread transforms a lone row then, and 2 x 8,192
# took 0.14 ms by fft where overlap-save took 0.08 and the one convolution 0.05-0.09; priced
# as a batch, auto took fft there. With that step the 190 shapes of that fit run were
# picked within 10% of the fastest in 181 cases, 177 without
# (benchmarks/results/cpu_2core_fit_costs_native.md, its first run).
_SINGLE_ROW_FFT_CLIFF = 8192
_SINGLE_ROW_FFT_STEP = 1.5
_FEW_ROWS = 4


def single_row_factor(rows: int, n_fft: int) -> float:
    """The factor on the CPU forward's transform cost of ``rows`` rows of ``n_fft`` points:
    one row runs on one thread (a batch's rows spread over two), and dearer past the cliff,
    as are two or three rows (a lone row on each thread).

    Example:
        >>> from diffconv_core.methods import single_row_factor
        >>> single_row_factor(1, 8192), single_row_factor(1, 8640), single_row_factor(2, 8640)
        (2.0, 3.0, 1.5)
        >>> single_row_factor(2, 8192), single_row_factor(4, 8640)
        (1.0, 1.0)
    """
    if rows >= _FEW_ROWS:
        return 1.0
    step = _SINGLE_ROW_FFT_STEP if n_fft > _SINGLE_ROW_FFT_CLIFF else 1.0
    return 2.0 * step if rows == 1 else step


def output_length(T: int, K: int, mode: str) -> int:
    """Output length of a convolution of ``T`` samples with ``K`` taps in ``mode``.

    Example:
        >>> from diffconv_core.methods import output_length
        >>> [output_length(100, 7, m) for m in ("full", "same", "valid")]
        [106, 100, 94]
    """
    if mode == "full":
        return T + K - 1
    if mode == "same":
        return T
    return max(T, K) - min(T, K) + 1


def output_range(T: int, K: int, mode: str) -> tuple[int, int]:
    """Samples ``lo <= n < hi`` of the full convolution that ``mode`` keeps, with zero padding
    (``convolve`` asks its methods for these; "valid" with ``T >= K``, as convolve swaps).

    Example:
        >>> from diffconv_core.methods import output_range
        >>> [output_range(100, 7, m) for m in ("full", "same", "valid")]
        [(0, 106), (3, 103), (6, 100)]
    """
    if mode == "valid":
        return K - 1, T
    if mode == "same":
        return (K - 1) // 2, (K - 1) // 2 + T
    return 0, T + K - 1


def reaching_taps(T: int, K: int, lo: int, hi: int) -> tuple[int, int]:
    """Taps ``first <= k < stop`` of a ``K``-tap kernel that reach samples ``lo <= n < hi``
    of its full convolution with ``T`` samples (sample n sums taps n - T + 1 .. n): all of
    them unless the kernel is far longer than the samples kept ("same" with more than
    twice the signal's length).

    Example:
        >>> from diffconv_core.methods import reaching_taps
        >>> reaching_taps(100, 7, 3, 103), reaching_taps(10, 101, 50, 60)
        ((0, 7), (41, 60))
    """
    return max(0, lo - T + 1), min(K, hi)


def extended_range(
    x: torch.Tensor, K: int, mode: str, padding: str
) -> tuple[torch.Tensor, int, int]:
    """The signal a method convolves for ``mode`` and ``padding``, and the samples
    ``lo <= n < hi`` of that full convolution to keep: ``x`` itself and :func:`output_range`
    with zero padding (and "valid", which pads nothing), else ``x`` extended by the mode's
    reach and the valid part.

    Shape:
        x ``(..., T)`` -> ``(..., T')``, ``T' = T`` or ``T + K - 1`` ("same") or
        ``T + 2(K - 1)`` ("full").

    Example:
        >>> import torch
        >>> from diffconv_core.methods import extended_range
        >>> x, lo, hi = extended_range(torch.arange(4.0), 3, "same", "reflect")
        >>> x.tolist(), lo, hi
        ([1.0, 0.0, 1.0, 2.0, 3.0, 2.0], 2, 6)
    """
    if mode == "valid" or padding == "zeros":
        return (x, *output_range(x.shape[-1], K, mode))
    left, right = (K // 2, (K - 1) // 2) if mode == "same" else (K - 1, K - 1)
    x = pad(x, left, right, padding)
    return x, K - 1, x.shape[-1]


@functools.lru_cache(maxsize=4096)
def estimate_costs(
    batch: int,
    T: int,
    K: int,
    mode: str,
    device_type: str,
    requires_grad: bool = False,
    shared_kernel: bool = True,
    framed_conv: bool = False,
    float64: bool = False,
    bank: bool = False,
) -> dict[str, float]:
    """Modelled forward time of each method in nanoseconds (the ranking is what counts), for
    the path each takes: with autograd recording or not, one kernel for all rows or not, a
    shared kernel's direct products as oneDNN convolutions (``framed_conv``, float32) or
    GEMMs (dearer in ``float64``, which the CPU computes in double precision).

    Example:
        >>> from diffconv_core.methods import estimate_costs
        >>> costs = estimate_costs(16, 480_000, 31, "same", "cuda")
        >>> min(costs, key=costs.get)
        'direct'
    """
    if device_type == "cpu":
        c = _COSTS["cpu_autograd" if requires_grad else "cpu"]
    else:
        c = _COSTS["cuda"]
    if mode == "valid" and K > T:
        T, K = K, T
    L = output_length(T, K, mode)
    call = c["direct_call"]
    # The one convolution's layout of all rows at once (rows of whole frames): oneDNN's or
    # torch's native one in float32, the native one alone in float64 (oneDNN takes none).
    whole = None
    if (framed_conv or float64) and device_type == "cpu":
        lo, hi = output_range(T, K, mode)
        plan = _framed_conv.whole_rows_plan(T, K, hi - lo, K - 1 - lo, batch)
        native = plan is not None and _framed_conv.runs_native(batch, T, plan[2])
        if framed_conv or ((shared_kernel or bank) and native):
            whole = plan
    # A bank of kernels (every row with every kernel, `batch` counting both) takes the one
    # convolution as one kernel for every row does, where it applies (_direct.rows_call);
    # else the batched GEMMs.
    bank_direct = bank and not requires_grad and K <= MAX_BANK_TAPS and whole is not None
    if device_type != "cpu":
        per_sample = c["direct_tap"] * K
    elif shared_kernel and small_call(batch, L, K, torch.float64 if float64 else torch.float32):
        # A small call: one native convolution over every row (_direct.tiny_range).
        f = _COSTS["cpu"]
        call = f["tiny_call"]
        per_sample = f["tiny_product"] * K
    elif K > MAX_TOEPLITZ_TAPS:
        per_sample = 0.68 * K  # conv1d, per output and tap: far slower than the GEMMs
    elif shifted_sums_for(K, T, framed_conv and whole is not None):
        # The shifted sums, also when recorded (their own backward).
        f = _COSTS["cpu"]
        call = f["shift_call"]
        per_sample = f["shift_sample"] + f["shift_tap"] * K
        if not shared_kernel:
            per_sample *= _PER_ROW_SHIFT_FACTOR
    elif not shared_kernel and not bank_direct:
        # Batched block-Toeplitz GEMMs in pieces, recorded or not (its own backward).
        a = _COSTS["cpu_autograd"]
        call = a["direct_call"]
        per_sample = a["direct_sample"] + a["direct_gemm_tap"] * gemm_work(K)
        if float64:
            per_sample *= _FLOAT64_GEMM_FACTOR
    elif whole is not None:
        # The one convolution over every row (with every kernel of a bank), also recorded:
        # torch's native one for small work, oneDNN's beyond, with their own terms. float64's
        # native one is priced as float32's: its GEMM in double took ~2x float32's time
        # (2 x 8,192 with 63 taps, 16 x 1,024 with 63, 1 x 16,384 with 31), about what the
        # transforms take in double.
        f = _COSTS["cpu"]
        path = "native" if _framed_conv.runs_native(batch, T, whole[2]) else "whole"
        direct_rows = not requires_grad or _framed_conv.recorded_directly(batch, T, K, whole[2])
        call = f[f"{path}_call" if direct_rows else "whole_recorded_call"]
        per_sample = f[f"{path}_sample"] + f[f"{path}_tap"] * whole[2] * _framed_conv.FRAME
    elif framed_conv:
        # One kernel for every row in float32, rows that are not whole frames: oneDNN
        # convolutions in pieces.
        f = _COSTS["cpu"]
        call = f["framed_call"]
        per_sample = f["framed_sample"] + f["framed_tap"] * _framed_conv.work(K)
    else:
        # One kernel for every row: the GEMMs in pieces, also when recorded.
        f = _COSTS["cpu"]
        call = f["direct_call"]
        per_sample = f["direct_sample"] + f["direct_gemm_tap"] * gemm_work(K)
        if float64:
            per_sample *= _FLOAT64_GEMM_FACTOR
    direct = call + batch * L * per_sample
    # The transforms the FFT path takes for this mode: about T points for "valid", T + K/2
    # for "same" (pricing T + K whatever the mode, auto took overlap-save for (1, 8192) *
    # 8000 "valid", 0.40 ms, over its own FFT path's 0.12 ms).
    n_fft = range_fft_length(T, K, *output_range(T, K, mode), torch.device(device_type))
    log_n = math.log2(max(n_fft, 2))
    unit = c["fft_unit"] + c["fft_unit_per_octave"] * max(0.0, log_n - 11)
    if n_fft >= _POWER_OF_TWO_PRICED_FROM and n_fft & (n_fft - 1) == 0:
        unit *= c.get("fft_power_of_two", 1.0)
    forward_cpu = device_type == "cpu" and not requires_grad
    half = forward_cpu and shared_kernel
    if half and half_fft_shape(n_fft, min(batch, rows_per_chunk(n_fft))):
        fft = _half_fft_cost(c, batch, n_fft)
    else:
        serial = single_row_factor(batch, n_fft) if forward_cpu else 1.0
        fft = c["fft_call"] + unit * batch * 3 * n_fft * log_n * serial
    block = overlap_fft_length(K, L, device_type)  # the blocks overlap_range takes
    n_blocks = math.ceil(L / (block - K + 1))
    blocks_at_once = min(n_blocks, blocks_per_chunk(block, batch, n_blocks, device_type))
    if half and blocks_in_half_length(batch, block, blocks_at_once):
        # A lone row's few long blocks: the same transforms of half the length as the FFT
        # method's.
        overlap = _half_fft_cost(c, batch * n_blocks, block)
    else:
        overlap_units = batch * n_blocks * 2 * block * math.log2(block)
        if forward_cpu and block > _SINGLE_ROW_FFT_CLIFF:
            # A single block past the cliff is the FFT path's lone row: with fft stepped
            # alone, auto took overlap-save's one 18,432-point block for (1, 10000) * 8191
            # (0.37 ms; fft 0.31). Below the cliff, and for more blocks, overlap_unit is as
            # fitted.
            overlap_units *= single_row_factor(batch * n_blocks, block)
        unit = c["overlap_unit"]
        if batch * L > OVERLAP_IN_CACHE_SAMPLES:
            unit += c.get("overlap_unit_streamed", 0.0)
        overlap = c["overlap_call"] + unit * overlap_units
    if n_blocks == 1 or (forward_cpu and n_blocks == 2 and block > _SINGLE_ROW_FFT_CLIFF):
        # One block is the FFT path's work on a transform at least as long (the block holds
        # the outputs and the kernel's reach; fft's only the outputs' range), plus the
        # blocking: never cheaper. Fitted terms alone priced (1, 16000) * 4095 and (1, 20000)
        # * 8191 below fft, which took 0.28 and 0.36 ms against 0.32 and 0.42. Two blocks
        # past 8,192 points hold more points than fft's one transform and were slower in
        # every such shape of three `fit_cpu_costs.py --half-fft` runs (a lone row's, of
        # half-length transforms: 1.19-1.41x; batches' 1.07-1.94x, 1.2-1.4x by rfft), where
        # the fitted terms priced them within a few percent of it.
        overlap = max(overlap, fft)
    elif fft_runs_blocks(T, K, mode, device_type):
        # The FFT method runs these blocks itself (rows past _overlap.MAX_CPU_TRANSFORM
        # points on the CPU): the same work, never the one to name.
        fft = overlap + 1.0
    return {"direct": direct, "fft": fft, "overlap": overlap}


def _half_fft_cost(costs: dict[str, float], rows: int, n_fft: int) -> float:
    # Complex transforms of half the length (_half_fft), with terms of their own: a lone
    # row's spread over the threads, a few rows' one per thread, dearer past 2**16 points.
    log_n = math.log2(n_fft)
    if rows == 1:
        per_row_unit = costs["half_row_unit"]
    else:
        per_row_unit = costs["half_rows_unit"] + costs["half_rows_octave"] * max(0.0, log_n - 16)
    return costs["half_call"] + rows * n_fft * (costs["half_sample"] + per_row_unit * log_n)


@functools.lru_cache(maxsize=4096)  # asked on every recorded CPU pick (0.8 us uncached)
def fft_runs_blocks(T: int, K: int, mode: str, device_type: str) -> bool:
    """Whether the FFT method runs overlap-save's blocks for these sizes
    (:func:`diffconv_core._overlap.transforms_in_blocks`: rows past
    ``MAX_CPU_TRANSFORM`` points on the CPU), which the model prices as such.

    Example:
        >>> from diffconv_core.methods import fft_runs_blocks
        >>> [fft_runs_blocks(T, 1023, "same", "cpu") for T in (1 << 22, 8192)]
        [True, False]
    """
    if mode == "valid" and K > T:
        T, K = K, T
    return transforms_in_blocks(T, K, *output_range(T, K, mode), device_type)


def choose_method(
    signal_shape: Sequence[int] | torch.Size,
    kernel_shape: Sequence[int] | torch.Size,
    *,
    mode: str = "same",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
) -> str:
    """The fastest method ("direct", "fft" or "overlap") for a convolution of these shapes.

    ``method="auto"`` in :func:`diffconv_core.convolve` calls this, with ``requires_grad``
    set when a gradient will be taken (the backward pass then counts too). A cache written
    by ``diffconv tune`` for the device takes precedence over the built-in cost model for
    one kernel shared by every row (what it measures). Two answers come before either: a
    one-tap kernel, and a small CPU call of one kernel (up to ``_direct.tiny_products``),
    are "direct" (exact sums; the small call is one native convolution of ~10 us).

    Shape:
        signal_shape ``(..., T)``, kernel_shape ``(..., K)`` (leading dims broadcast).

    Example:
        >>> from diffconv_core import choose_method
        >>> choose_method((64, 1024), (3,))
        'direct'
        >>> choose_method((1, 1 << 22), (1023,))
        'overlap'
        >>> choose_method((16, 480_000), (4095,), device="cuda", requires_grad=True)
        'fft'
    """
    check_choice("mode", mode, MODES)
    signal_shape = _shape("signal_shape", signal_shape)
    kernel_shape = _shape("kernel_shape", kernel_shape)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
    if len(signal_shape) == 0 or len(kernel_shape) == 0:
        raise ValueError(
            "signal_shape and kernel_shape need at least one dimension (time last); "
            f"got {signal_shape} and {kernel_shape}"
        )
    T, K = signal_shape[-1], kernel_shape[-1]
    if T < 1 or K < 1:
        raise ValueError(f"signal and kernel lengths must be positive; got T={T}, K={K}")
    try:
        batch = math.prod(broadcast_shapes(signal_shape[:-1], kernel_shape[:-1]))
    except ValueError:
        raise ValueError(
            f"shapes do not broadcast: signal {signal_shape}, kernel {kernel_shape}"
        ) from None
    shared = math.prod(kernel_shape[:-1]) == 1
    bank = not shared and is_bank(signal_shape, kernel_shape)
    device = check_device(device)
    first, stop = reaching_taps(T, K, *output_range(T, K, mode))  # as convolve cuts them
    K = stop - first
    return pick_method(batch, T, K, mode, device, dtype, requires_grad, shared, bank)


def _shape(name: str, shape: object) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints (a torch.Size, a tuple or list of ints),
    else a TypeError/ValueError naming ``name``: a float length was truncated, a tensor
    passed by mistake failed with torch's "only one element tensors" message."""
    if isinstance(shape, torch.Tensor):
        raise TypeError(f"{name} must be a shape such as x.shape; got a tensor (pass its .shape)")
    if not isinstance(shape, (tuple, list)):  # torch.Size is a tuple
        raise TypeError(f"{name} must be a tuple of ints such as x.shape; got {shape!r}")
    sizes = []
    for size in shape:
        if isinstance(size, bool):
            raise TypeError(f"{name} must hold ints; got {shape!r}")
        try:
            sizes.append(operator.index(size))
        except TypeError:
            raise TypeError(f"{name} must hold ints; got {shape!r}") from None
    if any(size < 0 for size in sizes):
        raise ValueError(f"{name} must not hold negative sizes; got {shape!r}")
    return tuple(sizes)


def pick_method(
    batch: int,
    T: int,
    K: int,
    mode: str,
    device: torch.device,
    dtype: torch.dtype,
    requires_grad: bool,
    shared: bool,
    bank: bool = False,
) -> str:
    """:func:`choose_method` for arguments already checked (``convolve`` calls it on every
    call, where the checks' microseconds add to small calls' host time); ``bank``: several
    kernels, each for every signal (``_direct.is_bank``)."""
    tuning = _tuning or _import_tuning()  # the measured cache, if any
    if K == 1:
        # One tap is a gain: direct multiplies each sample once, exactly (an identity kernel
        # gives the signal back bit for bit), where an FFT rounds every output. On one short
        # signal the model prices the CPU's lone FFT lower (16 us against the shifted sums'
        # 25 for one sample), a few microseconds not worth an inexact gain.
        return "direct"
    device_type = device.type
    if device_type == "cpu" and shared and small_call(batch, output_length(T, K, mode), K, dtype):
        # A small call: convolve runs it as one native convolution before asking (exact
        # sums in ~10 us, recorded or not); say so, whatever the model or a tuning cache.
        return "direct"

    # `diffconv tune` times one kernel shared by every row; a kernel per row takes other
    # paths (batched GEMMs, grouped convolutions), which the model prices on its own.
    if shared:
        cached = tuning.lookup(
            device_type, batch, T, K, mode, dtype, device=device, requires_grad=requires_grad
        )
        if cached is not None:
            return cached
    if requires_grad and device_type != "cpu":
        return _cuda_training_pick(batch, T, K, mode)
    # Half types are computed in float32 on a CPU (convolution.py), there by oneDNN too. The
    # shifted sums take the fewest taps: no need to read torch's oneDNN settings for them.
    compute_dtype = torch.float32 if dtype in HALF_DTYPES and device_type == "cpu" else dtype
    framed = (
        (shared or bank)
        and K >= MIN_WHOLE_ROWS_TAPS
        and _framed_conv.usable_for(compute_dtype, device)
    )
    float64 = compute_dtype == torch.float64 and device_type == "cpu"
    costs = estimate_costs(
        batch, T, K, mode, device_type, requires_grad, shared, framed, float64, bank
    )
    if requires_grad:
        # The backward pass costs each method a different multiple of its forward pass.
        costs = {name: cost * backward_factor(name, K) for name, cost in costs.items()}
        if fft_runs_blocks(T, K, mode, device_type):  # its backward is the blocks' too
            costs["fft"] = costs["overlap"] + 1.0
        if bank:
            costs["direct"] *= _BANK_RECORDED_FACTOR
    return cheapest(costs)


#: A bank's direct training step (the batched GEMMs' Function over every row-kernel pair)
#: over what the per-row terms and backward factor price: it took 1.4-3.8x the FFT's time in
#: 9 banks of 8-80 kernels of 15-251 taps over 1-128 signals of 400-16,000 samples, where
#: the model picked it in 8 (2 cores, interleaved; this factor picks the FFT or overlap-save
#: in all 9).
_BANK_RECORDED_FACTOR = 4.0


_tuning = None


def _import_tuning():
    # tuning imports this module: imported on first use, then kept (an import statement on
    # every call cost ~0.2 us of a small call's host time).
    global _tuning
    from diffconv_core import tuning

    _tuning = tuning
    return tuning


#: Direct sums round each output on its own (a zero stays zero, a delta returns the signal),
#: where a transform spreads the rounding of the whole signal over every output (9.5e-8 for
#: an exact 0 of a 3-sample example). Where the model prices direct within this many
#: nanoseconds of the cheapest method (small calls, all host time), direct is picked. On the
#: last two fit runs at once (380 timings, benchmarks/results/cpu_2core_fit_costs_direct_rows.md):
#: 360 picks within 10% of the fastest, geometric mean 1.017x the fastest's time; 358-359
#: with 0-3 us, 356 with 10 us. (The fit before, when only native work went straight to the
#: convolution: 347 with 5 us, 343 with 10 us, 339 with none.)
EXACT_DIRECT_MARGIN_NS = 5_000.0
#: ... for calls modelled under this many nanoseconds: in larger ones the margin would only
#: break near-ties (512 x 1,024 with 255 taps, modelled 805.0 us by direct and 804.3 by
#: fft: direct took 1.27 ms in the benchmark's rounds, where fft took 1.16).
EXACT_DIRECT_CALLS_NS = 100_000.0


def cheapest(costs: dict[str, float]) -> str:
    """The method to run for these modelled costs: the cheapest, or in a small call direct
    where it is within ``EXACT_DIRECT_MARGIN_NS`` of it.

    Example:
        >>> from diffconv_core.methods import cheapest
        >>> cheapest({"direct": 36_000.0, "fft": 32_000.0, "overlap": 45_000.0})
        'direct'
        >>> cheapest({"direct": 90_000.0, "fft": 32_000.0, "overlap": 45_000.0})
        'fft'
        >>> cheapest({"direct": 805_000.0, "fft": 804_300.0, "overlap": 900_000.0})
        'fft'
    """
    best = min(costs, key=costs.__getitem__)
    small = costs[best] < EXACT_DIRECT_CALLS_NS
    return "direct" if small and costs["direct"] <= costs[best] + EXACT_DIRECT_MARGIN_NS else best
