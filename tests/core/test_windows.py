"""diffconv_core.windows against scipy.signal.windows, plus gradients, width and errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import scipy.signal.windows as sw
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffconv_core import windows as W
from diffconv_core.windows import get_window

from .conftest import DEVICES

# scipy warns that a Dolph-Chebyshev window below 45 dB suits spectral analysis poorly; the
# references below use such windows on purpose (this library does not warn: see
# test_chebwin_below_45_db_does_not_warn).
pytestmark = pytest.mark.filterwarnings("ignore:This window is not suitable:UserWarning")

# (name, non-default params); windows without parameters appear once with {}.
CASES = [
    ("boxcar", {}),
    ("triang", {}),
    ("bartlett", {}),
    ("hann", {}),
    ("hamming", {}),
    ("blackman", {}),
    ("blackmanharris", {}),
    ("nuttall", {}),
    ("flattop", {}),
    ("bohman", {}),
    ("parzen", {}),
    ("cosine", {}),
    ("lanczos", {}),
    ("barthann", {}),
    ("general_cosine", {"a": [0.3, 0.5, 0.2]}),
    ("general_cosine", {"a": [0.21557895, 0.41663158, 0.277263158, 0.083578947, 0.006947368]}),
    ("general_hamming", {"alpha": 0.6}),
    ("general_hamming", {"alpha": 0.0}),
    ("gaussian", {"std": 2.3}),
    ("gaussian", {"std": 0.4}),
    ("general_gaussian", {"p": 1.5, "sig": 3.0}),
    ("general_gaussian", {"p": 0.5, "sig": 1.0}),
    ("kaiser", {"beta": 8.6}),
    ("kaiser", {"beta": 0.0}),
    ("tukey", {}),
    ("tukey", {"alpha": 0.3}),
    ("tukey", {"alpha": 0.0}),
    ("tukey", {"alpha": 1.0}),
    ("exponential", {}),
    ("exponential", {"tau": 3.0}),
    ("taylor", {}),
    ("taylor", {"nbar": 6, "sll": 45.0, "norm": False}),
    ("taylor", {"nbar": 1}),
    ("chebwin", {"at": 50.0}),
    ("chebwin", {"at": 100.0}),
    ("chebwin", {"at": 20.0}),
    ("kaiser_bessel_derived", {"beta": 4.0}),
    ("kaiser_bessel_derived", {"beta": 0.0}),
    ("dpss", {"NW": 0.9}),
    ("dpss", {"NW": 0.4, "norm": 2}),
    ("dpss", {"NW": 0.7, "norm": "subsample"}),
]
LENGTHS = [1, 2, 3, 4, 7, 8, 16, 33]
ISSUE_NAMES = (
    "boxcar rect triang bartlett hann hamming blackman blackmanharris nuttall flattop bohman "
    "parzen cosine lanczos general_cosine general_hamming gaussian general_gaussian kaiser "
    "tukey exponential"
).split()


def _defined(name, length, sym, params=None):
    """Whether scipy defines the window: the Kaiser-Bessel derived one only for an even
    length and sym=True, dpss only for NW < length / 2 (from two taps on)."""
    if name == "kaiser_bessel_derived":
        return sym and length % 2 == 0
    if name == "dpss" and length > 1:
        return (params or {}).get("NW", 0.0) < length / 2
    return True


def _case_id(case):
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())[:40]


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
@pytest.mark.parametrize("sym", [True, False])
def test_parity_with_scipy(case, sym):
    name, params = case
    for length in LENGTHS:
        if not _defined(name, length, sym, params):
            # scipy raises ValueError for these; so does this library.
            with pytest.raises(ValueError):
                getattr(sw, name)(length, **params, sym=sym)
            with pytest.raises(ValueError, match=name):
                W.get_window(name, length, sym=sym, **params)
            continue
        ref = getattr(sw, name)(length, **params, sym=sym)
        got64 = W.get_window(name, length, sym=sym, dtype=torch.float64, **params)
        got32 = W.get_window(name, length, sym=sym, dtype=torch.float32, **params)
        assert got64.dtype == torch.float64 and got32.dtype == torch.float32
        assert got64.shape == (length,)
        np.testing.assert_allclose(got64.numpy(), ref, rtol=0, atol=1e-12, err_msg=f"{length}")
        np.testing.assert_allclose(got32.numpy(), ref, rtol=0, atol=1e-6, err_msg=f"{length}")
        # The per-window function is the same window.
        func = getattr(W, name)
        assert torch.equal(func(length, **params, sym=sym, dtype=torch.float64), got64)


def test_exponential_off_centre_matches_scipy():
    for length in (5, 8):
        for center in (0.0, 2.5, 6.0):
            ref = sw.exponential(length, center=center, tau=2.0, sym=False)
            got = W.exponential(length, center=center, tau=2.0, sym=False, dtype=torch.float64)
            np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)


MATRIX_CASES = [("chebwin", {"at": at}) for at in (0.5, 10.0, 30.0, 45.0, 60.0, 100.0, 150.0)] + [
    ("kaiser_bessel_derived", {"beta": beta}) for beta in (0.0, 1.0, 4.0, 12.0, 30.0)
]


@pytest.mark.parametrize("case", MATRIX_CASES, ids=[_case_id(c) for c in MATRIX_CASES])
@pytest.mark.parametrize("sym", [True, False])
def test_chebwin_and_kbd_match_scipy_at_every_length(case, sym):
    # Every length up to 70, odd and even (the Dolph-Chebyshev window's even and odd cases
    # are different transforms in scipy; low `at` puts the largest tap at the ends).
    name, params = case
    for length in range(1, 71):
        if not _defined(name, length, sym):
            continue
        ref = getattr(sw, name)(length, **params, sym=sym)
        got = W.get_window(name, length, sym=sym, dtype=torch.float64, **params)
        np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12, err_msg=f"{length}")


@pytest.mark.parametrize("norm", [None, 2, "approximate", "subsample", 2.0])
@pytest.mark.parametrize("sym", [True, False])
def test_dpss_matches_scipy_at_every_length(norm, sym):
    # NW from near 0 to near its bound length / 2, at every length up to 70.
    for length in range(1, 71):
        for fraction in (0.02, 0.3, 0.7, 0.98):
            nw = fraction * max(length, 2) / 2
            ref = sw.dpss(length, nw, sym=sym, norm=norm)
            got = W.dpss(length, nw, sym=sym, norm=norm, dtype=torch.float64)
            np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12, err_msg=f"{length}")


@pytest.mark.parametrize("norm", [2, "approximate", "subsample"])
def test_long_dpss_matches_scipy_without_a_dense_eigensolver(norm, monkeypatch):
    # From 255 taps the half-size matrix takes the O(n) tridiagonal solver (eigh took 1-6 s
    # at 4,095 taps); its taps must still be scipy's, across the switch and far past it.
    def no_eigh(*args, **kwargs):
        raise AssertionError("the dense eigensolver ran")

    monkeypatch.setattr(torch.linalg, "eigh", no_eigh)
    for length, nw in [(255, 0.3), (256, 2.5), (257, 100.0), (1000, 4.0), (4095, 3.0)]:
        ref = sw.dpss(length, nw, norm=norm)
        got = W.dpss(length, nw, norm=norm, dtype=torch.float64)
        scale = np.abs(ref).max()
        np.testing.assert_allclose(got.numpy() / scale, ref / scale, rtol=0, atol=5e-11)


def test_dpss_takes_the_same_taps_with_and_without_gradients():
    # A learnable NW keeps eigh (differentiable); the values must not depend on the path.
    nw = torch.tensor([2.5, 40.0], dtype=torch.float64)
    fast = W.get_window(("dpss", nw), 301, dtype=torch.float64)
    learnable = nw.clone().requires_grad_(True)
    recorded = W.get_window(("dpss", learnable), 301, dtype=torch.float64)
    torch.testing.assert_close(recorded.detach(), fast, rtol=0, atol=1e-12)
    recorded.sum().backward()
    assert torch.isfinite(learnable.grad).all() and (learnable.grad != 0).all()


def test_dpss_conventions():
    # A positive sum (eigh's sign is arbitrary), taps mirrored bit for bit, and the norms:
    # unit energy for norm=2; peak 1 for odd lengths, length^2 / (length^2 + NW) for even.
    for length in (7, 8):
        nw = torch.tensor(2.5, dtype=torch.float64)
        w2 = W.dpss(length, nw, norm=2)
        assert w2.sum() > 0 and torch.equal(w2, w2.flip(-1))
        assert float((w2**2).sum()) == pytest.approx(1.0, abs=1e-14)
        peak = W.dpss(length, nw).max().item()
        expected = 1.0 if length % 2 else length**2 / (length**2 + 2.5)
        assert peak == pytest.approx(expected, abs=1e-15)


def test_chebwin_below_45_db_does_not_warn():
    # scipy warns (UserWarning) that such windows suit spectral analysis poorly; the values
    # are well defined, equal, and this library's windows do not warn.
    import warnings

    with pytest.warns(UserWarning, match="not suitable for spectral analysis"):
        ref = sw.chebwin(21, 20.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = W.chebwin(21, 20.0, dtype=torch.float64)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)
    # The largest taps are the end taps there, and scipy scales by the largest one.
    assert got[0] == 1.0 and got[10] < 1.0


@pytest.mark.parametrize("length", [16384, 16385])
def test_chebwin_of_many_taps_is_an_fft_not_a_dense_matrix(length):
    # At the taps the window is one inverse FFT, as scipy computes it: the dense cosine
    # matrix it replaced took ~3 GB and ~8 s (forward and backward) for 16383 taps.
    at = torch.tensor(60.0, dtype=torch.float64, requires_grad=True)
    got = W.chebwin(length, at)
    # T_{m-1} amplifies the rounding of x0 cos(pi k / m) (~1e-9 relative at this length,
    # the dense matrix's too): scipy rounds it differently.
    np.testing.assert_allclose(got.detach().numpy(), sw.chebwin(length, 60.0), rtol=1e-7)
    assert torch.equal(got, got.flip(-1))  # mirrored bit for bit, as scipy's
    got.sum().backward()
    assert torch.isfinite(at.grad)


def test_kaiser_bessel_derived_is_power_complementary():
    # Princen-Bradley: w[n]^2 + w[n + length/2]^2 == 1 (what the MDCT needs).
    beta = torch.tensor([0.0, 3.0, 20.0], dtype=torch.float64)
    w = W.kaiser_bessel_derived(16, beta)
    torch.testing.assert_close(w[..., :8] ** 2 + w[..., 8:] ** 2, torch.ones(3, 8).double())


@pytest.mark.parametrize("length", [2, 6, 10, 64])
@pytest.mark.parametrize("beta", [800.0, 2000.0, 20000.0])
def test_kaiser_bessel_derived_with_a_huge_beta(length, beta):
    # Past beta ~ 745 every Kaiser tap but the centre one underflows (i0 overflows, so
    # scipy's taps are NaN): for length 2 (two end taps), or a large enough beta for
    # length 6 (two centre taps), every tap did, and the window came out all zeros with a
    # NaN gradient. The running sum is a ratio: the reference scales the taps by the
    # largest one through scipy's i0e, as the kaiser test above does.
    import scipy.special

    half = length // 2
    x = (np.arange(half + 1) - half / 2) / (half / 2)
    root = np.sqrt(np.clip(1 - x**2, 0, None))
    top = root.max()
    taps = scipy.special.i0e(beta * root) / scipy.special.i0e(beta * top)
    taps = taps * np.exp(beta * (root - top))
    csum = np.cumsum(taps)
    left = np.sqrt(csum[:-1] / csum[-1])
    expected = np.concatenate([left, left[::-1]])
    beta_t = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
    got = W.kaiser_bessel_derived(length, beta_t)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12, atol=1e-300)
    got.sum().backward()
    assert torch.isfinite(beta_t.grad)


def _scipy_names():
    from scipy.signal.windows import _windows

    return _windows._WIN_FUNCS


@pytest.mark.parametrize("sym", [True, False])
def test_every_scipy_alias_of_a_registered_window(sym):
    registered = {entry["name"] for entry in W.list_windows()}
    params = {
        "exponential": (),
        "gaussian": (1.7,),
        "general_cosine": ([0.5, 0.3, 0.2],),
        "general_gaussian": (1.2, 2.0),
        "general_hamming": (0.7,),
        "kaiser": (5.0,),
        "tukey": (0.4,),
        "taylor": (5, 40.0),
        "chebwin": (50.0,),
        "dpss": (1.5,),
        "kaiser_bessel_derived": (4.0,),
    }
    checked = 0
    for alias, (func, _) in _scipy_names().items():
        if func.__name__ not in registered:
            continue
        extra = params.get(func.__name__, ())
        window = (alias, *extra) if extra else alias
        length = 10 if func.__name__ == "kaiser_bessel_derived" else 9
        if not _defined(func.__name__, length, sym):
            with pytest.raises(ValueError):
                scipy.signal.get_window(window, length, fftbins=not sym)
            with pytest.raises(ValueError, match="only defined for sym=True"):
                W.get_window(window, length, sym=sym)
            checked += 1
            continue
        ref = scipy.signal.get_window(window, length, fftbins=not sym)
        got = W.get_window(window, length, sym=sym, dtype=torch.float64)
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-12, err_msg=alias)
        checked += 1
    assert checked >= 56


def test_extra_aliases_and_forms():
    hann = W.hann(8, dtype=torch.float64)
    assert torch.equal(W.get_window("hanning", 8, dtype=torch.float64), hann)
    assert torch.equal(W.get_window("Hann", 8, dtype=torch.float64), hann)
    ref = scipy.signal.get_window("hann_periodic", 8)
    np.testing.assert_allclose(W.get_window("hann_periodic", 8, dtype=torch.float64), ref)
    ref = scipy.signal.get_window("hann_symmetric", 8)
    np.testing.assert_allclose(W.get_window("hann_symmetric", 8, sym=False), ref, atol=1e-6)
    # A bare number is a Kaiser beta, as in scipy.
    ref = scipy.signal.get_window(8.6, 12, fftbins=False)
    np.testing.assert_allclose(W.get_window(8.6, 12, dtype=torch.float64), ref, atol=1e-12)
    # numpy scalars too, as scipy takes them (np.float32 and np.int64 were a TypeError).
    for beta in (np.float32(8.5), np.int64(8)):
        ref = scipy.signal.get_window(beta, 12, fftbins=False)
        got = W.get_window(beta, 12, dtype=torch.float64)
        np.testing.assert_allclose(got, ref, atol=1e-6, err_msg=repr(beta))
    # Tuple parameters and keyword parameters are the same thing.
    assert torch.equal(W.get_window(("gaussian", 2.0), 7), W.get_window("gauss", 7, std=2.0))


def test_names_required_by_the_issue_exist():
    known = set()
    for entry in W.list_windows():
        known |= {entry["name"], *entry["aliases"]}
    assert set(ISSUE_NAMES) <= known
    for name in ("boxcar", "box", "ones", "rect", "rectangular", "triangle", "gauss", "ksr"):
        assert name in known
    for name in ("tuk", "poisson", "hanning"):
        assert name in known
    for name in ("chebwin", "cheb", "kaiser_bessel_derived", "kbd", "kaiser bessel derived"):
        assert name in known
    assert "dpss" in known


def test_list_windows_is_complete_plain_data():
    entries = W.list_windows()
    for entry in entries:
        assert set(entry) == {"name", "aliases", "params", "required", "ranges", "description"}
        assert isinstance(entry["description"], str) and entry["description"]
        assert set(entry["required"]) <= set(entry["params"]) == set(entry["ranges"])
        # Every entry is buildable from its listed defaults plus values for required params.
        values = {"a": [0.5, 0.5], "std": 1.0, "p": 1.0, "sig": 1.0, "beta": 2.0, "alpha": 0.5}
        values.update(at=50.0, NW=1.5)
        params = {k: values[k] for k in entry["required"]}
        length = 6 if entry["name"] == "kaiser_bessel_derived" else 5  # even lengths only
        for name in (entry["name"], *entry["aliases"]):
            assert W.get_window(name, length, **params).shape == (length,)
    by_name = {e["name"]: e for e in entries}
    assert by_name["tukey"]["params"] == {"alpha": 0.5}
    assert by_name["gaussian"]["required"] == ["std"]
    assert by_name["exponential"]["params"] == {"center": None, "tau": 1.0}
    assert by_name["gaussian"]["ranges"]["std"] == "> 0"
    assert by_name["dpss"]["params"] == {"NW": None, "norm": None}
    assert by_name["dpss"]["required"] == ["NW"]
    assert by_name["dpss"]["ranges"] == {
        "NW": "> 0 and < length / 2",
        "norm": "one of None, 2, 'approximate', 'subsample'",
    }
    assert by_name["chebwin"]["required"] == ["at"]
    assert by_name["kaiser_bessel_derived"]["ranges"] == {"beta": ">= 0"}


def test_batched_parameters():
    std = torch.tensor([0.7, 1.5, 4.0], dtype=torch.float64)
    got = W.gaussian(9, std)
    assert got.shape == (3, 9)
    for i, s in enumerate(std.tolist()):
        np.testing.assert_allclose(got[i].numpy(), sw.gaussian(9, s), atol=1e-12)
    a = torch.tensor([[0.5, 0.5], [0.54, 0.46]], dtype=torch.float64)
    got = W.general_cosine(8, a, sym=False)
    np.testing.assert_allclose(got[0].numpy(), sw.hann(8, sym=False), atol=1e-12)
    np.testing.assert_allclose(got[1].numpy(), sw.hamming(8, sym=False), atol=1e-12)
    widths = torch.tensor([[3.0], [9.0]], dtype=torch.float64)
    beta = torch.tensor([1.0, 5.0, 9.0], dtype=torch.float64)
    assert W.kaiser(9, beta, width=widths).shape == (2, 3, 9)
    assert W.hann(9, width=widths).shape == (2, 1, 9)


@pytest.mark.parametrize(
    "name, key, values, length",
    [
        ("chebwin", "at", [20.0, 50.0, 100.0], 11),
        ("kaiser_bessel_derived", "beta", [0.0, 4.0, 12.0], 10),
        ("dpss", "NW", [0.5, 1.5, 4.0], 11),
    ],
)
@pytest.mark.parametrize("sym", [True, False])
def test_batched_parameters_of_the_matrix_windows(name, key, values, length, sym):
    # Windows built from a spectrum, a running sum or an eigenvector take batches like the
    # others: (*S, length), each row scipy's window for its own parameter.
    if not _defined(name, length, sym):
        sym = True
    grid = torch.tensor(values, dtype=torch.float64).reshape(3, 1)
    got = W.get_window(name, length, sym=sym, **{key: grid})
    assert got.shape == (3, 1, length) and got.dtype == torch.float64
    for i, value in enumerate(values):
        ref = getattr(sw, name)(length, value, sym=sym)
        np.testing.assert_allclose(got[i, 0].numpy(), ref, rtol=0, atol=1e-12, err_msg=f"{value}")
    # Broadcast against a batch of widths: (2, 1) widths and (3,) parameters give (2, 3).
    widths = torch.tensor([[4.5], [float(length)]], dtype=torch.float64)
    got = W.get_window(name, length, sym=sym, width=widths, **{key: grid.reshape(3)})
    assert got.shape == (2, 3, length)
    for i, value in enumerate(values):
        one = W.get_window(name, length, sym=sym, width=4.5, dtype=torch.float64, **{key: value})
        np.testing.assert_allclose(got[0, i].numpy(), one.numpy(), rtol=0, atol=1e-15)
        ref = getattr(sw, name)(length, value, sym=sym)
        np.testing.assert_allclose(got[1, i].numpy(), ref, rtol=0, atol=1e-12)


def test_dtype_and_device_defaults():
    assert W.hann(5).dtype == torch.get_default_dtype()
    assert W.gaussian(5, torch.tensor(1.0, dtype=torch.float64)).dtype == torch.float64
    assert W.gaussian(5, 1.0, dtype=torch.float16).dtype == torch.float16
    assert W.hann(5, device="cpu").device.type == "cpu"
    for func, value in ((W.chebwin, 50.0), (W.kaiser_bessel_derived, 3.0), (W.dpss, 1.5)):
        assert func(6, value).dtype == torch.get_default_dtype()
        assert func(6, torch.tensor(value, dtype=torch.float64)).dtype == torch.float64
        assert func(6, value, dtype=torch.float16).dtype == torch.float16
        assert func(6, value, device="cpu").device.type == "cpu"


@pytest.mark.parametrize("normalize", ["sum", "peak", "energy"])
@pytest.mark.parametrize("sym", [True, False])
def test_normalize(normalize, sym):
    for name, params in CASES:
        length = 10 if name == "kaiser_bessel_derived" else 9
        if not _defined(name, length, sym, params):
            continue
        ref = getattr(sw, name)(length, **params, sym=sym)
        if normalize == "sum" and abs(ref.sum()) < 1e-9:
            # A zero-mean window (general_hamming alpha=0, periodic) has no DC gain.
            with pytest.raises(ValueError, match="has a sum of zero"):
                W.get_window(name, length, sym=sym, normalize=normalize, **params)
            continue
        if normalize == "sum":
            ref = ref / ref.sum()
        elif normalize == "peak":
            ref = ref / np.abs(ref).max()
        else:
            ref = ref / np.sqrt((ref**2).sum())
        got = W.get_window(
            name, length, sym=sym, normalize=normalize, dtype=torch.float64, **params
        )
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-12, err_msg=name)


# ---------------------------------------------------------------- gradients

GRAD_CASES = [
    ("gaussian", {"std": 2.3}),
    ("general_gaussian", {"p": 1.3, "sig": 2.1}),
    ("general_gaussian", {"p": 0.4, "sig": 1.1}),
    ("kaiser", {"beta": 6.5}),
    ("kaiser", {"beta": 0.3}),
    ("tukey", {"alpha": 0.37}),
    ("tukey", {"alpha": 0.91}),
    ("general_hamming", {"alpha": 0.63}),
    ("general_cosine", {"a": [0.4, 0.45, 0.15]}),
    ("exponential", {"tau": 1.7}),
    ("taylor", {"sll": 37.0}),
    ("chebwin", {"at": 37.0}),
    ("chebwin", {"at": 80.0}),
    ("kaiser_bessel_derived", {"beta": 4.5}),
    ("kaiser_bessel_derived", {"beta": 0.3}),
    ("dpss", {"NW": 1.3}),
    ("dpss", {"NW": 3.1}),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[_case_id(c) for c in GRAD_CASES])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("length", [1, 8, 9])
def test_gradcheck_parameters(case, sym, length):
    name, params = case
    if not _defined(name, length, sym, params):
        pytest.skip(f"scipy does not define {name} for length={length}, sym={sym}")
    keys = sorted(params)

    def fn(*values):
        kwargs = dict(zip(keys, values, strict=True))
        return W.get_window(name, length, sym=sym, normalize="sum", **kwargs)

    inputs = [torch.tensor(params[k], dtype=torch.float64, requires_grad=True) for k in keys]
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("beta", [700.0, 800.0, 5000.0])
@pytest.mark.parametrize("sym", [True, False])
def test_kaiser_with_a_huge_beta_is_finite(beta, sym):
    # i0 overflows past beta ~ 709: scipy's taps are then inf / inf = NaN. The window itself
    # is well defined; the reference is the same ratio through scipy's scaled i0e.
    import scipy.special

    m = 33
    n = np.arange(m) if sym else np.arange(m + 1)[:m]
    half = (m - 1) / 2 if sym else m / 2
    root = np.sqrt(np.clip(1 - ((n - half) / half) ** 2, 0, None))
    size = abs(beta)
    expected = scipy.special.i0e(size * root) / scipy.special.i0e(size) * np.exp(size * (root - 1))
    beta_t = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
    got = W.get_window(("kaiser", beta_t), m, sym=sym, dtype=torch.float64)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12, atol=1e-300)
    assert torch.autograd.gradcheck(
        lambda b: W.get_window(("kaiser", b), m, sym=sym, dtype=torch.float64), (beta_t,)
    )


def test_gradcheck_exponential_center():
    center = torch.tensor(2.3, dtype=torch.float64, requires_grad=True)
    tau = torch.tensor(1.4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, t: W.exponential(8, c, t, sym=False), (center, tau))


@pytest.mark.parametrize("p_value", [150.0, 600.0, 1e9])
def test_general_gaussian_gradient_where_the_power_overflows(p_value):
    # |t / sig| ** (2p) overflows for taps past sig when p is large: the tap is 0 and so is
    # its gradient (it was 0 * inf, NaN, for p and sig alike).
    p = torch.tensor(p_value, dtype=torch.float64, requires_grad=True)
    sig = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    window = W.general_gaussian(10, p, sig)
    with np.errstate(over="ignore"):  # scipy's power overflows too (to exp(-inf) = 0)
        ref = scipy.signal.windows.general_gaussian(10, 1e3, 2.0)
    np.testing.assert_array_equal(window.detach().numpy(), ref)
    window.sum().backward()
    assert torch.isfinite(p.grad) and torch.isfinite(sig.grad)
    # Away from the cut, gradients are autograd's of the plain formula (finite differences).
    p2 = torch.tensor(40.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, s: W.general_gaussian(10, q, s), (p2, sig))


def _one_sided_second_difference(loss, at, step, side):
    values = [loss(torch.tensor(at + side * k * step, dtype=torch.float64)) for k in (0, 1, 2)]
    return float(values[2] - 2 * values[1] + values[0]) / step**2


def test_peak_normalisation_follows_the_tap_that_stays_the_peak():
    # Taps tied for the peak (all of them for a Kaiser beta of 0, a boxcar at its full
    # width): amax split the gradient among them, a derivative from neither side.
    v = torch.linspace(-1, 1.3, 8, dtype=torch.float64)

    def kaiser_loss(beta):
        return (v * W.kaiser(8, beta, normalize="peak")).sum()

    beta = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    (first,) = torch.autograd.grad(kaiser_loss(beta), beta, create_graph=True)
    (second,) = torch.autograd.grad(first, beta)
    assert second.item() == pytest.approx(
        _one_sided_second_difference(kaiser_loss, 0.0, 1e-4, +1), rel=1e-5
    )
    x = torch.tensor([0.3, -1.0, 0.7, 2.0, 0.1, 0.5, -0.2], dtype=torch.float64)

    def boxcar_loss(width):
        from diffconv_core import convolve

        return (convolve(x, W.boxcar(5, width=width, normalize="peak")) ** 2).sum()

    width = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(boxcar_loss(width), width)  # the left derivative
    left = (
        boxcar_loss(torch.tensor(5.0, dtype=torch.float64))
        - boxcar_loss(torch.tensor(5.0 - 1e-7, dtype=torch.float64))
    ) / 1e-7
    assert grad.item() == pytest.approx(left.item(), rel=1e-5)


def test_kaiser_normalised_from_its_log_keeps_second_derivatives_finite():
    # A large beta with a narrow width: taps of 1e-182 whose normalisation's second
    # derivative underflowed to NaN (the window is constant there: 0).
    beta = torch.tensor(600.0, dtype=torch.float64, requires_grad=True)
    width = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    window = W.kaiser(8, beta, width=width, normalize="sum")
    torch.testing.assert_close(
        window.detach(), torch.tensor([0, 0, 0, 0.5, 0.5, 0, 0, 0.0]).double()
    )
    first = torch.autograd.grad(window[3], (beta, width), create_graph=True)
    second = torch.autograd.grad(first[0] + first[1], (beta, width))
    assert all(torch.isfinite(g) for g in second)
    # Elsewhere it is scipy's window divided by its sum, with both derivatives.
    ref = sw.kaiser(9, 3.0)
    torch.testing.assert_close(
        W.kaiser(9, 3.0, normalize="sum", dtype=torch.float64), torch.from_numpy(ref / ref.sum())
    )
    b = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda q: W.kaiser(9, q, normalize="sum"), (b,))


def test_gradient_is_finite_at_singular_points():
    # Removable singularities: general_gaussian at the centre tap, kaiser at the end taps,
    # tukey with alpha = 0 (no taper), gaussian/kaiser widths at the centre.
    p = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    W.general_gaussian(9, p, 2.0).sum().backward()
    assert torch.isfinite(p.grad)
    alpha = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    W.tukey(9, alpha).sum().backward()
    assert torch.isfinite(alpha.grad)
    width = torch.tensor(9.0, dtype=torch.float64, requires_grad=True)
    W.kaiser(9, 8.0, width=width).sum().backward()
    assert torch.isfinite(width.grad)
    # chebwin: at so small that 10^(at/20) rounds to 1 (acosh's slope is infinite there),
    # and a spectrum sample exactly at x == 1 (cos(n acos x)'s and cosh(n acosh x)'s).
    at = torch.tensor(1e-300, dtype=torch.float64, requires_grad=True)
    W.chebwin(9, at).sum().backward()
    assert torch.isfinite(at.grad)
    from diffconv_core._window_shapes import _chebyshev

    x = torch.tensor([0.0, 0.5, 1.0, 1.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: _chebyshev(7, x), (x,))
    assert torch.autograd.gradgradcheck(lambda x: _chebyshev(7, x), (x,))
    t7 = 64 * x**7 - 112 * x**5 + 56 * x**3 - 7 * x  # the polynomial itself
    torch.testing.assert_close(_chebyshev(7, x), t7, rtol=1e-13, atol=1e-13)
    # kaiser_bessel_derived: a beta so large that the first Kaiser taps underflow to 0.
    beta = torch.tensor(900.0, dtype=torch.float64, requires_grad=True)
    W.kaiser_bessel_derived(10, beta).sum().backward()
    assert torch.isfinite(beta.grad)


@pytest.mark.parametrize("case", CASES[:15] + GRAD_CASES, ids=_case_id)
@pytest.mark.parametrize("sym", [True, False])
def test_gradcheck_width(case, sym):
    name, params = case
    # Width values away from the kinks of the piecewise definition (integers, and where a
    # stretched tap reaches the edge), so finite differences see a smooth function.
    for length, width in ((9, 5.37), (8, 7.61), (4, 0.63)):
        if not _defined(name, length, sym, params):
            continue
        w = torch.tensor(width, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda w, n=length: W.get_window(name, n, sym=sym, width=w, **params), (w,)
        )


@pytest.mark.parametrize("name", ["lanczos", "hann", "triang", "parzen", "bohman"])
@pytest.mark.parametrize("sym", [True, False])
def test_gradgradcheck_width(name, sym):
    # Second derivatives in the width (Hessian-vector products, gradient penalties): the
    # centre tap of an odd window is evaluated at offset 0 for every width, where
    # torch.sinc's double backward gave nan for the Lanczos window.
    for length, width in ((9, 5.37), (8, 7.61), (7, 3.3)):
        w = torch.tensor(width, dtype=torch.float64, requires_grad=True)
        fn = lambda w, n=length: W.get_window(name, n, sym=sym, width=w)  # noqa: E731
        assert torch.autograd.gradgradcheck(fn, (w,))


# ---------------------------------------------------------------- fractional width


def _overlap(t, width):
    return np.clip(np.minimum(t + 0.5, width / 2) - np.maximum(t - 0.5, -width / 2), 0, None)


def test_width_definition_against_numpy_reference():
    # The documented rule, written independently in numpy for the Hann and Gaussian shapes.
    for length in (8, 9):
        t = np.arange(length) - (length - 1) / 2
        half = (length - 1) / 2
        for width in (0.4, 1.0, 2.5, 4.2, 6.0, length - 0.3):
            stretched = np.clip(t * length / width, -half, half)
            hann = (0.5 + 0.5 * np.cos(np.pi * stretched / half)) * _overlap(t, width)
            got = W.hann(length, width=width, dtype=torch.float64)
            np.testing.assert_allclose(got.numpy(), hann, atol=1e-12)
            gauss = np.exp(-(stretched**2) / (2 * 1.7**2)) * _overlap(t, width)
            got = W.gaussian(length, 1.7, width=width, dtype=torch.float64)
            np.testing.assert_allclose(got.numpy(), gauss, atol=1e-12)


@pytest.mark.parametrize("sym", [True, False])
def test_width_of_windows_defined_at_the_taps(sym):
    # kaiser_bessel_derived and dpss join their taps by straight lines before the stretch;
    # chebwin's shape is the lowest-degree cosine series through its taps. References
    # built in numpy from scipy's taps.
    for length in (8, 9):
        m = length if sym else length + 1
        t = np.arange(m) - (m - 1) / 2
        half = (m - 1) / 2
        for width in (0.7, 3.3, 5.9, length - 0.4):
            stretched = np.clip(t * (m / (width * m / length)), -half, half)
            overlap = _overlap(t, width * m / length)
            for name, params in (
                ("kaiser_bessel_derived", {"beta": 5.0}),
                ("dpss", {"NW": 2.2}),
                ("chebwin", {"at": 60.0}),
            ):
                if not _defined(name, length, sym):
                    continue
                taps = getattr(sw, name)(m, **params)  # the symmetric m-tap window
                if name == "chebwin":
                    ks = np.arange((m + 1) // 2)
                    basis = np.cos(2 * np.pi * np.outer(t[: len(ks)], ks) / m)
                    coefficients = np.linalg.solve(basis, taps[: len(ks)])
                    shape = np.cos(2 * np.pi * np.outer(stretched, ks) / m) @ coefficients
                else:
                    shape = np.interp(stretched, t, taps)
                expected = (shape * overlap)[:length]
                got = W.get_window(
                    name, length, sym=sym, width=width, dtype=torch.float64, **params
                )
                np.testing.assert_allclose(got.numpy(), expected, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_width_equal_to_length_is_the_plain_window(case):
    name, params = case
    for length in (1, 2, 7, 8):
        for sym in (True, False):
            if not _defined(name, length, sym, params):
                continue
            plain = W.get_window(name, length, sym=sym, dtype=torch.float64, **params)
            plain32 = W.get_window(name, length, sym=sym, dtype=torch.float32, **params)
            wide = W.get_window(name, length, sym=sym, width=float(length), **params)
            assert torch.equal(wide, plain32), (length, sym)
            wide64 = W.get_window(
                name, length, sym=sym, width=torch.tensor(float(length)).double(), **params
            )
            assert torch.equal(wide64, plain), (length, sym)


@pytest.mark.parametrize("name", ["boxcar", "hann", "gaussian", "kaiser", "triang", "lanczos"])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("normalize", [None, "sum"])
def test_gradient_at_full_width_is_the_left_derivative(name, sym, normalize):
    # width == length is the largest width allowed and where a learned width starts, so its
    # gradient must be the one-sided derivative from below (the only side there is). Ties in
    # the overlap's min/max and the stretch's clip gave half of it, or a slope from outside.
    params = {"gaussian": {"std": 2.0}, "kaiser": {"beta": 5.0}}.get(name, {})
    for length in (3, 7, 8):

        def fn(w, n=length):
            return W.get_window(name, n, sym=sym, width=w, normalize=normalize, **params)

        full = torch.tensor(float(length), dtype=torch.float64)
        grad = torch.autograd.functional.jacobian(fn, full)
        h = 1e-6
        left = (3 * fn(full) - 4 * fn(full - h) + fn(full - 2 * h)) / (2 * h)
        torch.testing.assert_close(grad, left, atol=1e-6, rtol=1e-5)


def test_boxcar_width_sums_to_width_and_is_centred():
    widths = torch.linspace(0.05, 11.0, 200, dtype=torch.float64)
    box = W.boxcar(11, width=widths.unsqueeze(-1))
    np.testing.assert_allclose(box.sum(-1).squeeze(-1).numpy(), widths.numpy(), atol=1e-12)
    assert torch.equal(box, box.flip(-1))


@pytest.mark.parametrize("name", ["hann", "gaussian", "kaiser", "boxcar", "triang", "tukey"])
def test_width_is_continuous(name):
    params = {"gaussian": {"std": 2.0}, "kaiser": {"beta": 7.0}}.get(name, {})
    step = 3e-4
    widths = torch.arange(0.2, 9.0, step, dtype=torch.float64).unsqueeze(-1)
    for sym in (True, False):
        w = W.get_window(name, 9, sym=sym, width=widths, **params)
        jumps = (w[1:] - w[:-1]).abs().max().item()
        # Lipschitz in width: a small step moves no tap by more than a few 1e-4.
        assert jumps < 50 * step, (sym, jumps)


def test_width_narrows_the_window():
    w = W.hann(31, width=11.0)
    assert torch.count_nonzero(w) <= 11
    assert torch.equal(w, w.flip(-1))
    assert w.argmax() == 15


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: W.get_window("hanm", 5), ValueError, "unknown window 'hanm'"),
        (lambda: W.hann(0), ValueError, "length must be >= 1; got 0"),
        (lambda: W.hann(-3), ValueError, "length must be >= 1; got -3"),
        (lambda: W.hann(2.5), TypeError, "length must be an integer; got 2.5"),
        (lambda: W.hann(True), TypeError, "length must be an integer; got True"),
        (lambda: W.gaussian(5, -1.0), ValueError, r"gaussian parameter std must be > 0; got -1.0"),
        (lambda: W.gaussian(5, 0), ValueError, r"std must be > 0; got 0"),
        (lambda: W.gaussian(5, float("nan")), ValueError, r"std must be > 0; got nan"),
        (lambda: W.tukey(5, 1.5), ValueError, r"alpha must be in \[0, 1\]; got 1.5"),
        (lambda: W.tukey(5, -0.1), ValueError, r"alpha must be in \[0, 1\]; got -0.1"),
        (lambda: W.kaiser(5, -2.0), ValueError, r"beta must be >= 0; got -2.0"),
        (lambda: W.general_gaussian(5, 0.0, 1.0), ValueError, r"p must be > 0; got 0.0"),
        (lambda: W.general_gaussian(5, 1.0, -1.0), ValueError, r"sig must be > 0; got -1.0"),
        # True read as 1.0 (a 1 dB Chebyshev window).
        (lambda: W.chebwin(9, True), TypeError, "at must be a number or a tensor; got True"),
        (lambda: W.general_hamming(5, 2.0), ValueError, r"alpha must be in \[0, 1\]; got 2.0"),
        (lambda: W.exponential(5, tau=0.0), ValueError, r"tau must be > 0; got 0.0"),
        (lambda: W.exponential(5, center=1.0), ValueError, "center must be None when sym=True"),
        (lambda: W.general_cosine(5, []), ValueError, "a must be a non-empty sequence"),
        (
            lambda: W.gaussian(5, torch.tensor([1.0, -2.0])),
            ValueError,
            r"std must be > 0; got tensor \[1.0, -2.0\]",
        ),
        (lambda: W.hann(5, width=0.0), ValueError, r"width must be in \(0, 5\] .*got 0.0"),
        (lambda: W.hann(5, width=5.5), ValueError, r"width must be in \(0, 5\] .*got 5.5"),
        (lambda: W.get_window("gaussian", 5), ValueError, "requires parameter 'std'"),
        (lambda: W.get_window("hann", 5, std=1.0), TypeError, "unexpected parameter.*std"),
        (lambda: W.gaussian(5, 2.0, beta=1.0), TypeError, r"gaussian window .*beta; accepted: std"),
        (lambda: W.hann(5, std=1.0), TypeError, "hann window got unexpected parameter.*std"),
        (lambda: W.get_window(("tukey", 0.5, 2), 5), ValueError, "takes 1 parameter"),
        # scipy takes NW alone in a dpss tuple (its next argument would be Kmax, not norm).
        (lambda: W.get_window(("dpss", 3.0, 2), 16), ValueError, "dpss window takes 1 param"),
        # Past ~6,150 dB the spectrum overflows float64: NaN taps without a word before.
        (lambda: W.chebwin(31, 6100.0), ValueError, "at must be > 0 and <= 6000; got 6100.0"),
        (lambda: W.get_window((3, 4), 5), ValueError, "must start with the window name"),
        (lambda: W.get_window(None, 5), TypeError, "window must be a name"),
        (lambda: W.hann(5, normalize="area"), ValueError, "normalize must be one of.*'area'"),
        (lambda: W.hann(2, normalize="sum"), ValueError, "hann window of length 2 has a sum"),
        (lambda: W.hann(5, sym="yes"), TypeError, "sym must be True or False; got 'yes'"),
        (lambda: W.hann(5, dtype=torch.int64), TypeError, "dtype must be a floating"),
        (lambda: W.hann(5, device="tpu"), ValueError, "device must name a torch device.*'tpu'"),
        (lambda: W.hann(5, device=0.5), TypeError, "device must be a torch.device.*got 0.5"),
        (lambda: W.gaussian(5, "wide"), TypeError, "std must be a number or a tensor"),
        (
            lambda: W.gaussian(5, torch.ones(3), width=torch.full((2,), 2.0)),
            ValueError,
            r"shapes \[\(3,\), \(2,\)\] do not broadcast",
        ),
        (lambda: W.taylor(5, 0), ValueError, "nbar must be an integer from 1 to 450; got 0"),
        # Its coefficients' (nbar - 1)**2 grid asked 8 TB for nbar=10**6 (an allocator error).
        (lambda: W.taylor(8, 10**6), ValueError, "nbar must be an integer from 1 to 450; got"),
        (lambda: W.taylor(5, 2.5), TypeError, "nbar must be an integer; got 2.5"),
        (lambda: W.taylor(5, 4, -3.0), ValueError, "sll must be > 0; got -3.0"),
        (lambda: W.taylor(5, norm="yes"), TypeError, "norm must be True or False; got 'yes'"),
        (
            lambda: W.chebwin(5, 0.0),
            ValueError,
            r"chebwin parameter at must be > 0 and <= 6000; got 0.0",
        ),
        (lambda: W.chebwin(5, -50.0), ValueError, r"at must be > 0 and <= 6000; got -50.0"),
        (lambda: W.get_window("cheb", 5), ValueError, "chebwin window requires parameter 'at'"),
        (lambda: W.kaiser_bessel_derived(6, -1.0), ValueError, r"beta must be >= 0; got -1.0"),
        (
            lambda: W.kaiser_bessel_derived(7, 4.0),
            ValueError,
            "kaiser_bessel_derived window: only defined for an even length; got 7",
        ),
        (
            lambda: W.kaiser_bessel_derived(1, 4.0),
            ValueError,
            "only defined for an even length; got 1",
        ),
        (
            lambda: W.kaiser_bessel_derived(8, 4.0, sym=False),
            ValueError,
            r"kaiser_bessel_derived window: only defined for sym=True",
        ),
        (
            lambda: W.get_window("kbd_periodic", 8, beta=4.0),
            ValueError,
            r"only defined for sym=True",
        ),
        (lambda: W.kaiser_bessel_derived(8, 4.0, True), TypeError, "positional argument"),
        (lambda: W.dpss(8, 0.0), ValueError, r"dpss parameter NW must be > 0 and < length / 2"),
        (
            lambda: W.dpss(8, 4.0),
            ValueError,
            r"NW must be > 0 and < length / 2 \(4 for length 8\); got 4.0",
        ),
        (
            lambda: W.dpss(8, torch.tensor([1.0, 5.0])),
            ValueError,
            r"< length / 2 \(4 for length 8\); got tensor \[1.0, 5.0\]",
        ),
        (lambda: W.dpss(8, 4.0, sym=False), ValueError, r"4 for length 8\); got 4.0"),
        (lambda: W.dpss(8, 2.0, 3), ValueError, "dpss parameter Kmax must be None .*got 3"),
        (lambda: W.dpss(8, 2.0, Kmax=1), ValueError, "Kmax must be None .*several tapers"),
        (
            lambda: W.dpss(8, 2.0, return_ratios=True),
            ValueError,
            "return_ratios must be False .*got True",
        ),
        (
            lambda: W.dpss(8, 2.0, norm="l1"),
            ValueError,
            r"dpss parameter norm must be one of None, 2, 'approximate', 'subsample'; got 'l1'",
        ),
        (lambda: W.dpss(8, 2.0, norm=True), ValueError, "norm must be one of .*got True"),
        (lambda: W.dpss(8, 2.0, norm=[2]), ValueError, r"norm must be one of .*got \[2\]"),
        (lambda: W.get_window("dpss", 8, NW=2.0, Kmax=2), TypeError, "accepted: NW, norm"),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_whose_std_squared_underflows_is_the_one_tap_limit(dtype):
    # scipy's t**2 / (2 std**2) is 0 / 0 at the centre for std = 1e-300: a NaN window that
    # silently turned every smoothed sample into NaN (written to PCM as silence).
    for std in (1e-300, 1e-160):
        w = W.get_window("gaussian", 5, std=std, normalize="sum", dtype=dtype)
        torch.testing.assert_close(w, torch.tensor([0.0, 0, 1, 0, 0], dtype=dtype))


def test_a_window_not_finite_in_its_dtype_is_refused():
    # Parameters inside their ranges whose window overflows float32: refused by name rather
    # than returned as Infs.
    with pytest.raises(ValueError, match=r"general_cosine window of length 7 is not finite in "
                                         r"torch.float32 .*a=\[1e\+300\]"):  # fmt: skip
        W.get_window("general_cosine", 7, a=[1e300], dtype=torch.float32)
    assert torch.isfinite(W.get_window("general_cosine", 7, a=[1e300], dtype=torch.float64)).all()


def test_width_true_and_a_zero_energy_are_refused_in_plain_words():
    with pytest.raises(TypeError, match="width must be a number or a tensor; got True"):
        W.get_window("hann", 9, width=True)
    with pytest.raises(ValueError, match="has an energy of zero"):
        W.get_window("general_cosine", 5, a=[0.0], normalize="energy")


def test_broadcast_shapes_matches_torch():
    from diffconv_core._window_build import broadcast_shapes

    cases = [((), ()), ((3,), ()), ((2, 1), (3,)), ((1,), (4, 1, 5)), ((2, 3), (1, 3), (2, 1))]
    for shapes in cases:
        assert broadcast_shapes(*shapes) == tuple(torch.broadcast_shapes(*shapes))
    # Building windows does not pay torch.broadcast_shapes' first-call sympy import.
    import subprocess
    import sys

    code = (
        "import sys, torch; from diffconv_core import windows, filters; "
        "before = 'sympy' in sys.modules; "
        "windows.gaussian(5, torch.ones(2), width=torch.full((3, 1), 4.0)); "
        "[windows.get_window(w, 32) for w in (('dpss', 2.0), ('chebwin', 50.0), "
        "('kaiser_bessel_derived', 3.0))]; "
        "filters.bandpass(11, [torch.tensor(0.2), 0.5]); print(before, 'sympy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = out.stdout.split()
    assert after == before


def test_sequence_parameters_holding_tensors_keep_the_graph():
    a0 = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    w = W.general_cosine(8, [a0, 0.5])
    assert w.dtype == torch.float64
    np.testing.assert_allclose(w.detach().numpy(), sw.hann(8), atol=1e-12)
    w.sum().backward()
    # d/da0 of sum_n (a0 + a1 cos(x_n)) is the number of taps.
    assert a0.grad.item() == pytest.approx(8.0)


@pytest.mark.parametrize("device", DEVICES)
def test_devices(device):
    for name, params in CASES:
        for sym in (True, False):
            if not _defined(name, 16, sym, params):
                continue
            got = W.get_window(name, 16, sym=sym, dtype=torch.float64, device=device, **params)
            assert got.device.type == device
            ref = getattr(sw, name)(16, **params, sym=sym)
            np.testing.assert_allclose(got.cpu().numpy(), ref, atol=1e-12, err_msg=name)
    std = torch.tensor(2.0, dtype=torch.float64, device=device, requires_grad=True)
    width = torch.tensor(5.5, dtype=torch.float64, device=device, requires_grad=True)
    w = W.gaussian(9, std, width=width, normalize="sum")
    assert w.device.type == device
    (w * torch.arange(9.0, device=device)).sum().backward()
    assert std.grad.device.type == device and torch.isfinite(width.grad)
    assert torch.autograd.gradcheck(lambda s, w: W.kaiser(9, s, width=w), (std, width))


def test_every_listed_window_has_its_own_function():
    for entry in W.list_windows():
        assert callable(getattr(W, entry["name"])), entry["name"]
        assert entry["name"] in W.__all__


_PARAM_STRATEGIES = {
    "gaussian": {"std": st.floats(0.05, 50.0)},
    "general_gaussian": {"p": st.floats(0.1, 5.0), "sig": st.floats(0.1, 30.0)},
    "kaiser": {"beta": st.floats(0.0, 30.0)},
    # Below ~1e-15 scipy's tukey loses its last taper tap to rounding (-2/alpha + 2/alpha).
    "tukey": {"alpha": st.just(0.0) | st.floats(1e-6, 1.0)},
    "general_hamming": {"alpha": st.floats(0.0, 1.0)},
    "exponential": {"tau": st.floats(0.05, 30.0)},
    "general_cosine": {"a": st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=5)},
    "taylor": {"nbar": st.integers(1, 8), "sll": st.floats(1.0, 80.0), "norm": st.booleans()},
    "chebwin": {"at": st.floats(0.5, 200.0)},
    "kaiser_bessel_derived": {"beta": st.floats(0.0, 30.0)},
    # NW is drawn as a fraction of its upper bound, length / 2 (scaled in the test).
    "dpss": {
        "NW": st.floats(0.01, 0.99),
        "norm": st.sampled_from([None, 2, "approximate", "subsample"]),
    },
}


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    name=st.sampled_from(sorted(_PARAM_STRATEGIES)),
    length=st.integers(1, 64),
    sym=st.booleans(),
)
def test_random_parameters_match_scipy(data, name, length, sym):
    params = {k: data.draw(s, label=k) for k, s in _PARAM_STRATEGIES[name].items()}
    if name == "dpss":
        params["NW"] *= max(length, 2) / 2
    if not _defined(name, length, sym, params):
        with pytest.raises(ValueError):
            getattr(sw, name)(length, **params, sym=sym)
        with pytest.raises(ValueError, match=name):
            W.get_window(name, length, sym=sym, **params)
        return
    ref = getattr(sw, name)(length, **params, sym=sym)
    got = W.get_window(name, length, sym=sym, dtype=torch.float64, **params)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    got32 = W.get_window(name, length, sym=sym, dtype=torch.float32, **params)
    # 1e-6 for windows of unit scale; a Taylor window with a low sll peaks far above 1, and
    # float32 spacing grows with it.
    np.testing.assert_allclose(got32.numpy(), ref, rtol=0, atol=1e-6 * max(1.0, abs(ref).max()))


@pytest.mark.parametrize(("length", "sym"), [(8194, True), (10002, True), (16385, False)])
def test_long_even_dpss_matches_scipy(length, sym):
    # The even-length matrix's corner entry m * m / 8 was built in float32 (two Python
    # numbers in torch.where), 3e-5 off scipy's window from length 8194 on.
    got = get_window("dpss", length, NW=2.5, sym=sym, dtype=torch.float64).numpy()
    expected = scipy.signal.windows.dpss(length, 2.5, sym=sym)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8)


def test_parzen_is_continuous_in_a_fractional_width():
    # The two cubic pieces meet at |t| = m / 4; switching at scipy's (m - 1) / 4 moved taps
    # onto the wrong piece as the width changed: a jump of 1.4e-3 at width 9 - 1e-12.
    at = get_window("parzen", 9, width=9.0, dtype=torch.float64)
    below = get_window("parzen", 9, width=9.0 - 1e-12, dtype=torch.float64)
    torch.testing.assert_close(below, at, rtol=0, atol=1e-10)
    widths = torch.linspace(5.0, 9.0, 4001, dtype=torch.float64)
    sweep = torch.stack([get_window("parzen", 9, width=w, dtype=torch.float64) for w in widths])
    assert sweep.diff(dim=0).abs().max() < 2e-3 * (widths[1] - widths[0]) * 100
    for length in range(1, 40):
        for sym in (True, False):
            got = get_window("parzen", length, sym=sym, dtype=torch.float64).numpy()
            np.testing.assert_allclose(
                got, scipy.signal.windows.parzen(length, sym=sym), atol=1e-15
            )


@pytest.mark.parametrize(
    ("window", "params", "name"),
    [
        ("gaussian", {"std": None}, "std"),
        ("kaiser", {"beta": None}, "beta"),
        ("tukey", {"alpha": None}, "alpha"),
        ("chebwin", {"at": None}, "at"),
        ("general_cosine", {"a": None}, "a"),
        ("exponential", {"tau": None}, "tau"),
    ],
)
def test_a_continuous_parameter_given_as_none_is_refused_by_name(window, params, name):
    # None fell through to the formula: "unsupported operand type(s) for /: 'Tensor' and
    # 'NoneType'". exponential's center is the one parameter None is meant for.
    with pytest.raises(TypeError, match=f"{window} parameter {name} must be .*; got None"):
        get_window(window, 9, **params)
    get_window("exponential", 9, center=None, tau=2.0)


@pytest.mark.parametrize(
    ("name", "params", "length", "sym"),
    [
        ("dpss", {"NW": 2.0}, 8, True),
        ("dpss", {"NW": 2.0}, 9, False),
        ("kaiser_bessel_derived", {"beta": 4.0}, 8, True),
    ],
)
def test_width_gradient_of_tap_defined_windows_at_full_width_is_the_left_derivative(
    name, params, length, sym
):
    # Windows known only at their taps are interpolated between them. On a tap, the segment
    # was always the one to the right: the inner one on the negative half, so the gradient
    # of a symmetric window at width == length (where learn="width" starts) was lopsided.
    width = torch.tensor(float(length), dtype=torch.float64, requires_grad=True)
    w = get_window(name, length, width=width, sym=sym, **params)
    rows = [torch.autograd.grad(w[i], width, retain_graph=True)[0] for i in range(length)]
    step = 1e-7
    narrower = get_window(name, length, width=length - step, sym=sym, dtype=torch.float64, **params)
    left = (w.detach() - narrower) / step
    torch.testing.assert_close(torch.stack(rows), left, rtol=0, atol=1e-6)
