"""Window functions equal to ``scipy.signal.windows``, differentiable in their parameters.

Every window is available by name through :func:`get_window` (names and aliases as
``scipy.signal.get_window`` spells them, plus "hanning", numpy's name for hann, which
scipy no longer takes) and as its own function (:func:`hann`,
:func:`gaussian`, ...). Unlike ``torch.signal.windows``, a parameter given as a tensor that
requires grad stays in the autograd graph, and the *width* of any window can be fractional
and learned (see :func:`get_window`).

Common arguments of every window function:

- ``length``: number of taps (an integer >= 1).
- ``sym``: True (default) for the symmetric window used in filter design; False for the
  periodic variant used in spectral analysis (scipy's ``sym=False``, ``fftbins=True``).
- ``normalize``: None (scipy's scaling), ``"sum"`` (taps add up to 1: unit DC gain, what
  smoothing needs), ``"peak"`` (largest magnitude 1) or ``"energy"`` (unit L2 norm).
- ``width``: fractional support, ``0 < width <= length`` (float or tensor); see
  :func:`get_window`.
- ``dtype``/``device``: of the result. By default the floating dtype and device of the tensor
  parameters, else ``torch.get_default_dtype()`` on torch's default device (the CPU unless
  ``torch.set_default_device`` or a ``with torch.device(...)`` block says otherwise).

Parameters may be tensors of any shape ``S`` (a batch of windows); the result is then
``(*S, length)``.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor

from diffconv_core import _window_build as _b

__all__ = [
    "get_window",
    "list_windows",
    "barthann",
    "bartlett",
    "blackman",
    "blackmanharris",
    "bohman",
    "boxcar",
    "chebwin",
    "cosine",
    "dpss",
    "exponential",
    "flattop",
    "gaussian",
    "general_cosine",
    "general_gaussian",
    "general_hamming",
    "hamming",
    "hann",
    "kaiser",
    "kaiser_bessel_derived",
    "lanczos",
    "nuttall",
    "parzen",
    "taylor",
    "triang",
    "tukey",
]

Number = float | int | Tensor


def get_window(
    name: str | tuple | float,
    length: int,
    *,
    sym: bool = True,
    normalize: str | None = None,
    width: Number | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **params: Any,
) -> Tensor:
    """A window by name, equal to ``scipy.signal.windows.<name>(length, **params, sym=sym)``.

    Args:
        name: a window name or alias as ``scipy.signal.get_window`` accepts it (``"hann"``,
            ``"boxcar"``/``"rect"``, ``"gauss"``, ``"kaiser_periodic"`` ...), a tuple
            ``(name, *params)`` as scipy accepts it (``("kaiser", 8.6)``), or a number (a Kaiser
            window with that beta, as in scipy). See :func:`list_windows`.
        length: number of taps, >= 1.
        sym: symmetric (True, the default here) or periodic (False). Note that scipy's
            ``get_window`` defaults to periodic; a ``_symmetric``/``_periodic`` suffix on the
            name overrides ``sym``.
        normalize: None, ``"sum"``, ``"peak"`` or ``"energy"``.
        width: fractional width, ``0 < width <= length`` (float or tensor, differentiable).
            The window's continuous shape ``f`` (the formula scipy evaluates at the taps,
            written as a function of the offset ``t`` from the centre, in samples) is
            stretched by ``width / length`` about the centre and clipped to a support of
            ``width`` samples::

                w[n] = f(clip(t * length / width, -(length-1)/2, (length-1)/2)) * c(t)
                t = n - (length - 1) / 2
                c(t) = overlap of [t - 1/2, t + 1/2] with [-width/2, width/2]   (in [0, 1])

            so each tap counts the part of its sample cell inside the support. The result
            is continuous and piecewise smooth in ``width``, ``width == length`` gives the
            plain window exactly, and a boxcar of width ``w`` sums to exactly ``w``. Windows
            whose scale is a parameter in samples (gaussian ``std``, exponential ``tau``,
            general_gaussian ``sig``) are stretched too: their effective scale is
            ``param * width / length``. For ``sym=False`` the rule is applied to the
            ``length + 1``-tap symmetric window with width ``width * (length + 1) / length``,
            whose last tap is then dropped. ``kaiser_bessel_derived`` and ``dpss`` are only
            defined at the taps: their ``f`` joins the taps by straight lines; ``chebwin``'s
            is the trigonometric polynomial whose samples its taps are (its taps are an
            inverse DFT). A very narrow width can leave no non-zero tap
            (an even-length Hann window with ``width <= length / (length - 1)``, say);
            ``normalize`` then raises.
        dtype, device: of the result (defaults: see the module docstring).
        **params: the window's parameters (``std=``, ``beta=``, ``alpha=`` ...), numbers or
            tensors; tensors requiring grad give a differentiable window.

    Returns:
        The window.

    Raises:
        ValueError: unknown name, missing parameter, or a value out of its range (the
            message names the value and the range).
        TypeError: a parameter the window does not take, or a non-integer length.

    Shape:
        - params and ``width``: any shapes ``S`` that broadcast (scalars give ``S = ()``);
          ``general_cosine``'s ``a`` is ``(*S, K)``
        - output: ``(*S, length)``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.windows import get_window
        >>> w = get_window("hann", 8, dtype=torch.float64)
        >>> bool(torch.allclose(w, torch.from_numpy(scipy.signal.windows.hann(8))))
        True
        >>> std = torch.tensor(2.0, requires_grad=True)
        >>> get_window("gaussian", 5, std=std, normalize="sum").requires_grad
        True
        >>> get_window("boxcar", 5, width=2.5)
        tensor([0.0000, 0.7500, 1.0000, 0.7500, 0.0000])
    """
    spec, forced = _resolve_name(name, params)
    return _b.build(
        spec,
        length,
        sym=sym if forced is None else forced,
        normalize=normalize,
        width=width,
        dtype=dtype,
        device=device,
        params=params,
    )


def _resolve_name(name: Any, params: dict[str, Any]) -> tuple[_b.Spec, bool | None]:
    """The spec of a window name, ``(name, *params)`` tuple or Kaiser beta, and the ``sym``
    forced by a ``_symmetric``/``_periodic`` suffix; tuple values are moved into ``params``."""
    if isinstance(name, tuple):
        if not name or not isinstance(name[0], str):
            raise ValueError(f"a window tuple must start with the window name; got {name!r}")
        spec, forced = _b.lookup(name[0])
        positional = name[1:]
        # scipy's get_window takes only NW for dpss: its dpss's next argument is Kmax (a set
        # of tapers), not norm, so a second value would mean something else here.
        accepted = 1 if spec.name == "dpss" else len(spec.params)
        if len(positional) > accepted:
            raise ValueError(f"{spec.name} window takes {accepted} parameter(s); got {name!r}")
        for p, value in zip(spec.params, positional, strict=False):
            if p.name in params:
                raise TypeError(f"{spec.name} parameter {p.name} given twice in {name!r}")
            params[p.name] = value
    elif isinstance(name, str):
        spec, forced = _b.lookup(name)
    elif isinstance(name, numbers.Real) and not isinstance(name, bool):
        spec, forced = _b.lookup("kaiser")
        params["beta"] = name
    else:
        raise TypeError(f"window must be a name, a (name, *params) tuple or a number; got {name!r}")
    return spec, forced


def list_windows() -> list[dict[str, Any]]:
    """Every window: name, aliases, parameters with defaults, required ones, ranges.

    Returns plain data (the CLI prints it): a list of dicts with keys ``name``, ``aliases``,
    ``params`` (``{param: default}``, None for required ones), ``required``, ``ranges``
    (``{param: text}``) and ``description``.

    Shape:
        - no tensors: a list with one dict per window

    Example:
        >>> from diffconv_core.windows import list_windows
        >>> [w for w in list_windows() if w["name"] == "tukey"][0]["params"]
        {'alpha': 0.5}
    """
    return _b.describe()


_COMMON = ("normalize", "width", "dtype", "device")


def _make(name: str, length: int, sym: bool, kw: dict[str, Any], **params: Any) -> Tensor:
    spec, _ = _b.lookup(name)
    common = {key: kw[key] for key in _COMMON if key in kw}
    # Anything else is not a parameter of this window: pass it on with the parameters, so
    # that build() names the window and what it accepts (as a keyword argument of build()
    # itself, the TypeError named build(), which the caller never called).
    params.update((key, value) for key, value in kw.items() if key not in common)
    return _b.build(spec, length, sym=sym, params=params, **common)


# One function per window, with scipy's argument order. ``**kw`` carries the common keyword
# arguments (normalize, width, dtype, device) documented in the module docstring.


def boxcar(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Rectangular window (all ones). Shape: ``(length,)``.

    Example:
        >>> from diffconv_core.windows import boxcar
        >>> boxcar(3)
        tensor([1., 1., 1.])
    """
    return _make("boxcar", length, sym, kw)


def triang(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Triangular window whose end taps are not zero (scipy's ``triang``).

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> from diffconv_core.windows import triang
        >>> triang(5)
        tensor([0.3333, 0.6667, 1.0000, 0.6667, 0.3333])
    """
    return _make("triang", length, sym, kw)


def bartlett(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Bartlett window: a triangle with zero end taps.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> from diffconv_core.windows import bartlett
        >>> bartlett(5)
        tensor([0.0000, 0.5000, 1.0000, 0.5000, 0.0000])
    """
    return _make("bartlett", length, sym, kw)


def hann(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Hann window: ``0.5 - 0.5 cos(2 pi n / (length - 1))``. Shape: ``(length,)``.

    Example:
        >>> from diffconv_core.windows import hann
        >>> hann(5)
        tensor([0.0000, 0.5000, 1.0000, 0.5000, 0.0000])
    """
    return _make("hann", length, sym, kw)


def hamming(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Hamming window: ``0.54 - 0.46 cos(2 pi n / (length - 1))``.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> from diffconv_core.windows import hamming
        >>> hamming(5)
        tensor([0.0800, 0.5400, 1.0000, 0.5400, 0.0800])
    """
    return _make("hamming", length, sym, kw)


def blackman(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Blackman window (cosine sum 0.42, 0.5, 0.08).

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.windows import blackman
        >>> w = blackman(7, dtype=torch.float64)
        >>> bool(torch.allclose(w, torch.from_numpy(scipy.signal.windows.blackman(7))))
        True
    """
    return _make("blackman", length, sym, kw)


def blackmanharris(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Minimum 4-term Blackman-Harris window.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.windows import blackmanharris
        >>> w = blackmanharris(7, dtype=torch.float64)
        >>> bool(torch.allclose(w, torch.from_numpy(scipy.signal.windows.blackmanharris(7))))
        True
    """
    return _make("blackmanharris", length, sym, kw)


def nuttall(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Minimum 4-term Nuttall window.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.windows import nuttall
        >>> w = nuttall(7, dtype=torch.float64)
        >>> bool(torch.allclose(w, torch.from_numpy(scipy.signal.windows.nuttall(7))))
        True
    """
    return _make("nuttall", length, sym, kw)


def flattop(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Flat-top window (5-term cosine sum).

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.windows import flattop
        >>> w = flattop(7, dtype=torch.float64)
        >>> bool(torch.allclose(w, torch.from_numpy(scipy.signal.windows.flattop(7))))
        True
    """
    return _make("flattop", length, sym, kw)


def bohman(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Bohman window.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.windows import bohman
        >>> w = bohman(7, dtype=torch.float64)
        >>> bool(torch.allclose(w, torch.from_numpy(scipy.signal.windows.bohman(7))))
        True
    """
    return _make("bohman", length, sym, kw)


def parzen(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Parzen window (piecewise cubic).

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> from diffconv_core.windows import parzen
        >>> parzen(5)
        tensor([0.0160, 0.4240, 1.0000, 0.4240, 0.0160])
    """
    return _make("parzen", length, sym, kw)


def cosine(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Cosine (half-sine) window.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> from diffconv_core.windows import cosine
        >>> cosine(5)
        tensor([0.3090, 0.8090, 1.0000, 0.8090, 0.3090])
    """
    return _make("cosine", length, sym, kw)


def lanczos(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Lanczos (sinc) window: the main lobe of a sinc.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.windows import lanczos
        >>> w = lanczos(7, dtype=torch.float64)
        >>> bool(torch.allclose(w, torch.from_numpy(scipy.signal.windows.lanczos(7))))
        True
    """
    return _make("lanczos", length, sym, kw)


def barthann(length: int, sym: bool = True, **kw: Any) -> Tensor:
    """Bartlett-Hann window.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.windows import barthann
        >>> w = barthann(7, dtype=torch.float64)
        >>> bool(torch.allclose(w, torch.from_numpy(scipy.signal.windows.barthann(7))))
        True
    """
    return _make("barthann", length, sym, kw)


def general_cosine(length: int, a: Any, sym: bool = True, **kw: Any) -> Tensor:
    """Generalised cosine sum ``sum_k a[k] cos(k x)``, ``x`` from -pi to pi.

    ``a``: sequence or tensor ``(*S, K)`` of coefficients (differentiable).

    Shape:
        - a: ``(K,)`` or ``(*S, K)``
        - output: ``(length,)`` or ``(*S, length)``

    Example:
        >>> from diffconv_core.windows import general_cosine
        >>> general_cosine(5, [0.5, 0.5])  # the Hann window
        tensor([0.0000, 0.5000, 1.0000, 0.5000, 0.0000])
    """
    return _make("general_cosine", length, sym, kw, a=a)


def general_hamming(length: int, alpha: Number, sym: bool = True, **kw: Any) -> Tensor:
    """Generalised Hamming window ``alpha - (1 - alpha) cos(2 pi n / (length - 1))``.

    ``alpha`` in [0, 1] (0.5: Hann, 0.54: Hamming).

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> from diffconv_core.windows import general_hamming
        >>> general_hamming(5, 0.54)  # the Hamming window
        tensor([0.0800, 0.5400, 1.0000, 0.5400, 0.0800])
    """
    return _make("general_hamming", length, sym, kw, alpha=alpha)


def gaussian(length: int, std: Number, sym: bool = True, **kw: Any) -> Tensor:
    """Gaussian window ``exp(-t^2 / (2 std^2))``; ``std > 0`` in samples.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> import torch
        >>> from diffconv_core.windows import gaussian
        >>> std = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
        >>> w = gaussian(7, std)
        >>> w.sum().backward()
        >>> std.grad > 0
        tensor(True)
    """
    return _make("gaussian", length, sym, kw, std=std)


def general_gaussian(length: int, p: Number, sig: Number, sym: bool = True, **kw: Any) -> Tensor:
    """Generalised Gaussian ``exp(-|t / sig|^(2 p) / 2)``; ``p > 0``, ``sig > 0``.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> from diffconv_core.windows import general_gaussian
        >>> general_gaussian(5, 1.5, 1.0)
        tensor([0.0183, 0.6065, 1.0000, 0.6065, 0.0183])
    """
    return _make("general_gaussian", length, sym, kw, p=p, sig=sig)


def kaiser(length: int, beta: Number, sym: bool = True, **kw: Any) -> Tensor:
    """Kaiser window ``I0(beta sqrt(1 - x^2)) / I0(beta)``; ``beta >= 0``.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> import torch
        >>> from diffconv_core.windows import kaiser
        >>> kaiser(5, 4.0)
        tensor([0.0885, 0.6334, 1.0000, 0.6334, 0.0885])
        >>> beta = torch.tensor([0.0, 4.0, 8.0], requires_grad=True)
        >>> kaiser(5, beta).shape  # a batch of three windows, differentiable in beta
        torch.Size([3, 5])
    """
    return _make("kaiser", length, sym, kw, beta=beta)


def kaiser_bessel_derived(length: int, beta: Number, *, sym: bool = True, **kw: Any) -> Tensor:
    """Kaiser-Bessel derived window: half of it is the square root of the running sum of a
    Kaiser window of ``length / 2 + 1`` taps (with ``beta >= 0``) over its total, the other
    half its mirror image (the MDCT's window: ``w[n]^2 + w[n + length / 2]^2 == 1``).

    As in scipy, only defined for an even ``length`` and ``sym=True`` (keyword-only); other
    lengths, or ``sym=False``, raise ValueError. With ``width``, the taps are joined by
    straight lines before the stretch (the window has no formula between taps).

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> import torch
        >>> from diffconv_core.windows import kaiser_bessel_derived
        >>> w = kaiser_bessel_derived(6, 4.0, dtype=torch.float64)
        >>> torch.allclose(w[:3] ** 2 + w[3:] ** 2, torch.ones(3, dtype=torch.float64))
        True
    """
    return _make("kaiser_bessel_derived", length, sym, kw, beta=beta)


def chebwin(length: int, at: Number, sym: bool = True, **kw: Any) -> Tensor:
    """Dolph-Chebyshev window: the narrowest main lobe for equiripple side lobes ``at`` dB
    (``at > 0``, differentiable) below it; the largest tap is 1.

    scipy warns that below about 45 dB the window is unsuited to spectral analysis (its
    equivalent noise bandwidth stops growing with ``at``); the taps are well defined and
    equal to scipy's all the same, and this function does not warn (no window here does).
    With ``width``, the window is stretched as the trigonometric polynomial whose samples
    the taps are.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> import torch
        >>> from diffconv_core.windows import chebwin
        >>> chebwin(5, 50.0, dtype=torch.float64)
        tensor([0.2055, 0.7010, 1.0000, 0.7010, 0.2055], dtype=torch.float64)
    """
    return _make("chebwin", length, sym, kw, at=at)


def dpss(
    length: int,
    NW: Number,
    Kmax: int | None = None,
    sym: bool = True,
    norm: int | str | None = None,
    return_ratios: bool = False,
    **kw: Any,
) -> Tensor:
    """First discrete prolate spheroidal (Slepian) sequence: of all windows of ``length``
    taps, the one with the most energy at frequencies ``|f| < NW / length`` (cycles per
    sample); ``0 < NW < length / 2``, differentiable.

    ``norm``: None (the default, as scipy's for a single window: ``"approximate"``),
    ``"approximate"`` (largest tap 1, and for an even length times
    ``length^2 / (length^2 + NW)``, since the peak falls between the two centre taps),
    ``"subsample"`` (largest tap 1, and for an even length scaled so that the taps' DFT
    interpolation is 1 half-way between the two centre taps) or ``2`` (unit energy). For
    ``sym=False`` everything, ``NW / length`` included, is that of the ``length + 1``-tap
    window, as in scipy.

    One window only: ``Kmax`` (several tapers) must be None and ``return_ratios`` (their
    concentration ratios) False; other values raise ValueError. With ``width``, the taps
    are joined by straight lines before the stretch.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> import torch
        >>> from diffconv_core.windows import dpss
        >>> NW = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
        >>> w = dpss(16, NW)
        >>> w.sum().backward()  # a wider band: a narrower window
        >>> NW.grad < 0
        tensor(True)
    """
    if Kmax is not None:
        raise ValueError(
            f"dpss parameter Kmax must be None (one window; several tapers are not "
            f"supported); got {Kmax!r}"
        )
    if return_ratios:
        raise ValueError(
            "dpss parameter return_ratios must be False (concentration ratios are not "
            f"returned); got {return_ratios!r}"
        )
    return _make("dpss", length, sym, kw, NW=NW, norm=norm)


def taylor(
    length: int,
    nbar: int = 4,
    sll: Number = 30.0,
    norm: bool = True,
    sym: bool = True,
    **kw: Any,
) -> Tensor:
    """Taylor window: ``nbar`` nearly constant side lobes ``sll`` dB below the main lobe.

    ``nbar``: integer >= 1; ``sll > 0`` (differentiable); ``norm``: peak 1 at the centre.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for an ``sll`` tensor of shape ``S``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.windows import taylor
        >>> w = taylor(16, nbar=4, sll=30.0, dtype=torch.float64)
        >>> bool(torch.allclose(w, torch.from_numpy(scipy.signal.windows.taylor(16, 4, 30))))
        True
    """
    return _make("taylor", length, sym, kw, nbar=nbar, sll=sll, norm=norm)


def tukey(length: int, alpha: Number = 0.5, sym: bool = True, **kw: Any) -> Tensor:
    """Tukey (tapered cosine) window; ``alpha`` in [0, 1] is the tapered fraction.

    ``alpha = 0`` gives a boxcar, ``alpha = 1`` a Hann window (as in scipy).

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> from diffconv_core.windows import tukey
        >>> tukey(7, 0.5)
        tensor([0.0000, 0.7500, 1.0000, 1.0000, 1.0000, 0.7500, 0.0000])
    """
    return _make("tukey", length, sym, kw, alpha=alpha)


def exponential(
    length: int, center: Number | None = None, tau: Number = 1.0, sym: bool = True, **kw: Any
) -> Tensor:
    """Exponential (Poisson) window ``exp(-|n - center| / tau)``; ``tau > 0``.

    ``center`` (an index, default the middle) may only be given with ``sym=False``, as in
    scipy.

    Shape:
        - output: ``(length,)``, or ``(*S, length)`` for tensor parameters of shape ``S``

    Example:
        >>> from diffconv_core.windows import exponential
        >>> exponential(5)  # tau = 1: exp(-2), exp(-1), 1, ...
        tensor([0.1353, 0.3679, 1.0000, 0.3679, 0.1353])
    """
    return _make("exponential", length, sym, kw, center=center, tau=tau)
