"""A padding other than zeros without an extended copy of the signal: the convolution with
zeros past the ends, then each edge's outputs again from the few extended samples they read
(``convolution._edges_apart``). Values, NaN placement and gradients must be those of the
extended signal's "valid" convolution, for every mode, padding, method and broadcast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffconv_core import convolution, convolve, correlate

from .conftest import EXPLICIT_METHODS, assert_matches, reference

PADDINGS = ("reflect", "symmetric", "replicate", "circular")
PATTERNS = [((3,), ()), ((2, 1), (3,)), ((4,), (4,)), ((), (2,))]


@pytest.fixture
def edges_apart(monkeypatch):
    """Every signal long enough (T >= 2K) takes the edges apart, however few its samples."""
    monkeypatch.setattr(convolution, "EDGES_APART_SAMPLES", 0)


@pytest.fixture
def extended_copies(monkeypatch):
    """The padding arguments every extension of a signal was asked for."""
    asked = []
    real = convolution.extended_range

    def spy(x, K, mode, padding):
        asked.append((mode, padding))
        return real(x, K, mode, padding)

    monkeypatch.setattr(convolution, "extended_range", spy)
    return asked


@pytest.mark.parametrize("method", [*EXPLICIT_METHODS, "auto"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", ["same", "full"])
@pytest.mark.parametrize("K", [2, 7, 8, 20])
@pytest.mark.parametrize("lead_x, lead_w", PATTERNS)
def test_values_match_the_extended_signal(
    edges_apart, extended_copies, method, padding, mode, K, lead_x, lead_w
):
    gen = torch.Generator().manual_seed(K)
    x = torch.randn(*lead_x, 40, dtype=torch.float64, generator=gen)
    w = torch.randn(*lead_w, K, dtype=torch.float64, generator=gen)
    for function, flipped in ((convolve, False), (correlate, True)):
        got = function(x, w, mode, padding=padding, method=method)
        expected = reference(x, w, mode, padding, correlate=flipped)
        assert_matches(got, expected, torch.float64, f"{function.__name__} {mode} {padding}")
    assert all(asked == "zeros" for _, asked in extended_copies), extended_copies


def test_large_signals_take_the_edges_apart_with_the_real_sizes(extended_copies):
    # No extended copy of 4 x 300,000 samples: the extension ran only for the zero padding
    # (which returns the signal itself) and the edges' "valid" convolutions.
    x = torch.randn(4, 300_000, dtype=torch.float64)
    w = torch.randn(31, dtype=torch.float64)
    got = convolve(x, w, padding="reflect")
    assert_matches(got, reference(x, w, "same", "reflect"), torch.float64, "reflect")
    assert extended_copies and all(asked == "zeros" for _, asked in extended_copies)
    extended_copies.clear()
    convolve(x[:, :40], w, padding="reflect")  # a small signal: the copy is cheaper
    assert extended_copies == [("same", "reflect")]


def test_recorded_calls_keep_the_extended_copy(edges_apart, extended_copies):
    # Autograd through the edges' writes would copy the output's gradient: a recorded call
    # extends the signal as before, its gradients those of the extended signal.
    x = torch.randn(3, 50, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, dtype=torch.float64)
    got = convolve(x, w, padding="reflect")
    assert extended_copies == [("same", "reflect")]
    torch.testing.assert_close(
        got.detach(), torch.from_numpy(reference(x.detach(), w, "same", "reflect"))
    )
    assert torch.autograd.gradcheck(lambda a: convolve(a, w, padding="reflect"), (x[:1, :20],))


@pytest.mark.parametrize("method", EXPLICIT_METHODS)
@pytest.mark.parametrize("padding", PADDINGS)
def test_a_nan_near_an_end_reaches_the_outputs_its_reflections_reach(edges_apart, method, padding):
    # The body's zero padding never sees the extension's copies of a NaN: the edges do.
    x = torch.randn(2, 60, dtype=torch.float64)
    x[0, 1] = float("nan")
    x[1, -2] = float("inf")
    w = torch.rand(7, dtype=torch.float64) + 0.1
    got = convolve(x, w, padding=padding, method=method)
    expected = reference(x, w, "same", padding)
    np.testing.assert_array_equal(np.isnan(got.numpy()), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got.numpy()), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got.numpy()[finite], expected[finite], rtol=1e-10, atol=1e-10)


def test_the_output_is_the_callers_to_modify(edges_apart):
    # Written into after the body's convolution: it must be an array of its own, not a view
    # of the signal.
    x = torch.randn(2, 60, dtype=torch.float64)
    w = torch.randn(7, dtype=torch.float64)
    y = convolve(x, w, padding="reflect")
    before = x.clone()
    y.relu_()
    torch.testing.assert_close(x, before)
    expected = torch.from_numpy(reference(x, w, "same", "reflect")).relu()
    torch.testing.assert_close(y, expected)
