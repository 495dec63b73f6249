"""Parity of convolve/correlate with scipy.signal, and of every padding with numpy.pad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import diffconv_core
from diffconv_core.padding import pad

from .conftest import (
    BROADCAST_PATTERNS,
    METHODS,
    MODES,
    NUMPY_PAD_MODE,
    PADDINGS,
    check_parity,
    make_pair,
    numpy_pad,
    periodic_index,
    reference,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# (T, K): odd and even kernels, K == T, K > T (odd/even), one-sample signal and kernel.
SIZES = [(9, 3), (10, 4), (5, 5), (4, 7), (3, 8), (1, 4), (6, 1)]


def test_numpy_pad_matches_periodic_index_definition():
    # The reference relies on numpy.pad for pads longer than the signal; make sure its
    # repetition is the periodic-index extension DESIGN.md defines, for every width.
    rng = np.random.default_rng(0)
    for T in range(1, 7):
        x = rng.standard_normal(T)
        for left in range(0, 3 * T + 3):
            for right in (0, 1, T, 2 * T + 1, 3 * T + 2):
                for padding, np_mode in NUMPY_PAD_MODE.items():
                    expected = x[periodic_index(T, left, right, padding)]
                    got = np.pad(x, (left, right), mode=np_mode)
                    assert np.array_equal(got, expected), (T, left, right, padding)


def test_reference_matches_scipy_correlate_definition():
    # The reference's correlate is convolve with the reversed kernel for every mode; check
    # that against scipy.signal.correlate itself, K > T included.
    import scipy.signal

    rng = np.random.default_rng(1)
    for T, K in SIZES:
        x, w = rng.standard_normal(T), rng.standard_normal(K)
        for mode in MODES:
            via_pad = reference(x, w, mode, "zeros", correlate=True)
            expected = scipy.signal.correlate(x, w, mode=mode, method="fft")
            np.testing.assert_allclose(via_pad, expected, atol=1e-12)
            if mode != "valid":
                # The zero-padding route of the reference equals scipy too.
                left, right = (K // 2, (K - 1) // 2) if mode == "same" else (K - 1, K - 1)
                padded = np.pad(x, (left, right))
                np.testing.assert_allclose(
                    scipy.signal.convolve(padded, w, "valid"),
                    scipy.signal.convolve(x, w, mode),
                    atol=1e-12,
                )


@pytest.mark.parametrize("pattern", BROADCAST_PATTERNS, ids=[p[2] for p in BROADCAST_PATTERNS])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_parity_grid_zeros(mode, method, pattern):
    lead_x, lead_w, name = pattern
    # float64 here; float32 is covered by the property test and the long-signal tests.
    for seed, (T, K) in enumerate(SIZES):
        x, w = make_pair(lead_x, lead_w, T, K, seed=seed)
        for corr in (False, True):
            check_parity(x, w, mode, "zeros", method, corr, extra=name)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["same", "full"])
@pytest.mark.parametrize("padding", PADDINGS[1:])
def test_parity_grid_padding(padding, mode, method):
    # Includes pads much longer than the signal (K up to 4x T, T down to 1 and 2).
    sizes = [(9, 3), (10, 4), (5, 5), (3, 8), (2, 9), (1, 5), (4, 17), (6, 2)]
    for seed, (T, K) in enumerate(sizes):
        lead_x, lead_w = ((), ()) if seed % 2 else ((2, 3), (3,))
        x, w = make_pair(lead_x, lead_w, T, K, seed=seed)
        for corr in (False, True):
            check_parity(x, w, mode, padding, method, corr)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_long_signal_short_kernel(mode, method):
    # The overlap-save regime: a long signal, kernels odd/even and of several lengths.
    for seed, (T, K) in enumerate([(3001, 31), (2500, 64), (4096, 257), (1200, 1)]):
        x, w = make_pair((2,), (), T, K, dtype=torch.float32, seed=seed)
        check_parity(x, w, mode, "zeros", method, correlate=bool(seed % 2))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("padding", PADDINGS[1:])
def test_long_signal_with_padding(padding, method):
    x, w = make_pair((2,), (2,), 2000, 41, seed=3)
    for mode in ("same", "full"):
        check_parity(x, w, mode, padding, method, correlate=False)
    x, w = make_pair((), (), 1500, 30, seed=4)
    check_parity(x, w, "same", padding, method, correlate=True)


@pytest.mark.parametrize("method", METHODS)
def test_long_kernel_longer_than_signal(method):
    # A kernel far longer than the signal (F.conv1d collapses here; scipy does not).
    for T, K in [(50, 700), (64, 1000)]:
        x, w = make_pair((2,), (), T, K, seed=T)
        for mode in MODES:
            for corr in (False, True):
                check_parity(x, w, mode, "zeros", method, corr)


@pytest.mark.parametrize("method", ["direct", "overlap"])
@pytest.mark.parametrize(
    ("x_batch", "w_batch"), [((3,), ()), ((2, 1), (3,)), ((), (2,)), ((2,), (2,))]
)
def test_kernels_longer_than_the_signal_are_computed_as_the_signal(
    monkeypatch, method, x_batch, w_batch
):
    # With zeros past the ends these methods take the shorter operand as the kernel (the
    # full convolution is symmetric): 16 x 300 samples with 20,000 taps took 2.2 s direct.
    # Results (broadcast shapes included) and both gradients stay those of the call given.
    from diffconv_core import convolution

    taps_seen = []

    def recorded(real):
        def spy(x, w, *rest):
            taps_seen.append(w.shape[-1])
            return real(x, w, *rest)

        return spy

    # Every way the call reaches its method: the range function, the direct sums alone, the
    # direct method's one convolution over the rows.
    monkeypatch.setitem(
        convolution._RANGE_FUNCTIONS, method, recorded(convolution._RANGE_FUNCTIONS[method])
    )
    for name in ("direct_sums_alone", "_one_convolution"):
        monkeypatch.setattr(convolution, name, recorded(getattr(convolution, name)))
    T, K = 40, 1100
    x, w = make_pair(x_batch, w_batch, T, K, seed=K)
    for mode in ("full", "same"):
        for corr in (False, True):
            taps_seen.clear()
            check_parity(x, w, mode, "zeros", method, corr)
            # ("same" first cuts the kernel to the 2T - 1 taps that reach its samples)
            reach = T if mode == "full" else 2 * T - 1
            assert taps_seen and max(taps_seen) <= reach, (mode, corr, taps_seen)
    xg = x.detach().clone().requires_grad_()
    wg = w.detach().clone().requires_grad_()
    out = diffconv_core.convolve(xg, wg, "full", method=method)
    out.backward(torch.ones_like(out))
    # d/dx of sum(full(x, w)) is sum(w) at every sample (and the other way round).
    torch.testing.assert_close(
        xg.grad, w.sum(-1, keepdim=True).expand_as(out[..., :T]).sum_to_size(xg.shape)
    )
    torch.testing.assert_close(
        wg.grad, x.sum(-1, keepdim=True).expand_as(out[..., :K]).sum_to_size(wg.shape)
    )


@pytest.mark.parametrize("method", METHODS)
def test_taps_that_reach_no_kept_sample_are_not_computed(monkeypatch, method):
    # "same" with a kernel over twice the signal's length: sample n sums taps n - T + 1 .. n,
    # so only 2T - 1 of the K taps reach the T samples kept. The methods are handed those
    # (the FFT transformed 4,096 rows of 33,792 points for 1,024 samples a row); values as
    # scipy's, the other taps' gradient 0, a NaN among them reaches nothing.
    from diffconv_core import convolution

    taps_seen = []

    def recorded(real, kernel_at):
        def spy(*args):
            taps_seen.append(args[kernel_at].shape[-1])
            return real(*args)

        return spy

    # Every way a call reaches its method, and where each takes the kernel.
    for name, kernel_at in (
        ("direct_sums_alone", 1),
        ("_one_convolution", 1),
        ("with_nonfinite_locality", 2),
    ):
        monkeypatch.setattr(convolution, name, recorded(getattr(convolution, name), kernel_at))
    T, K = 40, 1001
    for corr in (False, True):
        x, w = make_pair((2,), (), T, K, seed=K)
        taps_seen.clear()
        check_parity(x, w, "same", "zeros", method, corr)
        assert taps_seen and max(taps_seen) <= 2 * T - 1, taps_seen
    w = w.clone().requires_grad_()
    out = diffconv_core.convolve(x, w, "same", method=method)
    (grad,) = torch.autograd.grad(out.sum(), w)
    reach = slice((K - 1) // 2 - T + 1, (K - 1) // 2 + T)
    assert grad[: reach.start].abs().sum() == 0 and grad[reach.stop :].abs().sum() == 0
    spoiled = w.detach().clone()
    spoiled[0] = spoiled[-1] = float("nan")
    torch.testing.assert_close(diffconv_core.convolve(x, spoiled, "same", method=method), out)


# --- property-based -------------------------------------------------------------------------

_patterns = st.sampled_from(BROADCAST_PATTERNS)


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(1, 48),
    K=st.integers(1, 48),
    mode=st.sampled_from(MODES),
    method=st.sampled_from(METHODS),
    pattern=_patterns,
    dtype=st.sampled_from([torch.float32, torch.float64]),
    corr=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_parity_property_zeros(T, K, mode, method, pattern, dtype, corr, seed):
    lead_x, lead_w, name = pattern
    x, w = make_pair(lead_x, lead_w, T, K, dtype=dtype, seed=seed)
    check_parity(x, w, mode, "zeros", method, corr, extra=name)


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(1, 16),
    K=st.integers(1, 40),
    mode=st.sampled_from(["same", "full"]),
    padding=st.sampled_from(PADDINGS),
    method=st.sampled_from(METHODS),
    pattern=_patterns,
    corr=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_parity_property_padding(T, K, mode, padding, method, pattern, corr, seed):
    lead_x, lead_w, name = pattern
    x, w = make_pair(lead_x, lead_w, T, K, seed=seed)
    check_parity(x, w, mode, padding, method, corr, extra=name)


# --- other input layouts --------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_non_contiguous_and_expanded_inputs(method):
    base = torch.randn(40, 3, dtype=torch.float64)
    x = base.t()  # (3, 40), non-contiguous
    w = torch.randn(1, 5, dtype=torch.float64).expand(3, 5)  # stride 0 on the batch dim
    assert not x.is_contiguous()
    for mode in MODES:
        check_parity(x, w, mode, "zeros", method, correlate=False)
    check_parity(x, w[:, ::2], "same", "reflect", method, correlate=True)


@pytest.mark.parametrize("method", METHODS)
def test_inputs_are_not_modified(method):
    x, w = make_pair((2,), (), 30, 5, seed=7)
    x[0, 3] = float("nan")  # also exercises the non-finite route, which must not write back
    x0, w0 = x.clone(), w.clone()
    for padding in ("zeros", "reflect"):
        diffconv_core.convolve(x, w, "same", padding=padding, method=method)
        diffconv_core.correlate(x, w, "full", padding=padding, method=method)
    assert torch.equal(x.nan_to_num(123.0), x0.nan_to_num(123.0))
    assert torch.equal(w, w0)


def test_default_arguments_are_same_zeros():
    x, w = make_pair((3,), (), 25, 6, seed=2)
    np.testing.assert_allclose(
        diffconv_core.convolve(x, w).numpy(), reference(x, w, "same"), rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        diffconv_core.correlate(x, w).numpy(),
        reference(x, w, "same", correlate=True),
        rtol=0,
        atol=1e-12,
    )


# --- diffconv_core.padding.pad --------------------------------------------------------------


@pytest.mark.parametrize("padding", PADDINGS)
def test_pad_matches_numpy_pad_any_width(padding):
    for T in (1, 2, 3, 7):
        x = torch.randn(2, T, dtype=torch.float64)
        for left, right in [(0, 0), (1, 0), (0, 2), (T, T), (T + 1, 2 * T + 3), (4 * T + 5, 1)]:
            out = pad(x, left, right, padding)
            expected = numpy_pad(x.numpy(), left, right, padding)
            config = f"pad(x{tuple(x.shape)}, {left}, {right}, {padding!r})"
            assert tuple(out.shape) == expected.shape, config
            assert out.dtype == x.dtype, config
            np.testing.assert_array_equal(out.numpy(), expected, err_msg=config)


@pytest.mark.parametrize("padding", PADDINGS)
def test_pad_refuses_fractional_widths_and_empty_signals_by_name(padding):
    # Widths must be whole samples; an empty signal has nothing to mirror, repeat or wrap.
    # Both used to fail deep inside torch (index_select's dtype, a division by zero).
    x = torch.arange(4.0)
    with pytest.raises(TypeError, match=r"pad widths must be integers.*left=2\.5"):
        pad(x, 2.5, 1, padding)
    with pytest.raises(TypeError, match=r"pad widths must be integers.*left=True"):
        pad(x, True, 1, padding)  # a bool is an int to Python, not a number of samples
    assert pad(x, np.int64(2), 1, padding).shape == (7,)  # integer-like widths are fine
    if padding != "zeros":
        with pytest.raises(ValueError, match=rf"empty signal.*{padding}.*\(2, 0\)"):
            pad(torch.ones(2, 0), 1, 1, padding)
    assert pad(torch.ones(2, 0), 0, 0, padding).shape == (2, 0)


def test_pad_and_padding_index_name_bad_arguments():
    # A list, a 0-d signal, an empty length or a negative width failed deep inside torch
    # (AttributeError, IndexError) or gave a meaningless index map.
    from diffconv_core.padding import padding_index

    with pytest.raises(TypeError, match="signal must be a torch.Tensor; got list"):
        pad([1.0, 2.0], 1, 1, "reflect")
    with pytest.raises(ValueError, match="at least one dimension.*0-d"):
        pad(torch.tensor(1.0), 1, 1, "reflect")
    with pytest.raises(ValueError, match="length must be >= 1.*got 0"):
        padding_index(0, 1, 1, "reflect")
    with pytest.raises(TypeError, match="length must be an integer; got 4.5"):
        padding_index(4.5, 1, 1, "circular")
    with pytest.raises(ValueError, match="non-negative; got left=-1, right=1"):
        padding_index(4, -1, 1, "replicate")
    assert padding_index(np.int64(3), 1, 0, "symmetric").tolist() == [0, 0, 1, 2]
    with pytest.raises(ValueError, match="device must name a torch device.*'nope'"):
        padding_index(4, 1, 1, "reflect", "nope")
