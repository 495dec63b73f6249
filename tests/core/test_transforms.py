"""``convolve`` under ``torch.func`` transforms (vmap, grad, jacrev, jacfwd, jvp, hessian) and
forward-mode AD, checked against scipy and analytic float64 Jacobians."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torch.autograd.forward_ad as forward_ad
from torch import func

import diffconv_core
from diffconv_core._transforms import transforms_active

from .conftest import (
    METHODS,
    MODE_PADDINGS,
    TOLERANCE,
    assert_matches,
    make_pair,
    periodic_index,
    reference,
    relative_error,
    same_mode_gradients,
)


def _jacobians(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d convolve(x, w, "same") / dx and / dw for one row (zeros padding): output m is
    sum_k w[k] x[m + lo - k] with lo = (K - 1) // 2."""
    T, K = x.shape[-1], w.shape[-1]
    lo = (K - 1) // 2
    by_x, by_w = np.zeros((T, T)), np.zeros((T, K))
    for m in range(T):
        for k in range(K):
            t = m + lo - k
            if 0 <= t < T:
                by_x[m, t] += w[k]
                by_w[m, k] = x[t]
    return by_x, by_w


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode,padding", MODE_PADDINGS)
def test_vmap_over_signals_kernels_and_both(method, mode, padding):
    x, w = make_pair((3, 2), (3,), 40, 7)
    for in_dims, kernel in [((0, None), w[0]), ((None, 0), w), ((0, 0), w)]:
        signal = x[0] if in_dims[0] is None else x

        def conv(a, b):
            return diffconv_core.convolve(a, b, mode, padding=padding, method=method)

        got = func.vmap(conv, in_dims=in_dims)(signal, kernel)
        expected = reference(
            signal if in_dims[0] is not None else signal.expand(3, 2, 40),
            kernel.unsqueeze(-2) if in_dims[1] is not None else kernel,
            mode,
            padding,
        )
        assert_matches(got, expected, torch.float64, f"vmap{in_dims} {method} {mode} {padding}")


@pytest.mark.parametrize("method", METHODS)
def test_vmap_with_a_captured_kernel_that_requires_grad(method):
    # Neither operand is batched (the signal and a learnable kernel come from outside the
    # vmapped function, only the targets are mapped), but autograd records the convolution
    # for an ordinary backward afterwards: vmap refuses custom autograd Functions whatever
    # their inputs ("must override the setup_context staticmethod").
    x, w0 = make_pair((), (), 40, 7)
    w = w0.clone().requires_grad_()
    targets = torch.randn(3, 40, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def loss(target):
        return (diffconv_core.convolve(x, w, method=method) - target).pow(2).sum()

    losses = func.vmap(loss)(targets)
    losses.sum().backward()
    residuals = reference(x, w0, "same") - targets.numpy()
    assert relative_error(losses, (residuals**2).sum(-1)) <= 1e-10
    _, expected_w = same_mode_gradients(x[None], w0, torch.from_numpy(2 * residuals.sum(0))[None])
    assert relative_error(w.grad, expected_w) <= 1e-10


@pytest.mark.parametrize("method", METHODS)
def test_per_sample_gradients(method):
    # The classic use of vmap(grad(...)): one gradient per example, in one call.
    x, w = make_pair((5,), (), 60, 9)
    targets = torch.randn(5, 60, dtype=torch.float64)

    def loss(signal, kernel, target):
        out = diffconv_core.convolve(signal, kernel, method=method)
        return 0.5 * ((out - target) ** 2).sum()

    grads_x, grads_w = func.vmap(func.grad(loss, argnums=(0, 1)), in_dims=(0, None, 0))(
        x, w, targets
    )
    for i in range(5):
        residual = diffconv_core.convolve(x[i : i + 1], w, method="direct") - targets[i]
        expected_x, expected_w = same_mode_gradients(x[i : i + 1], w, residual)
        assert relative_error(grads_x[i], expected_x[0]) <= 1e-10
        assert relative_error(grads_w[i], expected_w) <= 1e-10


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("K", [1, 6, 9])
def test_jacrev_and_jacfwd_are_the_convolution_matrices(method, K):
    x, w = make_pair((), (), 25, K)
    by_x, by_w = _jacobians(x.numpy(), w.numpy())

    def conv(a, b):
        return diffconv_core.convolve(a, b, method=method)

    for jacobian in (func.jacrev, func.jacfwd):
        got_x, got_w = jacobian(conv, argnums=(0, 1))(x, w)
        np.testing.assert_allclose(got_x.numpy(), by_x, atol=1e-12)
        np.testing.assert_allclose(got_w.numpy(), by_w, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("K", [1, 6, 9])
def test_vectorized_autograd_jacobians_are_the_convolution_matrices(method, K):
    # torch.autograd.functional.jacobian(vectorize=True) runs the methods' own backward
    # passes under vmap (autograd.grad with is_grads_batched=True), with a batched gradient.
    x, w = make_pair((), (), 25, K)
    by_x, by_w = _jacobians(x.numpy(), w.numpy())

    def conv(a, b):
        return diffconv_core.convolve(a, b, method=method)

    got_x, got_w = torch.autograd.functional.jacobian(conv, (x, w), vectorize=True)
    np.testing.assert_allclose(got_x.numpy(), by_x, atol=1e-12)
    np.testing.assert_allclose(got_w.numpy(), by_w, atol=1e-12)


@pytest.mark.parametrize("padding", ["reflect", "circular"])
def test_vectorized_autograd_jacobians_of_a_padded_full_convolution(padding):
    # "full" with padding: the padded signal (16 samples) is a fast FFT length, so the FFT's
    # backward keeps all of its inverse transform, a slice of the whole axis: an alias,
    # which vmap could not batch.
    T, K = 12, 3
    x, w = make_pair((), (), T, K)
    padded = np.zeros((T + 2 * (K - 1), T))  # the padding as a matrix: padded = P @ x
    padded[np.arange(padded.shape[0]), periodic_index(T, K - 1, K - 1, padding)] = 1.0
    shifts = np.stack([padded[m + K - 1 - np.arange(K)] for m in range(T + K - 1)])
    by_x = np.einsum("k,mkt->mt", w.numpy(), shifts)  # out[m] = sum_k w[k] (P x)[m + K-1 - k]
    by_w = shifts @ x.numpy()

    def conv(a, b):
        return diffconv_core.convolve(a, b, "full", padding=padding, method="fft")

    got_x, got_w = torch.autograd.functional.jacobian(conv, (x, w), vectorize=True)
    np.testing.assert_allclose(got_x.numpy(), by_x, atol=1e-12)
    np.testing.assert_allclose(got_w.numpy(), by_w, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_hessian_of_a_quadratic_loss(method):
    # f(w) = |convolve(x, w)|^2 has the Hessian 2 J^T J with J the kernel Jacobian.
    x, w = make_pair((), (), 30, 5)
    _, by_w = _jacobians(x.numpy(), w.numpy())
    hessian = func.hessian(lambda b: diffconv_core.convolve(x, b, method=method).pow(2).sum())(w)
    np.testing.assert_allclose(hessian.numpy(), 2 * by_w.T @ by_w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_jvp_and_dual_tensors_give_the_bilinear_tangent(method):
    # d convolve(x, w) = convolve(dx, w) + convolve(x, dw): scipy on each term.
    x, w = make_pair((2,), (), 50, 8, seed=1)
    dx, dw = make_pair((2,), (), 50, 8, seed=2)
    expected = reference(dx, w, "full") + reference(x, dw, "full")

    def conv(a, b):
        return diffconv_core.convolve(a, b, "full", method=method)

    _, tangent = func.jvp(conv, (x, w), (dx, dw))
    assert relative_error(tangent, expected) <= 1e-10
    with forward_ad.dual_level():
        out = conv(forward_ad.make_dual(x, dx), forward_ad.make_dual(w, dw))
        tangent = forward_ad.unpack_dual(out).tangent
    assert relative_error(tangent, expected) <= 1e-10


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "with_nan"])
def test_huge_float32_values_do_not_overflow_under_transforms(method, with_nan):
    # An rFFT of 1,000 float32 samples near 1e37 overflowed: vmap and forward-mode AD gave
    # NaN everywhere where eager mode (which scales by powers of two) gives ~3e35. (float32
    # overflowing there is now computed in float64; float64 itself is scaled.)
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(2, 1000, generator=gen, dtype=torch.float64) * 1e37 + 1e36).float()
    w = (torch.rand(31, generator=gen, dtype=torch.float64) * 1e-3).float()
    if with_nan:  # the finite parts beside a NaN take the same scaling
        x[1, 200] = float("nan")

    def conv(a, b):
        return diffconv_core.convolve(a, b, method=method)

    expected = np.stack(
        [scipy.signal.convolve(r, w.double().numpy(), "same") for r in x.double().numpy()]
    )
    finite = np.isfinite(expected)
    assert np.abs(expected[finite]).max() < torch.finfo(torch.float32).max / 100
    for got in (
        conv(x, w),
        func.vmap(lambda a: conv(a, w))(x),
        func.jvp(conv, (x, w), (torch.zeros_like(x), torch.zeros_like(w)))[0],
    ):
        assert np.array_equal(np.isfinite(got.numpy()), finite)
        assert relative_error(got.numpy()[finite], expected[finite]) <= 1e-5
    dx = torch.rand(2, 1000, generator=gen)  # the tangent's own scale is ordinary
    with forward_ad.dual_level():
        out = forward_ad.unpack_dual(conv(forward_ad.make_dual(x, dx), w))
    assert np.array_equal(np.isfinite(out.primal.numpy()), finite)
    assert relative_error(out.primal.numpy()[finite], expected[finite]) <= 1e-5
    tangent = np.stack(
        [scipy.signal.convolve(r, w.double().numpy(), "same") for r in dx.double().numpy()]
    )
    tangent_finite = np.isfinite(out.tangent.numpy())
    assert tangent_finite[0].all()
    assert relative_error(out.tangent[0].numpy(), tangent[0]) <= 1e-5
    # Per-sample gradients through the scaled sums: the signal's is the kernel's sum, finite.
    per_sample = func.vmap(func.grad(lambda a: conv(a, w).sum()))(x[:1])
    torch.testing.assert_close(per_sample, func.grad(lambda a: conv(a, w).sum())(x[:1]))
    assert torch.isfinite(per_sample).all()


@pytest.mark.parametrize("method", METHODS)
def test_a_float32_result_past_the_dtypes_range_keeps_its_small_outputs_finite_under_vmap(method):
    # 1e30 samples under 1e20 taps, zeros after the first quarter: outputs near 1e50 (Inf in
    # float32) and exact zeros, which the scaled rFFT's round-off of 1e50 made Inf.
    gen = torch.Generator().manual_seed(4)
    x = torch.zeros(2, 4000)
    x[:, :1000] = torch.randn(2, 1000, generator=gen) * 1e30
    w = torch.hann_window(255, periodic=False) * 1e20
    expected = np.stack(
        [scipy.signal.convolve(r, w.double().numpy(), "same", "direct") for r in x.double().numpy()]
    )
    largest = float(torch.finfo(torch.float32).max)
    small, huge = np.abs(expected) < largest / 2, np.abs(expected) > 2 * largest
    assert small.sum() > 5000 and huge.sum() > 1000

    def conv(a, b):
        return diffconv_core.convolve(a, b, method=method)

    for got in (
        func.vmap(lambda a: conv(a, w))(x),
        func.jvp(conv, (x, w), (torch.zeros_like(x), torch.zeros_like(w)))[0],
    ):
        assert got.dtype == torch.float32
        assert torch.isfinite(got[small]).all()
        scale = np.abs(expected).max()
        assert relative_error(got.numpy()[small], expected[small], scale=scale) < 1e-12
        assert torch.equal(got[huge], torch.from_numpy(expected[huge]).float())


@pytest.mark.parametrize("method", METHODS)
def test_scaling_under_transforms_leaves_per_sample_gradients_finite(method):
    # Scaled to largest values near 1 (eager's choice), float32 samples near 1e36 under a unit
    # kernel multiplied the incoming gradient by 2**121 inside the FFT: NaN instead of 31.
    x, w = torch.full((2, 1000), 1e36), torch.ones(31)
    out = func.vmap(lambda a: diffconv_core.convolve(a, w, method=method))(x)
    torch.testing.assert_close(out, diffconv_core.convolve(x, w, method=method))
    grads = func.vmap(func.grad(lambda a: diffconv_core.convolve(a, w, method=method).sum()))(x)
    eager = x.clone().requires_grad_()
    diffconv_core.convolve(eager, w, method=method).sum().backward()
    torch.testing.assert_close(grads, eager.grad)
    assert grads[0, 500] == 31


@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_values_stay_local_under_vmap(method):
    x, w = make_pair((3,), (), 80, 7, dtype=torch.float32)
    x[0, 10], x[1, 40], x[2, 79] = float("nan"), float("inf"), float("-inf")
    w[3] = 0.0  # an Inf under a zero tap is NaN in the direct sum
    got = func.vmap(lambda a: diffconv_core.convolve(a, w, method=method))(x)
    expected = np.stack([scipy.signal.convolve(r, w.double().numpy(), "same") for r in x.double()])
    assert np.array_equal(np.isnan(got.numpy()), np.isnan(expected))
    assert np.array_equal(np.isposinf(got.numpy()), np.isposinf(expected))
    assert np.array_equal(np.isneginf(got.numpy()), np.isneginf(expected))
    finite = np.isfinite(expected)
    assert relative_error(got.numpy()[finite], expected[finite]) <= TOLERANCE[torch.float32]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("where", ["signal", "kernel"])
def test_nonfinite_values_under_jvp(method, where):
    # Outside vmap the values can be read, so only operands holding a NaN or Inf pay for the
    # non-finite handling; the primal is then scipy's IEEE direct sum, the tangent that of
    # the outputs it leaves finite (the covered ones are constants).
    x, w = make_pair((2,), (), 60, 7, seed=5)
    dx, dw = make_pair((2,), (), 60, 7, seed=6)
    if where == "signal":
        x[0, 20], x[1, 50] = float("nan"), float("-inf")
    else:
        w[2] = float("inf")
    primal, tangent = func.jvp(
        lambda a, b: diffconv_core.convolve(a, b, method=method), (x, w), (dx, dw)
    )
    expected = np.stack([scipy.signal.convolve(r, w.numpy(), "same") for r in x.numpy()])
    assert np.array_equal(np.isnan(primal.numpy()), np.isnan(expected))
    assert np.array_equal(np.isinf(primal.numpy()), np.isinf(expected))
    finite = np.isfinite(expected)
    assert relative_error(primal.numpy()[finite], expected[finite]) <= 1e-10
    clean_x, clean_w = x.nan_to_num(0, 0, 0), w.nan_to_num(0, 0, 0)
    bilinear = reference(dx, clean_w, "same") + reference(clean_x, dw, "same")
    assert (tangent.numpy()[~finite] == 0).all()
    assert relative_error(tangent.numpy()[finite], bilinear[finite]) <= 1e-10


def test_finite_operands_skip_the_nonfinite_handling(monkeypatch):
    from diffconv_core import _nonfinite

    calls = []
    original = _nonfinite._direct_sum_nonfinite
    monkeypatch.setattr(
        _nonfinite, "_direct_sum_nonfinite", lambda *a: calls.append(1) or original(*a)
    )
    # Under vmap the values are read under its wrapper, one decision for the whole batch:
    # it used to run the handling whatever the data, 150x the convolution's own time.
    x, w = make_pair((3,), (), 50, 5)
    func.grad(lambda b: diffconv_core.convolve(x, b).pow(2).sum())(w)
    func.jvp(lambda a: diffconv_core.convolve(a, w), (x,), (x,))
    func.vmap(lambda a: diffconv_core.convolve(a, w))(x)
    func.vmap(func.grad(lambda a: diffconv_core.convolve(a, w).pow(2).sum()))(x)
    assert calls == []
    x[1, 7] = float("nan")
    func.vmap(lambda a: diffconv_core.convolve(a, w))(x)
    assert calls == [1]


def test_on_a_cpu_only_an_explicit_direct_takes_conv1d(monkeypatch):
    # conv1d on one channel is several times slower than one rFFT on a CPU (64 x 8,000,
    # 31 taps: 4.2 against 0.8 ms); "auto" took it for up to 64 taps.
    from diffconv_core import _transforms

    used = []
    original = _transforms.conv1d_range
    monkeypatch.setattr(_transforms, "conv1d_range", lambda *a: used.append(1) or original(*a))
    x, w = make_pair((3,), (), 200, 31)
    for method in ("auto", "fft", "overlap"):
        func.vmap(lambda a, m=method: diffconv_core.convolve(a, w, method=m))(x)
    assert used == []
    func.vmap(lambda a: diffconv_core.convolve(a, w, method="direct"))(x)
    assert used == [1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dtypes_are_kept_under_vmap(dtype):
    x, w = make_pair((3,), (), 64, 11, dtype=dtype)
    got = func.vmap(lambda a: diffconv_core.convolve(a, w))(x)
    assert_matches(got, reference(x.double(), w.double(), "same"), dtype, f"vmap {dtype}")


def test_correlate_under_transforms():
    x, w = make_pair((4,), (), 33, 6)
    got = func.vmap(lambda a: diffconv_core.correlate(a, w, "valid"))(x)
    assert_matches(got, reference(x, w, "valid", correlate=True), torch.float64, "correlate")


def test_detection():
    x = torch.randn(3)
    assert not transforms_active(x)
    assert func.vmap(lambda a: a * transforms_active(a))(torch.ones(2, 3)).all()
    with forward_ad.dual_level():
        assert not transforms_active(x)
        assert transforms_active(forward_ad.make_dual(x, torch.ones(3)))


@pytest.mark.parametrize("edges", ["reflect", "zeros", "renormalize"])
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("with_gap", [False, True])
def test_smooth_under_vmap_is_smooth(edges, nan_policy, with_gap):
    # smooth asks whether any sample is NaN, which vmap cannot answer: "omit" then takes its
    # NaN-aware path for every row, which must give what smooth gives on the whole batch.
    from diffconv_core.smooth import smooth

    x, _ = make_pair((3,), (), 120, 1)
    if with_gap:
        x[0, 50:60] = float("nan")
    got = func.vmap(lambda s: smooth(s, "hann", 15, edges=edges, nan_policy=nan_policy))(x)
    expected = smooth(x, "hann", 15, edges=edges, nan_policy=nan_policy)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_smooth_nan_policy_raise_under_vmap_says_why():
    from diffconv_core.smooth import smooth

    with pytest.raises(ValueError, match="nan_policy='raise' must look at the data"):
        func.vmap(lambda s: smooth(s, nan_policy="raise"))(torch.randn(2, 50))


def test_learnable_window_layer_under_functional_call():
    from diffconv_core.nn import WindowConv

    layer = WindowConv("gaussian", 21, learn="params", std=3.0, dtype=torch.float64)
    x = torch.randn(4, 90, dtype=torch.float64)
    params = dict(layer.named_parameters())
    grads = func.grad(lambda p: func.functional_call(layer, p, (x,)).pow(2).sum())(params)
    layer(x).pow(2).sum().backward()  # the custom-backward path, independently
    torch.testing.assert_close(grads["std"], layer.std.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(func.vmap(layer)(x), layer(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["direct", "fft", "overlap", "auto"])
@pytest.mark.parametrize("mode, length", [("same", 100), ("full", 104), ("valid", 96)])
def test_vmap_over_an_empty_batch(method, mode, length):
    # MKL refused the empty FFT plan ("Inconsistent configuration parameters") and the
    # direct path's reshape failed: an empty batch (the last of a filtered dataset) must
    # give an empty result, and so must its gradients.
    w = torch.randn(5, dtype=torch.float64)

    def run(x):
        return diffconv_core.convolve(x, w, mode, method=method)

    empty = torch.zeros(0, 100, dtype=torch.float64)
    assert func.vmap(run)(empty).shape == (0, length)
    signal = torch.ones(100, dtype=torch.float64)
    no_kernels = torch.zeros(0, 5, dtype=torch.float64)
    over_kernels = func.vmap(lambda k: diffconv_core.convolve(signal, k, mode, method=method))
    assert over_kernels(no_kernels).shape == (0, length)
    grads = func.vmap(func.grad(lambda x: run(x).pow(2).sum()))(empty)
    assert grads.shape == (0, 100)


WINDOW_PARAMETER_BATCHES = [
    ("kaiser", "beta", [2.0, 5.0, 8.0], {}),
    ("gaussian", "std", [1.5, 3.0, 6.0], {}),
    ("tukey", "alpha", [0.2, 0.5, 0.9], {}),
    ("general_gaussian", "sig", [2.0, 3.0, 5.0], {"p": 1.5}),
    ("taylor", "sll", [25.0, 30.0, 40.0], {}),
    ("chebwin", "at", [50.0, 80.0, 100.0], {}),
    ("dpss", "NW", [1.5, 2.5, 3.0], {}),
    ("hann", "width", [10.0, 15.5, 21.0], {}),
]


@pytest.mark.parametrize("normalize", [None, "sum"])
@pytest.mark.parametrize("name, param, values, fixed", WINDOW_PARAMETER_BATCHES)
def test_vmap_over_window_parameters(name, param, values, fixed, normalize):
    # The range checks read the parameters' values, which vmap refused to give from a batched
    # tensor ("data-dependent control flow"): they now read the tensor under the wrapper.
    batch = torch.tensor(values, dtype=torch.float64)

    def window(value):
        return diffconv_core.windows.get_window(
            name, 21, normalize=normalize, **fixed, **{param: value}
        )

    expected = torch.stack([window(v) for v in batch])
    torch.testing.assert_close(func.vmap(window)(batch), expected, rtol=1e-12, atol=1e-12)


def test_vmap_range_check_covers_the_whole_batch():
    with pytest.raises(ValueError, match="kaiser parameter beta must be"):
        func.vmap(lambda b: diffconv_core.windows.kaiser(9, b))(torch.tensor([2.0, -1.0]))


def test_ensemble_of_learnable_window_layers_under_vmap():
    # torch.func's model-ensembling recipe: several layers' parameters stacked, one vmap for
    # their outputs and per-model gradients.
    import copy

    from diffconv_core.nn import WindowConv

    layers = [
        WindowConv("gaussian", 15, learn="params", std=s, dtype=torch.float64)
        for s in (1.5, 2.5, 4.0)
    ]
    params, buffers = func.stack_module_state(layers)
    template = copy.deepcopy(layers[0]).to("meta")
    x = torch.randn(4, 200, dtype=torch.float64)

    def loss(p, b):
        return func.functional_call(template, (p, b), (x,)).pow(2).mean()

    grads = func.vmap(func.grad(loss))(params, buffers)
    for i, layer in enumerate(layers):
        layer.zero_grad()
        layer(x).pow(2).mean().backward()
        torch.testing.assert_close(grads["std"][i], layer.std.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore")  # dynamo's notes on lru_cache and complex tensors
def test_torch_compile_gives_the_eager_values_and_gradients():
    x0, w0 = make_pair((3,), (), 500, 21)

    def loss(a, b):
        return diffconv_core.convolve(a, b, method="fft").pow(2).sum()

    x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    torch.compile(loss)(x, w).backward()
    expected_x, expected_w = same_mode_gradients(
        x0, w0, 2 * diffconv_core.convolve(x0, w0, method="direct")
    )
    assert relative_error(x.grad, expected_x) <= 1e-10
    assert relative_error(w.grad, expected_w) <= 1e-10


@pytest.mark.filterwarnings("ignore")
def test_torch_compile_runs_the_convolution_eagerly_without_recompiling_per_length():
    # Traced, the method choice and piece plans depend on the shapes: every new signal length
    # compiled the convolution again (28 frames for 6 lengths, 3-6 s each with inductor).

    w = torch.hann_window(301, periodic=False, dtype=torch.float64)
    _assert_compiled_lengths_settle(w, (3000, 3500, 4100), (5000, 7000, 9000))


def _assert_compiled_lengths_settle(w, first_lengths, later_lengths):
    # A compiled model around convolve: once the first lengths have been seen (dynamic shapes
    # from the second on), the later ones compile nothing more, with eager's values.
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()

    def model(a, b):
        return torch.tanh(diffconv_core.convolve(a * 2, b)).sum(-1)

    compiled = torch.compile(model, backend=counter)
    for T in first_lengths:
        x = torch.randn(4, T, dtype=torch.float64)
        torch.testing.assert_close(compiled(x, w), model(x, w))
    settled = counter.frame_count
    for T in later_lengths:
        x = torch.randn(4, T, dtype=torch.float64)
        torch.testing.assert_close(compiled(x, w), model(x, w))
    assert counter.frame_count == settled


@pytest.mark.parametrize("grad", [False, True])
def test_torch_compile_does_not_recompile_when_the_picked_method_changes(monkeypatch, grad):
    # The FFT path's result was a view, overlap-save's not: code compiled after the graph
    # break guarded on the view's base and recompiled when a new length changed the pick.
    from diffconv_core import convolution

    monkeypatch.setattr(
        convolution, "pick_method", lambda batch, T, *rest: "fft" if T < 4000 else "overlap"
    )
    w = torch.hann_window(31, periodic=False, dtype=torch.float64, requires_grad=grad)
    _assert_compiled_lengths_settle(w, (3000, 3500, 3700), (5000, 7000, 3800, 9000))


@pytest.mark.parametrize("kind", ["window", "filter"])
def test_torch_compile_of_a_learnable_window_or_filter_designs_it_eagerly(kind):
    # Traced, the design's range checks broke the graph at each .item(), recompiled per
    # dtype, and dynamo warned that it cannot trace functorch's wrapper test. Designed
    # eagerly (one graph break), the values and gradients are the eager module's.
    import warnings

    from torch._dynamo.testing import CompileCounter

    from diffconv_core.nn import FIRFilter, WindowConv

    def make():
        if kind == "window":
            return WindowConv("gaussian", 41, learn="params", std=3.0, dtype=torch.float64)
        return FIRFilter("bandpass", [300.0, 3400.0], 63, fs=16000.0, dtype=torch.float64)

    torch._dynamo.reset()
    eager, layer = make(), make()
    parameter = "std" if kind == "window" else "cutoff"
    counter = CompileCounter()
    compiled = torch.compile(layer, backend=counter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for T in (300, 350, 410, 500, 700):
            x = torch.randn(2, T, dtype=torch.float64)
            compiled(x).pow(2).sum().backward()
            eager(x).pow(2).sum().backward()
            torch.testing.assert_close(compiled(x), eager(x), rtol=0, atol=0)
            got, expected = getattr(layer, parameter).grad, getattr(eager, parameter).grad
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
            if T == 410:
                settled = counter.frame_count
    assert counter.frame_count == settled
    assert not [w for w in caught if "functorch" in str(w.message)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_transforms_on_cuda(method):
    # The plain path on a GPU: conv1d (cuDNN) or cuFFT, under vmap, grad and jvp, with a NaN.
    x, w = make_pair((4,), (), 300, 21, seed=7)
    x[1, 100] = float("nan")
    dx, _ = make_pair((4,), (), 300, 21, seed=8)
    xc, wc, dxc = x.cuda(), w.cuda(), dx.cuda()

    def conv(a, b):
        return diffconv_core.convolve(a, b, method=method)

    got = func.vmap(conv, in_dims=(0, None))(xc, wc).cpu()
    expected = np.stack([scipy.signal.convolve(r, w.numpy(), "same") for r in x.numpy()])
    assert np.array_equal(np.isnan(got.numpy()), np.isnan(expected))
    finite = np.isfinite(expected)
    assert relative_error(got.numpy()[finite], expected[finite]) <= 1e-10
    _, tangent = func.jvp(lambda a: conv(a, wc), (xc,), (dxc,))
    bilinear = reference(dx, w, "same")
    assert relative_error(tangent.cpu().numpy()[finite], bilinear[finite]) <= 1e-10
    clean = x.nan_to_num(0.0)
    grads = func.vmap(func.grad(lambda a, b: conv(a, b).pow(2).sum(), argnums=1), (0, None))
    per_row = grads(clean.cuda(), wc).cpu()
    for i in range(4):
        residual = 2 * diffconv_core.convolve(clean[i : i + 1], w, method="direct")
        _, expected_w = same_mode_gradients(clean[i : i + 1], w, residual)
        assert relative_error(per_row[i], expected_w) <= 1e-10
