"""Continuous window shapes: the formulas behind :mod:`diffconv_core.windows`.

Every shape is a function ``shape(t, m, **params)`` of the offset ``t`` (in samples) of a tap
from the centre of a *symmetric* window of ``m >= 2`` taps, so that evaluating it at
``t = arange(m) - (m - 1) / 2`` reproduces ``scipy.signal.windows.<name>(m, sym=True)``.
Writing them in terms of a continuous offset (instead of an integer index, as scipy does) is
what lets :func:`diffconv_core.windows.get_window` stretch a window to a fractional width.

Three windows have no formula between taps: ``chebwin`` (an inverse DFT: its shape is the
cosine series through its taps), ``kaiser_bessel_derived`` (a running sum) and ``dpss`` (an
eigenvector). They compute their taps on the grid first, then evaluate at ``t``.

Parameters arrive as tensors already broadcast against ``t`` (a trailing axis of taps), so
every formula works for batches of parameters too. Formulas with a removable singularity
use the "double where" trick: the unsafe branch is fed a harmless value where it is not
selected, so that its gradient there is finite and masked out instead of ``0 * inf = nan``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from diffconv_core._transforms import transforms_active
from diffconv_core._tridiagonal import largest_eigenvector
from diffconv_core._validation import broadcast_shapes, needs_graph


def _cosine_sum(t: Tensor, m: int, coefficients: list[float] | Tensor) -> Tensor:
    # scipy: sum_k a_k cos(k * linspace(-pi, pi, m)); the linspace is 2 pi t / (m - 1).
    phase = (2.0 * math.pi / (m - 1)) * t
    if isinstance(coefficients, Tensor):
        # (..., K) coefficients against (..., m) taps: the coefficient axis is summed.
        k = torch.arange(coefficients.shape[-1], dtype=t.dtype, device=t.device)
        cosines = torch.cos(phase.unsqueeze(-1) * k)
        return (cosines * coefficients.unsqueeze(-2)).sum(-1)
    out = torch.zeros_like(phase)
    for k, a in enumerate(coefficients):
        out = out + a * torch.cos(k * phase)
    return out


def boxcar(t: Tensor, m: int) -> Tensor:
    return torch.ones_like(t)


def triang(t: Tensor, m: int) -> Tensor:
    # scipy's triangle does not reach zero at the end taps: its half-width depends on parity.
    half = (m + 1) / 2.0 if m % 2 else m / 2.0
    return 1.0 - t.abs() / half


def bartlett(t: Tensor, m: int) -> Tensor:
    return 1.0 - t.abs() / ((m - 1) / 2.0)


def parzen(t: Tensor, m: int) -> Tensor:
    r = t.abs() / (m / 2.0)
    inner = 1.0 - 6.0 * r**2 + 6.0 * r**3
    outer = 2.0 * (1.0 - r) ** 3
    # The pieces meet at |t| = m / 4 (scipy splits at (m - 1) / 4, where no tap lies between
    # the two): a fractional width then moves taps across the seam without a jump.
    return torch.where(t.abs() <= m / 4.0, inner, outer)


def bohman(t: Tensor, m: int) -> Tensor:
    fac = t.abs() / ((m - 1) / 2.0)
    w = (1.0 - fac) * torch.cos(math.pi * fac) + torch.sin(math.pi * fac) / math.pi
    # scipy sets the end taps to exactly zero (the formula leaves ~1e-17 there).
    return torch.where(fac < 1.0, w, torch.zeros_like(w))


def cosine(t: Tensor, m: int) -> Tensor:
    # scipy: sin(pi (n + 1/2) / m) == cos(pi t / m).
    return torch.cos((math.pi / m) * t)


def lanczos(t: Tensor, m: int) -> Tensor:
    x = t / ((m - 1) / 2.0)
    # torch.sinc's double backward is nan at 0 (the centre tap, whose stretched offset is 0
    # for any width): sin(pi x) / (pi x) away from 0, its Taylor series (exactly 1) at 0.
    nonzero = x != 0
    safe = torch.where(nonzero, x, torch.ones_like(x)) * math.pi
    taylor = 1.0 - (math.pi * x) ** 2 / 6.0
    return torch.where(nonzero, torch.sin(safe) / safe, taylor)


def barthann(t: Tensor, m: int) -> Tensor:
    fac = t.abs() / (m - 1)
    return 0.62 - 0.48 * fac + 0.38 * torch.cos(2.0 * math.pi * fac)


def hann(t: Tensor, m: int) -> Tensor:
    return _cosine_sum(t, m, [0.5, 0.5])


def hamming(t: Tensor, m: int) -> Tensor:
    return _cosine_sum(t, m, [0.54, 0.46])


def blackman(t: Tensor, m: int) -> Tensor:
    return _cosine_sum(t, m, [0.42, 0.5, 0.08])


def nuttall(t: Tensor, m: int) -> Tensor:
    return _cosine_sum(t, m, [0.3635819, 0.4891775, 0.1365995, 0.0106411])


def blackmanharris(t: Tensor, m: int) -> Tensor:
    return _cosine_sum(t, m, [0.35875, 0.48829, 0.14128, 0.01168])


def flattop(t: Tensor, m: int) -> Tensor:
    return _cosine_sum(t, m, [0.21557895, 0.41663158, 0.277263158, 0.083578947, 0.006947368])


def general_cosine(t: Tensor, m: int, a: Tensor) -> Tensor:
    return _cosine_sum(t, m, a)


def general_hamming(t: Tensor, m: int, alpha: Tensor) -> Tensor:
    return alpha + (1.0 - alpha) * torch.cos((2.0 * math.pi / (m - 1)) * t)


def gaussian(t: Tensor, m: int, std: Tensor) -> Tensor:
    # (t / std)**2 rather than scipy's t**2 / (2 std**2): the same to rounding, and a std
    # whose square underflows (1e-300) gives the one-tap limit, not 0 / 0 at the centre.
    return torch.exp(gaussian_log(t, m, std))


# The *_log functions give the logarithm of a window whose taps can all underflow (the
# Gaussians, exponential, Kaiser), which a normalised window is computed from
# (``_window_build``): a Gaussian of an even length with a std under 0.013 samples had no
# tap left to normalise.


def gaussian_log(t: Tensor, m: int, std: Tensor) -> Tensor:
    return -0.5 * (t / std) ** 2


#: Past this power a general Gaussian's tap exp(-power / 2) is 0 even in float64 (e**-745
#: underflows).
_VANISHING_POWER = 1500.0


def general_gaussian(t: Tensor, m: int, p: Tensor, sig: Tensor) -> Tensor:
    return _general_gaussian_exponent(t, p, sig, _VANISHING_POWER).exp()


def general_gaussian_log(t: Tensor, m: int, p: Tensor, sig: Tensor) -> Tensor:
    # Powers up to ~1e304 are kept here (relative to the largest tap the others may be
    # near 1); past that a tap is -inf, as it is when every tap's power overflows.
    return _general_gaussian_exponent(t, p, sig, 1e304)


def _general_gaussian_exponent(t: Tensor, p: Tensor, sig: Tensor, vanishing: float) -> Tensor:
    r = (t / sig).abs()
    # |r| ** (2p) has a d/dp of log(r) * r ** (2p): nan at r == 0 unless masked twice. Where
    # the tap vanishes, the power is not computed either: for a large p (600, with r = 4.5)
    # it overflows, and the tap's gradient was 0 * inf, NaN.
    log_power = 2.0 * p.detach() * torch.log(r.detach())
    vanishes = log_power > math.log(vanishing)
    computed = (r > 0) & ~vanishes
    safe_r = torch.where(computed, r, torch.ones_like(r))
    power = torch.where(computed, safe_r ** (2.0 * p), torch.zeros_like(r))
    return torch.where(vanishes, -math.inf, -0.5 * power)


def _kaiser_root(t: Tensor, m: int) -> Tensor:
    x = t / ((m - 1) / 2.0)
    inside = 1.0 - x * x
    # sqrt has an infinite slope at 0 (the end taps): keep its gradient finite there.
    positive = inside > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, inside, torch.ones_like(x))), 0.0)


def _kaiser_ratio(root: Tensor, top: Tensor | float, beta: Tensor) -> Tensor:
    # i0(beta root) / i0(beta top) through the exponentially scaled i0e: i0 overflows past
    # beta ~ 700 (inf / inf gave NaN taps, as scipy's do); here every factor stays in [0, 1].
    scaled = torch.special.i0e(beta * root) / torch.special.i0e(beta * top)
    return scaled * torch.exp(beta.abs() * (root - top))


def kaiser(t: Tensor, m: int, beta: Tensor) -> Tensor:
    return _kaiser_ratio(_kaiser_root(t, m), 1.0, beta)


def kaiser_log(t: Tensor, m: int, beta: Tensor) -> Tensor:
    # The log of kaiser's i0 ratio: with a large beta and a narrow width every tap is tiny
    # (1e-182 for beta = 600, width 1.2), and normalising them underflowed in the second
    # derivative (NaN).
    root = _kaiser_root(t, m)
    return (
        torch.log(torch.special.i0e(beta * root))
        - torch.log(torch.special.i0e(beta))
        + beta.abs() * (root - 1.0)
    )


def tukey(t: Tensor, m: int, alpha: Tensor) -> Tensor:
    # Distance from the end of the window, in samples; the taper covers alpha (m - 1) / 2.
    distance = (m - 1) / 2.0 - t.abs()
    taper_length = alpha * ((m - 1) / 2.0)
    in_taper = distance < taper_length
    # alpha == 0 means no taper at all; the division is only evaluated where it is used.
    safe_length = torch.where(in_taper, taper_length, torch.ones_like(taper_length))
    taper = 0.5 * (1.0 + torch.cos(math.pi * (distance / safe_length - 1.0)))
    return torch.where(in_taper, taper, torch.ones_like(taper))


def exponential(t: Tensor, m: int, center: Tensor | None, tau: Tensor) -> Tensor:
    return torch.exp(exponential_log(t, m, center, tau))


def exponential_log(t: Tensor, m: int, center: Tensor | None, tau: Tensor) -> Tensor:
    # ``center`` is an index into the (possibly extended) window, as in scipy.
    offset = t if center is None else t + (m - 1) / 2.0 - center
    # |offset|, with the slope at 0 of the side the tap moves to as a learned width shrinks
    # (its side of the middle, sign(t)): abs's 0 there is a derivative from neither side.
    magnitude = torch.where(offset == 0, offset * torch.sign(t), offset.abs())
    return -magnitude / tau


def taylor(t: Tensor, m: int, nbar: int, sll: Tensor, norm: bool) -> Tensor:
    # scipy's Taylor window: 1 + 2 sum_k F_k cos(2 pi k t / m), with the F_k from sll.
    b = 10.0 ** (sll / 20.0)
    a = torch.acosh(b) / math.pi
    s2 = nbar**2 / (a**2 + (nbar - 0.5) ** 2)
    k = torch.arange(1, nbar, dtype=t.dtype, device=t.device)
    k2 = k * k
    # Numerator products run over j for each k: a (..., K, K) grid, reduced over j.
    ratio = k2.unsqueeze(-1) / s2.unsqueeze(-1) / ((a**2).unsqueeze(-1) + (k - 0.5) ** 2)
    signs = torch.where(torch.arange(nbar - 1, device=t.device) % 2 == 0, 1.0, -1.0).to(t.dtype)
    numer = signs * torch.prod(1.0 - ratio, dim=-1)
    others = 1.0 - k2.unsqueeze(-1) / k2  # (K, K); the diagonal (j == k) is left out
    others = torch.where(torch.eye(nbar - 1, dtype=torch.bool, device=t.device), 1.0, others)
    coefficients = numer / (2.0 * torch.prod(others, dim=-1))  # (..., K)
    cosines = torch.cos((2.0 * math.pi / m) * t.unsqueeze(-1) * k)
    w = 1.0 + 2.0 * (cosines * coefficients.unsqueeze(-2)).sum(-1)
    if norm:
        w = w / (1.0 + 2.0 * coefficients.sum(-1, keepdim=True))
    return w


def _grid(m: int, like: Tensor) -> Tensor:
    """The offsets of the ``m`` taps of the symmetric window from its centre."""
    return torch.arange(m, dtype=like.dtype, device=like.device) - (m - 1) / 2.0


def _between_taps(t: Tensor, taps: Tensor) -> Tensor:
    """Windows defined only at the taps (``taps``: ``(..., m)`` on the grid of offsets):
    their value at the offsets ``t``, linear between neighbouring taps. On the grid itself
    (every offset when no width is given) the taps come back exactly."""
    m = taps.shape[-1]
    position = t + (m - 1) / 2.0
    # On a tap, the segment on its outer side: a narrower width moves the offsets outwards,
    # and at width == length the gradient is that left derivative (floor alone took the
    # inner segment on the negative half: a symmetric window with a lopsided gradient).
    on = position.detach()
    left = torch.where(t.detach() < 0, torch.ceil(on) - 1.0, torch.floor(on)).clamp(0, m - 2)
    fraction = position - left
    shape = broadcast_shapes(taps.shape[:-1], t.shape[:-1])
    index = left.long().expand(*shape, t.shape[-1])
    taps = taps.expand(*shape, m)
    lo = torch.gather(taps, -1, index)
    hi = torch.gather(taps, -1, index + 1)
    # (1 - f) a + f b (not a + f (b - a)): f == 0 and f == 1 give a and b bit for bit.
    return (1.0 - fraction) * lo + fraction * hi


def _chebyshev(order: int, x: Tensor) -> Tensor:
    """The Chebyshev polynomial ``T_order(x)`` for ``x >= 0``: ``cos(n acos x)`` inside
    [0, 1], ``cosh(n acosh x)`` above. Both inner functions have an infinite slope at
    ``x == 1``, where the polynomial is smooth: there (and only there) its Taylor series
    ``1 + n^2 u + n^2 (n^2 - 1) u^2 / 6``, ``u = x - 1``, gives the value and the first
    two derivatives."""
    n = float(order)
    inside, outside = x < 1.0, x > 1.0
    safe_in = torch.where(inside, x, torch.zeros_like(x))
    safe_out = torch.where(outside, x, torch.full_like(x, 2.0))
    u = x - 1.0
    at_one = 1.0 + n * n * u + (n * n * (n * n - 1.0) / 6.0) * u * u
    value = torch.where(outside, torch.cosh(n * torch.acosh(safe_out)), at_one)
    return torch.where(inside, torch.cos(n * torch.acos(safe_in)), value)


def _chebwin_spectrum(t: Tensor, m: int, at: Tensor) -> Tensor:
    """The halved cosine-series coefficients ``p_k``, ``k < m / 2``, of chebwin (see below)."""
    ratio = 10.0 ** (at / 20.0)
    # x0 = cosh(acosh(ratio) / (m - 1)), smooth in ratio at 1 (at -> 0): 1 + (ratio - 1) /
    # (m - 1)^2 there, where acosh's slope is infinite.
    above = ratio > 1.0
    safe = torch.where(above, ratio, torch.full_like(ratio, 2.0))
    x0 = torch.where(
        above, torch.cosh(torch.acosh(safe) / (m - 1)), 1.0 + (ratio - 1.0) / (m - 1) ** 2
    )
    k = torch.arange((m + 1) // 2, dtype=t.dtype, device=t.device)
    return _chebyshev(m - 1, x0 * torch.cos((math.pi / m) * k))  # (..., K)


def _chebwin_taps(p: Tensor, m: int) -> Tensor:
    """The cosine series ``p_0 + 2 sum_k p_k cos(2 pi k t / m)`` at the ``m`` taps, through
    one inverse real FFT (what scipy computes; a dense cosine matrix took O(m^2) memory):
    ``cos(2 pi k t_n / m)`` is the real part of ``e^{2 pi i k n / m}`` times the phase
    ``e^{-i pi k (m - 1) / m}`` of the centre offset."""
    k = torch.arange(p.shape[-1], dtype=p.dtype, device=p.device)
    phase = torch.polar(torch.ones_like(k), (-math.pi * (m - 1) / m) * k)
    taps = m * torch.fft.irfft(p * phase, n=m)
    # The FFT's rounding differs between mirror taps: mirror the first half (as scipy does),
    # so that the window is symmetric bit for bit (and its peak is 1 at both ends).
    first = taps[..., : (m + 1) // 2]
    return torch.cat([first, first[..., : m // 2].flip(-1)], dim=-1)


def chebwin_on_grid(t: Tensor, m: int, at: Tensor) -> Tensor:
    """``chebwin`` at the taps themselves (``t`` the grid of offsets): no cosine matrix."""
    taps = _chebwin_taps(_chebwin_spectrum(t, m, at), m)
    # scipy divides by the largest tap (not always the centre: at low `at`, the end taps).
    return taps / taps.amax(-1, keepdim=True)


def chebwin(t: Tensor, m: int, at: Tensor) -> Tensor:
    # The Dolph-Chebyshev window is defined by its spectrum: T_{m-1}(x0 cos(pi k / m)) at
    # the m DFT bins k, x0 chosen so that the side lobes are `at` dB below the main lobe.
    # That spectrum is real and symmetric (with a half-sample shift for even m), so the
    # window is the cosine series p_0 + 2 sum_k p_k cos(2 pi k t / m), k < m / 2, which
    # is scipy's inverse FFT at the taps and a trigonometric polynomial in between.
    p = _chebwin_spectrum(t, m, at)
    k = torch.arange(p.shape[-1], dtype=t.dtype, device=t.device)
    weights = torch.where(k == 0, 1.0, 2.0).to(t.dtype) * p
    # Off the grid (a fractional width) the series is summed at every offset: (..., m, K).
    cosines = torch.cos((2.0 * math.pi / m) * t.unsqueeze(-1) * k)
    series = torch.matmul(cosines, weights.unsqueeze(-1)).squeeze(-1)
    taps = _chebwin_taps(p, m)
    # Offsets on the grid (all of them at width == length) take the FFT's taps, so that the
    # window is chebwin_on_grid's bit for bit, with the series' gradient in t.
    position = (t + (m - 1) / 2.0).detach()
    on_grid = position == torch.round(position)
    grid_taps = _between_taps(t.detach(), taps)  # exactly the taps wherever on_grid
    series = torch.where(on_grid, series + (grid_taps - series).detach(), series)
    return series / taps.amax(-1, keepdim=True)


def kaiser_bessel_derived(t: Tensor, m: int, beta: Tensor) -> Tensor:
    # Half of the window is the square root of the running sum of a Kaiser window of
    # m / 2 + 1 taps, over its total; the other half is its mirror image. m is even.
    half = m // 2
    # The sum is a ratio: the Kaiser taps are taken over the largest one (the centre, or
    # for an even half + 1 the two middle ones), not over I0(beta). A huge beta underflowed
    # every tap off the centre, so the two middle ones (and the two taps of length 2) gave
    # 0 / 0 and a window of zeros.
    root = _kaiser_root(_grid(half + 1, t), half + 1)
    kaiser_taps = _kaiser_ratio(root, root.amax(-1, keepdim=True), beta)
    running = torch.cumsum(kaiser_taps, dim=-1)
    ratio = running[..., :-1] / running[..., -1:]
    # A huge beta underflows the first Kaiser taps to 0: keep sqrt's gradient finite there.
    positive = ratio > 0
    root = torch.where(positive, torch.sqrt(torch.where(positive, ratio, 1.0)), 0.0)
    return _between_taps(t, torch.cat([root, root.flip(-1)], dim=-1))


# From this size on, a half-size dpss matrix takes the tridiagonal solver when no gradient is
# wanted: eigh took 1.1 ms at 128 (0.7 ms the solver) and 0.9 s at 2,048 (11 ms), 2 cores.
_TRIDIAGONAL_FROM = 128


def _largest_eigenvector(diagonal: Tensor, off: Tensor) -> Tensor:
    """The unit eigenvector of the largest eigenvalue of each symmetric tridiagonal matrix
    (a batch of diagonals, one off-diagonal), sign arbitrary.

    Shape:
        diagonal ``(..., n)``, off ``(n - 1,)`` -> ``(..., n)``.
    """
    n = diagonal.shape[-1]
    plain = not (needs_graph(diagonal, off) or transforms_active(diagonal, off))
    if not plain or n < _TRIDIAGONAL_FROM:
        matrix = torch.diag_embed(diagonal) + torch.diag_embed(off, 1)
        matrix = matrix + torch.diag_embed(off, -1)
        return torch.linalg.eigh(matrix)[1][..., -1]  # eigenvalues ascend: the largest one
    rows = diagonal.detach().reshape(-1, n).double().tolist()
    off_list = off.detach().double().tolist()
    vectors = [largest_eigenvector(row, off_list) for row in rows]
    found = torch.tensor(vectors, dtype=torch.float64, device=diagonal.device)
    return found.reshape(diagonal.shape).to(diagonal.dtype)


def dpss(t: Tensor, m: int, NW: Tensor, norm: Any) -> Tensor:
    # The first discrete prolate spheroidal (Slepian) sequence: the eigenvector of the
    # largest eigenvalue of the symmetric tridiagonal matrix with diagonal
    # ((m - 1 - 2 n) / 2)^2 cos(2 pi NW / m) and off-diagonal n (m - n) / 2 (Percival and
    # Walden), which commutes with the band-limiting operator of half bandwidth NW / m.
    #
    # The matrix is persymmetric, so every eigenvector is symmetric or antisymmetric, and
    # the wanted one is symmetric: it is found in the half-size matrix acting on symmetric
    # vectors (a quarter of the work, and taps that mirror each other bit for bit).
    half = (m + 1) // 2
    n = torch.arange(half, dtype=t.dtype, device=t.device)
    diagonal = ((m - 1 - 2.0 * n) / 2.0) ** 2 * torch.cos((2.0 * math.pi / m) * NW)
    off = n[1:] * (m - n[1:]) / 2.0
    if m % 2:
        # Odd m: the centre tap couples to both of its neighbours. Scaling it by 1/sqrt(2)
        # keeps the half-size matrix symmetric.
        off = torch.cat([off[:-1], off[-1:] * math.sqrt(2.0)])
    else:
        # Even m: the last tap of the half meets its own mirror image.
        # The scalar as a tensor of the working dtype: two Python numbers make torch.where
        # build its result in float32, which rounded m * m / 8 (3e-5 off scipy from m = 8194).
        corner = torch.tensor(m * m / 8.0, dtype=t.dtype, device=t.device)
        diagonal = diagonal + torch.where(n == half - 1, corner, 0.0)
    vector = _largest_eigenvector(diagonal, off)
    if m % 2:
        centre = vector[..., -1:] * math.sqrt(2.0)
        taps = torch.cat([vector[..., :-1], centre, vector[..., :-1].flip(-1)], -1)
    else:
        taps = torch.cat([vector, vector.flip(-1)], -1)
    taps = taps / math.sqrt(2.0)  # unit energy
    # eigh's sign is arbitrary; the convention (and scipy's) is a positive sum.
    taps = taps * torch.where(taps.sum(-1, keepdim=True) < 0, -1.0, 1.0).to(t.dtype)
    if norm != 2:
        # Peak 1, then (even m only) a correction for the peak falling between two taps.
        taps = taps / taps.amax(-1, keepdim=True)
        if m % 2 == 0:
            if norm == "subsample":
                # Scaled so that the taps' DFT interpolation is 1 at the centre, half-way
                # between the two centre taps (scipy's "subsample" shift).
                k = torch.arange(1, m // 2 + 1, dtype=t.dtype, device=t.device)
                grid = _grid(m, t)
                kernel = 1.0 + 2.0 * torch.cos((2.0 * math.pi / m) * grid.unsqueeze(-1) * k).sum(-1)
                taps = taps * (m / (taps * kernel).sum(-1, keepdim=True))
            else:
                taps = taps * (m * m / (m * m + NW))
    return _between_taps(t, taps)
