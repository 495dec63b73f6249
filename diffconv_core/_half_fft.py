"""A real row's circular convolution through complex FFTs of half its length (CPU).

torch's CPU ``rfft``/``irfft`` (MKL) are slow on one row: on 2 cores a 16,384-point
``rfft`` took 78 us where the complex FFT of the same samples read as 8,192 complex numbers
(even samples real, odd imaginary; a view, no copy) took 19-33 us, and 262,144 points
1,090 us against 223 (the complex transform of one row spreads over both threads). The
classic "two real halves in one complex FFT" identity then gives the real convolution in
that packed domain with a few elementwise products, and the inverse complex FFT returns the
result already interleaved as real samples.

Derivation, for ``n = 2M`` points, ``z[m] = x[2m] + i x[2m+1]`` and ``Z = FFT_M(z)``: the
spectra of the even and odd samples are ``E = (Z[k] + conj(Z[-k])) / 2`` and
``O = (Z[k] - conj(Z[-k])) / 2i`` (indices mod M), and ``X[k] = E + W^k O``,
``X[k + M] = E - W^k O`` with ``W = exp(-2 pi i / n)``. Multiplying ``X`` by a real kernel's
spectrum ``H`` and packing the product back the same way gives

    ``Y_packed[k] = P[k] Z[k] + Q[k] conj(Z[-k])``,
    ``P = S - D sin(t)``, ``Q = i cos(t) D``, ``t = 2 pi k / n``,
    ``S = (H[k] + H[k + M]) / 2``, ``D = (H[k] - H[k + M]) / 2``,

and ``S``, ``D`` are the kernel's own ``E`` and ``W^k O`` (its packed spectrum, likewise).
:func:`half_rfft` and :func:`half_irfft` are ``rfft``/``irfft`` themselves the same way,
for the FFT method's recorded Function. Every transform runs in place over a buffer of
the identity's own, never over the caller's tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from diffconv_core._validation import under_vmap
from diffconv_core._workspace import kept_tensors

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}
_REAL = {complex_dtype: real for real, complex_dtype in _COMPLEX.items()}


#: The identity pays from this many points up (2 cores, "same" with T / 8 taps, against
#: rfft/irfft at the same length: 0.70-0.82x at 4,608-6,400 points, 1.01-1.45x at 9,000,
#: then 1.08-2.3x up to 279,936 for 1 to 8 rows)...
MIN_POINTS = 8193
#: ...and for batches of up to this many rows: 1.07-1.11x at 16 rows of 17,496 and 69,984
#: points, 1.03-1.05x at 32, 0.97-0.99x at 56.
MAX_ROWS = 16


def half_fft_shape(n_fft: int, rows: int) -> bool:
    """Whether transforms of ``n_fft`` points, ``rows`` rows at a time, go through
    :func:`half_fft_circular` (for real float32/float64 rows on the CPU): an even length of
    at least ``MIN_POINTS``, at most ``MAX_ROWS`` rows. The cost model asks this too.

    Example:
        >>> half_fft_shape(10_240, 1), half_fft_shape(4_096, 1), half_fft_shape(10_241, 1)
        (True, False, False)
    """
    return n_fft % 2 == 0 and n_fft >= MIN_POINTS and rows <= MAX_ROWS


def takes_half_fft(x: torch.Tensor, w: torch.Tensor, n_fft: int, rows: int) -> bool:
    """Whether :func:`half_fft_circular` serves ``rows`` rows of ``x`` at a time with the
    one kernel ``w`` at ``n_fft`` points: :func:`half_fft_shape`, for real float32/float64
    rows on the CPU.

    Example:
        >>> import torch
        >>> takes_half_fft(torch.ones(1, 10_000), torch.ones(5), 10_240, 1)
        True
        >>> takes_half_fft(torch.ones(1, 10_000), torch.ones(5, dtype=torch.float64), 10_240, 1)
        False
    """
    return (
        half_fft_shape(n_fft, rows)
        and x.device.type == "cpu"
        and x.dtype in _COMPLEX
        and w.dtype == x.dtype
        and w.dim() == 1
    )


#: Twiddle tables (n/2 + 1 complex numbers) are kept per length up to this many points,
#: 512 KiB each in complex64; longer ones are computed per call, so that a few huge lengths
#: never pin megabytes (kept four times over as weights, a 2**20-point length held 16 MiB).
CACHED_POINTS = 1 << 17


def _twiddles(n_fft: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # W^k = exp(-2 pi i k / n_fft) for k = 0 .. n_fft / 2, complex, in dtype's precision.
    if n_fft <= CACHED_POINTS:
        return _kept_twiddles(n_fft, dtype, device)
    return _computed_twiddles(n_fft, dtype, device)


@kept_tensors(maxsize=32)
def _kept_twiddles(n_fft: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return _computed_twiddles(n_fft, dtype, device)


def _computed_twiddles(n_fft: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # In the working precision (float64 tables cost float32 calls 2x their work arrays):
    # the angles of float32 are within an ulp, as are their cosines and sines. On the
    # operands' device, not torch's default one: a table made inside `with torch.device("meta")`
    # (a model built on the meta device) was kept, and failed every later call.
    angles = torch.arange(n_fft // 2 + 1, dtype=dtype, device=device).mul_(-2 * math.pi / n_fft)
    return torch.complex(angles.cos(), angles.sin_())


def _packed(rows: torch.Tensor, n_fft: int) -> torch.Tensor:
    # The rows zero-extended to n_fft points in a buffer of their own (whole, so its
    # complex view is aligned), read as n_fft / 2 complex numbers.
    T = rows.shape[-1]
    if n_fft > T:
        extended = F.pad(rows, (0, n_fft - T))
    else:
        extended = rows.clone(memory_format=torch.contiguous_format)
    return torch.view_as_complex(extended.view(*extended.shape[:-1], n_fft // 2, 2))


def _transformed_in_place(packed: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    # The complex FFT (or its inverse) written over its input: one buffer a row fewer (a row
    # of 2**20 points peaked at 7.2x its size with a buffer per transform). Not under vmap
    # (a backward pass with batched gradients): out= has no batching rule there.
    transform = torch.fft.ifft if inverse else torch.fft.fft
    if under_vmap(packed):
        return transform(packed)
    return transform(packed, out=packed)


def _conj_reversed(spectrum: torch.Tensor) -> torch.Tensor:
    # conj(spectrum[M - 1 - j]): the mirror image conj(spectrum[-k mod M]) is this one place
    # on, which _add_mirrored takes as slices (a roll would be one more copy, 20% of a
    # transform at 2**17 points).
    return spectrum.flip(-1).conj_physical_()


def _add_mirrored(target: torch.Tensor, reversed_conj: torch.Tensor, alpha: float = 1.0) -> None:
    # target[k] += alpha * conj(spectrum[-k mod M]), given _conj_reversed(spectrum).
    target[..., 1:].add_(reversed_conj[..., :-1], alpha=alpha)
    target[..., :1].add_(reversed_conj[..., -1:], alpha=alpha)


def kernel_factors(w: torch.Tensor, n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors ``P`` and ``Q`` of a real kernel ``w`` (see the module's docstring) for
    circular convolutions of ``n_fft`` points, as :func:`half_fft_circular` takes them.

    Shape:
        w ``(K,)`` with ``K <= n_fft`` -> two complex ``(n_fft // 2,)``.
    """
    twiddle = _twiddles(n_fft, w.dtype, w.device)[: n_fft // 2]
    spectrum = _transformed_in_place(_packed(w, n_fft))  # Z_w
    reversed_conj = _conj_reversed(spectrum)
    difference = spectrum.clone()
    _add_mirrored(difference, reversed_conj, alpha=-1.0)  # Z_w - R
    _add_mirrored(spectrum, reversed_conj)  # Z_w + R
    del reversed_conj
    half_difference = difference.mul_(twiddle).mul_(-0.5j)  # D = W^k (Z_w - R) / 2i
    # P = S - D sin(t) with S = (Z_w + R) / 2 and sin(t) = -Im(W^k); Q = i cos(t) D.
    P = spectrum.mul_(0.5).addcmul_(half_difference, twiddle.imag)
    Q = half_difference.mul_(twiddle.real).mul_(1j)
    return P, Q


def half_fft_circular(
    x: torch.Tensor, factors: tuple[torch.Tensor, torch.Tensor], n_fft: int
) -> torch.Tensor:
    """The circular convolution of ``n_fft`` points of real rows ``x`` (zero-extended) with
    the kernel whose :func:`kernel_factors` are ``factors``, through complex FFTs of
    ``n_fft / 2`` points.

    Shape:
        x ``(*batch, T)`` with ``T <= n_fft`` (even) -> ``(*batch, n_fft)``.

    Example:
        >>> import torch
        >>> x, w = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 0.5])
        >>> half_fft_circular(x, kernel_factors(w, 6), 6).round(decimals=4)
        tensor([0.0000, 1.0000, 2.5000, 4.0000, 1.5000, 0.0000])
    """
    P, Q = factors
    spectrum = _transformed_in_place(_packed(x, n_fft))
    reversed_conj = _conj_reversed(spectrum)
    # Q[k] conj(Z[-k]): reversed_conj[j] pairs with Q[j + 1], multiplied in place.
    reversed_conj[..., :-1] *= Q[1:]
    reversed_conj[..., -1:] *= Q[:1]
    spectrum *= P
    _add_mirrored(spectrum, reversed_conj)
    del reversed_conj
    result = torch.view_as_real(_transformed_in_place(spectrum, inverse=True))
    return result.view(*x.shape[:-1], n_fft)


def half_rfft(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """``torch.fft.rfft(x, n_fft)`` through a complex FFT of ``n_fft / 2`` points (for
    :func:`half_fft_shape` lengths; differentiable like the operations it is made of).

    Shape:
        x ``(*batch, T)`` with ``T <= n_fft`` (even) -> complex ``(*batch, n_fft // 2 + 1)``.

    Example:
        >>> import torch
        >>> x = torch.tensor([1.0, 2.0, 3.0, 4.0])
        >>> torch.allclose(half_rfft(x, 6), torch.fft.rfft(x, 6), atol=1e-6)
        True
    """
    # X[k] = (Z[k] + R[k]) / 2 - (i / 2) W^k (Z[k] - R[k]) for k = 0..M, R[k] = conj(Z[M - k])
    # with Z extended by Z[M] = Z[0].
    spectrum = _transformed_in_place(_packed(x, n_fft))
    extended = torch.cat((spectrum, spectrum[..., :1]), -1)
    del spectrum
    mirrored = extended.flip(-1).conj_physical_()
    difference = extended - mirrored
    extended += mirrored
    del mirrored
    difference.mul_(_twiddles(n_fft, x.dtype, x.device)).mul_(-0.5j)
    return extended.mul_(0.5).add_(difference)


def half_irfft(spectrum: torch.Tensor, n_fft: int) -> torch.Tensor:
    """``torch.fft.irfft(spectrum, n_fft)`` through an inverse complex FFT of ``n_fft / 2``
    points: the inverse of :func:`half_rfft` (the imaginary parts of the first and last
    bins, which a real signal's spectrum lacks, are ignored only up to round-off).

    Shape:
        spectrum ``(*batch, n_fft // 2 + 1)`` -> real ``(*batch, n_fft)``.

    Example:
        >>> import torch
        >>> x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        >>> torch.allclose(half_irfft(torch.fft.rfft(x), 6), x, atol=1e-6)
        True
    """
    # Z[k] = (X[k] + R[k]) / 2 + (i / 2) conj(W^k) (X[k] - R[k]) for k < M, R[k] = conj(X[M - k]).
    M = n_fft // 2
    head = spectrum[..., :M]
    mirrored = spectrum.flip(-1).conj_physical_()[..., :M]
    difference = head - mirrored
    packed = head + mirrored
    del mirrored
    difference.mul_(_twiddles(n_fft, _REAL[spectrum.dtype], spectrum.device)[:M].conj()).mul_(0.5j)
    packed.mul_(0.5).add_(difference)
    del difference
    result = torch.view_as_real(_transformed_in_place(packed, inverse=True))
    return result.reshape(*spectrum.shape[:-1], n_fft)
