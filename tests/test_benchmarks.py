"""The benchmark scripts' own logic (their timings are never asserted: see benchmarks/)."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_core():
    return _load("bench_core")


def test_interleaved_medians_shuffle_contenders_and_drop_failures(bench_core, capsys):
    calls: list[str] = []

    def broken():
        raise RuntimeError("cannot do this case")

    fns = {
        "a": lambda: calls.append("a"),
        "b": lambda: calls.append("b"),
        "broken": broken,
    }
    for name in "cd":
        fns[name] = lambda name=name: calls.append(name)
    medians = bench_core.interleaved_medians(
        fns, "cpu", budget_s=0.0, max_reps=12, context=" here", seed=1
    )
    assert set(medians) == {"a", "b", "c", "d"}
    assert all(m >= 0 for m in medians.values())
    assert "# broken failed here: RuntimeError: cannot do this case" in capsys.readouterr().out
    # Two warm-up calls each, then rounds that call every survivor once, in an order shuffled
    # every round: no contender always runs right after the same neighbour (a rotation kept
    # the cyclic order, so "a" always followed "d" within a round).
    assert calls[:8] == ["a", "a", "b", "b", "c", "c", "d", "d"]
    timed = calls[8:]
    assert len(timed) % 4 == 0 and len(timed) >= 5 * 4
    rounds = [timed[i : i + 4] for i in range(0, len(timed), 4)]
    assert all(sorted(r) == ["a", "b", "c", "d"] for r in rounds)
    before: dict[str, set[str]] = {name: set() for name in "abcd"}
    for r in rounds:
        for earlier, later in itertools.pairwise(r):
            before[later].add(earlier)
    assert all(len(names) >= 2 for names in before.values()), before
    # Seeded: a rerun calls them in the same orders.
    first = list(calls)
    calls.clear()
    bench_core.interleaved_medians(fns, "cpu", budget_s=0.0, max_reps=12, seed=1)
    capsys.readouterr()
    assert calls[8 : 8 + len(timed)] == first[8:]


def test_sox_benchmark_skips_cleanly_without_sox(monkeypatch, capsys):
    bench_cli_sox = _load("bench_cli_sox")
    monkeypatch.setattr(bench_cli_sox.shutil, "which", lambda *args, **kwargs: None)
    assert bench_cli_sox.main([]) == 0
    assert "sox not found; skipping" in capsys.readouterr().err


def test_table_row_never_counts_the_copy_floor_as_a_peer(bench_core):
    times = {
        "fwd": {"diffconv": 0.004, "torch_fft": 0.008, bench_core.FLOOR: 0.001},
        "fwd+bwd": {"diffconv": 0.03, "torch_fft": 0.02},
    }
    cells, ratios = bench_core.table_row((4, 480000, 31), 0.0005, "direct", times)
    assert ratios == pytest.approx({"fwd": 0.5, "fwd+bwd": 1.5})
    # case, copy alone, copy in rounds, method, then diffconv / best peer / ratio per kind,
    # then diffconv's forward over each copy floor.
    assert cells == [
        "4, 480000, 31",
        "0.50",
        "1.00",
        "direct",
        "4.00",
        "torch_fft 8.00",
        "0.50x",
        "30.00",
        "torch_fft 20.00",
        "1.50x",
        "8.0x",
        "4.0x",
    ]


def test_table_row_without_peers_or_floor_in_rounds(bench_core):
    cells, ratios = bench_core.table_row((1, 10, 3), 0.001, "fft", {"fwd": {}, "fwd+bwd": {}})
    assert ratios == {}
    assert cells == ["1, 10, 3", "1.00", "-", "fft", "-", "-", "-", "-", "-", "-", "-", "-"]


def test_gpu_fft_size_table_runs_on_the_cpu(bench_core):
    costs = _load("gpu_call_costs")
    assert costs.fft_sizes(16_777_246) == {
        "power of two": 33_554_432, "2**a * 3": 25_165_824, "5-smooth x 8": 16_796_160
    }  # fmt: skip
    assert costs.fft_sizes(480_030) == {"power of two": 524_288, "5-smooth x 8": 486_000}
    for n in (1000, 1054, 480_030, 16_777_246):
        sizes = costs.fft_sizes(n)
        assert all(n <= size <= sizes["power of two"] for size in sizes.values())
    table = costs.fft_size_table("cpu", shapes=((2, 100),))
    assert table.count("| 2, 100 |") == len(costs.fft_sizes(100))


def test_gpu_call_costs_pieces_all_run(bench_core):
    # Run on the CPU here so that a renamed internal breaks CI, not a scarce GPU session. The
    # script imports bench_core as its neighbour: the fixture makes it importable so, as the
    # script's own folder does when it runs (alone, this test failed on a GPU session).
    pieces = _load("gpu_call_costs").pieces(2, 64, 5, device="cpu")
    assert {"magnitudes", "choose_method", "direct_range", "convolve auto"} <= set(pieces)
    for fn in pieces.values():
        fn()


def test_gpu_profile_reports_both_passes():
    # On the CPU here, so that a change that breaks the script breaks CI, not a GPU session.
    text = _load("gpu_profile").report(2, 64, 5, device="cpu", calls=2)
    assert "2, 64, 5 fwd:" in text and "2, 64, 5 fwd+bwd:" in text
    assert text.count("| op | calls a step |") == 2


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's NaN
def test_gpu_kernel_candidates_match_the_direct_sum_under_the_interpreter(monkeypatch):
    # The candidates are timed only on a GPU; their sums are checked here, on the CPU, so a
    # GPU session never spends its minutes on a wrong kernel. Small blocks give rows with
    # both interior and edge blocks.
    pytest.importorskip("triton")
    import numpy as np
    import torch

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    variants = _load("gpu_kernel_variants")  # triton.jit reads TRITON_INTERPRET here
    rng = np.random.default_rng(0)
    for name, kernel in variants.CANDIDATES.items():
        for T, K, shift, n_out in [(200, 7, 3, 200), (200, 7, 6, 206), (64, 31, 15, 64),
                                   (50, 1, 0, 50), (30, 40, 39, 69), (100, 5, -3, 40)]:  # fmt: skip
            x = rng.standard_normal((2, T))
            taps = rng.standard_normal(K)
            taps[0] = np.inf  # an Inf tap past the ends must be left out, not make NaN
            want = np.zeros((2, n_out))
            for m in range(n_out):
                for j in range(K):
                    if 0 <= m + j - shift < T:
                        want[:, m] += taps[j] * x[:, m + j - shift]
            got = variants.launch(
                kernel, torch.from_numpy(x), torch.from_numpy(taps), shift, n_out, block=16
            )
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12, err_msg=name)


def test_gpu_matrix_product_candidate_matches_the_direct_sum_under_the_interpreter(monkeypatch):
    # The tl.dot candidate (not shipped) in every precision setting the GPU session times;
    # the interpreter multiplies in the inputs' dtype whatever the precision, so this checks
    # the indexing: outputs past a block, shifts past both ends, widths 16-64. Signal, taps
    # and outputs lie inside larger buffers whose guards must be neither read (NaN) nor
    # written.
    pytest.importorskip("triton")
    import numpy as np
    import torch

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    variants = _load("gpu_kernel_variants")
    widths = [variants.toeplitz_width(K) for K in (1, 3, 17, 18, 33, 34, 65)]
    assert widths == [16, 16, 16, 32, 32, 64, 64]
    rng = np.random.default_rng(2)
    for T, K, shift, n_out in [(600, 7, 3, 600), (300, 17, 16, 316), (70, 31, 15, 70),
                               (50, 1, 0, 50), (30, 40, 39, 69), (400, 65, -5, 290),
                               (90, 33, 40, 90)]:  # fmt: skip
        x = rng.standard_normal((2, T))
        taps = rng.standard_normal(K)
        want = np.zeros((2, n_out))
        for m in range(n_out):
            for j in range(K):
                if 0 <= m + j - shift < T:
                    want[:, m] += taps[j] * x[:, m + j - shift]
        guard = 40
        x_buffer = torch.full((2, T + 2 * guard), torch.nan, dtype=torch.float64)
        x_buffer[:, guard:-guard] = torch.from_numpy(x)
        taps_buffer = torch.full((K + 2 * guard,), torch.nan, dtype=torch.float64)
        taps_buffer[guard:-guard] = torch.from_numpy(taps)
        for _, warps, precision in variants.toeplitz_settings():
            out_buffer = torch.full((2, n_out + 2 * guard), 7.0, dtype=torch.float64)
            variants.launch_toeplitz(
                x_buffer[:, guard:-guard], taps_buffer[guard:-guard], shift, n_out, 16, warps,
                precision, out=out_buffer[:, guard:-guard],
            )  # fmt: skip
            got = out_buffer[:, guard:-guard].numpy()
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
            assert (out_buffer[:, :guard] == 7).all() and (out_buffer[:, -guard:] == 7).all()


def test_gpu_kernel_gradient_settings_match_the_direct_sum_under_the_interpreter(monkeypatch):
    # Every lanes-and-tile setting the GPU session times, checked here first (shipped kernel
    # source, interpreted), with terms past both ends of x.
    pytest.importorskip("triton")
    import importlib.util

    import numpy as np
    import torch

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    path = ROOT / "diffconv_core" / "_triton_kernels.py"
    spec = importlib.util.spec_from_file_location("_triton_kernels_for_variants", path)
    kernels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernels)
    variants = _load("gpu_kernel_variants")
    rng = np.random.default_rng(1)
    for L, T, K, lo in [(300, 290, 3, 1), (200, 180, 17, 20)]:
        g, x = rng.standard_normal((2, L)), rng.standard_normal((2, T))
        want = np.zeros((2, K))
        for k in range(K):
            for m in range(L):
                if 0 <= m + lo - k < T:
                    want[:, k] += g[:, m] * x[:, m + lo - k]
        for name, (lanes, tile) in variants.lag_settings(K).items():
            got = variants.launch_lags(
                kernels.lagged_dot_kernel, torch.from_numpy(g), torch.from_numpy(x), lo, K,
                lanes, tile, span=128,
            )  # fmt: skip
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12, err_msg=name)


def test_rows_grid_is_a_few_long_rows_with_long_kernels(bench_core):
    rows = bench_core.grid("cpu", "rows")
    assert rows and all(B <= 8 and T >= 16_384 and K >= 2047 for B, T, K in rows)
    assert bench_core.grid("cuda", "rows") == rows


def test_check_logs_reads_every_forward_timing_and_scores_the_picks(bench_core, tmp_path, capsys):
    # fit_cpu_costs --check-logs: lines with and without the direct method (--half-fft runs
    # skip it past 1,023 taps), backward lines ignored; the current table and each setting.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        fit = _load("fit_cpu_costs")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    log = tmp_path / "run.txt"
    log.write_text(
        "# 1 x 8192, 255 taps: direct 0.083 ms, fft 0.148 ms, overlap 0.089 ms\n"
        "# 1 x 32768, 4097 taps: fft 0.273 ms, overlap 0.361 ms\n"
        "# 4 x 1024, 31 taps, fwd+bwd: direct 0.10 ms, fft 0.20 ms, overlap 0.30 ms\n"
        "unrelated line\n"
    )
    cases = fit.forward_cases_from_log(str(log))
    assert [(B, T, K) for B, T, K, _ in cases] == [(1, 8192, 255), (1, 32768, 4097)]
    assert cases[1][3] == {"fft": 0.273e-3, "overlap": 0.361e-3}
    fit.check_logs([str(log)], ["half_call=0"])
    out = capsys.readouterr().out
    assert "current:" in out and "half_call=0:" in out
    # The current table picks direct and fft there (both the fastest); with the half
    # transforms' call free, fft would be picked for the first and miss (1.8x).
    assert "2 of 2" in out.split("half_call=0:")[0]
    assert "1 of 2" in out.split("half_call=0:")[1]


def test_half_fft_features_follow_the_paths_the_methods_take(bench_core):
    # fit_cpu_costs --half-fft fits the half terms to the FFT method's rows that take the
    # half-length transforms and to a lone row's overlap-save blocks, never to batches' blocks.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        fit = _load("fit_cpu_costs")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert len(fit.features("fft", 1, 16_384, 2047, "half")) == len(fit.HALF_TERMS)
    assert fit.features("fft", 1, 16_384, 2047, None) == []
    assert fit.features("fft", 1, 4000, 255, "half") == []  # short rows: rfft
    assert len(fit.features("overlap", 1, 65_536, 8193, "half")) == len(fit.HALF_TERMS)
    assert fit.features("overlap", 4, 65_536, 8193, "half") == []
    assert fit.features("overlap", 4, 65_536, 8193, None) != []


def test_bench_memory_measures_smooth_under_each_nan_policy():
    # --smooth's cases call smooth() itself, with the policy named in the method.
    import torch

    from diffconv_core import convolve
    from diffconv_core.smooth import smooth

    bench_memory = _load("bench_memory")
    x = torch.randn(2, 300)
    x[0, 7] = float("nan")
    for method in bench_memory.SMOOTH_POLICIES:
        got = bench_memory.call(method, x, 9)(x)
        policy = method.split("-", 1)[1]
        torch.testing.assert_close(got, smooth(x, "hann", 9, nan_policy=policy), equal_nan=True)
    window = torch.hann_window(9, periodic=False)
    want = convolve(x, window, method="fft")
    torch.testing.assert_close(bench_memory.call("fft", x, 9)(x), want, equal_nan=True)


def test_bench_memory_backward_returns_the_signal_gradient_and_leaves_none_behind():
    # --backward's call runs convolve forward and backward and returns the signal's gradient
    # (counted, as the forward call's output is); no gradient stays on its leaves.
    import torch

    from diffconv_core import convolve

    bench_memory = _load("bench_memory")
    x = torch.randn(3, 200, dtype=torch.float64)
    grad = torch.randn(3, 200, dtype=torch.float64)
    run = bench_memory.forward_and_backward("overlap", x, 15)
    got = run(grad)
    leaf = x.clone().requires_grad_()
    window = torch.hann_window(15, periodic=False, dtype=torch.float64)
    convolve(leaf, window, method="direct").backward(grad)
    torch.testing.assert_close(got, leaf.grad)
    torch.testing.assert_close(run(grad), leaf.grad)  # a second call: nothing accumulated
