"""diffconv_core.nn: Modules, their parameters, and short optimisation runs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from torch.func import functional_call

from diffconv_core import convolve
from diffconv_core import filters as F
from diffconv_core import windows as W
from diffconv_core.nn import FIRFilter, WindowConv

from .conftest import DEVICES


def _scipy_same(x, taps):
    return np.stack([scipy.signal.convolve(row, taps, mode="same") for row in x])


@pytest.mark.parametrize(
    "learn, expected",
    [(None, []), ("taps", ["taps"]), ("params", ["std"]), ("width", ["width"])],
)
def test_window_conv_parameters_and_output(learn, expected):
    x = np.random.default_rng(0).standard_normal((2, 40))
    layer = WindowConv("gaussian", 9, learn, std=1.8, dtype=torch.float64)
    assert [name for name, _ in layer.named_parameters()] == expected
    ref_taps = scipy.signal.windows.gaussian(9, 1.8)
    ref_taps = ref_taps / ref_taps.sum()
    np.testing.assert_allclose(layer.window().detach().numpy(), ref_taps, atol=1e-12)
    out = layer(torch.from_numpy(x))
    np.testing.assert_allclose(out.detach().numpy(), _scipy_same(x, ref_taps), atol=1e-12)
    keys = set(layer.state_dict())
    assert keys == ({"taps"} if learn in (None, "taps") else set(expected))


def test_only_continuous_parameters_are_learned():
    layer = WindowConv("taylor", 16, learn="params", nbar=5, dtype=torch.float64)
    assert [name for name, _ in layer.named_parameters()] == ["sll"]
    ref = scipy.signal.windows.taylor(16, 5, 30.0)
    np.testing.assert_allclose(layer.window().detach().numpy(), ref / ref.sum(), atol=1e-12)
    assert "nbar=5" in repr(layer)
    fir = FIRFilter("lowpass", 0.3, numtaps=21, window=("taylor", 5, 40.0), learn_window=True)
    assert sorted(n for n, _ in fir.named_parameters()) == ["cutoff", "window_sll"]


def test_fixed_tensor_parameters_follow_the_module():
    std = torch.tensor([1.0, 2.0])
    layer = WindowConv("gaussian", 9, learn="width", std=std, width=6.5)
    assert "std" in dict(layer.named_buffers()) and layer.std.data_ptr() != std.data_ptr()
    double = layer.double()
    assert double.std.dtype == torch.float64
    out = double.window()
    assert out.dtype == torch.float64 and out.shape == (2, 9)
    torch.testing.assert_close(out, W.gaussian(9, std.double(), width=6.5, normalize="sum"))
    assert "std=tensor(2,)" in repr(layer)
    fir = FIRFilter("lowpass", 0.3, numtaps=21, window="kaiser", beta=torch.tensor(5.0))
    assert "window_beta" in dict(fir.named_buffers())
    fir = fir.double()
    assert fir.window_beta.dtype == torch.float64
    # The cutoff was stored in float32 before .double(): compare at that value.
    ref = scipy.signal.firwin(21, fir.cutoff.item(), window=("kaiser", 5.0))
    np.testing.assert_allclose(fir.kernel().detach().numpy(), ref, atol=1e-12)
    assert "beta=5.0" in repr(fir)


def test_fixed_tensor_width_follows_the_module():
    # A width given as a tensor while the parameters are learned is used at every forward:
    # it was a plain attribute, outside state_dict, left in float32 by .double().
    layer = WindowConv("gaussian", 31, learn="params", std=4.0, width=torch.tensor(17.5))
    assert "width" in dict(layer.named_buffers())
    assert "width" in layer.state_dict()
    double = layer.double()
    assert double.width.dtype == torch.float64 and double.window().dtype == torch.float64
    expected = W.gaussian(31, 4.0, width=17.5, normalize="sum", dtype=torch.float64)
    torch.testing.assert_close(double.window().detach(), expected)
    restored = WindowConv("gaussian", 31, learn="params", std=4.0, width=torch.tensor(9.0))
    restored.load_state_dict(layer.state_dict())
    assert float(restored.width) == 17.5


def test_window_conv_tuple_window_fixed_width_and_options():
    layer = WindowConv(("kaiser", 6.0), 15, normalize=None, width=11.5, padding="reflect")
    want = W.kaiser(15, 6.0, width=11.5)
    torch.testing.assert_close(layer.window(), want)
    x = torch.randn(3, 30)
    torch.testing.assert_close(layer(x), convolve(x, want, padding="reflect"))
    assert "width=11.5" in repr(layer) and "padding='reflect'" in repr(layer)
    full = WindowConv("hann", 8, mode="full")
    assert full(torch.randn(20)).shape == (27,)


def test_window_conv_state_dict_round_trip_and_double():
    layer = WindowConv("tukey", 21, learn="params", alpha=0.3)
    with torch.no_grad():
        layer.alpha.fill_(0.65)
    clone = WindowConv("tukey", 21, learn="params", alpha=0.3)
    clone.load_state_dict(layer.state_dict())
    x = torch.randn(2, 64)
    torch.testing.assert_close(clone(x), layer(x))
    double = clone.double()
    assert double.alpha.dtype == torch.float64
    assert double(x.double()).dtype == torch.float64
    ref = scipy.signal.windows.tukey(21, 0.65)
    np.testing.assert_allclose(double.window().detach().numpy(), ref / ref.sum(), atol=1e-12)
    fixed = WindowConv("hann", 7).double()
    assert fixed.taps.dtype == torch.float64


@pytest.mark.parametrize("device", DEVICES)
def test_modules_move_to_device(device):
    layer = WindowConv("hann", 9, learn="width").to(device)
    assert layer.width.device.type == device
    assert layer(torch.randn(2, 32, device=device)).device.type == device
    fir = FIRFilter("bandpass", (0.2, 0.5), numtaps=21, learnable=False).to(device)
    assert fir.cutoff.device.type == device
    assert fir(torch.randn(32, device=device)).device.type == device


def test_window_conv_gradients_reach_the_parameters():
    x = torch.randn(2, 30, dtype=torch.float64)
    layer = WindowConv("general_gaussian", 11, learn="params", p=1.2, sig=2.5, dtype=torch.float64)
    p, sig = layer.p.detach().clone(), layer.sig.detach().clone()

    def run(p, sig):
        return functional_call(layer, {"p": p, "sig": sig}, (x,))

    assert torch.autograd.gradcheck(run, (p.requires_grad_(), sig.requires_grad_()))
    wide = WindowConv("hann", 11, learn="width", width=7.3, dtype=torch.float64)
    w0 = wide.width.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda w: functional_call(wide, {"width": w}, (x,)), (w0,))


def test_out_of_range_parameters_are_clamped_in_forward():
    layer = WindowConv("gaussian", 9, learn="params", std=1.0)
    with torch.no_grad():
        layer.std.fill_(-3.0)
    assert torch.isfinite(layer(torch.randn(20))).all()
    wide = WindowConv("hann", 9, learn="width")
    with torch.no_grad():
        wide.width.fill_(50.0)
    torch.testing.assert_close(wide.window(), W.hann(9, normalize="sum"))
    fir = FIRFilter("lowpass", 0.3, numtaps=11)
    with torch.no_grad():
        fir.cutoff.fill_(1.5)
    assert torch.isfinite(fir(torch.randn(20))).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("window", "params", "scale"),
    [
        ("gaussian", {"std": 2.0}, "std"),
        ("exponential", {"tau": 2.0}, "tau"),
        ("general_gaussian", {"p": 1.5, "sig": 2.0}, "sig"),
    ],
)
def test_a_scale_pushed_below_zero_at_an_even_length_is_clamped_not_refused(
    window, params, scale, dtype
):
    # Clamped to its dtype's epsilon, an even-length window's taps all underflowed and its
    # normalisation refused it mid-training ("has a sum of zero"). Computed from its log,
    # it is the limit: the two centre taps, 0.5 each; its gradient there is 0 (flat).
    layer = WindowConv(window, 10, learn="params", dtype=dtype, **params)
    with torch.no_grad():
        getattr(layer, scale).fill_(-1.0)
    want = torch.zeros(10, dtype=dtype)
    want[4:6] = 0.5
    torch.testing.assert_close(layer.window().detach(), want)
    layer(torch.randn(2, 50, dtype=dtype)).pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_narrow_normalised_windows_keep_their_shape():
    # get_window itself: a Gaussian of std 0.01 at length 10, an exponential whose centre
    # is the periodic window's dropped tap, a narrow general Gaussian, a tiny width.
    half = torch.tensor([0, 0, 0, 0, 0.5, 0.5, 0, 0, 0, 0], dtype=torch.float64)
    for got in (
        W.gaussian(10, 0.01, normalize="sum", dtype=torch.float64),
        W.general_gaussian(10, 3.0, 0.01, normalize="sum", dtype=torch.float64),
        W.gaussian(10, 0.001, normalize="sum", width=3.3, dtype=torch.float64),
    ):
        torch.testing.assert_close(got, half)
    edge = W.exponential(9, 9.0, 1e-6, sym=False, normalize="peak", dtype=torch.float64)
    torch.testing.assert_close(edge, torch.eye(9, dtype=torch.float64)[8])
    # Where nothing underflows, the normalised window is the scaled plain one (gradients too).
    std = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: W.gaussian(10, s, normalize="sum"), (std,))
    plain = W.gaussian(10, 1.7, dtype=torch.float64)
    torch.testing.assert_close(
        W.gaussian(10, 1.7, normalize="sum", dtype=torch.float64), plain / plain.sum()
    )


def test_a_parameter_pushed_out_of_range_gets_the_gradient_back():
    # The clamp's zero gradient outside the range left a parameter there for good: a tukey
    # alpha stepped past 1, or a width past the length, could never come back. Straight
    # through, the gradient is the one at the nearest value inside, pointing back.
    x = torch.zeros(41, dtype=torch.float64)
    x[20] = 1.0
    target = W.tukey(9, 0.5, normalize="sum", dtype=torch.float64)
    layer = WindowConv("tukey", 9, learn="params", alpha=0.8, dtype=torch.float64)
    with torch.no_grad():
        layer.alpha.fill_(1.5)
    (layer(x)[16:25] - target).pow(2).sum().backward()
    assert layer.alpha.grad > 0  # descent lowers alpha towards 0.5
    wide = WindowConv("hann", 9, learn="width", dtype=torch.float64)
    with torch.no_grad():
        wide.width.fill_(50.0)
    narrow = W.hann(9, width=5.0, normalize="sum", dtype=torch.float64)
    (wide(x)[16:25] - narrow).pow(2).sum().backward()
    assert wide.width.grad > 0  # descent narrows it back towards 5


def test_dpss_nw_past_half_the_length_is_clamped_below_it():
    # NW's bound depends on the length (NW < length / 2): only its lower bound was kept, so a
    # step past the other failed mid-training in get_window.
    layer = WindowConv("dpss", 16, learn="params", NW=2.5, dtype=torch.float64)
    with torch.no_grad():
        layer.NW.fill_(9.0)
    w = layer.window()
    assert torch.isfinite(w).all()
    eps = torch.finfo(torch.float64).eps
    torch.testing.assert_close(w, W.dpss(16, 8.0 * (1 - eps), normalize="sum", dtype=w.dtype))
    w.sum().backward()
    assert layer.NW.grad is not None and torch.isfinite(layer.NW.grad)


def test_reprs():
    assert repr(WindowConv("hann", 31, learn="width")) == (
        "WindowConv(hann, length=31, learn='width', normalize='sum', mode='same', padding='zeros')"
    )
    assert repr(WindowConv("tukey", 8, learn="taps", sym=False)) == (
        "WindowConv(tukey, length=8, learn='taps', sym=False, normalize='sum', mode='same', "
        "padding='zeros')"
    )
    fir = FIRFilter("bandstop", [100.0, 200.0], 31, fs=1000.0, window="kaiser", beta=5.0)
    assert repr(fir) == (
        "FIRFilter(bandstop, numtaps=31, window='kaiser', beta=5.0, fs=1000.0, "
        "learnable=True, mode='same')"
    )
    # A fixed (or starting) window's parameters and a chosen method were left out.
    assert repr(WindowConv("kaiser", 15, beta=5.0, method="fft")) == (
        "WindowConv(kaiser, length=15, learn=None, beta=5.0, normalize='sum', mode='same', "
        "padding='zeros', method='fft')"
    )
    assert "std=2.0" in repr(WindowConv("gaussian", 15, learn="taps", std=2.0))
    assert repr(FIRFilter("lowpass", 0.3, 31, method="direct")).endswith("method='direct')")


@pytest.mark.parametrize("kind", ["lowpass", "highpass", "bandpass", "bandstop"])
def test_fir_filter_equals_firwin(kind):
    band = kind in ("bandpass", "bandstop")
    cutoff = [1000.0, 3000.0] if band else 2000.0
    pass_zero = kind in ("lowpass", "bandstop")
    layer = FIRFilter(kind, cutoff, numtaps=31, fs=16000.0, dtype=torch.float64)
    ref = scipy.signal.firwin(31, cutoff, pass_zero=pass_zero, fs=16000.0)
    np.testing.assert_allclose(layer.kernel().detach().numpy(), ref, atol=1e-12)
    x = np.random.default_rng(1).standard_normal((2, 100))
    out = layer(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, _scipy_same(x, ref), atol=1e-12)
    assert [n for n, _ in layer.named_parameters()] == ["cutoff"]


def test_fir_filter_keeps_a_periodic_suffix():
    # firwin honours a _periodic suffix on the window name; the Module dropped it.
    fir = FIRFilter("lowpass", 0.3, numtaps=7, window="hann_periodic", dtype=torch.float64)
    ref = scipy.signal.firwin(7, 0.3, window="hann_periodic")
    np.testing.assert_allclose(fir.kernel().detach().numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(F.lowpass(7, 0.3, window="hann_periodic"), ref, atol=1e-6)


def test_fir_filter_learnable_flags():
    fixed = FIRFilter("lowpass", 0.25, numtaps=21, learnable=False)
    assert list(fixed.parameters()) == [] and "cutoff" in fixed.state_dict()
    learn = FIRFilter("lowpass", 0.25, numtaps=21, window=("kaiser", 4.0), learn_window=True)
    assert sorted(n for n, _ in learn.named_parameters()) == ["cutoff", "window_beta"]
    learn.kernel().sum().backward()
    assert learn.window_beta.grad is not None and learn.cutoff.grad is not None
    ref = scipy.signal.firwin(21, 0.25, window=("kaiser", 4.0))
    np.testing.assert_allclose(learn.kernel().detach().numpy(), ref, atol=1e-6)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: WindowConv("hann", 9, learn="all"), ValueError, "learn must be one of.*'all'"),
        (lambda: WindowConv("hann", 9, learn="params"), ValueError, "hann window has no contin"),
        (lambda: WindowConv("gaussian", 9), ValueError, "requires parameter 'std'"),
        (lambda: WindowConv("gaussian", 9, std=-1.0), ValueError, "std must be > 0; got -1.0"),
        (lambda: WindowConv("hann", 0), ValueError, "length must be >= 1; got 0"),
        # Window tuples are checked as get_window checks them (an empty one was an
        # IndexError, extra values and values given twice were dropped silently).
        (lambda: WindowConv((), 9), ValueError, "must start with the window name; got"),
        (lambda: WindowConv(("tukey", 0.5, 2), 9), ValueError, "takes 1 parameter.*'tukey'"),
        (
            lambda: WindowConv(("gaussian", 2.0), 9, std=3.0),
            TypeError,
            "std given twice in \\('gaussian', 2.0\\)",
        ),
        (lambda: FIRFilter("lowpass", 0.3, window=()), ValueError, "must start with the window"),
        (lambda: FIRFilter("lowpass", 0.3, window=("hann", 1)), ValueError, "takes 0 param"),
        (lambda: FIRFilter("notch", 0.3), ValueError, "kind must be one of.*'notch'"),
        (lambda: FIRFilter("highpass", 0.3, numtaps=20), ValueError, "odd number of taps"),
        (lambda: FIRFilter("lowpass", 0.0), ValueError, "greater than 0"),
        (lambda: FIRFilter("bandpass", [0.5, 0.2]), ValueError, "strictly increasing"),
        # Keywords the window does not take were dropped without a word (firwin's `width`,
        # a Kaiser `beta` with the default Hamming window, a misspelt `sampling_rate`).
        (lambda: FIRFilter("lowpass", 0.3, width=0.05), TypeError, "unexpected.*width"),
        (lambda: FIRFilter("lowpass", 0.3, beta=8.0), TypeError, "hamming.*unexpected.*beta"),
        (lambda: FIRFilter("lowpass", 0.3, sampling_rate=8e3), TypeError, "sampling_rate"),
        (lambda: FIRFilter("lowpass", 0.3, learn_window=True), ValueError, "nothing|no cont"),
        # A list is one cutoff too many for a lowpass (it became a batch of two filters).
        (lambda: FIRFilter("lowpass", [0.3, 0.5]), ValueError, "takes one cutoff"),
        (lambda: FIRFilter("highpass", (0.3, 0.5), numtaps=21), ValueError, "takes one cutoff"),
        # The cutoff and dtype as firwin checks them (torch.as_tensor's own messages named
        # neither; a complex cutoff kept its real part with a warning).
        (lambda: FIRFilter("lowpass", None), TypeError, "cutoff must be a number or a tensor"),
        (lambda: FIRFilter("lowpass", "0.3"), TypeError, "cutoff must be a number or a tensor"),
        (lambda: FIRFilter("lowpass", torch.tensor(0.3 + 0.5j)), TypeError, "cutoff must be real"),
        (lambda: FIRFilter("lowpass", 0.3, dtype=torch.int64), TypeError, "dtype must be a float"),
        (lambda: FIRFilter("lowpass", 0.3, learnable="no"), TypeError, "learnable must be True"),
        (lambda: FIRFilter("lowpass", 0.3, scale=None), TypeError, "scale must be True or False"),
        # Convolution options fail at construction, not at the first forward pass.
        (lambda: WindowConv("hann", 9, mode="sme"), ValueError, "mode must be one of.*'sme'"),
        (lambda: WindowConv("hann", 9, method="fast"), ValueError, "method must be.*'fast'"),
        (lambda: FIRFilter("lowpass", 0.3, padding="mirror"), ValueError, "padding must.*'mirror'"),
        (lambda: FIRFilter("lowpass", 0.3, mode="valid", padding="reflect"), ValueError, "valid"),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize(
    "length, sym", [(32, True), (4, True), (31, True), (32, False), (7, False), (3, False)]
)
def test_a_learned_width_pushed_below_one_sample_still_gives_a_window(length, sym):
    # A hann built from an even number of taps (symmetric of even length, periodic of odd)
    # narrower than about one sample has no non-zero tap, and normalising it raised
    # mid-training; the learned width now stays just above that.
    layer = WindowConv("hann", length, learn="width", sym=sym, dtype=torch.float64)
    x = torch.randn(2, 200, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for pushed in (1.01, 0.5, 1e-9):
        with torch.no_grad():
            layer.width.fill_(pushed)
        window = layer.window()
        assert torch.isfinite(window).all() and window.sum().item() == pytest.approx(1.0)
        layer(x).pow(2).sum().backward()
        assert torch.isfinite(layer.width.grad).all()


def test_fir_filter_one_cutoff_in_a_list_is_one_filter():
    lp = FIRFilter("lowpass", [0.3], numtaps=31, dtype=torch.float64)
    torch.testing.assert_close(lp.kernel(), F.lowpass(31, [0.3], dtype=torch.float64))
    assert lp.kernel().shape == (31,)


def test_fir_filter_batch_of_cutoffs_is_a_tensor():
    lp = FIRFilter("lowpass", torch.tensor([0.3, 0.5]), numtaps=31, dtype=torch.float64)
    expected = torch.stack([F.lowpass(31, c, dtype=torch.float64) for c in (0.3, 0.5)])
    torch.testing.assert_close(lp.kernel(), expected)


@pytest.mark.parametrize("kind", ["bandpass", "bandstop"])
def test_band_edges_that_cross_or_meet_are_taken_in_order(kind):
    # An optimiser step can take the edges past each other (or both past Nyquist, onto one
    # clamped value): firwin then refused them mid-training.
    f = FIRFilter(kind, (0.2, 0.4), numtaps=31, dtype=torch.float64)
    with torch.no_grad():
        f.cutoff.copy_(torch.tensor([0.32, 0.28]))
    torch.testing.assert_close(f.kernel(), getattr(F, kind)(31, [0.28, 0.32], dtype=torch.float64))
    with torch.no_grad():
        f.cutoff.copy_(torch.tensor([1.2, 1.1]))
    assert torch.isfinite(f.kernel()).all()
    weights = torch.randn(31, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (f.kernel() * weights).sum().backward()  # not the sum: a bandstop's DC gain is always 1
    assert torch.isfinite(f.cutoff.grad).all() and f.cutoff.grad.abs().sum() > 0


def test_multiband_edges_are_kept_and_ordered():
    # The ordering assumed two edges: four made kernel() fail to unpack them.
    f = FIRFilter("bandpass", [0.1, 0.2, 0.3, 0.4], numtaps=63, dtype=torch.float64)
    design = F.firwin(63, [0.1, 0.2, 0.3, 0.4], pass_zero="bandpass", dtype=torch.float64)
    torch.testing.assert_close(f.kernel(), design)
    with torch.no_grad():
        f.cutoff.copy_(torch.tensor([0.3, 0.2, 0.1, 0.4]))
    torch.testing.assert_close(f.kernel(), design)


@pytest.mark.parametrize("edges", [(0.4, 0.4), (1.2, 1.5)], ids=["met", "past-nyquist"])
def test_met_band_edges_have_a_sane_gradient(edges):
    # Kept eps apart, the design was round-off and the float64 gradient 1e13; kept sqrt(eps)
    # of Nyquist apart, it is the narrow band's true gradient.
    f = FIRFilter("bandpass", (0.1, 0.4), numtaps=31, dtype=torch.float64)
    with torch.no_grad():
        f.cutoff.copy_(torch.tensor(edges))
    x = torch.randn(2, 400, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    f(x).pow(2).mean().backward()
    assert torch.isfinite(f.cutoff.grad).all() and f.cutoff.grad.abs().max() < 10


def test_band_training_that_crosses_the_edges_runs_on():
    torch.manual_seed(0)
    x = torch.randn(2, 2000, dtype=torch.float64)
    target = convolve(x, F.bandpass(31, [0.295, 0.305], dtype=torch.float64))
    f = FIRFilter("bandpass", (0.2, 0.4), numtaps=31, dtype=torch.float64)
    opt = torch.optim.Adam(f.parameters(), lr=0.05)
    for _ in range(30):  # the edges crossed at step 3 and raised a ValueError
        opt.zero_grad()
        loss = (f(x) - target).pow(2).mean()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)


def test_a_cutoff_pushed_past_nyquist_gets_its_gradient():
    f = FIRFilter("lowpass", 0.3, numtaps=31, dtype=torch.float64)
    with torch.no_grad():
        f.cutoff.fill_(1.05)
    x = torch.randn(2, 400, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f(x).pow(2).sum().backward()
    assert f.cutoff.grad != 0  # a plain clamp's zero gradient left it stuck there


# ---------------------------------------------------------------- optimisation


def _fit(model, x, target, steps=40):
    opt = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=steps,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = (model(x) - target).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)


@pytest.fixture
def noise():
    return torch.randn(2, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_recovers_a_gaussian_std(noise):
    target = convolve(noise, W.gaussian(41, 3.7, normalize="sum", dtype=torch.float64))
    model = WindowConv("gaussian", 41, learn="params", std=2.0, dtype=torch.float64)
    _fit(model, noise, target)
    assert model.std.item() == pytest.approx(3.7, rel=0.01)


def test_recovers_a_hann_width(noise):
    target = convolve(noise, W.hann(41, width=17.3, normalize="sum", dtype=torch.float64))
    model = WindowConv("hann", 41, learn="width", width=25.0, dtype=torch.float64)
    _fit(model, noise, target)
    assert model.width.item() == pytest.approx(17.3, rel=0.01)


def test_recovers_a_lowpass_cutoff(noise):
    target = convolve(noise, F.lowpass(63, 0.3, dtype=torch.float64))
    model = FIRFilter("lowpass", 0.2, numtaps=63, dtype=torch.float64)
    _fit(model, noise, target)
    assert model.cutoff.item() == pytest.approx(0.3, rel=0.01)


# --- cutoffs, widths and fixed values in the module's dtype ---------------------------------


@pytest.mark.parametrize(
    "kind,cutoff,numtaps,fs",
    [
        ("highpass", 5.0, 4001, 48000.0),  # a DC blocker: 2e-4 of Nyquist
        ("lowpass", 23995.0, 401, 48000.0),  # 2e-4 of Nyquist below it
        ("bandpass", [300.0, 300.5], 2001, 16000.0),  # edges 6e-5 of Nyquist apart
    ],
)
def test_fir_filter_uses_cutoffs_near_the_band_ends_as_given(kind, cutoff, numtaps, fs):
    # The margin kept from 0, from Nyquist and between edges is the design's (float64), not
    # the parameter's: float32's (3.5e-4 of Nyquist) moved a 5 Hz cutoff to 8.3 Hz.
    layer = FIRFilter(kind, cutoff, numtaps, fs=fs)
    pass_zero = {"highpass": False, "lowpass": True, "bandpass": False}[kind]
    expected = scipy.signal.firwin(numtaps, cutoff, pass_zero=pass_zero, fs=fs)
    got = layer.kernel().detach().double().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fir_filter_in_half_precision_is_the_rounded_design(dtype):
    layer = FIRFilter("lowpass", 500.0, 101, fs=16000.0).to(dtype)
    expected = F.lowpass(101, 500.0, fs=16000.0, dtype=dtype)  # designed in float64
    assert layer.kernel().dtype == dtype
    torch.testing.assert_close(layer.kernel().detach(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("length", [8, 10, 16, 32, 64, 259, 2051])
def test_learned_width_in_half_precision_builds_at_both_limits(dtype, length):
    # Clamped in float32: in the parameter's dtype the bounds themselves rounded out of
    # range (259 is 260 in bfloat16; the narrowest width of 8 taps fell to 8/7 exactly).
    layer = WindowConv("hann", length, "width", dtype=dtype)
    x = torch.randn(1, 3 * length, dtype=dtype)
    assert layer(x).dtype == dtype
    # Even lengths have no centre tap: their narrowest buildable width is length/(length-1).
    narrowest = length / (length - 1) * (1 + 1e-6) if length % 2 == 0 else 0.5
    for start, limit in [(2.0 * length, float(length)), (0.5, narrowest)]:
        with torch.no_grad():
            layer.width.fill_(start)
        w = layer.window()
        assert w.dtype == dtype and bool(torch.isfinite(w).all())
        expected = W.get_window("hann", length, width=limit, normalize="sum")
        torch.testing.assert_close(w.float(), expected, rtol=0, atol=2e-2 * expected.max())


def test_fixed_window_tensors_take_the_modules_device_and_keep_their_precision():
    beta = torch.tensor(5.0)
    layer = WindowConv("kaiser", 9, "width", beta=beta, dtype=torch.float16)
    assert {n: t.dtype for n, t in layer.state_dict().items()} == {
        "width": torch.float16,
        "beta": torch.float32,  # as given: chebwin's at=6000 would be 6016 in bfloat16
    }
    assert layer(torch.randn(2, 32, dtype=torch.float16)).dtype == torch.float16
    cheb = WindowConv("chebwin", 31, "width", width=10.0, at=torch.tensor(6000.0),
                      dtype=torch.bfloat16)  # fmt: skip
    assert cheb.window().dtype == torch.bfloat16
    fir = FIRFilter("lowpass", 0.3, 31, window="chebwin", at=torch.tensor(6000.0),
                    dtype=torch.bfloat16)  # fmt: skip
    assert fir.kernel().dtype == torch.bfloat16
    layer = WindowConv("kaiser", 9, "width", beta=beta, device="meta")
    assert {t.device.type for t in layer.state_dict().values()} == {"meta"}
    assert layer(torch.empty(2, 32, device="meta")).shape == (2, 32)
    fir = FIRFilter("lowpass", 0.3, 31, window="kaiser", beta=beta, dtype=torch.float64)
    assert fir(torch.randn(2, 40, dtype=torch.float64)).dtype == torch.float64
