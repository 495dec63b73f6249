"""Keep NaN and Inf local whatever the method.

An FFT mixes every sample into every output (a Toeplitz GEMM every sample of a frame), so one
NaN would poison far more than its window: 0 * NaN is NaN. When
the signal is not all finite, the non-finite samples are zeroed, the convolution runs, and the
outputs whose window covers one get exactly what the direct sum gives in IEEE arithmetic:
NaN where a NaN, an Inf under a zero tap or Inf terms of both signs (inf - inf) are covered,
else an Inf of the sign of its Inf terms (sample sign times tap sign; magnitudes don't matter).
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
        covered, value = _direct_sum_nonfinite(range_fn, x.detach(), w.detach(), lo, hi)
    return torch.where(covered, value.to(y.dtype), y)


def _direct_sum_nonfinite(
    range_fn: RangeFn, x: torch.Tensor, w: torch.Tensor, lo: int, hi: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which outputs' direct sums cover a non-finite sample, and what IEEE arithmetic makes
    of them: NaN where a NaN, an Inf under a zero tap, or Inf terms of both signs are covered
    (inf - inf), else an Inf with the sign of its Inf terms.

    Every term's sign is sign(sample) * sign(tap), so counting the covered Inf terms of each
    sign takes indicator convolutions only: no weighted sum, no tolerance. They run in float64
    so that "covered" (a count >= 1) is decided without round-off.
    """
    f64 = torch.float64

    def covers(samples: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
        return range_fn(samples.to(f64), taps.to(f64), lo, hi) > 0.5

    plus_inf, minus_inf = x == torch.inf, x == -torch.inf
    positive, negative = w > 0, w < 0
    nan = covers(torch.isnan(x), torch.ones_like(w, dtype=f64))
    nan |= covers(plus_inf | minus_inf, w == 0)
    plus_terms = covers(plus_inf, positive) | covers(minus_inf, negative)
    minus_terms = covers(plus_inf, negative) | covers(minus_inf, positive)
    nan |= plus_terms & minus_terms
    value = torch.where(plus_terms, torch.inf, -torch.inf)
    return nan | plus_terms | minus_terms, torch.where(nan, torch.nan, value)
