"""Continuous window shapes: the formulas behind :mod:`diffconv_core.windows`.

Every shape is a function ``shape(t, m, **params)`` of the offset ``t`` (in samples) of a tap
from the centre of a *symmetric* window of ``m >= 2`` taps, so that evaluating it at
``t = arange(m) - (m - 1) / 2`` reproduces ``scipy.signal.windows.<name>(m, sym=True)``.
Writing them in terms of a continuous offset (instead of an integer index, as scipy does) is
what lets :func:`diffconv_core.windows.get_window` stretch a window to a fractional width.

Parameters arrive as tensors already broadcast against ``t`` (a trailing axis of taps), so
every formula works for batches of parameters too. Formulas with a removable singularity
use the "double where" trick: the unsafe branch is fed a harmless value where it is not
selected, so that its gradient there is finite and masked out instead of ``0 * inf = nan``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
    return torch.where(t.abs() <= (m - 1) / 4.0, inner, outer)


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
    return torch.exp(-(t**2) / (2.0 * std * std))


def general_gaussian(t: Tensor, m: int, p: Tensor, sig: Tensor) -> Tensor:
    r = (t / sig).abs()
    # |r| ** (2p) has a d/dp of log(r) * r ** (2p): nan at r == 0 unless masked twice.
    nonzero = r > 0
    safe_r = torch.where(nonzero, r, torch.ones_like(r))
    power = torch.where(nonzero, safe_r ** (2.0 * p), torch.zeros_like(r))
    return torch.exp(-0.5 * power)


def kaiser(t: Tensor, m: int, beta: Tensor) -> Tensor:
    x = t / ((m - 1) / 2.0)
    inside = 1.0 - x * x
    # sqrt has an infinite slope at 0 (the end taps): keep its gradient finite there.
    positive = inside > 0
    root = torch.where(positive, torch.sqrt(torch.where(positive, inside, torch.ones_like(x))), 0.0)
    # i0(beta r) / i0(beta) through the exponentially scaled i0e: i0 overflows past beta ~ 700
    # (inf / inf gave NaN taps, as scipy's do); here every factor stays within [0, 1].
    size = beta.abs()
    scaled = torch.special.i0e(beta * root) / torch.special.i0e(beta)
    return scaled * torch.exp(size * (root - 1.0))


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
    # ``center`` is an index into the (possibly extended) window, as in scipy.
    offset = t if center is None else t + (m - 1) / 2.0 - center
    return torch.exp(-offset.abs() / tau)


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
