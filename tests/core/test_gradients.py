"""Tests for diffconv_core.gradients: closed forms, finite differences, Jacobian structure."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffconv_core import convolve
from diffconv_core.gradients import (
    GradientMap,
    ParametricKernel,
    filter_kernel,
    gradient_map,
    jacobian,
    window_kernel,
)
from diffconv_core.windows import get_window

PADDINGS = ("zeros", "reflect", "symmetric", "replicate", "circular")
NUMPY_PAD = {
    "zeros": "constant",
    "reflect": "reflect",
    "symmetric": "symmetric",
    "replicate": "edge",
    "circular": "wrap",
}
# (mode, padding) pairs the core accepts: every padding with same/full, zeros with valid.
MODE_PADDING = [(m, p) for m in ("same", "full") for p in PADDINGS] + [("valid", "zeros")]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _pad_matrix(T: int, K: int, mode: str, padding: str) -> np.ndarray:
    """The (T + left + right) x T matrix of the padding: padded = P @ signal."""
    left, right = {"same": (K // 2, (K - 1) // 2), "full": (K - 1, K - 1), "valid": (0, 0)}[mode]
    return np.pad(np.eye(T), ((left, right), (0, 0)), mode=NUMPY_PAD[padding])


def _reference_output(x: np.ndarray, w: np.ndarray, mode: str, padding: str) -> np.ndarray:
    P = _pad_matrix(len(x), len(w), mode, padding)
    return scipy.signal.convolve(P @ x, w, "valid")


def _closed_form_grads(x, w, g_of_y, mode, padding):
    """d obj / dx and d obj / dw from d obj / dy by hand (numpy/scipy, no autograd).

    Output y = valid convolution of the padded signal xp = P x with w, so
    dy^T g / dxp = correlate(g, w, "full") and dx = P^T dxp (the padding's adjoint);
    dw[k] = sum_n g[n] xp[n + K - 1 - k] = correlate(xp, g, "valid") reversed.
    """
    P = _pad_matrix(len(x), len(w), mode, padding)
    xp = P @ x
    y = scipy.signal.convolve(xp, w, "valid")
    g = g_of_y(y)
    dx = P.T @ scipy.signal.correlate(g, w, "full")
    dw = scipy.signal.correlate(xp, g, "valid")[::-1]
    return y, dx, dw


# ----------------------------------------------------------------------------- smoke / shapes


def test_result_fields_and_shapes():
    x = torch.randn(2, 3, 40)
    w = torch.randn(3, 7)
    g = gradient_map(x, w, mode="same", padding="reflect")
    assert isinstance(g, GradientMap)
    torch.testing.assert_close(g.output, convolve(x, w, padding="reflect"))
    assert g.grad_signal.shape == x.shape
    assert g.grad_kernel.shape == w.shape
    assert g.grad_params == {} and g.params == {}
    assert g.value.shape == () and g.objective == "energy"
    torch.testing.assert_close(g.value, (g.output**2).sum())
    assert not g.output.requires_grad and not g.grad_signal.requires_grad


def test_wrt_subsets_and_inputs_untouched():
    x = torch.randn(30, requires_grad=True)
    w = torch.randn(5)
    only_signal = gradient_map(x, w, wrt="signal")
    assert only_signal.grad_kernel is None and only_signal.grad_signal is not None
    only_kernel = gradient_map(x, w, wrt=["kernel"])
    assert only_kernel.grad_signal is None and only_kernel.grad_kernel is not None
    torch.testing.assert_close(only_signal.grad_signal, gradient_map(x, w).grad_signal)
    assert x.grad is None and not w.requires_grad


def test_dtype_kept_float64():
    x = torch.randn(20, dtype=torch.float64)
    w = torch.randn(4, dtype=torch.float64)
    g = gradient_map(x, w, "mse", target=torch.zeros(20, dtype=torch.float64))
    assert g.grad_signal.dtype == g.grad_kernel.dtype == g.output.dtype == torch.float64


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("mode,padding", MODE_PADDING)
@pytest.mark.parametrize("K", [4, 5])
def test_energy_closed_form(mode, padding, K):
    rng = _rng(K)
    x, w = rng.standard_normal(17), rng.standard_normal(K)
    y, dx, dw = _closed_form_grads(x, w, lambda y: 2 * y, mode, padding)
    g = gradient_map(torch.from_numpy(x), torch.from_numpy(w), mode=mode, padding=padding)
    np.testing.assert_allclose(g.output.numpy(), y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.value.item(), np.sum(y**2), rtol=1e-12)
    np.testing.assert_allclose(g.grad_signal.numpy(), dx, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(g.grad_kernel.numpy(), dw, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("K", [4, 5])
def test_energy_zero_padding_is_cropped_full_correlation(K):
    """The issue's closed form, written out: dE/dx = 2 correlate(y, w, "full") cropped."""
    rng = _rng(10 + K)
    T = 19
    x, w = rng.standard_normal(T), rng.standard_normal(K)
    for mode, start in (("same", K // 2), ("full", K - 1), ("valid", 0)):
        y = scipy.signal.convolve(x, w, mode)
        expected = 2 * scipy.signal.correlate(y, w, "full")[start : start + T]
        g = gradient_map(torch.from_numpy(x), torch.from_numpy(w), mode=mode)
        np.testing.assert_allclose(g.grad_signal.numpy(), expected, rtol=1e-9, atol=1e-11)
    # ... and dE/dw for "full": 2 correlate(x, y) over the lags 0..K-1, reversed.
    y = scipy.signal.convolve(x, w, "full")
    expected_w = 2 * scipy.signal.correlate(y, x, "valid")
    g = gradient_map(torch.from_numpy(x), torch.from_numpy(w), mode="full")
    np.testing.assert_allclose(g.grad_kernel.numpy(), expected_w, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("mode,padding", MODE_PADDING)
def test_mse_closed_form_with_shared_kernel_over_channels(mode, padding):
    rng = _rng(3)
    x, w = rng.standard_normal((2, 15)), rng.standard_normal(5)
    outs = [_reference_output(row, w, mode, padding) for row in x]
    target = rng.standard_normal((2, len(outs[0])))
    n = target.size
    dx, dw = [], np.zeros(5)
    for row, t in zip(x, target, strict=True):
        _, dxi, dwi = _closed_form_grads(row, w, lambda y, t=t: 2 * (y - t) / n, mode, padding)
        dx.append(dxi)
        dw += dwi  # a shared kernel collects the gradient of every channel
    g = gradient_map(
        torch.from_numpy(x),
        torch.from_numpy(w),
        "mse",
        target=torch.from_numpy(target),
        mode=mode,
        padding=padding,
    )
    np.testing.assert_allclose(g.value.item(), np.mean((np.stack(outs) - target) ** 2), rtol=1e-12)
    np.testing.assert_allclose(g.grad_signal.numpy(), np.stack(dx), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(g.grad_kernel.numpy(), dw, rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------- finite differences


def _finite_difference(f, v: torch.Tensor, eps=1e-6) -> torch.Tensor:
    grad = torch.zeros_like(v)
    flat = grad.view(-1)
    for i in range(v.numel()):
        e = torch.zeros_like(v).view(-1)
        e[i] = eps
        e = e.view_as(v)
        flat[i] = (f(v + e) - f(v - e)) / (2 * eps)
    return grad


OBJECTIVE_FNS = {
    "energy": lambda y, t: (y**2).sum(),
    "mse": lambda y, t: ((y - t) ** 2).mean(),
    "l1": lambda y, t: (y - t).abs().mean(),
}


@pytest.mark.parametrize("objective", ["energy", "mse", "l1", "callable"])
@pytest.mark.parametrize("mode,padding", MODE_PADDING)
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_gradients_match_finite_differences(objective, mode, padding, method):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(11, dtype=torch.float64, generator=gen)
    w = torch.randn(4, dtype=torch.float64, generator=gen)
    opts = dict(mode=mode, padding=padding, method=method)
    L = convolve(x, w, **opts).shape[-1]
    target = None
    if objective in ("mse", "l1"):
        target = torch.randn(L, dtype=torch.float64, generator=gen)
    if objective == "callable":

        def fn(y):
            return (y.sin() * torch.arange(L, dtype=y.dtype)).sum()

        obj = fn
    else:
        obj = objective

        def fn(y):
            return OBJECTIVE_FNS[objective](y, target)

    g = gradient_map(x, w, obj, target=target, **opts)
    fd_x = _finite_difference(lambda v: fn(convolve(v, w, **opts)), x)
    fd_w = _finite_difference(lambda v: fn(convolve(x, v, **opts)), w)
    torch.testing.assert_close(g.grad_signal, fd_x, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g.grad_kernel, fd_w, rtol=1e-6, atol=1e-7)


def test_kernel_longer_than_signal_valid_mode():
    x = torch.randn(5, dtype=torch.float64)
    w = torch.randn(9, dtype=torch.float64)
    g = gradient_map(x, w, mode="valid")
    assert g.output.shape == (5,)
    fd_w = _finite_difference(lambda v: (convolve(x, v, "valid") ** 2).sum(), w)
    torch.testing.assert_close(g.grad_kernel, fd_w, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- parameters


def _gauss_builder(std, shift):
    n = torch.arange(9, dtype=std.dtype) - 4
    return torch.exp(-0.5 * ((n - shift) / std) ** 2)


def test_custom_parametric_kernel_matches_finite_differences():
    x = torch.randn(25, dtype=torch.float64)
    pk = ParametricKernel(_gauss_builder, {"std": 1.7, "shift": torch.tensor(0.3)}, "gauss")
    g = gradient_map(x, pk, padding="reflect")
    assert set(g.grad_params) == {"std", "shift"}
    torch.testing.assert_close(
        g.kernel, _gauss_builder(torch.tensor(1.7, dtype=torch.float64), 0.3)
    )

    def energy(std, shift):
        w = _gauss_builder(torch.tensor(std, dtype=torch.float64), shift)
        return (convolve(x, w, padding="reflect") ** 2).sum().item()

    eps = 1e-6
    fd_std = (energy(1.7 + eps, 0.3) - energy(1.7 - eps, 0.3)) / (2 * eps)
    fd_shift = (energy(1.7, 0.3 + eps) - energy(1.7, 0.3 - eps)) / (2 * eps)
    # abs as well as rel: the shift gradient can be near zero for some signals.
    assert g.grad_params["std"].item() == pytest.approx(fd_std, rel=1e-6, abs=1e-6)
    assert g.grad_params["shift"].item() == pytest.approx(fd_shift, rel=1e-6, abs=1e-6)
    # The chain rule through the taps: d/dstd = <dE/dw, dw/dstd>.
    without_params = gradient_map(x, pk, padding="reflect", wrt=("signal", "kernel"))
    assert without_params.grad_params == {}
    torch.testing.assert_close(without_params.grad_kernel, g.grad_kernel)


def _param_fd(make_kernel, value, x, eps=1e-6, **opts):
    def energy(v):
        w = make_kernel(v)
        return (convolve(x, w, **opts) ** 2).sum().item()

    return (energy(value + eps) - energy(value - eps)) / (2 * eps)


@pytest.mark.parametrize(
    "name,param,value,extra",
    [
        ("gaussian", "std", 2.3, {}),
        ("kaiser", "beta", 5.0, {}),
        ("tukey", "alpha", 0.4, {}),
        ("hann", "width", 9.5, {}),
        ("general_gaussian", "sig", 2.0, {"p": 1.5}),
    ],
)
def test_window_parameter_gradients_match_finite_differences(name, param, value, extra):
    from diffconv_core.windows import get_window

    x = torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    spec = window_kernel(name, 15, normalize="sum", **{param: value}, **extra)
    g = gradient_map(x, spec, padding="reflect")
    assert param in g.grad_params

    def make(v):
        kwargs = {**extra, param: torch.tensor(v, dtype=torch.float64)}
        return get_window(name, 15, normalize="sum", dtype=torch.float64, **kwargs)

    fd = _param_fd(make, value, x, padding="reflect")
    assert g.grad_params[param].item() == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_window_spec_tuple_is_window_kernel():
    x = torch.randn(30, dtype=torch.float64)
    a = gradient_map(x, ("gaussian", 11, {"std": 2.0}))
    b = gradient_map(x, window_kernel("gaussian", 11, std=2.0))
    torch.testing.assert_close(a.grad_params["std"], b.grad_params["std"])
    torch.testing.assert_close(a.grad_kernel, b.grad_kernel)


@pytest.mark.parametrize(
    "kind,cutoff,options",
    [
        ("lowpass", 0.3, {}),
        ("bandpass", (0.15, 0.35), {}),
        ("highpass", 3000.0, {"fs": 16000, "window": "kaiser", "beta": 6.0}),
        ("bandstop", (2000.0, 5000.0), {"fs": 16000, "window": "gaussian", "std": 5.0}),
    ],
)
def test_filter_parameter_gradients_match_finite_differences(kind, cutoff, options):
    from diffconv_core import filters

    x = torch.randn(60, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    g = gradient_map(x, filter_kernel(kind, cutoff, 21, **options))
    band = isinstance(cutoff, tuple)
    values = {"cutoff_low": cutoff[0], "cutoff_high": cutoff[1]} if band else {"cutoff": cutoff}
    values.update({k: v for k, v in options.items() if k in ("beta", "std")})
    assert set(g.grad_params) == set(values)  # fs and the window name are settings
    fixed = {k: v for k, v in options.items() if k not in values}

    def design(v):
        f64 = torch.float64
        c = torch.tensor([v["cutoff_low"], v["cutoff_high"]] if band else v["cutoff"], dtype=f64)
        extra = {k: torch.tensor(v[k], dtype=f64) for k in v if not k.startswith("cutoff")}
        return getattr(filters, kind)(21, c, dtype=torch.float64, **fixed, **extra)

    torch.testing.assert_close(g.kernel, design(values))
    for name, value in values.items():
        fd = _param_fd(lambda v, name=name: design({**values, name: v}), value, x, eps=1e-5)
        assert g.grad_params[name].item() == pytest.approx(fd, rel=1e-5, abs=1e-9), name


def test_parametric_kernel_is_built_at_the_signal_dtype():
    x = torch.randn(20, dtype=torch.float64)
    g = gradient_map(x, window_kernel("hann", 9, normalize="sum"))
    assert g.kernel.dtype == torch.float64 and g.grad_params == {}
    g32 = gradient_map(x.float(), window_kernel("gaussian", 9, std=2.0))
    assert g32.kernel.dtype == g32.grad_params["std"].dtype == torch.float32


# ----------------------------------------------------------------------------- Jacobian


def _stacked_rows(x, w, wrt, **opts):
    """Reference: one autograd backward pass per output sample."""
    xs = x.clone().requires_grad_(True)
    ws = w.clone().requires_grad_(True)
    y = convolve(xs, ws, **opts)
    target = xs if wrt == "signal" else ws
    rows = [torch.autograd.grad(y[i], target, retain_graph=True)[0] for i in range(y.shape[-1])]
    return torch.stack(rows)


@pytest.mark.parametrize("mode,padding", MODE_PADDING)
@pytest.mark.parametrize("wrt", ["signal", "kernel"])
@pytest.mark.parametrize("T,K", [(12, 5), (9, 4)])
def test_jacobian_equals_stacked_autograd_rows(mode, padding, wrt, T, K):
    gen = torch.Generator().manual_seed(T * K)
    x = torch.randn(T, dtype=torch.float64, generator=gen)
    w = torch.randn(K, dtype=torch.float64, generator=gen)
    J = jacobian(x, w, wrt, mode=mode, padding=padding)
    torch.testing.assert_close(J, _stacked_rows(x, w, wrt, mode=mode, padding=padding))
    L = convolve(x, w, mode=mode).shape[-1]
    assert J.shape == (L, T if wrt == "signal" else K)


@pytest.mark.parametrize("mode,padding", MODE_PADDING)
def test_jacobian_band_and_edge_structure(mode, padding):
    """Interior rows hold the reversed kernel on a band; edge rows fold the padding in."""
    T, K = 14, 5
    w = np.arange(1.0, K + 1)
    J = jacobian(
        torch.zeros(T, dtype=torch.float64), torch.from_numpy(w), mode=mode, padding=padding
    ).numpy()
    left = {"same": K // 2, "full": K - 1, "valid": 0}[mode]
    # Output n reads padded samples n .. n + K - 1: signal samples n - left .. n - left + K - 1.
    interior = [n for n in range(J.shape[0]) if 0 <= n - left and n - left + K - 1 < T]
    assert interior, "test sizes leave no interior row"
    for n in interior:
        band = np.zeros(T)
        band[n - left : n - left + K] = w[::-1]
        np.testing.assert_array_equal(J[n], band)
    # Toeplitz: the interior block is constant along diagonals.
    block = J[interior[0] : interior[-1] + 1]
    np.testing.assert_array_equal(block[1:, 1:], block[:-1, :-1])
    # Every row, edges included, equals the valid convolution matrix times the padding matrix.
    P = _pad_matrix(T, K, mode, padding)
    C = np.array([np.convolve(row, w, "valid") for row in P.T]).T
    np.testing.assert_allclose(J, C, rtol=0, atol=1e-12)
    edge_rows = [n for n in range(J.shape[0]) if n not in interior]
    if padding == "zeros":
        for n in edge_rows:  # zero padding only truncates the band
            assert np.count_nonzero(J[n]) < K
    else:
        # Other paddings keep every tap: each edge row still sums to the kernel's sum.
        np.testing.assert_allclose(J.sum(axis=1), w.sum())


def test_jacobian_wrt_kernel_is_signal_toeplitz():
    x = np.arange(1.0, 9.0)
    J = jacobian(torch.from_numpy(x), torch.zeros(3, dtype=torch.float64), "kernel", mode="full")
    # y[n] = sum_k w[k] x[n - k]  =>  J[n, k] = x[n - k]
    expected = np.array(
        [[x[n - k] if 0 <= n - k < 8 else 0.0 for k in range(3)] for n in range(10)]
    )
    np.testing.assert_allclose(J.numpy(), expected, rtol=0, atol=1e-12)  # any method


def test_jacobian_broadcast_channels():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 10, dtype=torch.float64, generator=gen)
    w = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    for wrt in ("signal", "kernel"):
        J = jacobian(x, w, wrt, padding="symmetric")
        assert J.shape == (2, 3, 10, 10 if wrt == "signal" else 4)
        for b in range(2):
            for c in range(3):
                ref = _stacked_rows(x[b, c], w[c], wrt, padding="symmetric")
                torch.testing.assert_close(J[b, c], ref)
    # Channels sharing a kernel share one block (a view): the limit counts it once.
    J = jacobian(torch.zeros(1000, 50), torch.ones(3), max_elements=3000)
    assert J.shape == (1000, 50, 50) and J.stride()[0] == 0
    torch.testing.assert_close(J[999], jacobian(torch.zeros(50), torch.ones(3)))
    # A 1-D signal with per-channel kernels: one block per kernel.
    J = jacobian(x[0, 0], w, "signal")
    assert J.shape == (3, 10, 10)
    torch.testing.assert_close(J[1], jacobian(x[0, 0], w[1], "signal"))


def test_jacobian_of_parametric_kernel_and_gradient_consistency():
    x = torch.randn(16, dtype=torch.float64)
    pk = ParametricKernel(_gauss_builder, {"std": 1.2, "shift": 0.0})
    J = jacobian(x, pk, padding="replicate")
    g = gradient_map(x, pk, padding="replicate")
    # Energy: dE/dx = J^T (2 y).
    torch.testing.assert_close(g.grad_signal, J.T @ (2 * g.output))


@settings(max_examples=30, deadline=None)
@given(
    T=st.integers(1, 12),
    K=st.integers(1, 12),
    mode_padding=st.sampled_from(MODE_PADDING),
    wrt=st.sampled_from(["signal", "kernel"]),
)
def test_jacobian_chain_rule_property(T, K, mode_padding, wrt):
    mode, padding = mode_padding
    gen = torch.Generator().manual_seed(T * 13 + K)
    x = torch.randn(T, dtype=torch.float64, generator=gen)
    w = torch.randn(K, dtype=torch.float64, generator=gen)
    J = jacobian(x, w, wrt, mode=mode, padding=padding)
    g = gradient_map(x, w, mode=mode, padding=padding)
    grad = g.grad_signal if wrt == "signal" else g.grad_kernel
    torch.testing.assert_close(grad, J.T @ (2 * g.output))
    # Linear in what it differentiates: J @ v reproduces the output.
    torch.testing.assert_close(J @ (x if wrt == "signal" else w), g.output)


# ----------------------------------------------------------------------------- errors


def test_jacobian_too_large_says_how_to_crop():
    with pytest.raises(ValueError, match=r"above the limit of 1,000.*crop.*--start/--duration"):
        jacobian(torch.zeros(100), torch.ones(5), max_elements=1000)
    with pytest.raises(
        ValueError, match=r"with respect to the signal would have shape \(100, 100\)"
    ):
        jacobian(torch.zeros(100), torch.ones(5), max_elements=1000)
    # The default limit refuses a minute of 48 kHz audio without allocating anything.
    with pytest.raises(ValueError, match="crop the signal"):
        jacobian(torch.zeros(48000 * 60), torch.ones(31))
    # What to cut names what makes it large: channels sharing a kernel cost nothing with
    # respect to the signal (the message said "use fewer channels" and counted them).
    with pytest.raises(
        ValueError, match=r"\(2, 100, 100\) \(1 distinct block of 100 x 100, 10,000 "
    ):
        jacobian(torch.zeros(2, 100), torch.ones(5), max_elements=1000)
    with pytest.raises(ValueError, match="use fewer kernels"):
        jacobian(torch.zeros(100), torch.ones(3, 5), max_elements=1000)
    with pytest.raises(ValueError, match="use fewer channels, use a shorter kernel"):
        jacobian(torch.zeros(2, 100), torch.ones(50), "kernel", max_elements=1000)


@pytest.mark.parametrize("wrt", ["signal", "kernel"])
def test_jacobian_on_the_meta_device(wrt):
    # An index built without device= mixed the CPU into a meta (or CUDA) kernel Jacobian.
    J = jacobian(torch.randn(2, 50, device="meta"), torch.randn(5, device="meta"), wrt,
                 padding="reflect")  # fmt: skip
    assert J.device.type == "meta" and J.shape == (2, 50, 50 if wrt == "signal" else 5)


@pytest.mark.parametrize("method", ["auto", "fft", "overlap", "direct"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_jacobian_entries_are_exact_taps_and_zeros_whatever_the_method(method, dtype):
    # Built from impulses through convolve, the Jacobian carried the method's round-off:
    # with a 1,001-tap kernel "auto" picked an FFT, and 2 million of the 2.2 million entries
    # off the band were nonzero (up to 5.7e-7 in float32). Now each entry is a tap (or a sum
    # of taps a padding folds together), exactly.
    T, K = 1500, 1001
    w = torch.randn(K, dtype=dtype, generator=torch.Generator().manual_seed(5))
    J = jacobian(torch.zeros(T, dtype=dtype), w, method=method).numpy()
    i, j = np.ogrid[:T, :T]
    index = i - j + (K - 1) // 2
    inside = (index >= 0) & (index < K)
    expected = np.where(inside, w.numpy()[np.clip(index, 0, K - 1)], 0)
    np.testing.assert_array_equal(J, expected)
    x = torch.randn(T, dtype=dtype)
    Jk = jacobian(x, w, "kernel", method=method, padding="reflect").numpy()
    padded = np.pad(x.numpy(), ((K - 1) // 2 + (K % 2 == 0), (K - 1) // 2), mode="reflect")
    expected = np.array([[padded[n + K - 1 - k] for k in range(K)] for n in range(0, T, 97)])
    np.testing.assert_array_equal(Jk[::97], expected)


@pytest.mark.parametrize(
    "kwargs,exc,message",
    [
        (dict(wrt="target"), ValueError, "wrt must be 'signal' or 'kernel'; got 'target'"),
        (dict(mode="sme"), ValueError, "mode must be one of"),
        (dict(mode="valid", padding="reflect"), ValueError, "padding='reflect'"),
    ],
)
def test_jacobian_errors(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        jacobian(torch.zeros(10), torch.ones(3), **kwargs)


def test_jacobian_names_the_shapes_that_do_not_broadcast():
    # Its one-sample probe's shapes were shown: "signal shape (2, 1) and kernel shape (3, 1)".
    with pytest.raises(ValueError, match=r"signal shape \(2, 100\) and kernel shape \(3, 5\)"):
        jacobian(torch.randn(2, 100), torch.randn(3, 5))


@pytest.mark.parametrize(
    ("describe", "error", "message"),
    [
        (lambda: window_kernel("hanx", 7), ValueError, "unknown window 'hanx'"),
        (lambda: window_kernel("gaussian", 7, std=-1.0), ValueError, "std must be > 0"),
        (lambda: window_kernel("gaussian", 7, std=1.0, foo=3), TypeError, "unexpected.*foo"),
        (lambda: filter_kernel("lowpass", 1.5, 31), ValueError, "less than 1"),
        (lambda: filter_kernel("lowpass", 0.3, 31, bogus=1), TypeError, "unexpected.*bogus"),
    ],
)
def test_kernels_are_checked_when_described(describe, error, message):
    # They were accepted, and failed only once gradient_map built them.
    with pytest.raises(error, match=message):
        describe()


def test_gradient_map_errors():
    x, w = torch.randn(10), torch.randn(3)
    with pytest.raises(
        ValueError, match="objective must be one of energy, mse, l1 or a callable; got 'l2'"
    ):
        gradient_map(x, w, "l2")
    with pytest.raises(ValueError, match=r"objective 'mse' needs a target"):
        gradient_map(x, w, "mse")
    with pytest.raises(
        ValueError, match=r"target shape \(9,\) does not match the output shape \(10,\)"
    ):
        gradient_map(x, w, "l1", target=torch.zeros(9))
    with pytest.raises(ValueError, match="target is only used by the 'mse' and 'l1' objectives"):
        gradient_map(x, w, "energy", target=torch.zeros(10))
    with pytest.raises(ValueError, match=r"scalar tensor; got shape \(10,\)"):
        gradient_map(x, w, lambda y: y * 2)
    with pytest.raises(
        ValueError, match="wrt must name some of signal, kernel, params; got 'taps'"
    ):
        gradient_map(x, w, wrt=("signal", "taps"))
    with pytest.raises(TypeError, match="kernel must be a tensor, a ParametricKernel"):
        gradient_map(x, [1.0, 2.0])
    with pytest.raises(TypeError, match="signal must be a floating-point tensor"):
        gradient_map(torch.arange(10), w)
    with pytest.raises(TypeError, match="parameter 'std' must be a real number"):
        ParametricKernel(_gauss_builder, {"std": "wide"})
    with pytest.raises(ValueError, match="filter kind must be one of lowpass"):
        filter_kernel("notch", 0.2, 11)
    with pytest.raises(ValueError, match=r"needs two cutoffs \(low, high\); got 0.2"):
        filter_kernel("bandpass", 0.2, 11)


# ----------------------------------------------------------------------------- CUDA

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("mode,padding", MODE_PADDING)
@pytest.mark.parametrize("method", ["direct", "fft", "overlap"])
def test_cuda_matches_cpu(mode, padding, method):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 200, dtype=torch.float64, generator=gen)
    target = torch.randn(3, 200 + {"same": 0, "full": 16, "valid": -16}[mode], dtype=torch.float64)
    spec = window_kernel("kaiser", 17, beta=4.0, width=13.0, normalize="sum")
    opts = dict(mode=mode, padding=padding, method=method)
    cpu = gradient_map(x, spec, "mse", target=target, **opts)
    gpu = gradient_map(x.cuda(), spec, "mse", target=target.cuda(), **opts)
    assert gpu.grad_signal.is_cuda and gpu.kernel.is_cuda and gpu.grad_params["beta"].is_cuda
    torch.testing.assert_close(gpu.grad_signal.cpu(), cpu.grad_signal)
    torch.testing.assert_close(gpu.grad_kernel.cpu(), cpu.grad_kernel)
    for name in ("beta", "width"):
        torch.testing.assert_close(gpu.grad_params[name].cpu(), cpu.grad_params[name])
    for wrt in ("signal", "kernel"):
        J = jacobian(x[0].cuda(), cpu.kernel.cuda(), wrt, **opts)
        assert J.is_cuda
        torch.testing.assert_close(J.cpu(), jacobian(x[0], cpu.kernel, wrt, **opts))


def test_window_kernel_keeps_integer_settings_fixed():
    # taylor's nbar is an integer setting: a number given for it is passed through, not made a
    # differentiable parameter (its gradient was reported as 0, as if it could be learned).
    pk = window_kernel("taylor", 9, nbar=4, sll=30.0)
    assert sorted(pk.params) == ["sll"]
    x = torch.randn(1, 64, dtype=torch.float64)
    result = gradient_map(x, pk)
    assert sorted(result.grad_params) == ["sll"]
    expected = get_window("taylor", 9, nbar=4, sll=30.0, dtype=torch.float64)
    torch.testing.assert_close(result.kernel, expected)


def test_parametric_kernel_params_must_be_a_mapping():
    # An AttributeError ('int' object has no attribute 'items') before.
    with pytest.raises(TypeError, match="params must map names to values; got 5"):
        ParametricKernel(lambda: torch.ones(3), 5)
