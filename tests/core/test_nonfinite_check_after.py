"""The CPU's order of keeping NaN/Inf local without a graph: the method runs on the operands
as given and its output is kept when all finite; the operands are scanned only otherwise
(``_nonfinite.checks_after``). The values themselves are checked in every order by
test_convolve_nonfinite and test_convolve_large_values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffconv_core

from .conftest import reference


def _counting_method(monkeypatch, method: str) -> tuple[list[str], list[str]]:
    """Record each run of ``method``'s range function and each scan of the operands."""
    from diffconv_core import _nonfinite, convolution

    runs, scans, method_fn = [], [], convolution._RANGE_FUNCTIONS[method]
    magnitudes = _nonfinite._magnitudes

    def run(*args):
        runs.append(method)
        return method_fn(*args)

    def scan(*tensors):
        scans.append(len(tensors))
        return magnitudes(*tensors)

    monkeypatch.setitem(convolution._RANGE_FUNCTIONS, method, run)
    monkeypatch.setattr(_nonfinite, "_magnitudes", scan)
    return runs, scans


@pytest.mark.parametrize("method", ["direct", "fft", "overlap"])
def test_checking_after_runs_the_method_once_and_scans_nothing_for_finite_operands(
    monkeypatch, method
):
    # The CPU without a graph: an all-finite output is kept as it is, no scan of the operands.
    runs, scans = _counting_method(monkeypatch, method)
    # 17 taps: the Toeplitz GEMMs, not the sums; in float64 past the small calls' one
    # convolution and past native work (where float64 also takes one convolution).
    x = torch.randn(64, 2000, dtype=torch.float64)
    w = torch.randn(17, dtype=torch.float64)
    with torch.no_grad():
        y = diffconv_core.convolve(x, w, method=method)
    np.testing.assert_allclose(y.numpy(), reference(x, w, "same"), atol=1e-12)
    assert (runs, scans) == ([method], [])


@pytest.mark.parametrize("method", ["direct", "fft", "overlap"])
@pytest.mark.parametrize("trouble", ["nan", "inf", "huge"])
def test_checking_after_reruns_on_the_scanned_path_when_the_output_is_not_finite(
    monkeypatch, method, trouble
):
    # A NaN or an Inf (which an FFT spreads over every output) or values whose transform
    # overflows (the direct GEMMs' outputs do not, but their sum does): the output is dropped,
    # the operands scanned, and the direct sums' values come out (at the NaN/Inf) or the
    # scaled transform's (for the huge values).
    runs, scans = _counting_method(monkeypatch, method)
    x = torch.full((2, 100), 1e37 if trouble == "huge" else 1.0, dtype=torch.float32)
    if trouble != "huge":
        x[1, 50] = float(trouble)
    w = torch.linspace(0.5, 1.0, 13, dtype=torch.float32)
    y = diffconv_core.convolve(x, w, "valid", method=method)
    want = np.stack([np.convolve(row, w.double().numpy(), "valid") for row in x.double().numpy()])
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=0)  # np.convolve: direct sums
    assert runs[0] == method and len(runs) >= 2 and scans[0] == 2


def test_a_finite_output_whose_sum_overflows_is_computed_again_not_lost(monkeypatch):
    # The check sums the output: outputs near the dtype's limit can overflow that sum though
    # each is finite. That costs a second run of the method, never a wrong value.
    runs, scans = _counting_method(monkeypatch, "direct")
    x = torch.full((4, 64), 2e37, dtype=torch.float32)
    w = torch.ones(13, dtype=torch.float32)  # 13 taps: the Toeplitz GEMMs
    y = diffconv_core.convolve(x, w, "valid", method="direct")
    np.testing.assert_allclose(y.numpy(), np.full((4, 52), 2.6e38), rtol=1e-6)
    assert (runs[:2], scans[:1]) == (["direct", "direct"], [2])


def test_with_a_graph_the_cpu_scans_the_operands_before_the_method(monkeypatch):
    runs, scans = _counting_method(monkeypatch, "fft")
    x = torch.randn(2, 100, dtype=torch.float64, requires_grad=True)
    diffconv_core.convolve(x, torch.ones(5, dtype=torch.float64), method="fft")
    assert (runs, scans) == (["fft"], [2])
