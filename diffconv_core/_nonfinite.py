"""Keep NaN and Inf local whatever the method.

An FFT mixes every sample into every output (a Toeplitz GEMM every sample of a frame), so one
NaN would poison far more than its window: 0 * NaN is NaN. When
the signal is not all finite, the non-finite samples are zeroed, the convolution runs, and the
outputs whose window covers one are marked: NaN where a NaN (or an Inf under a zero tap, or
Infs of both signs) is covered, else an Inf with the sign the direct sum would have.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

RangeFn = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def with_nonfinite_locality(
    range_fn: RangeFn, x: torch.Tensor, w: torch.Tensor, lo: int, hi: int
) -> torch.Tensor:
    """Run ``range_fn(x, w, lo, hi)`` so that non-finite samples of ``x`` stay local."""
    # A sum is finite only if every term is (NaN and Inf propagate): one read, no mask.
    # A finite signal whose sum overflows merely takes the exact check below.
    if bool(torch.isfinite(x.detach().sum())):
        return range_fn(x, w, lo, hi)
    finite = torch.isfinite(x)
    if bool(finite.all()):
        return range_fn(x, w, lo, hi)
    y = range_fn(torch.where(finite, x, torch.zeros((), dtype=x.dtype, device=x.device)), w, lo, hi)
    with torch.no_grad():
        # Indicator convolutions in float64 so that "covered" is decided without round-off.
        K = w.shape[-1]
        box = torch.ones(K, dtype=torch.float64, device=x.device)
        xd = x.detach().to(torch.float64)
        nan_cover = range_fn(torch.isnan(xd).to(torch.float64), box, lo, hi) > 0.5
        inf_cover = range_fn(torch.isinf(xd).to(torch.float64), box, lo, hi) > 0.5
        signed_inf = torch.sign(xd).where(
            torch.isinf(xd), torch.zeros((), dtype=torch.float64, device=x.device)
        )
        weight = range_fn(signed_inf, w.detach().to(torch.float64), lo, hi)
        tolerance = 1e-9 * float(w.detach().abs().max()) * K
        inf_value = torch.where(
            weight.abs() > tolerance,
            torch.sign(weight) * torch.inf,
            torch.full_like(weight, torch.nan),
        ).to(y.dtype)
        # Infs of both signs under one window give inf - inf = NaN in the direct sum.
        both_signs = range_fn((xd == torch.inf).to(torch.float64), box, lo, hi) > 0.5
        both_signs &= range_fn((xd == -torch.inf).to(torch.float64), box, lo, hi) > 0.5
        nan_cover |= both_signs
    y = torch.where(inf_cover, inf_value, y)
    return torch.where(nan_cover, torch.full_like(y, torch.nan), y)
