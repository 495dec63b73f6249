"""Keep NaN and Inf local whatever the method.

An FFT mixes every sample into every output (a Toeplitz GEMM every sample of a frame), so one
NaN would poison far more than its window: 0 * NaN is NaN. When the signal or the kernel is
not all finite, its non-finite values are zeroed, the convolution runs, and the outputs whose
window covers one get exactly what the direct sum gives in IEEE arithmetic: NaN where a NaN,
an Inf times a zero or Inf terms of both signs (inf - inf) are covered, else an Inf of the
sign of its Inf terms (sample sign times tap sign; magnitudes don't matter).

Both operands are handled alike: convolution commutes, and ``convolve`` swaps them for
"valid" with a kernel longer than the signal, so the signal may arrive as ``w``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

RangeFn = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def _all_finite(t: torch.Tensor) -> bool:
    # A sum is finite only if every term is (NaN and Inf propagate): one read, no mask.
    # A finite tensor whose sum overflows merely takes the exact check.
    return bool(torch.isfinite(t.detach().sum())) or bool(torch.isfinite(t).all())


def _finite_part(t: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(t), t, torch.zeros((), dtype=t.dtype, device=t.device))


def with_nonfinite_locality(
    range_fn: RangeFn, x: torch.Tensor, w: torch.Tensor, lo: int, hi: int
) -> torch.Tensor:
    """Run ``range_fn(x, w, lo, hi)`` so that non-finite values of ``x`` or ``w`` stay local."""
    x_finite, w_finite = _all_finite(x), _all_finite(w)
    if x_finite and w_finite:
        return range_fn(x, w, lo, hi)
    y = range_fn(x if x_finite else _finite_part(x), w if w_finite else _finite_part(w), lo, hi)
    with torch.no_grad():
        covered, value = _direct_sum_nonfinite(
            range_fn, x.detach(), w.detach(), lo, hi, x_finite, w_finite
        )
    return torch.where(covered, value.to(y.dtype), y)


def _direct_sum_nonfinite(
    range_fn: RangeFn,
    x: torch.Tensor,
    w: torch.Tensor,
    lo: int,
    hi: int,
    x_finite: bool = False,
    w_finite: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which outputs' direct sums have a term with a non-finite factor, and what IEEE
    arithmetic makes of those terms: NaN where a NaN, an Inf times a zero, or Inf terms of
    both signs are covered (inf - inf), else an Inf with the sign of its Inf terms.

    Every term's sign is sign(sample) * sign(tap), so counting the covered Inf terms of each
    sign takes indicator convolutions only: no weighted sum, no tolerance. They run in float64
    so that "covered" (a count >= 1) is decided without round-off. Only the terms an operand
    flagged non-finite can produce are counted; the indicators keep x and w in their places
    (never swapped: a long signal as the kernel would cost the direct method T^2).
    """
    f64 = torch.float64
    inf = torch.inf
    # (indicator over x, indicator over w): their covered products are NaN, +Inf, -Inf terms.
    nan_terms, plus_terms, minus_terms = [], [], []
    if not x_finite:
        nan_terms += [(torch.isnan(x), torch.ones_like(w)), (torch.isinf(x), w == 0)]
        plus_terms += [(x == inf, w > 0), (x == -inf, w < 0)]
        minus_terms += [(x == inf, w < 0), (x == -inf, w > 0)]
    if not w_finite:
        nan_terms += [(torch.ones_like(x), torch.isnan(w)), (x == 0, torch.isinf(w))]
        plus_terms += [(x > 0, w == inf), (x < 0, w == -inf)]
        minus_terms += [(x < 0, w == inf), (x > 0, w == -inf)]

    def covers(terms: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        found = [range_fn(a.to(f64), b.to(f64), lo, hi) > 0.5 for a, b in terms]
        for more in found[1:]:
            found[0] |= more
        return found[0]

    nan, plus, minus = covers(nan_terms), covers(plus_terms), covers(minus_terms)
    nan |= plus & minus
    value = torch.where(plus, inf, -inf)
    return nan | plus | minus, torch.where(nan, torch.nan, value)
