"""diffconv_core.smooth against a direct numpy reference and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffconv_core.smooth import EDGES, smooth

from .conftest import DEVICES

NUMPY_PAD = {
    "reflect": "reflect",
    "symmetric": "symmetric",
    "replicate": "edge",
    "circular": "wrap",
}


def reference(x, w, edges, nan_policy):
    """Direct sum, sample by sample, of the documented definitions (1-D numpy)."""
    w = w / w.sum()
    T, K = len(x), len(w)
    if edges in ("zeros", "renormalize"):
        xp = np.pad(x, K)  # zeros past the ends
        inside = np.pad(np.ones(T, dtype=bool), K)
    else:
        xp = np.pad(x, K, mode=NUMPY_PAD[edges])
        inside = np.ones(T + 2 * K, dtype=bool)
    out = np.empty(T)
    for i in range(T):
        # scipy's "same": output i is full-convolution sample i + (K - 1) // 2.
        idx = i + (K - 1) // 2 - np.arange(K) + K
        values = xp[idx]
        if nan_policy == "propagate":
            if edges == "renormalize":
                out[i] = np.sum(w * values) / np.sum(w[inside[idx]])
            else:
                out[i] = np.sum(w * values)
            continue
        valid = ~np.isnan(values)
        if edges == "renormalize":
            valid &= inside[idx]
        if not np.any(valid & (w != 0)):
            out[i] = np.nan
        else:
            out[i] = np.sum(w[valid] * values[valid]) / np.sum(w[valid])
    return out


def _signal(rng, T, nan_runs=()):
    x = rng.standard_normal(T)
    for start, stop in nan_runs:
        x[start:stop] = np.nan
    return x


WINDOWS = [("hann", {}), ("boxcar", {}), ("gaussian", {"std": 2.5})]


@pytest.mark.parametrize("edges", EDGES)
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_against_numpy_reference(edges, nan_policy):
    rng = np.random.default_rng(7)
    scipy_windows = scipy.signal.windows
    for T in (9, 40):
        for length in (1, 4, 5, 31):
            for name, params in WINDOWS:
                if name == "hann" and length < 3:
                    continue
                runs = ((2, 3), (T - 1, T)) if T < 20 else ((3, 5), (20, 35))
                x = _signal(rng, T, runs)
                ref_w = getattr(scipy_windows, name)(length, **params)
                ref = reference(x, ref_w, edges, nan_policy)
                got = smooth(
                    torch.from_numpy(x), name, length, edges=edges, nan_policy=nan_policy, **params
                )
                msg = f"T={T} length={length} window={name}"
                np.testing.assert_allclose(got.numpy(), ref, atol=1e-10, err_msg=msg)


@pytest.mark.parametrize("edges", EDGES)
def test_without_nans_both_policies_agree_with_reference(edges):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 25))
    for length in (6, 7):
        want = np.stack(
            [
                [
                    reference(x[i, j], scipy.signal.windows.hann(length), edges, "omit")
                    for j in range(3)
                ]
                for i in range(2)
            ]
        )
        for policy in ("propagate", "omit", "raise"):
            got = smooth(torch.from_numpy(x), "hann", length, edges=edges, nan_policy=policy)
            assert got.shape == x.shape
            np.testing.assert_allclose(got.numpy(), want, atol=1e-10)


def test_zeros_edges_equal_scipy_same_mode_even_and_odd():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(50)
    for length in (1, 2, 8, 9, 64):
        w = scipy.signal.windows.gaussian(length, 3.0)
        ref = scipy.signal.convolve(x, w / w.sum(), mode="same")
        got = smooth(torch.from_numpy(x), "gaussian", length, edges="zeros", std=3.0)
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)


def test_float32_and_window_forms():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(64).astype(np.float32)
    w = scipy.signal.windows.kaiser(15, 6.0)
    ref = reference(x.astype(np.float64), w, "reflect", "propagate")
    for window in (("kaiser", 6.0), 6.0):
        got = smooth(torch.from_numpy(x), window, 15)
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)
    got = smooth(torch.from_numpy(x), "kaiser", 15, beta=6.0)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)


def test_renormalize_has_no_droop_at_the_ends():
    x = torch.full((30,), 5.0, dtype=torch.float64)
    out = smooth(x, "hann", 11, edges="renormalize")
    torch.testing.assert_close(out, x)
    drooped = smooth(x, "hann", 11, edges="zeros")
    assert drooped[0] < 4.0


def test_omit_all_nan_window_stays_nan_and_inf_propagates():
    x = torch.tensor([1.0, float("nan"), float("nan"), float("nan"), float("nan"), 2.0, 3.0])
    out = smooth(x.double(), "boxcar", 3, nan_policy="omit", edges="replicate")
    assert torch.isnan(out[2:4]).all() and torch.isfinite(out[[0, 1, 4, 5, 6]]).all()
    y = torch.tensor([1.0, 2.0, float("inf"), 3.0, 4.0, 5.0, 6.0, 7.0], dtype=torch.float64)
    y[6] = float("nan")
    out = smooth(y, "boxcar", 3, nan_policy="omit", edges="reflect")
    assert torch.isinf(out[1:4]).all()
    assert torch.isfinite(out[[0, 4, 5, 6, 7]]).all()


def test_gradients():
    rng = np.random.default_rng(5)
    x = torch.from_numpy(_signal(rng, 16, ((4, 6),))).requires_grad_()
    std = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    width = torch.tensor(6.3, dtype=torch.float64, requires_grad=True)

    def omit(x, std):
        return smooth(x, "gaussian", 7, edges="renormalize", nan_policy="omit", std=std)

    assert torch.autograd.gradcheck(omit, (x, std))
    clean = torch.from_numpy(rng.standard_normal((2, 16))).requires_grad_()
    for edges in ("reflect", "zeros", "renormalize"):
        assert torch.autograd.gradcheck(
            lambda x, w, e=edges: smooth(x, "hann", 9, edges=e, width=w), (clean, width)
        )
    # NaN samples get no gradient; the others do.
    omit(x, std).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[4:6] == 0).all()


@pytest.mark.parametrize("layout", ["scattered", "beside_a_gap"])
@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("edges", EDGES)
def test_window_gradient_is_finite_beside_non_finite_samples(edges, nan_policy, method, layout):
    # A quotient's gradient to its denominator is -grad * out / den**2: at a non-finite output
    # the loss leaves out, 0 * inf gave a NaN that the window's weight summed into d/d std.
    # Beside a long gap "omit" also sums some outputs directly (inf * tap there, the same).
    x = torch.from_numpy(np.random.default_rng(9).standard_normal(200))
    if layout == "scattered":
        x[50], x[120] = float("nan"), float("inf")
    else:
        x[60:140], x[55], x[142] = float("nan"), float("inf"), float("inf")
    std = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)

    def smoothed(std):
        return smooth(x, "gaussian", 41, std=std, edges=edges, nan_policy=nan_policy, method=method)

    y = smoothed(std)
    kept = torch.isfinite(y)
    assert kept.any() and not kept.all()
    (grad,) = torch.autograd.grad(y[kept].sum(), std)
    step = 1e-6
    with torch.no_grad():
        ahead, behind = smoothed(std + step)[kept].sum(), smoothed(std - step)[kept].sum()
    np.testing.assert_allclose(grad.item(), (ahead - behind).item() / (2 * step), rtol=1e-6)


@pytest.mark.parametrize("method", ["direct", "fft", "overlap", "auto"])
@pytest.mark.parametrize("edges", EDGES)
def test_omit_beside_gaps_where_only_the_window_tails_remain(method, edges):
    # A Gaussian of std 2 over 41 taps weighs 1e-22 at its ends: across a 39-sample gap the
    # middle outputs see two such taps. Their ratio is exact as direct sums; as a difference
    # of window sums, or through a transform (round-off 1e-16 of the window), it gave +-inf,
    # 0 or -35.7 instead of 49, and each method another. Blackman's 3-tap ends are round-off
    # (-1.4e-17): the same question at the smallest scale.
    x = np.arange(100.0)
    x[30:69] = np.nan
    w = scipy.signal.windows.gaussian(41, 2.0)
    got = smooth(torch.from_numpy(x), "gaussian", 41, std=2.0, edges=edges, nan_policy="omit",
                 method=method).numpy()  # fmt: skip
    np.testing.assert_allclose(got, reference(x, w, edges, "omit"), rtol=1e-9, atol=1e-9)
    assert got[49] == pytest.approx(49.0, rel=1e-12)
    if edges in ("zeros", "renormalize", "reflect", "symmetric", "replicate"):
        # positive taps: every output a weighted mean of nearby valid samples (or zeros)
        assert np.all(got >= 0) and np.all(got <= 99)
    y = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    got = smooth(torch.from_numpy(y), "blackman", 3, edges=edges, nan_policy="omit",
                 method=method).numpy()  # fmt: skip
    want = reference(y, scipy.signal.windows.blackman(3), edges, "omit")
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["fft", "overlap", "auto"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_renormalize_where_the_window_inside_the_signal_is_a_sliver(method, dtype):
    # A periodic 2-tap Gaussian of std 0.1 weighs 1e-22 at one end: the first output's
    # window inside the signal is that tap alone, so the output is the first sample. Divided
    # through a transform, the divisor was round-off: -inf, or 7 digits lost at std 0.15.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 64, dtype=torch.float64, generator=gen).to(dtype)
    for std in (0.1, 0.15):
        options = dict(std=std, sym=False, edges="renormalize")
        exact = smooth(x, "gaussian", 2, method="direct", **options)
        got = smooth(x, "gaussian", 2, method=method, **options)
        assert got.dtype == dtype and torch.isfinite(got).all()
        tolerance = 1e-12 if dtype == torch.float64 else 1e-6
        torch.testing.assert_close(got, exact, rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(got[:, 0], x[:, 0], rtol=tolerance, atol=tolerance)
    # A NaN still spreads as "propagate" has it, to the 4 outputs whose window covers it
    # (the periodic window's zero tap included: NaN times 0 is NaN, as in a direct sum).
    x[1, 20] = float("nan")
    got = smooth(x, "lanczos", 4, sym=False, edges="renormalize", method=method)
    exact = smooth(x, "lanczos", 4, sym=False, edges="renormalize", method="direct")
    assert torch.equal(got.isnan(), exact.isnan()) and got.isnan().sum() == 4
    finite = ~exact.isnan()
    torch.testing.assert_close(got[finite], exact[finite], rtol=1e-5, atol=1e-5)
    # and the window's parameter keeps its gradient
    std = torch.tensor(0.15, dtype=torch.float64, requires_grad=True)
    signal = torch.randn(64, dtype=torch.float64, generator=gen)
    grads = []
    for each in (method, "direct"):
        out = smooth(signal, "gaussian", 2, std=std, sym=False, edges="renormalize", method=each)
        grads.append(torch.autograd.grad((out * signal).sum(), std)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def test_omit_gradients_where_only_the_window_tails_remain():
    # The directly summed outputs beside the gap keep their gradients to the signal and to
    # the window's parameter (an FFT computes the rest).
    x = torch.arange(40.0, dtype=torch.float64)
    x[12:30] = float("nan")
    x.requires_grad_()
    std = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)

    def omit(x, std):
        return smooth(x, "gaussian", 21, edges="zeros", nan_policy="omit", std=std, method="fft")

    assert torch.isfinite(omit(x, std)).all()
    assert torch.autograd.gradcheck(omit, (x, std))


def test_omit_under_vmap_equals_the_batched_call():
    # torch.func cannot select outputs by value: every output is a direct sum there.
    x = torch.arange(200.0, dtype=torch.float64).reshape(2, 100)
    x[0, 30:69] = float("nan")
    x[1, 5:9] = float("nan")
    run = lambda row: smooth(row, "gaussian", 41, std=2.0, edges="zeros", nan_policy="omit")  # noqa: E731
    torch.testing.assert_close(torch.func.vmap(run)(x), run(x), rtol=1e-12, atol=1e-12)
    assert run(x)[0, 49].item() == pytest.approx(49.0, rel=1e-12)


def test_batched_window_parameters_broadcast():
    x = torch.randn(3, 20, dtype=torch.float64)
    std = torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.float64)
    out = smooth(x, "gaussian", 9, std=std.squeeze(-1))
    for i in range(3):
        single = smooth(x[i], "gaussian", 9, std=float(std[i]))
        torch.testing.assert_close(out[i], single)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: smooth(torch.ones(5), length=0), ValueError, "length must be >= 1; got 0"),
        (lambda: smooth(torch.ones(5), length=2.0), TypeError, "length must be an integer"),
        (lambda: smooth(torch.ones(5), edges="wrap"), ValueError, "edges must be one of.*'wrap'"),
        (
            lambda: smooth(torch.ones(5), nan_policy="drop"),
            ValueError,
            "nan_policy must be one of.*'drop'",
        ),
        (lambda: smooth(torch.ones(5), "hanm"), ValueError, "unknown window 'hanm'"),
        (lambda: smooth(torch.ones(5), "gaussian"), ValueError, "requires parameter 'std'"),
        (lambda: smooth(torch.ones(5), "hann", 2), ValueError, "has a sum of zero"),
        (lambda: smooth(torch.arange(5), "hann"), TypeError, "signal must be a floating-point"),
        (lambda: smooth([1.0, 2.0]), TypeError, "signal must be a torch.Tensor"),
        (
            lambda: smooth(torch.tensor([[1.0, 2.0], [3.0, float("nan")]]), nan_policy="raise"),
            ValueError,
            r"1 NaN sample\(s\) \(first at time index 1\)",
        ),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("device", DEVICES)
def test_devices(device):
    rng = np.random.default_rng(11)
    x = _signal(rng, 300, ((10, 14), (100, 140)))
    for edges in ("reflect", "zeros", "renormalize"):
        for policy in ("propagate", "omit"):
            for length in (8, 31):
                want = reference(x, scipy.signal.windows.hann(length), edges, policy)
                xt = torch.from_numpy(x).to(device)
                got = smooth(xt, "hann", length, edges=edges, nan_policy=policy)
                assert got.device.type == device
                np.testing.assert_allclose(got.cpu().numpy(), want, atol=1e-10)
                got32 = smooth(xt.float(), "hann", length, edges=edges, nan_policy=policy)
                np.testing.assert_allclose(got32.cpu().numpy(), want, atol=2e-5, rtol=1e-4)


@settings(max_examples=30, deadline=None)
@given(
    data=st.data(),
    T=st.integers(1, 30),
    length=st.integers(1, 12),
    edges=st.sampled_from(EDGES),
    policy=st.sampled_from(["propagate", "omit"]),
    window=st.sampled_from(["boxcar", "triang", "gaussian"]),
)
def test_random_cases_against_reference(data, T, length, edges, policy, window):
    x = np.array(data.draw(st.lists(st.floats(-10, 10), min_size=T, max_size=T)))
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=T, max_size=T)))
    x[mask] = np.nan
    params = {"std": 1.5} if window == "gaussian" else {}
    want = reference(x, getattr(scipy.signal.windows, window)(length, **params), edges, policy)
    got = smooth(torch.from_numpy(x), window, length, edges=edges, nan_policy=policy, **params)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("method", ["direct", "fft", "overlap"])
@pytest.mark.parametrize("edges", ["reflect", "zeros", "renormalize"])
def test_float32_omit_next_to_long_gaps_keeps_single_precision(method, edges):
    # Beside a 40-sample gap the window holds a few small weights: a ratio of two FFT
    # convolutions in float32 would be off by ~1e-4 there (it is formed in float64).
    rng = np.random.default_rng(11)
    x = _signal(rng, 300, ((10, 14), (100, 140)))
    want = reference(x, scipy.signal.windows.hann(31), edges, "omit")
    got = smooth(
        torch.from_numpy(x).float(), "hann", 31, edges=edges, nan_policy="omit", method=method
    )
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
