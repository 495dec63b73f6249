"""The CPU direct path without autograd runs in cache-sized pieces (``_pieces``), as shifted
multiply-adds up to 12 taps (``_shift_add``) and Toeplitz GEMMs beyond (``_toeplitz``): every
piece layout must give scipy's answer, and the same numbers as the differentiable path."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from diffconv_core import _direct, _pieces, _shift_add, _toeplitz, convolve, correlate

from .conftest import reference

# Piece sizes that force each layout: several short signals per piece, one signal cut into
# many pieces (down to two frames a piece), and everything in one piece.
PIECE_BYTES = [64, 1024, 2**20]


@pytest.fixture(autouse=True)
def no_tiny_calls(monkeypatch):
    # The pieces, sums and GEMMs themselves, also for the small shapes that convolve would
    # otherwise hand to one native convolution (_direct.tiny_range, rows_range:
    # tested on their own).
    monkeypatch.setattr(_direct, "TINY_COLUMN_BYTES", 0)
    monkeypatch.setattr(_direct, "rows_call", lambda *operands: None)


@pytest.fixture(params=PIECE_BYTES, ids=lambda b: f"piece{b}B")
def piece_bytes(request, monkeypatch):
    monkeypatch.setattr(_toeplitz, "CHUNK_BYTES", request.param)
    monkeypatch.setattr(_shift_add, "BLOCK_SAMPLES", request.param // 8)
    return request.param


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize(
    "T, K",
    [
        (1, 1),
        (7, 3),
        (200, 8),
        (1000, 4),
        (200, 9),
        (50, 17),
        (333, 31),
        (64, 64),
        (5, 11),
        (3, 12),
    ],
)
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_pieces_match_scipy(piece_bytes, mode, T, K, batch):
    if mode == "valid" and K > T:
        pytest.skip("valid needs T >= K here")
    rng = np.random.default_rng(T * 100 + K)
    x = rng.standard_normal((*batch, T))
    w = rng.standard_normal(K)
    got = convolve(torch.from_numpy(x), torch.from_numpy(w), mode=mode, method="direct")
    expected = np.apply_along_axis(
        lambda row: scipy.signal.convolve(row, w, mode=mode, method="direct"), -1, x
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("K", [2, 5, 9, 40])
@pytest.mark.parametrize("padding", ["reflect", "circular", "replicate", "zeros"])
def test_pieces_with_padding_match_the_differentiable_path(piece_bytes, padding, K):
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((4, 257)))
    w = torch.from_numpy(rng.standard_normal(K))
    with torch.no_grad():
        fast = correlate(x, w, mode="same", padding=padding, method="direct")
    tracked = correlate(x, w.requires_grad_(), mode="same", padding=padding, method="direct")
    torch.testing.assert_close(fast, tracked.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("K", [3, 31])
def test_float32_long_signal_in_many_pieces(monkeypatch, K):
    monkeypatch.setattr(_toeplitz, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(_shift_add, "BLOCK_SAMPLES", 1000)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 50_000)).astype(np.float32)
    w = rng.standard_normal(K).astype(np.float32)
    got = convolve(torch.from_numpy(x), torch.from_numpy(w), mode="same", method="direct")
    expected = scipy.signal.convolve(x.astype(np.float64), w[None].astype(np.float64), "same")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("start, stop", [(-5, 3), (-5, 20), (2, 6), (8, 15), (12, 20), (-9, -2)])
def test_zero_extended_slice(start, stop):
    x = torch.arange(1.0, 11.0)  # 10 samples
    expected = [float(x[i]) if 0 <= i < 10 else 0.0 for i in range(start, stop)]
    assert _pieces.zero_extended(x, start, stop).tolist() == expected


@pytest.mark.parametrize("K", [3, 31])
def test_pieces_read_in_place_from_a_strided_source_and_leave_it_alone(piece_bytes, K):
    # Pieces inside the signal are views of it: a strided (transposed) source must give the
    # same numbers, and no piece may be written through.
    rng = np.random.default_rng(K)
    x = torch.from_numpy(rng.standard_normal((3000, 3))).T  # (3, 3000), time stride 3
    before = x.clone()
    w = rng.standard_normal(K)
    got = convolve(x, torch.from_numpy(w), mode="same", method="direct")
    expected = scipy.signal.convolve(before.numpy(), w[None], mode="same", method="direct")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(x, before)


@pytest.mark.parametrize("P", sorted(_toeplitz._MULTIPLY_ADD_COST))
@pytest.mark.parametrize("K", [13, 16, 17, 31, 33, 64, 65, 200])
@pytest.mark.parametrize("shape", [(3, 700), (2, 5000)], ids=["rows", "long"])
def test_every_frame_plan_matches_scipy(monkeypatch, P, K, shape):
    # Each frame length with the number of frames it then reads per output, in both piece
    # layouts: rows stacked into one tall frame matrix, and one row cut along time (whose
    # inner pieces are written straight into the result).
    monkeypatch.setattr(_toeplitz, "frame_plan", lambda K: (P, 1 + -(-(K - 1) // P)))
    monkeypatch.setattr(_toeplitz, "CHUNK_BYTES", 8 * 2048)
    rng = np.random.default_rng(P + K)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(K)
    for mode in ("full", "same", "valid"):
        got = _toeplitz.toeplitz_correlate(
            torch.from_numpy(x), torch.from_numpy(w[::-1].copy()), *_range(shape[-1], K, mode)
        )
        expected = scipy.signal.convolve(x, w[None], mode=mode, method="direct")
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def _range(T, K, mode):
    # (n_out, shift) of a correlation with the flipped kernel giving the convolution's mode.
    lo = {"full": 0, "same": (K - 1) // 2, "valid": K - 1}[mode]
    n_out = {"full": T + K - 1, "same": T, "valid": T - K + 1}[mode]
    return n_out, K - 1 - lo


def test_frame_plan_reads_every_tap():
    # J frames of P samples must cover the K taps for any output in a frame.
    for K in range(1, 1025):
        P, J = _toeplitz.frame_plan(K)
        assert (J - 1) * P >= K - 1 and P % 16 == 0


@pytest.mark.parametrize("start, stop", [(-5, 3), (-5, 20), (2, 6), (8, 15), (-9, -2)])
def test_zero_extended_into_a_work_array(start, stop):
    x = torch.arange(1.0, 21.0).view(2, 10)
    work = torch.full((100,), 99.0)  # stale contents must not leak into the result
    got = _pieces.zero_extended(x, start, stop, out=work)
    assert got.data_ptr() == work.data_ptr()
    assert torch.equal(got, _pieces.zero_extended(x, start, stop))


def test_work_arrays_are_per_thread_and_large_ones_not_kept(monkeypatch):
    import threading

    from diffconv_core import _workspace

    cpu = torch.device("cpu")
    mine = _workspace.scratch("test", 64, torch.float32, cpu)
    assert _workspace.scratch("test", 32, torch.float32, cpu).data_ptr() == mine.data_ptr()
    assert _workspace.scratch("test", 64, torch.float64, cpu).data_ptr() != mine.data_ptr()
    theirs = []
    worker = threading.Thread(
        target=lambda: theirs.append(_workspace.scratch("test", 64, torch.float32, cpu))
    )
    worker.start()
    worker.join()
    assert theirs[0].data_ptr() != mine.data_ptr()
    monkeypatch.setattr(_workspace, "MAX_KEPT_BYTES", 100)
    big = _workspace.scratch("big", 64, torch.float32, cpu)
    assert _workspace.scratch("big", 64, torch.float32, cpu).data_ptr() != big.data_ptr()


def test_work_arrays_first_made_under_inference_mode_serve_later_calls():
    # A kept array first made under torch.inference_mode() was an inference tensor, which no
    # later call on that thread outside the mode could write into. A fresh thread starts with
    # no kept arrays, so each is first made inside the mode here.
    import threading

    from diffconv_core import _workspace

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 44100, dtype=torch.float64, generator=gen)
    shared = torch.randn(31, dtype=torch.float64, generator=gen)
    per_row = torch.randn(2, 1, 31, dtype=torch.float64, generator=gen)
    expected = {w.dim(): convolve(x, w, method="fft") for w in (shared, per_row)}
    weight = shared.clone().requires_grad_()
    (expected_grad,) = torch.autograd.grad(convolve(x, weight, method="fft").sum(), weight)
    outcome: dict[str, object] = {}

    def calls() -> None:
        try:
            weight = shared.clone().requires_grad_()
            loss = convolve(x, weight, method="direct").sum()
            with torch.inference_mode():
                for w in (shared, per_row):  # the pieces, the GEMMs' work arrays
                    convolve(x, w, method="direct")
                torch.autograd.grad(loss, weight)  # the lagged products' work array
            kept = _workspace._local.arrays
            outcome["kept"] = {name for name, _, _ in kept}
            outcome["inference"] = [a.is_inference() for a in kept.values()]
            for w in (shared, per_row):  # without autograd, then with it
                got = convolve(x, w, method="direct")
                torch.testing.assert_close(got, expected[w.dim()], rtol=1e-10, atol=1e-10)
            weight = shared.clone().requires_grad_()
            (grad,) = torch.autograd.grad(convolve(x, weight, method="direct").sum(), weight)
            torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-8)
        except Exception as error:  # noqa: BLE001 - reported to the test's thread
            outcome["error"] = error

    worker = threading.Thread(target=calls)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    assert outcome["kept"] >= {"piece", "gemm out", "gemm rows", "lag grad"}
    assert not any(outcome["inference"])


@pytest.mark.parametrize("K", [1, 3, 12, 13, 31, 64, 200, 1000])
@pytest.mark.parametrize("shape", [(700,), (3, 700), (2, 5000)], ids=["one", "rows", "long"])
def test_kernel_gradient_gemms_match_numpy(K, shape):
    # c[k] = sum over rows and m of g[m] x[m + lo - k], for the ranges every mode uses.
    rng = np.random.default_rng(K)
    x = rng.standard_normal(shape)
    T = shape[-1]
    for lo, L in [(0, T + K - 1), ((K - 1) // 2, T), (K - 1, max(T - K + 1, 0)), (5, 40)]:
        g = rng.standard_normal((*shape[:-1], L))
        padded = np.pad(x.reshape(-1, T), ((0, 0), (K + L, K + L)))
        rows = g.reshape(padded.shape[0], L)
        expected = [
            sum(
                g_row @ x_row[K + L + lo - k : K + L + lo - k + L]
                for g_row, x_row in zip(rows, padded, strict=True)
            )
            for k in range(K)
        ]
        got = _toeplitz.toeplitz_lagged_products(torch.from_numpy(g), torch.from_numpy(x), lo, K)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize(
    "T, K",
    [
        (1, 1),
        (200, 5),
        (64, 12),
        (5, 9),
        (200, 13),
        (256, 13),
        (333, 31),
        (64, 64),
        (5, 40),
        (700, 200),
    ],
)
@pytest.mark.parametrize(
    "signal_batch, kernel_batch",
    [((3,), (3,)), ((2, 3), (3,)), ((), (4,)), ((2, 1), (1, 3))],
    ids=["per-signal", "per-channel", "one-signal-many-kernels", "both-broadcast"],
)
def test_kernel_per_row_pieces_match_scipy(piece_bytes, mode, T, K, signal_batch, kernel_batch):
    # Shifted sums with a weight column per tap (up to 12 taps) and batched GEMMs with one
    # Toeplitz matrix per row, in every piece and block layout (several rows a piece, one
    # row cut into many pieces), every broadcast of signal and kernel rows.
    if mode == "valid" and K > T:
        pytest.skip("valid needs T >= K here")
    rng = np.random.default_rng(T * 1000 + K)
    x = torch.from_numpy(rng.standard_normal((*signal_batch, T)))
    w = torch.from_numpy(rng.standard_normal((*kernel_batch, K)))
    got = convolve(x, w, mode=mode, method="direct")
    np.testing.assert_allclose(got.numpy(), reference(x, w, mode), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("K", [3, 31, 200])
@pytest.mark.parametrize("kernel_batch", [(), (3,)], ids=["shared", "per-row"])
def test_gradients_match_float64_finite_differences(monkeypatch, K, kernel_batch):
    # The CPU direct path's own backward against numerical Jacobians in every mode, second
    # derivatives too, in pieces of a few frames: one kernel shared by the batch (the kernel
    # gradient as lagged-product GEMMs) and a kernel per row (batched GEMMs, per-row lags).
    from torch.autograd import gradcheck, gradgradcheck

    monkeypatch.setattr(_toeplitz, "CHUNK_BYTES", 1024)
    gen = torch.Generator().manual_seed(K)
    x = torch.randn(2, 3, 300, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*kernel_batch, K, generator=gen, dtype=torch.float64, requires_grad=True)
    for mode in ("full", "same", "valid"):

        def f(x, w, mode=mode):
            return convolve(x, w, mode, method="direct")

        kw = dict(eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)
        assert gradcheck(f, (x, w), **kw), mode
        assert gradgradcheck(f, (x, w), **kw), mode


@pytest.mark.parametrize("K", [1, 3, 13, 31, 200, 1000])
@pytest.mark.parametrize(
    "signal_shape, grad_batch",
    [((3, 700), (3,)), ((700,), (4,)), ((2, 5000), (2,)), ((3, 1, 90), (3, 2))],
    ids=["rows", "one-signal", "long", "broadcast"],
)
def test_kernel_per_row_gradient_gemms_match_numpy(piece_bytes, K, signal_shape, grad_batch):
    # c[r, k] = sum over m of g[r, m] x[r, m + lo - k], each row on its own (x broadcast).
    rng = np.random.default_rng(K)
    x = rng.standard_normal(signal_shape)
    T = signal_shape[-1]
    rows = int(np.prod(grad_batch))
    for lo, L in [(0, T + K - 1), ((K - 1) // 2, T), (K - 1, max(T - K + 1, 0)), (5, 40)]:
        g = rng.standard_normal((*grad_batch, L))
        xs = np.broadcast_to(x, (*grad_batch, T)).reshape(rows, T)
        padded = np.pad(xs, ((0, 0), (K + L, K + L)))
        expected = [
            [g_row @ x_row[K + L + lo - k : K + L + lo - k + L] for k in range(K)]
            for g_row, x_row in zip(g.reshape(rows, L), padded, strict=True)
        ]
        got = _toeplitz.toeplitz_lagged_products(
            torch.from_numpy(g), torch.from_numpy(x), lo, K, per_row=True
        )
        assert got.shape == (*grad_batch, K)
        np.testing.assert_allclose(got.reshape(rows, K).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_cpu_convolutions_import_neither_sympy_nor_triton():
    # Each costs every command ~0.2-0.3 s of start-up: torch.broadcast_shapes imported sympy
    # on its first call (the shifted sums and Toeplitz GEMMs used it for a kernel per row),
    # and Triton was imported with the core although only CUDA work needs it.
    import subprocess
    import sys

    code = (
        "import sys, torch, diffconv_core\n"
        "x = torch.randn(3, 500, requires_grad=True)\n"
        "for K in (5, 40, 300):\n"
        "    for w in (torch.randn(K), torch.randn(3, K)):\n"
        "        for method in ('direct', 'fft', 'overlap', 'auto'):\n"
        "            diffconv_core.convolve(x.detach(), w, method=method)\n"
        "            y = diffconv_core.convolve(x, w, padding='reflect', method=method)\n"
        "            y.sum().backward()\n"
        "print(sorted({'sympy', 'triton'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize(
    "x_shape, w_shape", [((3, 200), (40,)), ((2, 1, 150), (3, 40)), ((300,), (2, 40))]
)
def test_long_kernels_go_through_conv1d_in_bounded_pieces(monkeypatch, mode, x_shape, w_shape):
    # Past the Toeplitz paths' 1,024 taps conv1d runs, and on CPU in float64 it unfolds
    # rows x outputs x taps samples: 1,024 rows of 4,096 with 4,000 taps asked for 536 GB
    # (an exact Jacobian of a long kernel, or method="direct"). It now runs a piece of the
    # outputs at a time; here both limits are made small enough to cut every case into pieces.
    from diffconv_core import _direct

    budget = 2_000
    monkeypatch.setattr(_direct, "MAX_TOEPLITZ_TAPS", 16)
    monkeypatch.setattr(_direct, "CONV1D_CPU_ELEMENTS", budget)
    unfolded = []
    real = torch.nn.functional.conv1d

    def spy(source, taps, *args, **kwargs):
        rows = source.shape[0] * source.shape[1]
        per_output = taps.shape[-1] * (rows if taps.shape[0] == 1 else taps.shape[0])
        unfolded.append(per_output * (source.shape[-1] - taps.shape[-1] + 1))
        return real(source, taps, *args, **kwargs)

    monkeypatch.setattr(_direct.F, "conv1d", spy)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal(x_shape), requires_grad=True)
    w = torch.tensor(rng.standard_normal(w_shape), requires_grad=True)
    out = convolve(x, w, mode, method="direct")
    assert len(unfolded) > 1 and max(unfolded) <= budget
    np.testing.assert_allclose(out.detach().numpy(), reference(x, w, mode), atol=1e-10)
    # The pieces are plain differentiable operations: gradients as for the whole.
    grad = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, (x, w), grad)
    monkeypatch.setattr(_direct, "CONV1D_CPU_ELEMENTS", 1 << 40)
    whole = convolve(x, w, mode, method="direct")
    torch.testing.assert_close(out, whole)
    torch.testing.assert_close(torch.autograd.grad(whole, (x, w), grad), (gx, gw))


def test_float32_long_kernels_go_to_conv1d_whole(monkeypatch):
    # oneDNN takes float32 without unfolding: in pieces it was 3-9x slower.
    from diffconv_core import _direct

    monkeypatch.setattr(_direct, "MAX_TOEPLITZ_TAPS", 16)
    monkeypatch.setattr(_direct, "CONV1D_CPU_ELEMENTS", 2_000)
    calls = []
    real = torch.nn.functional.conv1d
    monkeypatch.setattr(_direct.F, "conv1d", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, w = torch.randn(3, 200), torch.randn(40)
    out = convolve(x, w, method="direct")
    assert len(calls) == 1
    np.testing.assert_allclose(out.numpy(), reference(x, w), rtol=1e-4, atol=1e-4)
