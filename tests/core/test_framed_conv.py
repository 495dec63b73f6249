"""The float32 CPU direct path's oneDNN convolution over polyphase frames (``_framed_conv``):
taken where it is exact, in every piece layout against scipy in float64, and left to the
GEMMs wherever oneDNN would not compute float32 in float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffconv_core import _direct, _framed_conv, _toeplitz, convolve

from .conftest import reference

pytestmark = pytest.mark.skipif(
    not _framed_conv.usable(torch.zeros(1)), reason="torch here has no oneDNN"
)

# Piece sizes that force each layout: several short rows a piece, one row cut into many
# pieces (down to a few frames each), and everything in one piece.
PIECE_BYTES = [256, 4096, 2**22]


@pytest.fixture(autouse=True)
def no_tiny_calls(monkeypatch):
    # The framed convolutions themselves, also for the small shapes that convolve would
    # otherwise hand to one native convolution (_direct.tiny_range, rows_range).
    monkeypatch.setattr(_direct, "TINY_COLUMN_BYTES", 0)
    monkeypatch.setattr(_direct, "rows_call", lambda *operands: None)


@pytest.fixture
def calls(monkeypatch):
    """The convolutions computed: each piece's shape, or ("whole", rows' shape) for all rows
    at once (``correlate_rows``, where it applies)."""
    count = []
    real, real_rows = _framed_conv.correlate_frames, _framed_conv.correlate_rows

    def counted(piece, weight):
        count.append(piece.shape)
        return real(piece, weight)

    def counted_rows(rows, taps, n_out, shift):
        out = real_rows(rows, taps, n_out, shift)
        if out is not None:
            count.append(("whole", rows.shape))
        return out

    monkeypatch.setattr(_framed_conv, "correlate_frames", counted)
    monkeypatch.setattr(_framed_conv, "correlate_rows", counted_rows)
    return count


def _float32_case(seed, signal_shape, K):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(signal_shape).astype(np.float32)
    w = rng.standard_normal(K).astype(np.float32)
    return x, w


def _close_to_float64(got, x, w, mode):
    # float32 sums of K products: relative to the largest output, a few ulps times sqrt(K).
    expected = reference(torch.from_numpy(x).double(), torch.from_numpy(w).double(), mode)
    scale = max(np.abs(expected).max(), 1.0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=2e-6 * scale * len(w) ** 0.5)


@pytest.mark.parametrize("piece_bytes", PIECE_BYTES)
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("K", [13, 16, 17, 31, 33, 64, 255, 1024])
@pytest.mark.parametrize("shape", [(700,), (3, 700), (2, 3, 90), (2, 5000)])
def test_matches_float64_scipy_in_every_piece_layout(
    monkeypatch, calls, piece_bytes, mode, K, shape
):
    if mode == "valid" and K > shape[-1]:
        pytest.skip("valid needs T >= K here")
    monkeypatch.setattr(_toeplitz, "CHUNK_BYTES", piece_bytes)
    monkeypatch.setattr(_framed_conv, "PADDED_ROWS_BYTES", 0)  # no copy to whole frames
    x, w = _float32_case(K * 7 + shape[-1], shape, K)
    got = convolve(torch.from_numpy(x), torch.from_numpy(w), mode=mode, method="direct")
    assert got.dtype == torch.float32 and got.shape[:-1] == shape[:-1]
    assert calls, "the convolution was not used"
    _close_to_float64(got, x, w, mode)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("K", [13, 16, 17, 31, 32, 33, 64, 255, 1024])
@pytest.mark.parametrize("shape", [(1024,), (3, 1024), (2, 3, 96), (2, 4096)])
def test_rows_of_whole_frames_take_one_convolution_and_match_float64(calls, mode, K, shape):
    # Rows of whole frames: one convolution over every row, the zeros past their ends its
    # padding (the shift short of a frame folded into the taps), its output the result.
    if mode == "valid" and K > shape[-1]:
        pytest.skip("valid needs T >= K here")
    x, w = _float32_case(K * 5 + shape[-1], shape, K)
    got = convolve(torch.from_numpy(x), torch.from_numpy(w), mode=mode, method="direct")
    assert calls == [("whole", (int(np.prod(shape[:-1])), shape[-1]))]
    assert got.is_contiguous() and got.shape[:-1] == shape[:-1]
    _close_to_float64(got, x, w, mode)


@pytest.mark.parametrize("T", [32, 48, 160])
@pytest.mark.parametrize("K", [1, 2, 3, 15, 16, 17, 40])
def test_whole_rows_agree_with_the_gemms_for_every_shift_and_length(T, K):
    # Every shift from none to past the kernel and output lengths from one sample to three
    # times the rows: where the plan applies, the sums of the GEMMs (float64) to rounding.
    gen = torch.Generator().manual_seed(T * 100 + K)
    x, taps = torch.randn(3, T, generator=gen), torch.randn(K, generator=gen)
    taken = 0
    for shift in range(0, K + 40, 3):
        for n_out in sorted({1, 16, 17, T, T + K - 1, max(1, T - K + 1), 3 * T}):
            got = _framed_conv.correlate_rows(x, taps, n_out, shift)
            plan = _framed_conv.whole_rows_plan(T, K, n_out, shift)
            assert (got is None) == (plan is None)
            if got is None:
                continue
            taken += 1
            want = _toeplitz.toeplitz_correlate(x.double(), taps.double(), n_out, shift)
            assert got.shape == (3, n_out) and got.is_contiguous()
            torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5 * K**0.5)
    assert taken


@pytest.mark.parametrize("K", [3, 6, 7, 9, 12])
@pytest.mark.parametrize("T", [1024, 1000])
def test_short_kernels_take_the_sums_or_whole_rows(calls, K, T):
    # From 7 taps one convolution over rows of whole frames beats the shifted sums; rows that
    # are not whole frames (copied first) keep the sums up to 12 taps. Both give the float64
    # answer, and a NaN stays under its window on the convolution's path too.
    x, w = _float32_case(K + T, (3, T), K)
    got = convolve(torch.from_numpy(x), torch.from_numpy(w), mode="same", method="direct")
    assert calls == ([("whole", (3, T))] if K >= 7 and T % 16 == 0 else [])
    _close_to_float64(got, x, w, "same")
    x[1, 500] = np.nan
    got = convolve(torch.from_numpy(x), torch.from_numpy(w), mode="same", method="direct")
    nan_rows, nan_cols = np.nonzero(np.isnan(got.numpy()))
    first = 500 - (K - 1) // 2  # the first output of mode "same" whose window covers it
    assert set(nan_rows) == {1} and list(nan_cols) == list(range(first, first + K))


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("K", [13, 31, 64])
@pytest.mark.parametrize("shape", [(1000,), (3, 700), (2, 3, 90)])
def test_rows_that_are_not_whole_frames_are_copied_for_one_convolution(calls, mode, K, shape):
    # Copied with zeros after them into whole frames (the zeros are the signal's own zero
    # padding), up to PADDED_ROWS_BYTES: one convolution, the float64 answer, input unchanged.
    if mode == "valid" and K > shape[-1]:
        pytest.skip("valid needs T >= K here")
    x, w = _float32_case(K + shape[-1], shape, K)
    before = x.copy()
    got = convolve(torch.from_numpy(x), torch.from_numpy(w), mode=mode, method="direct")
    assert calls == [("whole", (int(np.prod(shape[:-1])), shape[-1]))]
    assert got.is_contiguous()
    _close_to_float64(got, x, w, mode)
    np.testing.assert_array_equal(x, before)


def test_rows_too_large_to_copy_go_in_pieces(monkeypatch, calls):
    monkeypatch.setattr(_framed_conv, "PADDED_ROWS_BYTES", 4 * 3 * 1008 - 1)
    x, w = _float32_case(1, (3, 1000), 31)
    got = convolve(torch.from_numpy(x), torch.from_numpy(w), method="direct")
    assert calls and all(call[0] != "whole" for call in calls)
    _close_to_float64(got, x, w, "same")
    calls.clear()
    monkeypatch.setattr(_framed_conv, "PADDED_ROWS_BYTES", 4 * 3 * 1008)
    convolve(torch.from_numpy(x), torch.from_numpy(w), method="direct")
    assert calls == [("whole", (3, 1000))]


def test_whole_rows_are_declined_where_the_frames_do_not_fit():
    x = torch.randn(2, 64)
    assert _framed_conv.correlate_rows(x[:, ::2], torch.ones(3), 32, 1) is None  # strided
    assert _framed_conv.correlate_rows(x, torch.ones(3), 64, -1) is None  # shift < 0
    assert _framed_conv.correlate_rows(x, torch.ones(3), 64 * 5, 1) is None  # too unaligned


@pytest.mark.parametrize("K", [13, 31, 200])
def test_strided_source_is_read_and_left_alone(monkeypatch, calls, K):
    monkeypatch.setattr(_toeplitz, "CHUNK_BYTES", 4096)
    rng = np.random.default_rng(K)
    x = torch.from_numpy(rng.standard_normal((3000, 3)).astype(np.float32)).T  # time stride 3
    before = x.clone()
    w = rng.standard_normal(K).astype(np.float32)
    got = convolve(x, torch.from_numpy(w), mode="same", method="direct")
    assert calls
    _close_to_float64(got, before.numpy(), w, "same")
    assert torch.equal(x, before)


def test_agrees_with_the_gemms(monkeypatch, calls):
    # The same sums of products, once per path: equal to float32 rounding.
    x, w = _float32_case(1, (4, 20_000), 63)
    x, w = torch.from_numpy(x), torch.from_numpy(w)
    framed = convolve(x, w, mode="same", method="direct")
    assert calls
    monkeypatch.setattr(_framed_conv, "usable", lambda x: False)
    calls.clear()
    gemms = convolve(x, w, mode="same", method="direct")
    assert not calls
    torch.testing.assert_close(framed, gemms, rtol=1e-5, atol=1e-5)


def test_signal_gradient_takes_it_and_matches_float64(calls):
    # The signal gradient is a correlation on the same path; the kernel gradient stays with
    # the GEMMs' lagged products. Against float64 (the GEMMs, checked by gradcheck elsewhere).
    x, w = _float32_case(2, (3, 4000), 31)
    xs = torch.from_numpy(x).requires_grad_()
    ws = torch.from_numpy(w).requires_grad_()
    g = torch.from_numpy(np.random.default_rng(3).standard_normal((3, 4000)).astype(np.float32))
    convolve(xs, ws, mode="same", method="direct").backward(g)
    assert calls
    x64 = torch.from_numpy(x).double().requires_grad_()
    w64 = torch.from_numpy(w).double().requires_grad_()
    convolve(x64, w64, mode="same", method="direct").backward(g.double())
    torch.testing.assert_close(xs.grad.double(), x64.grad, rtol=0, atol=1e-4)
    torch.testing.assert_close(ws.grad.double(), w64.grad, rtol=0, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_leaves_the_products_in_float32(calls, dtype):
    # conv2d is on CPU autocast's lower-precision list: left to it, the products would be
    # rounded to bfloat16 (3e-3 relative) behind a float32 result.
    x, w = _float32_case(6, (2, 4000), 31)
    with torch.autocast("cpu", dtype=dtype):
        got = convolve(torch.from_numpy(x), torch.from_numpy(w), mode="same", method="direct")
    assert got.dtype == torch.float32 and calls
    _close_to_float64(got, x, w, "same")


def _gemms_only(calls):
    x, w = _float32_case(4, (2, 3000), 31)
    got = convolve(torch.from_numpy(x), torch.from_numpy(w), mode="same", method="direct")
    _close_to_float64(got, x, w, "same")
    return not calls


def test_float64_and_kernels_per_row_take_the_gemms(calls):
    x = torch.randn(2, 3000, dtype=torch.float64)
    convolve(x, torch.randn(31, dtype=torch.float64), mode="same", method="direct")
    convolve(x.float(), torch.randn(2, 31), mode="same", method="direct")
    assert not calls


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch's own note
def test_not_taken_with_onednn_disabled(calls):
    with torch.backends.mkldnn.flags(enabled=False):
        assert not _framed_conv.usable(torch.zeros(1))
        assert _gemms_only(calls)


@pytest.mark.parametrize("setting", ["conv", "mkldnn", "all"])
def test_not_taken_when_reduced_precision_is_allowed(monkeypatch, calls, setting):
    # With "bf16" allowed oneDNN may round float32 inputs to bfloat16 (3 significant digits).
    target = {
        "conv": torch.backends.mkldnn.conv,
        "mkldnn": torch.backends.mkldnn,
        "all": torch.backends,
    }[setting]
    if not hasattr(target, "fp32_precision"):
        pytest.skip("this torch has no fp32_precision setting")
    before = target.fp32_precision
    try:
        target.fp32_precision = "bf16"
        assert not _framed_conv.usable(torch.zeros(1))
        assert _gemms_only(calls)
    finally:
        target.fp32_precision = before
    assert _framed_conv.usable(torch.zeros(1))


def test_frame_plan_reads_every_tap():
    for K in range(1, 1025):
        P, J = _framed_conv.frame_plan(K)
        assert (J - 1) * P >= K - 1


@pytest.fixture
def gradient_calls(monkeypatch):
    """The pieces oneDNN's weight gradient summed: each piece's shape, or ("whole", rows'
    shape) for all rows at once (``gradient_products_rows``, where it applies)."""
    count = []
    real, real_rows = _framed_conv.frame_products, _framed_conv.gradient_products_rows

    def counted(piece, grad_frames, P, J):
        count.append(piece.shape)
        return real(piece, grad_frames, P, J)

    def counted_rows(g, rows, lo, K):
        out = real_rows(g, rows, lo, K)
        if out is not None:
            count.append(("whole", rows.shape))
        return out

    monkeypatch.setattr(_framed_conv, "frame_products", counted)
    monkeypatch.setattr(_framed_conv, "gradient_products_rows", counted_rows)
    return count


def _lagged_reference(g, x, lo, K):
    # c[k] = sum over rows and m of g[m] x[m + lo - k], in float64 with numpy.
    T, L = x.shape[-1], g.shape[-1]
    xs = np.broadcast_to(x, (*g.shape[:-1], T)).reshape(-1, T).astype(np.float64)
    padded = np.pad(xs, ((0, 0), (K + L, K + L)))
    rows = g.reshape(-1, L).astype(np.float64)
    pairs = list(zip(rows, padded, strict=True))
    return np.array(
        [sum(r @ p[K + L + lo - k : K + L + lo - k + L] for r, p in pairs) for k in range(K)]
    )


@pytest.mark.parametrize("piece_bytes", [8192, 2**22])
@pytest.mark.parametrize("K", [13, 31, 64, 191])
@pytest.mark.parametrize("shape", [(3, 700), (2, 3, 90), (64, 500)])
def test_kernel_gradient_of_stacked_rows_matches_float64(
    monkeypatch, gradient_calls, piece_bytes, K, shape
):
    monkeypatch.setattr(_toeplitz, "CHUNK_BYTES", piece_bytes)
    rng = np.random.default_rng(K + shape[-1])
    x = rng.standard_normal(shape).astype(np.float32)
    T = shape[-1]
    for lo, L in [(0, T + K - 1), ((K - 1) // 2, T), (K - 1, max(T - K + 1, 0)), (5, 40)]:
        if L == 0:
            continue
        g = rng.standard_normal((*shape[:-1], L)).astype(np.float32)
        got = _toeplitz.toeplitz_lagged_products(torch.from_numpy(g), torch.from_numpy(x), lo, K)
        expected = _lagged_reference(g, x, lo, K)
        scale = np.abs(g).sum() * np.abs(x).max()
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6 * scale)
    assert gradient_calls, "the weight gradient was not used"


@pytest.mark.parametrize(
    "shape, K, dtype",
    [
        ((1, 5000), 31, torch.float32),  # one row
        ((4, 700), 255, torch.float32),  # past MAX_GRADIENT_TAPS
        ((4, 700), 31, torch.float64),
    ],
    ids=["one-row", "long-kernel", "float64"],
)
def test_kernel_gradient_keeps_the_gemms_elsewhere(monkeypatch, gradient_calls, shape, K, dtype):
    monkeypatch.setattr(_framed_conv, "PADDED_ROWS_BYTES", 0)  # 5,000: not whole frames
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
    g = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
    got = _toeplitz.toeplitz_lagged_products(g, x, (K - 1) // 2, K)
    expected = _lagged_reference(g.numpy(), x.numpy(), (K - 1) // 2, K)
    scale = np.abs(g.numpy()).sum() * np.abs(x.numpy()).max()
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6 * scale)
    assert not gradient_calls


@pytest.mark.parametrize("K", [1, 3, 16, 17, 31, 63, 191])
@pytest.mark.parametrize("shape", [(1, 1024), (5, 96), (2, 3, 160), (3, 1000)])
def test_whole_rows_kernel_gradient_matches_float64(gradient_calls, shape, K):
    # Rows of whole frames: one weight gradient over every row, for the lags of mode "same",
    # "full" and "valid" and gradients of other lengths (zeros to whole frames).
    rng = np.random.default_rng(K + shape[-1])
    x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    T = shape[-1]
    for lo, L in [((K - 1) // 2, T), (0, T + K - 1), (K - 1, T - K + 1), (3, 40)]:
        if L <= 0:
            continue
        g = torch.from_numpy(rng.standard_normal((*shape[:-1], L)).astype(np.float32))
        gradient_calls.clear()
        got = _toeplitz.toeplitz_lagged_products(g, x, lo, K)
        rows = int(np.prod(shape[:-1]))
        taken = _framed_conv.whole_rows_plan(T, K, L, K - 1 - lo, rows) is not None
        whole = [call for call in gradient_calls if call[0] == "whole"]
        assert whole == ([("whole", (int(np.prod(shape[:-1])), T))] if taken else [])
        assert not taken or len(gradient_calls) == 1  # no pieces beside it
        expected = _lagged_reference(g.numpy(), x.numpy(), lo, K)
        scale = np.abs(g.numpy()).sum() * np.abs(x.numpy()).max()
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6 * scale)


def test_convolve_kernel_gradient_takes_it_and_matches_float64(gradient_calls):
    x, w = _float32_case(8, (8, 3000), 63)
    g = np.random.default_rng(9).standard_normal((8, 3000)).astype(np.float32)
    ws = torch.from_numpy(w).requires_grad_()
    convolve(torch.from_numpy(x), ws, mode="same", method="direct").backward(torch.from_numpy(g))
    assert gradient_calls
    w64 = torch.from_numpy(w).double().requires_grad_()
    convolve(torch.from_numpy(x).double(), w64, mode="same", method="direct").backward(
        torch.from_numpy(g).double()
    )
    torch.testing.assert_close(ws.grad.double(), w64.grad, rtol=0, atol=1e-3)


@pytest.mark.parametrize("setting", ["conv", "mkldnn", "all"])
def test_fast_settings_read_agrees_with_torchs_attributes(monkeypatch, setting):
    # usable_for reads torch's private getters (2.7 -> 1 us a call) where they exist; the
    # public attributes must give the same answer under every setting.
    target = {
        "conv": torch.backends.mkldnn.conv,
        "mkldnn": torch.backends.mkldnn,
        "all": torch.backends,
    }[setting]
    if not hasattr(target, "fp32_precision") or _framed_conv._precision_getter is None:
        pytest.skip("this torch reads its fp32 precision settings otherwise")
    cpu = torch.device("cpu")
    before = target.fp32_precision
    try:
        for value in ("bf16", before):
            target.fp32_precision = value
            fast = _framed_conv.usable_for(torch.float32, cpu)
            with monkeypatch.context() as patch:
                patch.setattr(_framed_conv, "_precision_getter", None)
                assert _framed_conv.usable_for(torch.float32, cpu) == fast
            assert fast == (value == before)
    finally:
        target.fp32_precision = before


@pytest.fixture
def convolutions_run(monkeypatch):
    """Which convolution :func:`_framed_conv._convolve_frames` ran, "native" or "onednn",
    once per call."""
    ran = []
    native, onednn = _framed_conv._native_conv2d, _framed_conv._onednn_conv2d

    def counted_native(*args):
        ran.append("native")
        return native(*args)

    def counted_onednn(*args):
        ran.append("onednn")
        return onednn(*args)

    if native is not None:
        monkeypatch.setattr(_framed_conv, "_native_conv2d", counted_native)
    monkeypatch.setattr(_framed_conv, "_onednn_conv2d", counted_onednn)
    return ran


@pytest.mark.parametrize(
    "shape, K, expected",
    [
        ((1024,), 31, "native"),  # ~10 us where oneDNN takes ~30
        ((4, 1024), 31, "native"),  # torch alone would send a batch to oneDNN
        ((1, 16384), 1023, "onednn"),  # torch alone would keep one short row native
        ((16, 1024), 255, "onednn"),
        ((512, 1024), 31, "onednn"),
    ],
)
def test_the_work_chooses_the_convolution(convolutions_run, shape, K, expected):
    if expected == "native" and _framed_conv._native_conv2d is None:
        pytest.skip("this torch exposes no native convolution")
    x, w = _float32_case(K, shape, K)
    got = convolve(torch.from_numpy(x), torch.from_numpy(w), "same", method="direct")
    assert convolutions_run == [expected]
    _close_to_float64(got, x, w, "same")


@pytest.mark.parametrize("route", ["native", "onednn", "torch's choice"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("shape, K", [((3, 1000), 13), ((2, 4096), 255), ((5, 96), 17)])
def test_each_convolution_matches_float64(monkeypatch, convolutions_run, route, mode, shape, K):
    if route == "native" and _framed_conv._native_conv2d is None:
        pytest.skip("this torch exposes no native convolution")
    if route == "torch's choice":  # neither entry point: F.conv2d decides
        monkeypatch.setattr(_framed_conv, "_native_conv2d", None)
        monkeypatch.setattr(_framed_conv, "_onednn_conv2d", _framed_conv._conv2d)
    limit = 10**12 if route == "native" else 0
    monkeypatch.setattr(_framed_conv, "NATIVE_MAX_WORK", limit)
    x, w = _float32_case(len(shape) + K, shape, K)
    got = convolve(torch.from_numpy(x), torch.from_numpy(w), mode, method="direct")
    assert convolutions_run == ([] if route == "torch's choice" else [route])
    _close_to_float64(got, x, w, mode)


@pytest.fixture
def gradient_batches(monkeypatch):
    """The batch of each weight gradient's image: 1 where the rows are the lines of one."""
    batches = []
    backward = _framed_conv._convolution_backward

    def recorded(grad, image, *args):
        batches.append(image.shape[0])
        return backward(grad, image, *args)

    monkeypatch.setattr(_framed_conv, "_convolution_backward", recorded)
    return batches


@pytest.mark.parametrize("as_one_image", [True, False])
@pytest.mark.parametrize("shape, K", [((4, 1024), 31), ((2, 3, 160), 63), ((64, 256), 7)])
def test_kernel_gradient_in_either_layout_matches_float64(
    monkeypatch, gradient_batches, as_one_image, shape, K
):
    # Rows as the lines of one image (torch's native weight gradient on small work) or as a
    # batch of images (oneDNN's): the same lagged products.
    monkeypatch.setattr(_framed_conv, "NATIVE_MAX_GRADIENT_WORK", 10**12 if as_one_image else 0)
    rng = np.random.default_rng(K)
    x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    g = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    got = _toeplitz.toeplitz_lagged_products(g, x, (K - 1) // 2, K)
    rows = int(np.prod(shape[:-1]))
    assert gradient_batches == [1 if as_one_image else rows]
    expected = _lagged_reference(g.numpy(), x.numpy(), (K - 1) // 2, K)
    scale = np.abs(g.numpy()).sum() * np.abs(x.numpy()).max()
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6 * scale)


def test_small_kernel_gradients_read_the_rows_as_one_image(gradient_batches):
    for rows, T in [(4, 1024), (64, 1024)]:  # 12,288 and 196,608 units of work at 31 taps
        x, g = torch.randn(rows, T), torch.randn(rows, T)
        _toeplitz.toeplitz_lagged_products(g, x, 15, 31)
    assert gradient_batches == [1, 64]
