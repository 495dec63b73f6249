"""diffconv_core.filters against scipy.signal.firwin / freqz, gradients and errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffconv_core import filters as F

from .conftest import DEVICES

DESIGNS = [
    (0.3, True),
    (0.3, False),
    (0.3, "lowpass"),
    (0.3, "highpass"),
    ([0.2, 0.5], False),
    ([0.2, 0.5], True),
    ([0.2, 0.5], "bandpass"),
    ([0.2, 0.5], "bandstop"),
    ([0.1, 0.3, 0.6], True),
    ([0.1, 0.3, 0.6], False),
    ([0.1, 0.3, 0.6, 0.8], False),
    ([0.1, 0.3, 0.6, 0.8], True),
]
WINDOWS = ["hamming", "hann", "boxcar", "blackman", ("kaiser", 5.0), ("gaussian", 4.0), 8.6]


def _design_id(design):
    cutoff, pass_zero = design
    return f"{cutoff}-{pass_zero}"


@pytest.mark.parametrize("design", DESIGNS, ids=[_design_id(d) for d in DESIGNS])
@pytest.mark.parametrize("scale", [True, False])
def test_firwin_parity(design, scale):
    cutoff, pass_zero = design
    checked = 0
    for numtaps in (1, 2, 3, 20, 21, 64, 65):
        for window in WINDOWS:
            try:
                with np.errstate(invalid="ignore", divide="ignore"):
                    ref = scipy.signal.firwin(
                        numtaps, cutoff, window=window, pass_zero=pass_zero, scale=scale
                    )
            except ValueError:
                with pytest.raises(ValueError, match="odd number of taps"):
                    F.firwin(numtaps, cutoff, window=window, pass_zero=pass_zero, scale=scale)
                continue
            kwargs = dict(window=window, pass_zero=pass_zero, scale=scale)
            if not np.isfinite(ref).all():
                # A 2-tap Hann window is all zeros: scipy divides 0 by 0, we say why.
                with pytest.raises(ValueError, match="cannot scale this design"):
                    F.firwin(numtaps, cutoff, **kwargs)
                continue
            got64 = F.firwin(numtaps, cutoff, dtype=torch.float64, **kwargs)
            got32 = F.firwin(numtaps, cutoff, dtype=torch.float32, **kwargs)
            msg = f"numtaps={numtaps} window={window}"
            np.testing.assert_allclose(got64.numpy(), ref, rtol=0, atol=1e-12, err_msg=msg)
            np.testing.assert_allclose(got32.numpy(), ref, rtol=0, atol=1e-6, err_msg=msg)
            checked += 1
    assert checked > 0


def test_named_designs_equal_firwin():
    for fs in (None, 1000.0):
        unit = 1.0 if fs is None else fs / 2
        c1, c2 = 0.2 * unit, 0.55 * unit
        pairs = [
            (F.lowpass(31, c1, fs=fs), scipy.signal.firwin(31, c1, fs=fs)),
            (F.lowpass(30, c1, fs=fs), scipy.signal.firwin(30, c1, fs=fs)),
            (F.highpass(31, c1, fs=fs), scipy.signal.firwin(31, c1, pass_zero=False, fs=fs)),
            (
                F.bandpass(30, [c1, c2], fs=fs, window="hann"),
                scipy.signal.firwin(30, [c1, c2], pass_zero=False, fs=fs, window="hann"),
            ),
            (
                F.bandstop(31, (c1, c2), fs=fs, window="kaiser", beta=6.0),
                scipy.signal.firwin(31, [c1, c2], fs=fs, window=("kaiser", 6.0)),
            ),
            (
                F.lowpass(41, c1, fs=fs, width=0.1 * unit),
                scipy.signal.firwin(41, c1, fs=fs, width=0.1 * unit),
            ),
        ]
        for got, ref in pairs:
            np.testing.assert_allclose(got.double().numpy(), ref, atol=1e-6)
    got = F.lowpass(25, 0.3, window=("tukey", 0.3), dtype=torch.float64)
    ref = scipy.signal.firwin(25, 0.3, window=("tukey", 0.3))
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)


def test_kaiser_helpers():
    for a in (10.0, 21.0, 30.0, 50.0, 80.0, np.float32(65.0), 70):
        assert F.kaiser_beta(a) == pytest.approx(scipy.signal.kaiser_beta(a), abs=1e-5)
    assert F.kaiser_atten(51, 0.1) == pytest.approx(scipy.signal.kaiser_atten(51, 0.1))


def test_window_tensor_and_batched_cutoffs():
    win = torch.from_numpy(scipy.signal.windows.hann(21))
    got = F.lowpass(21, 0.25, window=win)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), scipy.signal.firwin(21, 0.25, window="hann"))
    cutoffs = torch.tensor([0.1, 0.3, 0.7], dtype=torch.float64)
    batch = F.lowpass(21, cutoffs)
    assert batch.shape == (3, 21)
    for i, c in enumerate(cutoffs.tolist()):
        np.testing.assert_allclose(batch[i].numpy(), scipy.signal.firwin(21, c), atol=1e-12)
    bands = torch.tensor([[0.1, 0.3], [0.4, 0.9]], dtype=torch.float64)
    batch = F.bandpass(20, bands)
    for i in range(2):
        ref = scipy.signal.firwin(20, bands[i].tolist(), pass_zero=False)
        np.testing.assert_allclose(batch[i].numpy(), ref, atol=1e-12)
    mixed = F.bandpass(21, [torch.tensor(0.2, dtype=torch.float64), 0.6])
    ref = scipy.signal.firwin(21, [0.2, 0.6], pass_zero=False)
    np.testing.assert_allclose(mixed.numpy(), ref, atol=1e-12)


def test_numpy_array_cutoffs_equal_firwin():
    # scipy users hold band edges in arrays; one used to fail with "shape '[1]' is invalid".
    bands = np.array([300.0, 3400.0])
    got = F.bandpass(101, bands, fs=16000, dtype=torch.float64)
    ref = scipy.signal.firwin(101, bands, pass_zero=False, fs=16000)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)
    batch = F.bandstop(21, np.array([[0.1, 0.3], [0.4, 0.9]]), dtype=torch.float64)
    ref = scipy.signal.firwin(21, [0.4, 0.9])
    np.testing.assert_allclose(batch[1].numpy(), ref, atol=1e-12)
    got = F.lowpass(21, np.array(0.25), dtype=torch.float64)
    np.testing.assert_allclose(got.numpy(), scipy.signal.firwin(21, 0.25), atol=1e-12)


@pytest.mark.parametrize("width", [0.0, -0.1, float("nan"), float("inf"), True, "wide"])
def test_a_transition_width_that_is_not_positive_is_refused(width):
    # scipy designs NaN, 0 or a negative width as a boxcar (a Kaiser beta of 0), silently.
    with pytest.raises(ValueError, match="width .*positive number; got"):
        F.firwin(11, 0.3, width=width)


def test_transition_width_as_numpy_and_tensor_scalars():
    want = scipy.signal.firwin(31, 0.3, width=0.1)
    for width in (0.1, np.float32(0.1), torch.tensor(0.1, dtype=torch.float64)):
        got = F.firwin(31, 0.3, width=width, dtype=torch.float64)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-7)


def test_nested_list_cutoffs_read_as_their_array():
    # [[0.2, 0.4]] was a sequence whose one item is a batch of two cutoffs (two lowpass
    # filters) while np.array([[0.2, 0.4]]) is one band (one bandpass): the same numbers,
    # two designs. Both now read as the array.
    for nested in ([[0.2, 0.4]], [[0.1, 0.3], [0.4, 0.9]], ((0.2, 0.4),)):
        got = F.firwin(21, nested, pass_zero=False, dtype=torch.float64)
        want = F.firwin(21, np.array(nested), pass_zero=False, dtype=torch.float64)
        assert got.shape == (len(nested), 21)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        for row, band in zip(got, nested, strict=True):
            ref = scipy.signal.firwin(21, list(band), pass_zero=False)
            np.testing.assert_allclose(row.numpy(), ref, atol=1e-12)
    # a sequence of numbers and tensors still stacks its items along the edges
    mixed = F.firwin(21, [torch.tensor([0.2, 0.3], dtype=torch.float64), 0.5], pass_zero=False)
    assert mixed.shape == (2, 21)


@pytest.mark.parametrize("fs", [np.float32(16000), np.int64(16000), np.float64(16000)])
def test_numpy_scalar_rates_are_rates(fs):
    # A rate read through numpy used to be refused as "fs must be a positive number".
    got = F.lowpass(31, 1000.0, fs=fs, dtype=torch.float64)
    np.testing.assert_allclose(got.numpy(), scipy.signal.firwin(31, 1000.0, fs=16000), atol=1e-12)
    freqs, _ = F.frequency_response(got, n=4, fs=fs)
    np.testing.assert_allclose(freqs.numpy(), [0.0, 2000.0, 4000.0, 6000.0])


def _t(value):
    return torch.tensor(value, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("scale", [True, False])
def test_gradcheck_cutoffs(scale):
    checks = [
        (lambda c: F.lowpass(21, c, scale=scale), (_t(0.31),)),
        (lambda c: F.lowpass(20, c, scale=scale, fs=100.0), (_t(13.0),)),
        (lambda c: F.highpass(21, c, scale=scale, window="hann"), (_t(0.42),)),
        (lambda a, b: F.bandpass(20, [a, b], scale=scale), (_t(0.2), _t(0.55))),
        (lambda c: F.bandstop(21, c, scale=scale), (_t([0.25, 0.6]),)),
        (lambda c: F.firwin(21, c, pass_zero=False, scale=scale), (_t([0.1, 0.3, 0.5, 0.8]),)),
    ]
    for fn, inputs in checks:
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


def test_gradcheck_window_parameters():
    checks = [
        (lambda b: F.lowpass(21, 0.3, window="kaiser", beta=b), (_t(4.5),)),
        (lambda s: F.bandpass(21, [0.2, 0.4], window="gaussian", std=s), (_t(3.3),)),
        (lambda a: F.highpass(21, 0.4, window=("tukey", a)), (_t(0.37),)),
        (lambda c, b: F.lowpass(21, c, window="kaiser", beta=b), (_t(0.27), _t(7.0))),
    ]
    for fn, inputs in checks:
        assert torch.autograd.gradcheck(fn, inputs)


def test_gradient_moves_the_cutoff_the_right_way():
    # More gain at 0.4 (normalised) needs a higher cutoff: the gradient must say so.
    cutoff = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    _, response = F.frequency_response(F.lowpass(51, cutoff), n=100)
    response[40].abs().backward()
    assert cutoff.grad > 0


# ---------------------------------------------------------------- frequency response


@pytest.mark.parametrize("taps", [1, 7, 40, 1500])
@pytest.mark.parametrize("whole", [False, True])
def test_frequency_response_matches_freqz(taps, whole):
    rng = np.random.default_rng(taps)
    b = rng.standard_normal(taps)
    for n in (8, 512):
        for fs in (None, 1000.0):
            w, h = scipy.signal.freqz(b, worN=n, whole=whole, fs=2 * np.pi if fs is None else fs)
            freqs, response = F.frequency_response(torch.from_numpy(b), n=n, fs=fs, whole=whole)
            assert freqs.shape == (n,) and response.shape == (n,)
            np.testing.assert_allclose(freqs.numpy(), w, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(response.numpy(), h, rtol=1e-9, atol=1e-9 * taps)


def test_frequency_response_batched_float32_and_grad():
    rng = np.random.default_rng(0)
    b = rng.standard_normal((2, 3, 9))
    _, response = F.frequency_response(torch.from_numpy(b).float(), n=16)
    assert response.shape == (2, 3, 16) and response.dtype == torch.complex64
    for i in range(2):
        for j in range(3):
            _, h = scipy.signal.freqz(b[i, j], worN=16)
            np.testing.assert_allclose(response[i, j].numpy(), h, atol=1e-5)
    kernel = torch.from_numpy(b[0, 0]).requires_grad_()
    assert torch.autograd.gradcheck(lambda k: F.frequency_response(k, n=7)[1].abs(), (kernel,))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: F.highpass(20, 0.3), ValueError, "odd number of taps; got numtaps=20"),
        (lambda: F.bandstop(20, [0.2, 0.4]), ValueError, "odd number of taps; got numtaps=20"),
        (lambda: F.lowpass(21, 0.0), ValueError, r"greater than 0 and less than 1 .*got 0.0"),
        (lambda: F.lowpass(21, 1.0), ValueError, r"less than 1 \(the Nyquist.*got 1.0"),
        (lambda: F.lowpass(21, -0.2), ValueError, "got -0.2"),
        (lambda: F.lowpass(21, 600.0, fs=1000.0), ValueError, r"less than fs/2; got 600.0"),
        (lambda: F.bandpass(21, [0.5, 0.2]), ValueError, r"strictly increasing; got \[0.5, 0.2\]"),
        (lambda: F.bandpass(21, [0.3, 0.3]), ValueError, "strictly increasing"),
        # Shown as given: dividing by fs/2 and multiplying back showed 999.9999999999999.
        (
            lambda: F.bandpass(21, [3000.0, 1000.0], fs=12004.0),
            ValueError,
            r"strictly increasing; got \[3000.0, 1000.0\]$",
        ),
        (lambda: F.bandpass(21, [0.3]), ValueError, "bandpass filter takes at least two"),
        (lambda: F.bandstop(21, 0.3), ValueError, "bandstop filter takes at least two"),
        (lambda: F.lowpass(21, [0.1, 0.2]), ValueError, "lowpass filter takes one cutoff"),
        (lambda: F.firwin(21, []), ValueError, "at least one cutoff"),
        # An empty tensor of cutoffs designed an all-pass delta, silently.
        (lambda: F.firwin(5, torch.tensor([])), ValueError, "at least one cutoff"),
        (lambda: F.bandpass(11, torch.ones(2, 0)), ValueError, "at least one cutoff"),
        (
            lambda: F.firwin(11, 0.3, pass_zero=torch.tensor([True, False])),
            ValueError,
            "pass_zero must be one of",
        ),
        (lambda: F.firwin(11, 0.3, pass_zero=1), ValueError, "pass_zero must be one of"),
        (lambda: F.lowpass(11, 0.3, window=torch.tensor(1.0)), ValueError, "numtaps=11 taps"),
        (
            lambda: F.lowpass(11, torch.tensor([0.2, 0.3]), window=torch.ones(3, 11)),
            ValueError,
            r"cutoffs' batch \(2,\) and the window's \(3,\)",
        ),
        (
            lambda: F.lowpass(
                11, torch.tensor([0.2, 0.3]), window="gaussian", std=torch.tensor([1.0, 2, 3])
            ),
            ValueError,
            "do not broadcast",
        ),
        (lambda: F.kaiser_beta("65"), ValueError, "a .the attenuation in dB. must be a finite"),
        (lambda: F.kaiser_beta(float("nan")), ValueError, "must be a finite number; got nan"),
        (lambda: F.kaiser_atten(101, "x"), ValueError, "width .*positive number; got 'x'"),
        (lambda: F.kaiser_atten(101, -0.1), ValueError, "width .*positive number"),
        (lambda: F.kaiser_atten(0, 0.1), ValueError, "numtaps must be >= 1; got 0"),
        # Truthy strings were True, window parameters beside a window tensor were dropped,
        # a complex window tensor lost its imaginary part with a warning.
        (lambda: F.lowpass(11, 0.3, scale="yes"), TypeError, "scale must be True or False"),
        (
            lambda: F.lowpass(11, 0.3, window=torch.ones(11), beta=3.0),
            TypeError,
            r"window parameters \(beta\) apply to a named window",
        ),
        (
            lambda: F.lowpass(11, 0.3, window=torch.ones(11, dtype=torch.complex64)),
            TypeError,
            "window must be real",
        ),
        (lambda: F.lowpass(11, True), TypeError, "cutoff must be a number or a tensor; got True"),
        (
            lambda: F.lowpass(11, 0.3, width=torch.tensor(0.1, requires_grad=True)),
            TypeError,
            "width .* not differentiable",
        ),
        (lambda: F.firwin(21, 0.3, pass_zero="notch"), ValueError, "pass_zero must be one of"),
        (lambda: F.lowpass(0, 0.3), ValueError, "numtaps must be >= 1; got 0"),
        (lambda: F.lowpass(21.5, 0.3), TypeError, "numtaps must be an integer; got 21.5"),
        (lambda: F.lowpass(21, 0.3, fs=-2.0), ValueError, "fs must be a positive number; got -2"),
        (lambda: F.lowpass(21, 0.3, fs=True), ValueError, "fs must be a positive number; got True"),
        (lambda: F.lowpass(21, 0.3, window="hanm"), ValueError, "unknown window 'hanm'"),
        (lambda: F.lowpass(21, 0.3, window="kaiser"), ValueError, "requires parameter 'beta'"),
        (lambda: F.lowpass(21, 0.3, window=torch.ones(5)), ValueError, "numtaps=21 taps"),
        (lambda: F.frequency_response([1.0, 2.0]), TypeError, "kernel must be a tensor"),
        (lambda: F.frequency_response(torch.ones(0)), ValueError, "at least one tap"),
        (lambda: F.frequency_response(torch.ones(3), n=0), ValueError, "n must be >= 1; got 0"),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("device", DEVICES)
def test_devices(device):
    cutoff = torch.tensor([0.2, 0.6], dtype=torch.float64, device=device, requires_grad=True)
    h = F.bandpass(31, cutoff, window="kaiser", beta=5.0)
    assert h.device.type == device
    ref = scipy.signal.firwin(31, [0.2, 0.6], pass_zero=False, window=("kaiser", 5.0))
    np.testing.assert_allclose(h.detach().cpu().numpy(), ref, atol=1e-12)
    freqs, response = F.frequency_response(h, n=64, fs=2.0)
    assert freqs.device.type == device and response.device.type == device
    _, want = scipy.signal.freqz(ref, worN=64)
    np.testing.assert_allclose(response.detach().cpu().numpy(), want, atol=1e-10)
    response.abs().sum().backward()
    assert cutoff.grad.device.type == device and torch.isfinite(cutoff.grad).all()
    assert F.lowpass(21, 0.3, device=device).device.type == device


@settings(max_examples=40, deadline=None)
@given(
    numtaps=st.integers(1, 80),
    edges=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=4, unique=True),
    pass_zero=st.booleans(),
    scale=st.booleans(),
    window=st.sampled_from(["hamming", "blackman", "boxcar", ("kaiser", 7.0), ("tukey", 0.4)]),
    fs=st.sampled_from([None, 48000.0]),
)
def test_random_designs_match_firwin(numtaps, edges, pass_zero, scale, window, fs):
    edges = sorted(edges)
    if min(np.diff(edges), default=1.0) < 1e-3:
        return  # scipy accepts near-equal edges; such bands are numerically meaningless
    cutoff = [e * (1.0 if fs is None else fs / 2) for e in edges]
    kwargs = dict(window=window, pass_zero=pass_zero, scale=scale, fs=fs)
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = scipy.signal.firwin(numtaps, cutoff, **kwargs)
    except ValueError:
        with pytest.raises(ValueError):
            F.firwin(numtaps, cutoff, **kwargs)
        return
    if not np.isfinite(ref).all():
        # An all-zero window (2-tap Hann, Tukey ...): scipy divides 0 by 0, we say why.
        with pytest.raises(ValueError, match="cannot scale this design"):
            F.firwin(numtaps, cutoff, **kwargs)
        return
    got = F.firwin(numtaps, cutoff, dtype=torch.float64, **kwargs)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-12)


def test_designs_batch_under_vmap():
    # The range checks called bool() on batched tensors: vmap refused any design.
    from torch import func

    f64 = torch.float64
    cutoffs = torch.tensor([0.1, 0.2, 0.45], dtype=f64)
    got = func.vmap(lambda c: F.lowpass(31, c, dtype=f64))(cutoffs)
    expected = np.stack([scipy.signal.firwin(31, float(c)) for c in cutoffs])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    bands = torch.tensor([[0.1, 0.3], [0.2, 0.5]], dtype=f64)
    got = func.vmap(lambda c: F.bandpass(31, c, dtype=f64))(bands)
    expected = np.stack([scipy.signal.firwin(31, b.tolist(), pass_zero=False) for b in bands])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    betas = torch.tensor([2.0, 8.0], dtype=f64)
    got = func.vmap(lambda b: F.firwin(31, 0.3, window="kaiser", beta=b, dtype=f64))(betas)
    expected = np.stack([scipy.signal.firwin(31, 0.3, window=("kaiser", float(b))) for b in betas])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    jac = func.vmap(func.jacrev(lambda c: F.lowpass(31, c, dtype=f64)))(cutoffs)
    assert jac.shape == (3, 31) and torch.isfinite(jac).all()
    with pytest.raises(ValueError, match="greater than 0 and less than 1"):
        func.vmap(lambda c: F.lowpass(31, c))(torch.tensor([0.1, 1.5]))


@pytest.mark.parametrize("flag", [True, False])
def test_pass_zero_as_a_numpy_or_tensor_boolean(flag):
    # A flag read from an array or a tensor is that flag (a 0-d bool tensor worked before,
    # through comparisons; a two-element one raised "ambiguous" from inside the design).
    want = scipy.signal.firwin(21, [0.2, 0.5], pass_zero=flag)
    for flag_given in (np.bool_(flag), torch.tensor(flag)):
        got = F.firwin(21, [0.2, 0.5], pass_zero=flag_given, dtype=torch.float64)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_an_empty_batch_of_cutoffs_is_an_empty_batch_of_designs():
    # lowpass(11, torch.tensor([])): no filters, not a reshape error from inside the design.
    assert F.lowpass(11, torch.tensor([])).shape == (0, 11)
    assert F.bandpass(11, torch.ones(0, 2) * 0.3 + torch.tensor([0.0, 0.2])).shape == (0, 11)
