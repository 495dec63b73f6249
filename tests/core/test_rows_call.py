"""float32 CPU calls of one kernel past ``_direct.tiny_products`` run as one convolution over
every row in frames straight from ``convolve`` (``_direct.rows_range``; recorded by autograd
for native work): taken where it applies (also by auto), scipy's answer in every mode and
padding, exact for a delta, NaN kept local, and gradients of first and second order that
match float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffconv_core import _direct, _framed_conv, choose_method, convolve

from .conftest import reference

pytestmark = pytest.mark.skipif(
    _framed_conv._native_conv2d is None or not _framed_conv.usable(torch.zeros(1)),
    reason="this torch exposes no native convolution, or reads float32 inexactly",
)


@pytest.fixture
def rows_calls(monkeypatch):
    """The signals' shapes of each call of ``rows_range`` with one kernel for every row."""
    calls = []
    real = _direct.rows_range

    def counted(x, w, lo, hi, plan):
        if w.numel() == w.shape[-1]:
            calls.append(tuple(x.shape))
        return real(x, w, lo, hi, plan)

    monkeypatch.setattr(_direct, "rows_range", counted)
    return calls


def _close(got: torch.Tensor, expected: np.ndarray, K: int) -> None:
    scale = max(float(np.abs(expected).max()), 1.0)
    atol = 8 * torch.finfo(torch.float32).eps * scale * K**0.5
    np.testing.assert_allclose(got.detach().double().numpy(), expected, rtol=0, atol=atol)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("K", [7, 9, 16, 31, 64, 127, 255])
@pytest.mark.parametrize("shape", [(4096,), (1, 4096), (4, 1000), (2, 3, 1024), (16, 512)])
def test_matches_float64_scipy(rows_calls, mode, K, shape):
    rng = np.random.default_rng(K + shape[-1])
    x = torch.from_numpy(rng.standard_normal(shape)).float()
    w = torch.from_numpy(rng.standard_normal(K)).float()
    got = convolve(x, w, mode, method="direct")
    _close(got, reference(x.double(), w.double(), mode), K)
    assert got.shape[:-1] == x.shape[:-1] and got.dtype == torch.float32
    from diffconv_core.methods import output_range

    lo, hi = output_range(shape[-1], K, mode)
    rows = int(np.prod(shape[:-1]))
    tiny = rows * (hi - lo) * K <= _direct.tiny_products(4)
    plan = _framed_conv.direct_rows_plan(rows, shape[-1], K, hi - lo, K - 1 - lo, False)
    takes = plan is not None and not tiny and not _direct.shifted_sums_for(K, shape[-1], True)
    assert bool(rows_calls) == takes
    if mode == "same" and shape[-1] % 16 == 0 and not tiny and rows * shape[-1] * K <= 2**17:
        assert rows_calls  # the calls this path is for: every row at once, whole frames


@pytest.mark.parametrize("shape, K", [((512, 1024), 31), ((64, 8000), 63), ((3, 48_000), 255)])
def test_large_calls_without_a_graph_are_one_onednn_convolution(rows_calls, shape, K):
    # Past NATIVE_MAX_WORK the convolution is oneDNN's; without a graph convolve still calls
    # it straight away, NaN handling by the one sum as for every method.
    rng = np.random.default_rng(K)
    x = torch.from_numpy(rng.standard_normal(shape)).float()
    w = torch.from_numpy(rng.standard_normal(K)).float()
    rows = shape[0]
    assert not _framed_conv.runs_native(rows, shape[1], _framed_conv.frame_plan(K)[1])
    for mode in ("same", "full", "valid"):
        got = convolve(x, w, mode, method="direct")
        _close(got, reference(x.double(), w.double(), mode), K)
    assert rows_calls[0] == shape
    x[rows // 2, 5000 % shape[1]] = float("nan")
    y = convolve(x, w.abs() + 0.1)
    assert torch.isnan(y).sum() == K and torch.isfinite(y[: rows // 2]).all()


@pytest.mark.parametrize("padding", ["reflect", "symmetric", "replicate", "circular"])
def test_paddings_match_scipy_on_the_extended_signal(rows_calls, padding):
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((2, 2048))).float()
    w = torch.from_numpy(rng.standard_normal(31)).float()
    got = convolve(x, w, "same", padding=padding, method="direct")
    numpy_mode = {"replicate": "edge", "circular": "wrap"}.get(padding, padding)
    extended = np.pad(x.double().numpy(), ((0, 0), (15, 15)), mode=numpy_mode)
    expected = reference(torch.from_numpy(extended), w.double(), "valid")
    _close(got, expected, 31)
    assert rows_calls == [(2, 2078)]


def test_auto_takes_it_where_the_model_prices_it_cheapest(rows_calls):
    for shape, K in [((1, 4096), 31), ((4, 1024), 31), ((16, 512), 15), ((1, 8192), 31)]:
        assert choose_method(shape, (K,)) == "direct"
        x, w = torch.randn(shape), torch.rand(K)
        _close(convolve(x, w), reference(x.double(), w.double(), "same"), K)
    assert rows_calls == [(1, 4096), (4, 1024), (16, 512), (1, 8192)]


def test_not_taken_where_it_does_not_apply(rows_calls):
    x, w = torch.randn(2, 4096), torch.randn(31)
    convolve(torch.randn(64, 4096).double(), w.double(), method="direct")  # float64, past native
    convolve(torch.randn(4096, 2).T, w, method="direct")  # rows not contiguous
    convolve(x, torch.randn(2, 31), method="direct")  # a kernel per row
    convolve(x, torch.randn(5), method="direct")  # few taps: the shifted sums
    convolve(x, torch.randn(1025), method="direct")  # past MAX_TOEPLITZ_TAPS: conv1d
    big, w127 = torch.randn(64, 4096, requires_grad=True), torch.randn(127)
    convolve(big, w127, method="direct")  # recorded, oneDNN's, too many taps: the Function
    assert rows_calls == []
    convolve(x, w, method="direct")
    convolve(big.detach(), w127, method="direct")  # oneDNN's convolution, not recorded
    convolve(big, w, method="direct")  # recorded, oneDNN's, up to MAX_RECORDED_ONEDNN_TAPS
    assert rows_calls == [(2, 4096), (64, 4096), (64, 4096)]


def test_not_taken_when_reduced_precision_is_allowed(rows_calls):
    target = torch.backends.mkldnn.conv
    if not hasattr(target, "fp32_precision"):
        pytest.skip("this torch has no fp32_precision setting")
    before = target.fp32_precision
    x, w = torch.randn(1, 4096), torch.randn(31)
    try:
        target.fp32_precision = "bf16"
        got = convolve(x, w, method="direct")
    finally:
        target.fp32_precision = before
    assert rows_calls == []
    _close(got, reference(x.double(), w.double(), "same"), 31)


def test_a_delta_returns_the_signal_exactly(rows_calls):
    x = torch.randn(3, 4000)
    delta = torch.zeros(31)
    delta[15] = 1.0
    assert torch.equal(convolve(x, delta, method="direct"), x)
    assert rows_calls == [(3, 4000)]


def test_autocast_leaves_the_products_in_float32(rows_calls):
    x, w = torch.randn(1, 4096), torch.randn(63)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = convolve(x, w, method="direct")
    assert got.dtype == torch.float32 and rows_calls
    _close(got, reference(x.double(), w.double(), "same"), 63)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("row, at", [(0, 100), (1, 2000), (1, 4090)])
def test_nan_and_inf_stay_within_the_kernels_reach(rows_calls, value, row, at):
    x = torch.randn(2, 4096)
    x[row, at] = value
    w = torch.rand(31) + 0.1
    y = convolve(x, w, method="direct")
    assert rows_calls  # tried first; its NaNs spread a frame wide, so the careful path ran
    reach = torch.zeros(2, 4096, dtype=torch.bool)
    reach[row, max(at - 15, 0) : at + 16] = True
    assert torch.isfinite(y[~reach]).all()
    assert torch.equal(y[reach], torch.full_like(y[reach], value)) or torch.isnan(y[reach]).all()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_recorded_nan_and_inf_stay_local_with_finite_gradients_elsewhere(rows_calls, value):
    # With a graph too the convolution's non-finite output sends the call down the careful
    # path: the value only within the kernel's reach, constants to autograd there, and a loss
    # over the other outputs has finite gradients.
    x = torch.randn(2, 4096)
    x[1, 2000] = value
    x.requires_grad_()
    w = (torch.rand(31) + 0.1).requires_grad_()
    y = convolve(x, w, method="direct")
    assert rows_calls
    assert "ConvolutionBackward0" not in {type(n).__name__ for n in _graph_nodes(y)}
    reach = torch.zeros(2, 4096, dtype=torch.bool)
    reach[1, 1985:2016] = True
    assert torch.isfinite(y[~reach]).all() and not torch.isfinite(y[reach]).any()
    grad_x, grad_w = torch.autograd.grad(y[~reach].sum(), (x, w))
    assert torch.isfinite(grad_w).all() and torch.isfinite(grad_x).all()


def _graph_nodes(y: torch.Tensor) -> list:
    # Every autograd node behind y.
    found, stack = {}, [y.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and id(node) not in found:
            found[id(node)] = node
            stack.extend(parent for parent, _ in node.next_functions)
    return list(found.values())


def _float64_gradients(x, w, g, mode):
    x64 = x.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    y64 = convolve(x64, w64, mode, method="fft")
    return torch.autograd.grad(y64, (x64, w64), g.double())


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("shape, K", [((1, 4096), 31), ((4, 1000), 63), ((2, 3, 1024), 9)])
def test_gradients_match_float64(rows_calls, mode, shape, K):
    rng = np.random.default_rng(K)
    x = torch.from_numpy(rng.standard_normal(shape)).float().requires_grad_()
    w = torch.from_numpy(rng.standard_normal(K)).float().requires_grad_()
    y = convolve(x, w, mode, method="direct")
    g = torch.from_numpy(rng.standard_normal(tuple(y.shape))).float()
    grad_x, grad_w = torch.autograd.grad(y, (x, w), g)
    expected_x, expected_w = _float64_gradients(x, w, g, mode)
    _close(grad_x, expected_x.numpy(), K)
    _close(grad_w, expected_w.numpy(), int(np.prod(y.shape)))
    if mode == "same":
        assert rows_calls  # recorded by autograd: no Python on the way back
        names = {type(node).__name__ for node in _graph_nodes(y)}
        assert "ConvolutionBackward0" in names
        assert not any("DirectRange" in name for name in names)


@pytest.mark.parametrize("shape, K", [((64, 4096), 31), ((16, 8000), 63)])
def test_recorded_onednn_convolution_gradients_match_float64(rows_calls, shape, K):
    # Past native work, autograd records oneDNN's convolution up to 63 taps: its backward is
    # oneDNN's, first and second order.
    rng = np.random.default_rng(K)
    x = torch.from_numpy(rng.standard_normal(shape)).float().requires_grad_()
    w = torch.from_numpy(rng.standard_normal(K)).float().requires_grad_()
    assert not _framed_conv.runs_native(shape[0], shape[1], _framed_conv.frame_plan(K)[1])
    y = convolve(x, w, method="direct")
    assert "ConvolutionBackward0" in {type(n).__name__ for n in _graph_nodes(y)}
    g = torch.from_numpy(rng.standard_normal(shape)).float()
    grad_x, grad_w = torch.autograd.grad(y, (x, w), g, create_graph=True)
    expected_x, expected_w = _float64_gradients(x, w, g, "same")
    _close(grad_x, expected_x.numpy(), K)
    _close(grad_w, expected_w.numpy(), int(np.prod(shape)))
    v = torch.from_numpy(rng.standard_normal(shape)).float()
    (hvp,) = torch.autograd.grad((grad_x * v).sum(), w)
    x64 = x.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    (gx64,) = torch.autograd.grad(
        convolve(x64, w64, method="fft"), x64, g.double(), create_graph=True
    )
    (expected_hvp,) = torch.autograd.grad((gx64 * v.double()).sum(), w64)
    _close(hvp, expected_hvp.numpy(), int(np.prod(shape)))
    assert rows_calls == [shape]


def test_second_derivatives_match_float64(rows_calls):
    # A Hessian-vector product: d/dw of <grad_x(sum(g * y)), v>, through the native
    # convolution's double backward.
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((2, 1024))).float().requires_grad_()
    w = torch.from_numpy(rng.standard_normal(31)).float().requires_grad_()
    g = torch.from_numpy(rng.standard_normal((2, 1024))).float()
    v = torch.from_numpy(rng.standard_normal((2, 1024))).float()

    def hvp(a, b):
        y = convolve(a, b, method="direct" if a.dtype == torch.float32 else "fft")
        (grad_a,) = torch.autograd.grad(y, a, g.to(a.dtype), create_graph=True)
        return torch.autograd.grad((grad_a * v.to(a.dtype)).sum(), b)[0]

    got = hvp(x, w)
    expected = hvp(x.detach().double().requires_grad_(), w.detach().double().requires_grad_())
    assert rows_calls
    _close(got, expected.numpy(), 2048)


def test_auto_takes_it_for_a_small_training_step(rows_calls):
    # Recorded, the transforms cost ~0.13 ms a step in host work alone; the one convolution
    # each way 0.14-0.17 ms for these (benchmarks/results/cpu_2core_small_training.md).
    for shape, K in [((1, 4096), 31), ((4, 1024), 8), ((1, 2000), 31), ((1, 16384), 63)]:
        assert choose_method(shape, (K,), requires_grad=True) == "direct"
        x = torch.randn(shape, requires_grad=True)
        w = torch.rand(K, requires_grad=True)
        y = convolve(x, w)
        g = torch.randn(shape)
        grad_x, grad_w = torch.autograd.grad(y, (x, w), g)
        expected_x, expected_w = _float64_gradients(x, w, g, "same")
        _close(grad_x, expected_x.numpy(), K)
        _close(grad_w, expected_w.numpy(), shape[0] * shape[1])
    assert rows_calls == [(1, 4096), (4, 1024), (1, 2000), (1, 16384)]


@pytest.mark.parametrize("shape, K", [((1, 4096), 31), ((4, 1000), 63), ((64, 4096), 31)])
def test_forward_over_reverse_hessian_products(rows_calls, shape, K):
    # A tangent entering through the backward pass: the recorded convolution's backward needs
    # forward-mode rules (conv2d has them; torch's native convolution called by name has none).
    import torch.autograd.forward_ad as forward_ad

    rng = np.random.default_rng(K)
    x = torch.from_numpy(rng.standard_normal(shape)).float().requires_grad_()
    w = torch.from_numpy(rng.standard_normal(K)).float().requires_grad_()
    g = torch.from_numpy(rng.standard_normal(shape)).float()
    dg = torch.from_numpy(rng.standard_normal(shape)).float()
    y = convolve(x, w, method="direct")
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(g, dg)
        grad_x, grad_w = torch.autograd.grad(y, (x, w), dual, create_graph=True)
        tangent_x = forward_ad.unpack_dual(grad_x).tangent
        tangent_w = forward_ad.unpack_dual(grad_w).tangent
    # The gradients are linear in g: their tangents are the gradients for dg.
    expected_x, expected_w = _float64_gradients(x, w, dg, "same")
    _close(tangent_x, expected_x.numpy(), K)
    _close(tangent_w, expected_w.numpy(), int(np.prod(shape)))
    assert rows_calls == [shape]


def test_a_strided_kernel_is_read_as_it_is(rows_calls):
    x = torch.randn(2, 4096)
    base = torch.randn(31, 3)
    for w in (base[:, 1], torch.randn(100)[5:98:3]):
        assert not w.is_contiguous() or w.storage_offset()
        _close(convolve(x, w, method="direct"), reference(x.double(), w.double(), "same"), 31)
    assert rows_calls == [(2, 4096), (2, 4096)]


def test_filters_are_reused_only_for_a_kernel_of_the_same_bits(monkeypatch, rows_calls):
    # Without a graph the last filters are kept per thread; a kernel changed in place, or
    # another with one zero's sign flipped, gets filters of its own.
    built = []
    real_take = torch.take

    def counted_take(*args):
        built.append(1)
        return real_take(*args)

    monkeypatch.setattr(torch, "take", counted_take)
    x = torch.randn(2, 4096)
    w = torch.rand(31)
    w[3] = 0.0
    first = convolve(x, w, method="direct")
    again = convolve(x.clone(), w.clone(), method="direct")  # equal bits: reused
    assert torch.equal(first, again) and len(built) == 1
    w.mul_(2.0)  # in place: same tensor, other values
    _close(convolve(x, w, method="direct"), reference(x.double(), w.double(), "same"), 31)
    assert len(built) == 2
    signed = w.clone()
    signed[3] = -0.0
    convolve(x, signed, method="direct")
    assert len(built) == 3
    with torch.enable_grad():
        convolve(x, w.clone().requires_grad_(), method="direct")  # recorded: built anew
    assert len(built) == 4 and len(rows_calls) == 5


def test_threads_keep_their_own_filters(rows_calls):
    from concurrent.futures import ThreadPoolExecutor

    x = torch.randn(2, 4096)
    kernels = [torch.rand(31) for _ in range(8)]
    expected = [reference(x.double(), w.double(), "same") for w in kernels]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(lambda w: convolve(x, w, method="direct"), kernels))
            for y, e in zip(got, expected, strict=True):
                _close(y, e, 31)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("shape, K", [((1, 4096), 31), ((4, 1000), 63), ((16, 512), 15)])
def test_float64_native_work_is_one_convolution_too(rows_calls, mode, shape, K):
    # oneDNN takes no float64; torch's native convolution (an unfold and a GEMM in double
    # precision) does, and float64 takes it for native work.
    rng = np.random.default_rng(K)
    x = torch.from_numpy(rng.standard_normal(shape))
    w = torch.from_numpy(rng.standard_normal(K))
    got = convolve(x, w, mode, method="direct")
    expected = reference(x, w, mode)
    scale = max(float(np.abs(expected).max()), 1.0)
    atol = 8 * torch.finfo(torch.float64).eps * scale * K**0.5
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=atol)
    assert got.dtype == torch.float64 and rows_calls == [shape]
    assert choose_method(shape, (K,), mode=mode, dtype=torch.float64) == "direct"


def test_float64_past_native_work_keeps_the_gemms(rows_calls):
    x, w = torch.randn(64, 4096, dtype=torch.float64), torch.randn(31, dtype=torch.float64)
    got = convolve(x, w, method="direct")
    np.testing.assert_allclose(got.numpy(), reference(x, w, "same"), rtol=0, atol=1e-12)
    convolve(torch.randn(1, 4096, dtype=torch.float64), torch.randn(9, dtype=torch.float64))
    assert rows_calls == []  # 9 taps in float64: the shifted sums, as rows not whole frames


def test_float64_gradients_pass_gradcheck(rows_calls):
    x = torch.randn(1, 1040, dtype=torch.float64, requires_grad=True)
    w = torch.randn(31, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: convolve(a, b, method="direct"), (x, w))
    assert torch.autograd.gradgradcheck(lambda a, b: convolve(a, b, method="direct"), (x, w))
    assert rows_calls and set(rows_calls) == {(1, 1040)}


@pytest.fixture
def bank_calls(monkeypatch):
    """The signals' and kernels' shapes of each call of ``rows_range`` with a bank."""
    calls = []
    real = _direct.rows_range

    def counted(x, w, lo, hi, plan):
        if w.numel() > w.shape[-1]:
            calls.append((tuple(x.shape), tuple(w.shape)))
        return real(x, w, lo, hi, plan)

    monkeypatch.setattr(_direct, "rows_range", counted)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize(
    "x_shape, w_shape", [((4, 1, 1000), (6, 31)), ((2048,), (5, 63)), ((2, 3, 1, 512), (4, 15))]
)
def test_a_bank_of_kernels_is_one_convolution(bank_calls, dtype, mode, x_shape, w_shape):
    # Every signal with every kernel (a filter bank): kernels as the output channels.
    rng = np.random.default_rng(w_shape[-1])
    x = torch.from_numpy(rng.standard_normal(x_shape)).to(dtype)
    w = torch.from_numpy(rng.standard_normal(w_shape)).to(dtype)
    got = convolve(x, w, mode, method="direct")
    rows = x.reshape(-1, x_shape[-1]).double().numpy()
    kernels = w.double().numpy()
    expected = np.stack(
        [reference(torch.from_numpy(r), torch.from_numpy(k), mode) for r in rows for k in kernels]
    ).reshape(got.shape)
    scale = max(float(np.abs(expected).max()), 1.0)
    atol = 8 * torch.finfo(dtype).eps * scale * w_shape[-1] ** 0.5
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=0, atol=atol)
    assert got.shape[:-1] == torch.broadcast_shapes(x_shape[:-1], w_shape[:-1])
    assert bank_calls == [(x_shape, w_shape)]


def test_a_bank_is_not_taken_where_it_does_not_apply(bank_calls):
    x, w = torch.randn(8, 1, 4096), torch.randn(16, 31)
    convolve(torch.randn(16, 4096), w, method="direct")  # a kernel per row
    convolve(x, torch.randn(16, 127), method="direct")  # past MAX_BANK_TAPS
    with torch.enable_grad():
        convolve(x, w.clone().requires_grad_(), method="direct")  # recorded: the Function
    assert bank_calls == []
    assert choose_method((8, 1, 16000), (40, 63)) == "direct"
    assert choose_method((8, 1, 16000), (40, 63), requires_grad=True) != "direct"
    convolve(x, w)
    assert bank_calls == [((8, 1, 4096), (16, 31))]


def test_a_bank_keeps_nan_within_the_signal_and_reach(bank_calls):
    x = torch.randn(3, 1, 2048)
    x[1, 0, 1000] = float("nan")
    w = torch.rand(4, 31) + 0.1
    y = convolve(x, w, method="direct")
    assert bank_calls and y.shape == (3, 4, 2048)
    assert torch.isnan(y[1, :, 985:1016]).all()
    y[1, :, 985:1016] = 0.0
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("method", ["auto", "direct", "fft", "overlap"])
@pytest.mark.parametrize("T", [256, 1024, 4096])
def test_a_kernel_with_leading_ones_broadcasts_as_every_method_does(method, T):
    # A kernel (1, K) over a signal (T,) gives (1, T) as broadcasting does, whichever path
    # runs it (the small call's, the one convolution's or the transforms').
    x, w = torch.randn(T), torch.rand(1, 31)
    y = convolve(x, w, method=method)
    assert y.shape == (1, T)
    _close(y[0], reference(x.double(), w[0].double(), "same"), 31)
