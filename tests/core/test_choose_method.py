"""choose_method: a valid, deterministic, sensible answer; the errors; what "auto" runs."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import pytest
import torch

import diffconv_core
from diffconv_core import choose_method, convolve

from .conftest import MODES, check_parity, make_pair

pytestmark = pytest.mark.usefixtures("single_thread")

CHOICES = {"direct", "fft", "overlap"}

SHAPES = [
    ((1,), (1,)),
    ((64,), (3,)),
    ((8, 1000), (31,)),
    ((2, 3, 5000), (3, 300)),
    ((2000,), (1500,)),
    ((10,), (100_000,)),
    ((1, 1 << 16), (1 << 16,)),
    ((1, 1 << 22), (1023,)),
    ((4, 1 << 24), (4, 255)),
]


@pytest.fixture(autouse=True)
def no_tuning_cache(monkeypatch, tmp_path):
    # The built-in cost model, whatever a `diffconv tune` run left in the user's cache.
    monkeypatch.setenv("DIFFCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DIFFCONV_NO_TUNING", "1")


def test_returns_one_of_the_methods_for_any_input():
    devices = ["cpu", torch.device("cpu"), "cuda", torch.device("cuda", 0)]
    dtypes = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
    for (s, k), mode, device, dtype in itertools.product(SHAPES, MODES, devices, dtypes):
        got = choose_method(s, k, mode=mode, device=device, dtype=dtype)
        assert got in CHOICES, (s, k, mode, device, dtype, got)


def test_defaults_and_shape_types():
    for s, k in SHAPES:
        expected = choose_method(s, k, mode="same", device="cpu", dtype=torch.float32)
        assert choose_method(s, k) == expected, (s, k)
        assert choose_method(torch.Size(s), torch.Size(k)) == expected, (s, k)
        assert choose_method(list(s), list(k)) == expected, (s, k)
        assert choose_method(s, k, device=torch.device("cpu")) == expected, (s, k)


def test_deterministic():
    for (s, k), mode in itertools.product(SHAPES, MODES):
        answers = {choose_method(s, k, mode=mode) for _ in range(5)}
        assert len(answers) == 1, (s, k, mode, answers)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_sensible_for_extreme_shapes(device):
    for mode in MODES:
        # A handful of taps over long or many signals: nothing beats the sliding dot
        # product. (On one short signal the CPU's lone FFT has the least host time: 16 us
        # for one sample where the shifted sums took 25.)
        for s, k in [((64, 1024), (3,)), ((16, 4096), (1,)), ((1, 10**6), (2,))]:
            got = choose_method(s, k, mode=mode, device=device)
            assert got == "direct", (s, k, mode, device, got)
    # Billions of multiply-adds for a direct sum: an FFT method must be chosen.
    for s, k, mode in [
        ((1, 1 << 16), (1 << 16,), "full"),
        ((1, 1 << 22), (1023,), "same"),
        ((1, 1 << 22), (1023,), "full"),
        ((4, 1 << 24), (4, 255), "same"),
        ((1, 1 << 20), (4097,), "valid"),
    ]:
        got = choose_method(s, k, mode=mode, device=device)
        assert got in {"fft", "overlap"}, (s, k, mode, device, got)


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError) as info:
        choose_method((100,), (3,), mode="sme")
    for fragment in ["'sme'", "'full'", "'same'", "'valid'"]:
        assert fragment in str(info.value), str(info.value)
    for s, k, fragments in [
        ((), (3,), [r"\(\)"]),
        ((100,), (), [r"\(\)"]),
        ((0,), (3,), [r"\b0\b"]),
        ((100,), (0,), [r"\b0\b"]),
        ((2, 0), (3,), [r"\b0\b"]),
        ((-5,), (3,), [r"-5"]),
        ((5, 40), (7, 4), [r"5,\s*40", r"7,\s*4"]),
    ]:
        with pytest.raises((ValueError, TypeError)) as info:
            choose_method(s, k)
        for fragment in fragments:
            assert re.search(fragment, str(info.value)), (s, k, str(info.value))
    # A bad device is the caller's mistake, named as such (torch's RuntimeError was not).
    with pytest.raises(ValueError, match="device must name a torch device.*'tpu'"):
        choose_method((100,), (3,), device="tpu")
    with pytest.raises(TypeError, match="device must be a torch.device or a string; got None"):
        choose_method((100,), (3,), device=None)


def test_auto_runs_the_chosen_method():
    # "auto" asks choose_method: on CPU (deterministic kernels) its result is bit-identical to
    # running the chosen method explicitly. Shapes are picked so that each method is chosen.
    seen = set()
    for lead_x, lead_w, T, K in [
        ((2,), (), 64, 3),
        ((2,), (), 5000, 300),
        ((1000,), (), 1000, 31),
        ((1,), (), 200_000, 101),
    ]:
        x, w = make_pair(lead_x, lead_w, T, K, dtype=torch.float32, seed=T)
        for mode in MODES:
            chosen = choose_method(
                x.shape, w.shape, mode=mode, device=x.device, dtype=torch.float32
            )
            seen.add(chosen)
            auto = diffconv_core.convolve(x, w, mode, method="auto")
            explicit = diffconv_core.convolve(x, w, mode, method=chosen)
            assert torch.equal(auto, explicit), (lead_x, T, K, mode, chosen)
        check_parity(x, w, "same", "zeros", "auto", correlate=False)
    # The shapes above must exercise more than one branch of the model, or the test is hollow.
    assert len(seen) >= 2, seen


def test_auto_asks_the_model_what_choose_method_would_ask(monkeypatch):
    # convolve skips choose_method's argument checks (host time on every call) and calls the
    # model's pick_method itself: with the same arguments choose_method gives it for the
    # shapes the method then runs on (swapped for "valid" with K > T, extended by padding).
    from diffconv_core import convolution, methods

    asked = []

    def spy(*args):
        asked.append(args)
        return real(*args)

    real = methods.pick_method
    monkeypatch.setattr(convolution, "pick_method", spy)
    monkeypatch.setattr(methods, "pick_method", spy)
    cpu = torch.device("cpu")
    for x_shape, w_shape, mode, padding, grad, expected in [
        ((4, 1000), (31,), "same", "zeros", False, ((4, 1000), (31,), "same")),
        ((4, 1000), (4, 31), "same", "zeros", True, ((4, 1000), (4, 31), "same")),
        ((3, 1, 500), (1, 5, 7), "full", "zeros", False, ((3, 1, 500), (1, 5, 7), "full")),
        ((1, 50), (3, 400), "valid", "zeros", False, ((3, 400), (1, 50), "valid")),
        ((2, 1000), (255,), "same", "reflect", True, ((2, 1254), (255,), "valid")),
        ((1, 300), (1, 8), "full", "circular", False, ((1, 314), (1, 8), "valid")),
    ]:
        x = torch.randn(x_shape, dtype=torch.float64, requires_grad=grad)
        w = torch.randn(w_shape, requires_grad=grad)  # float32: promoted to float64
        diffconv_core.convolve(x, w, mode, padding=padding)
        from_convolve = asked.pop()
        choose_method(
            expected[0], expected[1], mode=expected[2], device=cpu, dtype=torch.float64,
            requires_grad=grad,
        )  # fmt: skip
        assert from_convolve == asked.pop(), (x_shape, w_shape, mode, padding)
        assert not asked


def test_cpu_fft_lengths_are_smooth_multiples_of_eight_or_a_power_of_two_close_above():
    from diffconv_core._fft import CPU_POWER_OF_TWO_MARGIN, fft_length

    def smooth(n: int) -> bool:
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    cpu = torch.device("cpu")
    took_power = 0
    for n in list(range(9, 3000)) + list(range(15_000, 17_000, 7)) + [480_000, 950_000]:
        expected = next(m for m in range(n, 4 * n) if m % 8 == 0 and smooth(m))
        power = 1 << (n - 1).bit_length()
        if power <= CPU_POWER_OF_TWO_MARGIN * expected:
            expected, took_power = power, took_power + (power != expected)
        assert fft_length(n, cpu) == expected, n
    assert took_power > 100  # the rule is exercised
    # 8% is the margin: 16,200 -> 16,384 (1.1%), 486,000 -> 524,288 (7.9%) but not 960,000
    # -> 1,048,576 (9.2%), nor 1,152 -> 2,048.
    assert [fft_length(n, cpu) for n in (16_127, 485_000, 950_000, 1_151)] == [
        16_384,
        524_288,
        960_000,
        1_152,
    ]


def test_the_model_prices_the_path_each_call_takes():
    from diffconv_core.methods import estimate_costs

    # A shared kernel takes the fast CPU paths, recorded or not (the direct path has its own
    # backward); one kernel per row the batched GEMMs, whose matrix per row costs more a call.
    # (float32's shared kernel is one oneDNN convolution: framed_conv. Its GEMMs, for other
    # dtypes, measured about as fast as the batched ones: 1.8-2.0 against 1.7 ms here.)
    fast = estimate_costs(4, 480_000, 31, "same", "cpu", framed_conv=True)["direct"]
    recorded = estimate_costs(4, 480_000, 31, "same", "cpu", requires_grad=True, framed_conv=True)[
        "direct"
    ]
    per_row = estimate_costs(4, 480_000, 31, "same", "cpu", shared_kernel=False)["direct"]
    assert fast == recorded < per_row
    assert choose_method((4, 480_000), (3,)) == "direct"
    # One long row: the one convolution up to 255 taps (5.5-5.7 ms against overlap-save's
    # 6.6-6.9, two runs), overlap-save for 1,023 (7.6 against 29-30).
    assert choose_method((1, 1 << 22), (255,)) == "direct"
    assert choose_method((1, 1 << 22), (1023,)) == "overlap"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("shape", [(1,), (300,), (2, 1000), (8, 10**6)])
def test_one_tap_is_always_direct_and_exact(device, shape):
    # A one-tap kernel is a gain: direct computes it exactly, an FFT would round it.
    for mode in MODES:
        for requires_grad in (False, True):
            got = choose_method(shape, (1,), mode=mode, device=device, requires_grad=requires_grad)
            assert got == "direct", (shape, mode, requires_grad)
    x = torch.randn(300, dtype=torch.float32)
    assert torch.equal(convolve(x, torch.tensor([1.0])), x)
    assert torch.equal(convolve(x.double(), torch.tensor([0.5], dtype=torch.float64)), x * 0.5)


def test_small_calls_are_priced_as_one_native_convolution(monkeypatch):
    # Up to _direct.tiny_products, direct is one native convolution: its own terms.
    from diffconv_core import _direct, _framed_conv, methods

    if _framed_conv._native_conv2d is None:
        pytest.skip("this torch exposes no native convolution")
    monkeypatch.setitem(methods._COSTS, "cpu", dict(methods._COSTS["cpu"], tiny_call=1e12))
    methods.estimate_costs.cache_clear()
    try:
        for shape, K in [((1, 3), 3), ((4, 1024), 31), ((1, 16384), 31), ((64, 1024), 7)]:
            costs = methods.estimate_costs(*shape, K, "same", "cpu", framed_conv=True)
            tiny = shape[0] * shape[1] * K <= _direct.tiny_products(4)
            assert (costs["direct"] >= 1e12) == tiny, shape
        # A kernel per row takes the batched GEMMs, whatever the size.
        costs = methods.estimate_costs(4, 1024, 31, "same", "cpu", shared_kernel=False)
        assert costs["direct"] < 1e12
    finally:
        methods.estimate_costs.cache_clear()


def test_small_work_is_priced_as_the_native_convolution(monkeypatch):
    # The one convolution over all rows runs torch's native convolution for small work
    # (~10 us a call where oneDNN's takes ~30) and oneDNN's beyond: each priced by its terms.
    from diffconv_core import _framed_conv, methods

    if _framed_conv._native_conv2d is None:
        pytest.skip("this torch exposes no native convolution")
    table = dict(methods._COSTS["cpu"], native_call=1e12)
    monkeypatch.setitem(methods._COSTS, "cpu", table)
    methods.estimate_costs.cache_clear()
    try:
        # Past the small calls of _direct.tiny_products (one native convolution of their own).
        for shape, native in [((1, 16384), True), ((3, 5000), True), ((512, 1024), False)]:
            costs = methods.estimate_costs(*shape, 31, "same", "cpu", framed_conv=True)
            assert (costs["direct"] >= 1e12) == native, shape
            rows, T = shape
            assert _framed_conv.runs_native(rows, T, 3) == native
    finally:
        methods.estimate_costs.cache_clear()


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch's own note
def test_float32_is_priced_as_onednn_convolutions_and_other_dtypes_as_gemms():
    # A shared float32 kernel's direct products are oneDNN's convolutions, faster than the
    # GEMMs that float64, a kernel per row, or a torch with oneDNN off take (_framed_conv).
    from diffconv_core import _framed_conv
    from diffconv_core.methods import estimate_costs

    onednn = _framed_conv.usable(torch.zeros(1))
    shape = (4, 480_000)
    for K in (31, 127, 255, 511):
        framed = estimate_costs(*shape, K, "same", "cpu", framed_conv=True)
        gemms = estimate_costs(*shape, K, "same", "cpu")
        gemms64 = estimate_costs(*shape, K, "same", "cpu", float64=True)
        assert framed["direct"] < gemms["direct"] < gemms64["direct"]
        assert gemms64["fft"] == gemms["fft"] and gemms64["overlap"] == gemms["overlap"]
        assert framed["fft"] == gemms["fft"] and framed["overlap"] == gemms["overlap"]
        # Half types are computed in float32 on a CPU, so priced as float32.
        float32 = framed if onednn else gemms
        for dtype, costs in (
            (torch.float32, float32),
            (torch.bfloat16, float32),
            (torch.float16, float32),
            (torch.float64, gemms64),
        ):
            assert choose_method(shape, (K,), dtype=dtype) == min(costs, key=costs.get), K
        with torch.backends.mkldnn.flags(enabled=False):
            assert choose_method(shape, (K,)) == min(gemms, key=gemms.get), K


@pytest.mark.parametrize("name,near_at_least,geomean", [("gpu_h200_tune_v3.json", 17, 1.08)])
def test_cuda_training_picks_against_h200_timings(name, near_at_least, geomean):
    # `diffconv tune --quick` on an H200: forward+backward of every method on 24 shapes. The
    # model's pick must be within 10% of the fastest in most; small calls are host-bound and
    # their methods within 20% of each other, so noise decides some picks.
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    records = json.loads((results / name).read_text())["cuda:NVIDIA H200:float32"]
    ratios = []
    for r in records:
        totals = {m: s["total"] for m, s in r["seconds"].items()}
        pick = choose_method(
            (r["batch"], r["T"]), (r["K"],), mode=r["mode"], device="cuda", requires_grad=True
        )
        ratios.append(totals[pick] / min(totals.values()))
    assert len(ratios) == 24
    assert sum(ratio <= 1.1 for ratio in ratios) >= near_at_least, ratios
    assert math.exp(sum(map(math.log, ratios)) / len(ratios)) < geomean, ratios


@pytest.mark.parametrize(
    ("args", "options", "error", "message"),
    [
        (((4, 10), (3,)), {"dtype": torch.int64}, TypeError, "dtype must be a floating"),
        (((4, 10), (3,)), {"dtype": "float32"}, TypeError, "dtype must be a floating"),
        (((4, 10.5), (3,)), {}, TypeError, "signal_shape must hold ints"),
        (((-4, 10), (3,)), {}, ValueError, "signal_shape must not hold negative sizes"),
        ((10, (3,)), {}, TypeError, "signal_shape must be a tuple of ints"),
        ((torch.zeros(4, 10), (3,)), {}, TypeError, "got a tensor \\(pass its .shape\\)"),
        (((4, 10), 3), {}, TypeError, "kernel_shape must be a tuple of ints"),
    ],
)
def test_choose_method_names_a_bad_argument(args, options, error, message):
    # A float length was truncated, a negative batch and an integer dtype were accepted, and
    # a tensor or an int failed inside with messages that named nothing.
    with pytest.raises(error, match=message):
        choose_method(*args, **options)
    assert choose_method(torch.Size([4, 10]), [3], dtype=torch.float16) in (
        "direct",
        "fft",
        "overlap",
    )


def test_the_fft_is_priced_at_the_length_each_mode_transforms():
    # fft_range transforms only what the mode keeps (about T points for "valid", T + K/2 for
    # "same"); priced at T + K whatever the mode, auto took overlap-save for a kernel nearly
    # as long as the signal in "valid", 1.8-3.3x slower than the FFT path.
    from diffconv_core import _fft, _overlap
    from diffconv_core.methods import estimate_costs, output_length, output_range

    cpu = torch.device("cpu")
    seen: list[int] = []
    rfft, fft = torch.fft.rfft, torch.fft.fft

    def recording_rfft(x, n=None, *args, **kwargs):
        seen.append(n)
        return rfft(x, n, *args, **kwargs)

    def recording_fft(x, *args, **kwargs):
        seen.append(2 * x.shape[-1])  # the rows' samples read as complex pairs (_half_fft)
        return fft(x, *args, **kwargs)

    for T, K in [(8192, 8000), (1000, 31), (1000, 999), (5000, 300)]:
        for mode in MODES:
            lo, hi = output_range(T, K, mode)
            assert hi - lo == output_length(T, K, mode), (T, K, mode)
            # The model prices the transforms that the FFT and overlap-save paths take.
            for run, length in (
                (_fft.fft_range, _fft.range_fft_length(T, K, lo, hi, cpu)),
                (_overlap.overlap_range, _overlap.overlap_fft_length(K, hi - lo)),
            ):
                seen.clear()
                torch.fft.rfft, torch.fft.fft = recording_rfft, recording_fft
                try:
                    run(torch.randn(2, T), torch.randn(K), lo, hi)
                finally:
                    torch.fft.rfft, torch.fft.fft = rfft, fft
                assert set(seen) == {length}, (run.__name__, T, K, mode, seen)
    valid = estimate_costs(1, 8192, 8000, "valid", "cpu")
    full = estimate_costs(1, 8192, 8000, "full", "cpu")
    assert valid["fft"] < full["fft"]
    assert choose_method((1, 8192), (8000,), mode="valid") == "fft"
    assert choose_method((4, 100_000), (90_000,), mode="valid") == "fft"


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch's own note
def test_float64_direct_gives_way_to_the_transforms_sooner():
    # float64 GEMMs cost 3.3x their float32 time where the transforms cost 2.2x: priced as
    # float32, auto kept direct at 63 taps where fft or overlap-save ran 1.4-1.6x faster.
    for shape in [(64, 8000), (1, 1 << 20)]:
        assert choose_method(shape, (63,), dtype=torch.float64) in ("fft", "overlap"), shape
        # float32 keeps its picks: oneDNN's convolutions, or the GEMMs with oneDNN off (for
        # one row of 4,194,304 samples overlap-save now took 6.1 ms, the GEMMs 6.3: either).
        assert choose_method(shape, (63,), dtype=torch.float32) == "direct", shape
    with torch.backends.mkldnn.flags(enabled=False):
        assert choose_method((64, 8000), (63,)) == "direct"
    # A handful of taps stays direct in float64 (the shifted sums; and 17 taps of 4 long rows:
    # at 31 the GEMMs took 5.2 ms, overlap-save 6.4, a margin the model no longer resolves).
    assert choose_method((64, 8000), (7,), dtype=torch.float64) == "direct"
    assert choose_method((4, 480_000), (17,), dtype=torch.float64) == "direct"


def test_a_lone_row_past_the_fft_cliff_is_priced_dearer():
    # torch's CPU rfft+irfft of one row costs more per point past 8,192 points; unpriced,
    # auto took fft for (1, 8193) * 255. Past that length the FFT method now takes complex
    # transforms of half the length (_half_fft), priced by terms of their own (below), so
    # the step stays for the real transforms alone: rows up to 8,192 points, and overlap-save's
    # lone blocks with a kernel per row.
    from diffconv_core.methods import single_row_factor

    assert single_row_factor(1, 8192) == 2.0 < single_row_factor(1, 8640)
    assert single_row_factor(4, 8640) == 1.0  # batches of rows have no cliff
    assert choose_method((1, 8193), (255,)) != "fft"
    assert choose_method((1, 10_000), (31,)) == "direct"


def test_few_long_rows_are_priced_as_half_length_transforms():
    # Up to 16 rows of more than 8,192 points: the FFT method's transforms, and overlap-save's
    # few long blocks, are complex ones of half the length, priced by the "half" terms
    # (fit_cpu_costs.py --half-fft: picks within 10% of the fastest in 156 of 180 shapes,
    # 142 before the fit). Measured in that run: 1 x 32,768 with 4,097 taps took 0.27 ms by
    # fft, 0.36 by overlap-save; 1 x 480,000 with 15,001 taps 2.75 by fft, 1.73 by
    # overlap-save; 1 x 262,144 with 1,023 taps 1.48 by fft, 1.39 direct, 0.51 overlap-save.
    from diffconv_core.methods import estimate_costs

    assert choose_method((1, 32_768), (4097,)) == "fft"
    assert choose_method((1, 480_000), (15_001,)) == "overlap"
    assert choose_method((1, 262_144), (1023,)) == "overlap"
    # A kernel per row takes the real transforms, priced as before.
    half = estimate_costs(1, 32_768, 4097, "same", "cpu")
    per_row = estimate_costs(1, 32_768, 4097, "same", "cpu", shared_kernel=False)
    assert half["fft"] < per_row["fft"]
    # So does a recorded call (its own backward): the half terms are the forward's alone.
    recorded = estimate_costs(1, 32_768, 4097, "same", "cpu", requires_grad=True)
    assert recorded["fft"] != half["fft"]


def test_two_long_blocks_and_overlap_saves_call_cost():
    # Two overlap-save blocks past 8,192 points were slower than fft's one transform in every
    # such shape of three runs (2 x 16,384 with 2,049 taps: 0.44 against 0.35 ms); priced by
    # the fitted terms they were within a few percent of it. And overlap-save's call costs
    # ~120 us: 1 x 8,192 with 255 taps took 0.09-0.11 ms by it, 0.08-0.09 direct
    # (benchmarks/results/cpu_2core_fit_half_fft.md).
    from diffconv_core.methods import estimate_costs

    for batch, T, K in [(1, 16_384, 2049), (2, 16_384, 2049), (8, 32_768, 4097)]:
        costs = estimate_costs(batch, T, K, "same", "cpu")
        assert costs["overlap"] >= costs["fft"], (batch, T, K)
        assert choose_method((batch, T), (K,)) == "fft", (batch, T, K)
    for shape in [(1, 8192), (2, 12_000)]:
        assert choose_method(shape, (255,)) == "direct", shape


def test_training_past_the_fast_kernel_gradient_leaves_direct():
    # Past 191 taps the direct kernel gradient is the GEMMs' lagged products: fwd+bwd took
    # 5.1 ms at 512 x 1,024 with 255 taps where fft took 2.0, and 22.8 ms at 4 x 480,000 with
    # 511 taps where overlap-save took 15.0. Up to 191 the direct method keeps short kernels.
    from diffconv_core.methods import backward_factor

    assert backward_factor("direct", 255) > backward_factor("direct", 191)
    assert choose_method((512, 1024), (255,), requires_grad=True) == "fft"
    assert choose_method((4, 480_000), (511,), requires_grad=True) == "overlap"
    assert choose_method((512, 1024), (127,), requires_grad=True) == "direct"
    assert choose_method((4, 480_000), (31,), requires_grad=True) == "direct"


@pytest.mark.parametrize("requires_grad", [False, True])
def test_small_calls_are_direct_whatever_the_model_says(monkeypatch, requires_grad):
    # convolve runs a small call of one kernel as one native convolution before asking (or
    # recorded by autograd): choose_method says so, even where the model prices fft lower.
    from diffconv_core import _direct, methods

    if _framed_conv_missing():
        pytest.skip("this torch exposes no native convolution")
    cheap_fft = dict(methods._COSTS["cpu"], fft_call=0.0, fft_unit=0.0, fft_unit_per_octave=0.0)
    monkeypatch.setitem(methods._COSTS, "cpu", cheap_fft)
    monkeypatch.setitem(methods._COSTS, "cpu_autograd", cheap_fft)
    methods.estimate_costs.cache_clear()
    try:
        for shape, K in [((1, 1024), 31), ((1, 256), 7), ((3, 5), 2)]:
            assert choose_method(shape, (K,), requires_grad=requires_grad) == "direct", shape
        assert 4 * 1024 * 31 > _direct.tiny_products(4)
        assert choose_method((4, 1024), (31,), requires_grad=requires_grad) == "fft"
        assert choose_method((1, 1024), (31,), dtype=torch.float64) == "fft"  # 15,872 there
    finally:
        methods.estimate_costs.cache_clear()


def _framed_conv_missing() -> bool:
    from diffconv_core import _framed_conv

    return _framed_conv._native_conv2d is None


def test_power_of_two_fft_lengths_are_priced_cheaper_a_point(monkeypatch):
    # 64 x 3,700 with 255 taps: the FFT at 4,096 points (the power of two 6.7% above 3,840)
    # took 0.29-0.33 ms, the direct method 0.36-0.38 (2 cores); priced at the smooth
    # lengths' unit, the longer transform looked dearer and auto took the direct method.
    from diffconv_core import methods
    from diffconv_core._fft import range_fft_length

    lo, hi = methods.output_range(3700, 255, "same")
    assert range_fft_length(3700, 255, lo, hi, torch.device("cpu")) == 4096
    assert choose_method((64, 3700), (255,), device="cpu") == "fft"
    plain = dict(methods._COSTS["cpu"], fft_power_of_two=1.0)
    monkeypatch.setitem(methods._COSTS, "cpu", plain)
    methods.estimate_costs.cache_clear()
    try:
        assert choose_method((64, 3700), (255,), device="cpu") == "direct"
    finally:
        monkeypatch.undo()
        methods.estimate_costs.cache_clear()
    # Short power-of-two transforms are priced as fitted: 16 x 2,000 with 63 taps (2,048
    # points, 0.070-0.075 ms) stays with the direct method (0.057-0.062).
    assert choose_method((16, 2000), (63,), device="cpu") == "direct"
    # A smooth length is priced as fitted: the factor leaves 3,000 samples (3,240 points).
    smooth = methods.estimate_costs(64, 3000, 255, "same", "cpu")["fft"]
    monkeypatch.setitem(methods._COSTS, "cpu", plain)
    methods.estimate_costs.cache_clear()
    try:
        assert methods.estimate_costs(64, 3000, 255, "same", "cpu")["fft"] == smooth
    finally:
        monkeypatch.undo()
        methods.estimate_costs.cache_clear()
