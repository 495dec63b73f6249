"""FIR filter design by the window method, equal to ``scipy.signal.firwin``, differentiable.

:func:`lowpass`, :func:`highpass`, :func:`bandpass` and :func:`bandstop` are :func:`firwin`
with ``pass_zero`` fixed. Cutoffs are in Hz when ``fs`` is given, otherwise normalised so
that 1 is the Nyquist frequency (scipy's convention). Cutoffs and window parameters may be
tensors that require grad: the taps are differentiable with respect to them, so a cutoff can
be learned. :func:`frequency_response` evaluates a kernel's response like
``scipy.signal.freqz``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from diffconv_core import _window_build as _b
from diffconv_core._compile import eager_under_compile
from diffconv_core._validation import check_flag, is_bool
from diffconv_core.windows import get_window

__all__ = [
    "firwin",
    "lowpass",
    "highpass",
    "bandpass",
    "bandstop",
    "frequency_response",
    "kaiser_beta",
    "kaiser_atten",
]

_PASS_ZERO = (True, False, "lowpass", "highpass", "bandpass", "bandstop")


def kaiser_beta(a: float) -> float:
    """Kaiser ``beta`` for a stop-band attenuation of ``a`` dB (``scipy.signal.kaiser_beta``).

    Shape:
        - no tensors: a number (dB) in, a float out

    Example:
        >>> from diffconv_core.filters import kaiser_beta
        >>> round(kaiser_beta(65.0), 4)
        6.2043
    """
    a = _finite_number(a, "a (the attenuation in dB)")
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a > 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


def kaiser_atten(numtaps: int, width: float) -> float:
    """Attenuation (dB) of a Kaiser FIR filter (``scipy.signal.kaiser_atten``).

    ``width`` is the transition width normalised so that 1 is the Nyquist frequency.

    Shape:
        - no tensors: numbers in, a float (dB) out

    Example:
        >>> from diffconv_core.filters import kaiser_atten
        >>> round(kaiser_atten(101, 0.05), 3)
        43.843
    """
    numtaps = _b.check_length(numtaps, "numtaps")
    return 2.285 * (numtaps - 1) * math.pi * _check_width(width) + 7.95


def _finite_number(value: Any, what: str) -> float:
    # A real number (numpy's included, bool not), finite: the Kaiser formulas' inputs.
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ValueError(f"{what} must be a finite number; got {value!r}")


def _check_pass_zero(pass_zero: Any) -> bool | str:
    """``pass_zero`` as True/False or one of the band names; a ValueError naming it else.
    A one-element bool tensor or numpy bool reads as its value."""
    if isinstance(pass_zero, str) and pass_zero in _PASS_ZERO:
        return pass_zero
    one_bool = isinstance(pass_zero, Tensor) and pass_zero.dtype == torch.bool
    if is_bool(pass_zero) or (one_bool and pass_zero.dim() == 0):
        return bool(pass_zero)
    raise ValueError(
        "pass_zero must be one of True, False, 'lowpass', 'highpass', 'bandpass', "
        f"'bandstop'; got {pass_zero!r}"
    )


def _check_width(width: Any) -> float:
    """A Kaiser transition width: a positive finite number. scipy takes NaN, 0 or a negative
    width silently, as a boxcar design (a Kaiser beta of 0)."""
    if isinstance(width, Tensor) and width.requires_grad:
        # float() below would cut it from the graph, silently: the design is not
        # differentiable in its transition width (it picks a Kaiser beta by formula).
        raise TypeError(
            "width (the transition width) is a design setting, not differentiable; pass a "
            "number, or learn a Kaiser beta (window=('kaiser', beta) with a tensor beta)"
        )
    try:  # a number, a numpy scalar or a one-element tensor, as float() reads them
        value = math.nan if isinstance(width, bool) else float(width)
    except (TypeError, ValueError, RuntimeError):
        value = math.nan
    if math.isfinite(value) and value > 0:
        return value
    raise ValueError(f"width (the transition width) must be a positive number; got {width!r}")


def _check_fs(fs: Any) -> float | None:
    """``fs`` as a float, or None. numbers.Real, not (int, float): a rate read with numpy
    (np.float32, np.int64) is a positive number too; a bool is not a rate."""
    if fs is None:
        return None
    if isinstance(fs, numbers.Real) and not isinstance(fs, bool) and math.isfinite(fs) and fs > 0:
        return float(fs)
    raise ValueError(f"fs must be a positive number; got {fs!r}")


def _edges(cutoff: Any, work: torch.dtype, device: Any) -> Tensor:
    """Cutoffs as one tensor ``(..., n_edges)``: a number, a sequence, or a tensor."""

    def listed(value: Any) -> bool:
        return isinstance(value, Sequence) and not isinstance(value, str)

    if listed(cutoff) and not any(listed(c) for c in cutoff):
        if len(cutoff) == 0:
            raise ValueError("at least one cutoff frequency must be given; got []")
        items = [_b.as_tensor(c, "cutoff", work, device) for c in cutoff]
        shape = _b.broadcast_shapes(*(i.shape for i in items))
        return torch.stack([i.expand(shape) for i in items], dim=-1)
    # A tensor, a number, or an array (scipy's own cutoffs are numpy arrays): keep its shape.
    # Nested lists read as the array they write ([[0.2, 0.4]]: one band, as its array is),
    # not as a sequence whose one item is a batch of two lowpass cutoffs.
    edges = _b.as_tensor(cutoff, "cutoff", work, device)
    if edges.dim() and edges.shape[-1] == 0:
        raise ValueError(
            f"at least one cutoff frequency must be given; got a tensor of shape "
            f"{tuple(edges.shape)}"
        )
    return edges.reshape(edges.shape if edges.dim() else (1,))


def _show(cutoffs: Tensor) -> str:
    # The cutoffs as given, not edges / nyq * nyq: 1000 Hz at fs=12004 read 999.9999999999999.
    values = _b.readable(cutoffs).cpu().tolist()  # under vmap: the whole batch
    return repr(values[0] if len(values) == 1 else values)


@eager_under_compile  # its checks read numbers; a design is a few taps' arithmetic
def firwin(
    numtaps: int,
    cutoff: Any,
    *,
    width: float | None = None,
    window: str | tuple | float | Tensor = "hamming",
    pass_zero: bool | str = True,
    scale: bool = True,
    fs: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **window_params: Any,
) -> Tensor:
    """Windowed-sinc FIR filter, equal to ``scipy.signal.firwin`` for the same arguments.

    Args:
        numtaps: number of taps (odd for filters that pass the Nyquist frequency).
        cutoff: band edges, strictly increasing, in ``(0, fs/2)`` (or ``(0, 1)`` without
            ``fs``): a number, a sequence of numbers/tensors, or a tensor ``(..., n_edges)``
            (leading dims give a batch of filters); nested lists read as their array does.
        width: if given, a Kaiser window is designed for this transition width (same units
            as ``cutoff``, a positive number), as scipy does; ``window`` is then ignored.
        window: a window for :func:`diffconv_core.windows.get_window` (name, tuple or
            number), or a tensor of ``numtaps`` taps.
        pass_zero: True/``"lowpass"``/``"bandstop"``: the band at 0 passes; False/
            ``"highpass"``/``"bandpass"``: it stops.
        scale: scale so that the centre of the first pass band has unit gain.
        fs: sampling frequency of ``cutoff``; None means normalised (Nyquist = 1).
        dtype, device: of the result (default: those of tensor arguments, else the default).
        **window_params: parameters of the window (``beta=``, ``std=`` ...), numbers or
            tensors.

    Shape:
        - cutoff: ``(n_edges,)`` or ``(*S, n_edges)``
        - output: ``(numtaps,)`` or ``(*S, numtaps)``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.filters import firwin
        >>> h = firwin(31, [0.2, 0.5], pass_zero=False, dtype=torch.float64)
        >>> ref = scipy.signal.firwin(31, [0.2, 0.5], pass_zero=False)
        >>> bool(torch.allclose(h, torch.from_numpy(ref)))
        True
    """
    numtaps = _b.check_length(numtaps, "numtaps")
    scale = check_flag(scale, "scale")
    fs = _check_fs(fs)
    nyq = 1.0 if fs is None else fs / 2.0
    if width is not None:
        width = _check_width(width)
    pass_zero = _check_pass_zero(pass_zero)
    tensors = [cutoff, window, *window_params.values()]
    out_dtype = _b.result_dtype(dtype, tensors)
    dev = _b.result_device(device, tensors)
    # Designs are small: compute in float64 (where the device has it) so that a float32
    # result is the correctly rounded scipy design, not an accumulation of float32 errors.
    work = torch.float32 if dev.type == "mps" else torch.float64

    cutoffs = _edges(cutoff, work, dev)
    edges = cutoffs / nyq
    limit = "fs/2" if fs is not None else "1 (the Nyquist frequency)"
    # A design on the meta device, or one torch.export records, has no numbers to check.
    known = _b.has_values(edges)
    if known:
        # The checks read numbers: through readable(), so that torch.func.vmap can batch a
        # design.
        readable_edges = _b.readable(edges)
        if not bool(((readable_edges > 0) & (readable_edges < 1)).all()):
            raise ValueError(
                f"cutoff frequencies must be greater than 0 and less than {limit}; "
                f"got {_show(cutoffs)}"
            )
        increasing = readable_edges[..., 1:] > readable_edges[..., :-1]
        if edges.shape[-1] > 1 and not bool(increasing.all()):
            raise ValueError(
                f"cutoff frequencies must be strictly increasing; got {_show(cutoffs)}"
            )

    n_edges = edges.shape[-1]
    if isinstance(pass_zero, str):
        one = pass_zero in ("lowpass", "highpass")
        if one and n_edges != 1:
            raise ValueError(f"a {pass_zero} filter takes one cutoff; got {_show(cutoffs)}")
        if not one and n_edges < 2:
            raise ValueError(
                f"a {pass_zero} filter takes at least two cutoffs; got {_show(cutoffs)}"
            )
        pass_zero = pass_zero in ("lowpass", "bandstop")
    pass_nyquist = (n_edges % 2 == 0) == pass_zero
    if pass_nyquist and numtaps % 2 == 0:
        raise ValueError(
            f"a filter that passes the Nyquist frequency (highpass, bandstop, ...) needs an "
            f"odd number of taps; got numtaps={numtaps}"
        )

    # Band edges padded with 0 and/or 1 so that they pair up as (left, right) pass bands.
    batch = edges.shape[:-1]
    parts = []
    if pass_zero:
        parts.append(torch.zeros((*batch, 1), dtype=work, device=dev))
    parts.append(edges)
    if pass_nyquist:
        parts.append(torch.ones((*batch, 1), dtype=work, device=dev))
    # The count spelled out: -1 cannot be inferred for an empty batch of filters.
    bands = torch.cat(parts, dim=-1).reshape(*batch, (n_edges + pass_zero + pass_nyquist) // 2, 2)
    left, right = bands[..., 0:1], bands[..., 1:2]

    m = torch.arange(numtaps, dtype=work, device=dev) - (numtaps - 1) / 2.0
    # Each pass band (left, right) is the difference of two ideal lowpass responses.
    h = (right * _sinc(right * m) - left * _sinc(left * m)).sum(-2)

    if width is not None:
        beta = kaiser_beta(kaiser_atten(numtaps, width / nyq))
        win = get_window("kaiser", numtaps, beta=beta, dtype=work, device=dev)
    elif isinstance(window, Tensor):
        if window.dim() == 0 or window.shape[-1] != numtaps:
            raise ValueError(
                f"a window tensor must have numtaps={numtaps} taps; got shape {tuple(window.shape)}"
            )
        if window_params:  # a window tensor has no parameters to apply them to
            raise TypeError(
                f"window parameters ({', '.join(window_params)}) apply to a named window, not "
                "to a window tensor"
            )
        win = _b.as_tensor(window, "window", work, dev)
    else:
        win = get_window(window, numtaps, dtype=work, device=dev, **window_params)
    try:
        _b.broadcast_shapes(batch, win.shape[:-1])
    except ValueError:
        raise ValueError(
            f"the cutoffs' batch {tuple(batch)} and the window's {tuple(win.shape[:-1])} "
            "(from a window tensor or tensor window parameters) do not broadcast"
        ) from None
    h = h * win

    if scale:
        if pass_zero:
            frequency = torch.zeros((), dtype=work, device=dev)
        elif pass_nyquist and n_edges == 1:
            frequency = torch.ones((), dtype=work, device=dev)
        else:
            frequency = 0.5 * (bands[..., 0, 0] + bands[..., 0, 1])
        c = torch.cos(math.pi * m * frequency.unsqueeze(-1))
        gain = (h * c).sum(-1, keepdim=True)
        noise = numtaps * torch.finfo(work).eps * (h * c).detach().abs().sum(-1, keepdim=True)
        if known and bool((_b.readable(gain).abs() <= _b.readable(noise)).any()):
            # e.g. a 2-tap Hann window is all zeros: nothing to scale (scipy returns nan).
            raise ValueError(
                f"cannot scale this design: its gain at the centre of the first pass band is "
                f"zero (numtaps={numtaps}, window={window!r})"
            )
        h = h / gain
    return h.to(out_dtype)


def _sinc(x: Tensor) -> Tensor:
    # torch.sinc's double backward is nan at 0 (the centre tap of odd designs): evaluate the
    # quotient only where it is defined, so that gradients of gradients stay finite.
    zero = x == 0
    safe = torch.where(zero, torch.ones_like(x), x) * math.pi
    return torch.where(zero, torch.ones_like(x), torch.sin(safe) / safe)


def _single(cutoff: Any) -> Any:
    # lowpass/highpass: a tensor of any shape is a batch of single cutoffs.
    if isinstance(cutoff, Tensor):
        return cutoff.unsqueeze(-1)
    return cutoff


def lowpass(numtaps: int, cutoff: Any, **kwargs: Any) -> Tensor:
    """Lowpass FIR filter: ``firwin(numtaps, cutoff, pass_zero="lowpass", **kwargs)``.

    ``cutoff``: a number or a tensor of shape ``S`` (a batch of filters).

    Shape:
        - output: ``(numtaps,)`` or ``(*S, numtaps)``

    Example:
        >>> import torch
        >>> from diffconv_core.filters import lowpass
        >>> cutoff = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        >>> h = lowpass(21, cutoff)
        >>> h.shape, h.requires_grad
        (torch.Size([21]), True)
    """
    return firwin(numtaps, _single(cutoff), pass_zero="lowpass", **kwargs)


def highpass(numtaps: int, cutoff: Any, **kwargs: Any) -> Tensor:
    """Highpass FIR filter (``numtaps`` odd): ``firwin(..., pass_zero="highpass")``.

    Shape:
        - output: ``(numtaps,)`` or ``(*S, numtaps)`` for a cutoff tensor of shape ``S``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.filters import highpass
        >>> h = highpass(31, 0.3, dtype=torch.float64)
        >>> ref = scipy.signal.firwin(31, 0.3, pass_zero=False)
        >>> bool(torch.allclose(h, torch.from_numpy(ref)))
        True
        >>> highpass(31, torch.tensor([0.2, 0.3, 0.4])).shape  # a batch of three filters
        torch.Size([3, 31])
    """
    return firwin(numtaps, _single(cutoff), pass_zero="highpass", **kwargs)


def bandpass(numtaps: int, cutoff: Any, **kwargs: Any) -> Tensor:
    """Bandpass FIR filter: ``cutoff = (low, high)``; ``firwin(..., pass_zero="bandpass")``.

    Shape:
        - cutoff: a pair, or a tensor ``(*S, 2)``
        - output: ``(numtaps,)`` or ``(*S, numtaps)``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.filters import bandpass
        >>> h = bandpass(31, [0.2, 0.5], dtype=torch.float64)
        >>> ref = scipy.signal.firwin(31, [0.2, 0.5], pass_zero="bandpass")
        >>> bool(torch.allclose(h, torch.from_numpy(ref)))
        True
        >>> bandpass(30, torch.tensor([[0.1, 0.2], [0.3, 0.4]])).shape  # two filters
        torch.Size([2, 30])
    """
    return firwin(numtaps, cutoff, pass_zero="bandpass", **kwargs)


def bandstop(numtaps: int, cutoff: Any, **kwargs: Any) -> Tensor:
    """Bandstop FIR filter (``numtaps`` odd): ``cutoff = (low, high)``.

    Shape:
        - cutoff: a pair, or a tensor ``(*S, 2)``
        - output: ``(numtaps,)`` or ``(*S, numtaps)``

    Example:
        >>> import scipy.signal
        >>> import torch
        >>> from diffconv_core.filters import bandstop
        >>> h = bandstop(31, [1000.0, 2000.0], fs=8000.0, dtype=torch.float64)  # in Hz
        >>> ref = scipy.signal.firwin(31, [1000.0, 2000.0], pass_zero="bandstop", fs=8000.0)
        >>> bool(torch.allclose(h, torch.from_numpy(ref)))
        True
    """
    return firwin(numtaps, cutoff, pass_zero="bandstop", **kwargs)


def frequency_response(
    kernel: Tensor, n: int = 512, fs: float | None = None, *, whole: bool = False
) -> tuple[Tensor, Tensor]:
    """Frequencies and complex frequency response of an FIR kernel, as ``scipy.signal.freqz``.

    The response is evaluated at ``n`` equally spaced frequencies over ``[0, fs/2)`` (or
    ``[0, fs)`` with ``whole=True``). Without ``fs`` the frequencies are in radians per
    sample (``[0, pi)``), as in scipy. Differentiable with respect to the kernel.

    Shape:
        - kernel: ``(..., K)``
        - output: frequencies ``(n,)`` and response ``(..., n)`` (complex)

    Example:
        >>> import torch
        >>> from diffconv_core.filters import frequency_response
        >>> freqs, response = frequency_response(torch.ones(4) / 4, n=4, fs=8.0)
        >>> freqs
        tensor([0., 1., 2., 3.])
        >>> response.abs()
        tensor([1.0000, 0.6533, 0.0000, 0.2706])
    """
    if not isinstance(kernel, Tensor):
        raise TypeError(f"kernel must be a tensor; got {type(kernel).__name__}")
    if kernel.dim() < 1 or kernel.shape[-1] == 0:
        raise ValueError(f"kernel must have at least one tap; got shape {tuple(kernel.shape)}")
    n = _b.check_length(n, "n")
    fs = _check_fs(fs)
    x = kernel
    if not (x.is_floating_point() or x.is_complex()) or x.dtype in (torch.float16, torch.bfloat16):
        x = x.to(torch.float32)
    size = n if whole else 2 * n
    k = x.shape[-1]
    if k > size:
        # Sampling the spectrum at `size` points aliases the taps modulo `size`: fold them.
        chunks = -(-k // size)
        x = torch.nn.functional.pad(x, (0, chunks * size - k))
        x = x.reshape(*x.shape[:-1], chunks, size).sum(-2)
    response = torch.fft.fft(x, n=size)[..., :n]
    real = torch.float64 if x.dtype in (torch.float64, torch.complex128) else torch.float32
    span = (2 * math.pi if fs is None else fs) * (1.0 if whole else 0.5)
    freqs = torch.arange(n, dtype=real, device=x.device) * (span / n)
    return freqs, response
