"""The one function that builds every window, and the argument checks it shares.

:mod:`diffconv_core.windows` holds the public functions and
:mod:`diffconv_core._window_registry` the table of windows; this module holds the argument
checks, the fractional-width stretch and the normalisations (also used by ``filters``,
``smooth`` and ``nn``).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from diffconv_core._compile import eager_under_compile, recording_graph
from diffconv_core._validation import (
    broadcast_shapes,
    check_count,
    check_device,
    is_bool,
    unwrapped,
)
from diffconv_core._window_registry import REQUIRED, SPECS, Param, Spec, describe, lookup

__all__ = ["REQUIRED", "SPECS", "Param", "Spec", "build", "describe", "lookup"]

NORMALIZATIONS = (None, "sum", "peak", "energy")


def clamp_straight_through(value: Tensor, low: float | None, high: float | None) -> Tensor:
    """``value`` clamped into ``[low, high]`` exactly, with its gradient passed as if
    unclamped: a learned parameter an optimiser step took out of its range can come back
    (a plain clamp's zero gradient there left it stuck). No bound, no change.

    Example:
        >>> clamp_straight_through(torch.tensor(1.5), 0.0, 1.0)
        tensor(1.)
    """
    if low is None and high is None:
        return value
    # value - value.detach() is exactly 0: the forward value is the clamped one, bit for bit.
    return torch.clamp(value.detach(), min=low, max=high) + (value - value.detach())


def narrowest_width(length: int, sym: bool, normalize: str | None, eps: float) -> float:
    """The smallest learned width a window of ``length`` taps is built with.

    A window built from an even number of taps (a symmetric one of even length, or the
    periodic one of odd length, cut from length + 1) has none at its centre: the middle two
    sit half a sample off it, and from a width of length / (taps - 1) down they are the
    window's ends, zero for hann and its kind. Normalising such a window fails, so a learned
    width stays just above that; ``eps`` (a dtype's) above zero otherwise.

    Example:
        >>> narrowest_width(8, True, "sum", 1e-7) > 8 / 7
        True
    """
    taps = length if sym else length + 1
    if normalize is None or taps % 2 or length / (taps - 1) >= length:
        return eps
    return length / (taps - 1) * (1 + 1e-6)


def widened(value: Tensor) -> Tensor:
    """A float16/bfloat16 learned value in float32 (others as they are), so that clamping it
    to its range does not round the bounds themselves out of the range (259 is 260 in
    bfloat16); the window is evaluated in float64 and returned in the module's dtype anyway."""
    return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value


def check_param_names(spec: Spec, params: dict[str, Any]) -> None:
    """Refuse parameters that ``spec``'s window does not take (a TypeError naming them).

    Example:
        >>> check_param_names(lookup("hann")[0], {"beta": 8.0})
        Traceback (most recent call last):
        ...
        TypeError: hann window got unexpected parameter(s) beta; accepted: none
    """
    names = {p.name for p in spec.params}
    unknown = sorted(set(params) - names)
    if unknown:
        accepted = ", ".join(sorted(names)) or "none"
        raise TypeError(
            f"{spec.name} window got unexpected parameter(s) {', '.join(unknown)}; "
            f"accepted: {accepted}"
        )


def upper_bound(window: str, p: Param, length: int) -> tuple[float | None, bool]:
    """The bound above parameter ``p`` of a ``length``-tap window, and whether it is open
    (excluded). Fixed in the registry for most; dpss's NW must stay below length / 2 (as
    scipy checks it: against the length asked for, and not for a single tap).

    Example:
        >>> nw = next(p for p in lookup("dpss")[0].params if p.name == "NW")
        >>> upper_bound("dpss", nw, 16)
        (8.0, True)
    """
    if window == "dpss" and p.name == "NW" and length > 1:
        return length / 2, True
    return p.high, p.high_open


def check_length(length: Any, what: str = "length") -> int:
    return check_count(length, what, minimum=1)


def readable(value: Tensor) -> Tensor:
    """``value`` detached, and under ``torch.func`` transforms the plain tensor inside their
    wrappers: range checks must read numbers, which ``vmap`` refuses to give from a batched
    tensor (under vmap a check then covers the whole batch)."""
    return unwrapped(value.detach())


def has_values(value: Tensor) -> bool:
    """Whether ``value`` holds numbers to check: a meta tensor (a model built on the meta
    device) has a shape and a dtype only, and passes every value check; so does every tensor
    while a graph is recorded whole (``torch.export``, or ``torch.compile`` in the "graph"
    mode), whose inputs have no values then (the modules of :mod:`diffconv_core.nn` clamp
    what they learn into range in ``forward``)."""
    return value.device.type != "meta" and not recording_graph()


def _in_range(values: Tensor, p: Param) -> bool:
    if not has_values(values):
        return True
    v = readable(values)
    ok = torch.isfinite(v).all()
    if p.low is not None:
        ok = ok & ((v > p.low) if p.low_open else (v >= p.low)).all()
    if p.high is not None:
        ok = ok & ((v < p.high) if p.high_open else (v <= p.high)).all()
    return bool(ok)


def _show(value: Any) -> str:
    if isinstance(value, Tensor):
        v = readable(value)
        return repr(v.item()) if v.numel() == 1 else f"tensor {v.cpu().tolist()}"
    return repr(value)


def as_tensor(value: Any, name: str, dtype: torch.dtype, device: Any) -> Tensor:
    """A number, sequence or tensor as a tensor of ``dtype`` (autograd graph kept)."""
    if is_bool(value):
        # True read as 1.0 (chebwin's at=True, a 1 dB window).
        raise TypeError(f"{name} must be a number or a tensor; got {value!r}")
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be real; got a {value.dtype} tensor")
        return value.to(device=device, dtype=dtype)
    if isinstance(value, (list, tuple)) and any(isinstance(v, Tensor) for v in value):
        # e.g. general_cosine coefficients [a0, a1] where some require grad: keep the graph.
        items = [as_tensor(v, name, dtype, device) for v in value]
        shape = broadcast_shapes(*(i.shape for i in items))
        return torch.stack([i.expand(shape) for i in items], dim=-1)
    try:
        return torch.as_tensor(value, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number or a tensor; got {value!r}") from None


def check_param(window: str, p: Param, value: Tensor, raw: Any) -> None:
    if p.vector:
        finite = not has_values(value) or bool(readable(value).isfinite().all())
        if value.dim() < 1 or value.shape[-1] == 0 or not finite:
            raise ValueError(f"{window} parameter {p.name} must be {p.range_text()}; got {raw!r}")
        return
    if not _in_range(value, p):
        raise ValueError(f"{window} parameter {p.name} must be {p.range_text()}; got {_show(raw)}")


def _flat(values: Sequence[Any]) -> list[Any]:
    out = []
    for v in values:
        out.extend(v if isinstance(v, (list, tuple)) else [v])
    return out


def _discrete(window: str, p: Param, value: Any) -> Any:
    """Validate an integer, boolean or choice parameter (None passes for optional ones)."""
    if value is None:
        return None
    if p.kind == "choice":
        hashable = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        if not hashable or value not in p.choices:
            raise ValueError(f"{window} parameter {p.name} must be {p.range_text()}; got {value!r}")
        return next(c for c in p.choices if c == value)  # 2.0 is 2, as in scipy
    if p.kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"{window} parameter {p.name} must be True or False; got {value!r}")
        return value
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{window} parameter {p.name} must be an integer; got {value!r}") from None
    too_large = p.high is not None and number > p.high
    if isinstance(value, bool) or number < p.low or too_large:
        raise ValueError(f"{window} parameter {p.name} must be {p.range_text()}; got {value!r}")
    return number


def result_dtype(dtype: torch.dtype | None, values: Sequence[Any]) -> torch.dtype:
    """The requested dtype, else the floating dtype of the tensor arguments, else the default."""
    if dtype is not None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
        return dtype
    found = [v.dtype for v in _flat(values) if isinstance(v, Tensor) and v.dtype.is_floating_point]
    if not found:
        return torch.get_default_dtype()
    out = found[0]
    for d in found[1:]:
        out = torch.promote_types(out, d)
    return out


def result_device(device: Any, values: Sequence[Any]) -> torch.device:
    if device is not None:
        return check_device(device)
    for v in _flat(values):
        if isinstance(v, Tensor):
            return v.device
    # torch's default device, as its factory functions take it (``torch.set_default_device``
    # or a ``with torch.device(...)`` block): an empty tensor reads it in under a microsecond.
    return torch.empty(0).device


def _peak_tap(magnitudes: Tensor) -> Tensor:
    """The largest magnitude along the last axis, as one tap's value: among taps tied for it
    the one nearest the middle, which stays the peak as a parameter leaves the tie (a
    boxcar's learned width below the length, a Kaiser beta above 0). ``amax`` split the
    gradient among the tied taps, a derivative from neither side."""
    n = magnitudes.shape[-1]
    plain = magnitudes.detach()
    tied = plain == plain.amax(-1, keepdim=True)
    from_middle = (torch.arange(n, device=plain.device, dtype=plain.dtype) - (n - 1) / 2).abs()
    index = torch.where(tied, from_middle, math.inf).argmin(-1, keepdim=True)
    return magnitudes.gather(-1, index)


def normalize_window(w: Tensor, normalize: str | None, name: str) -> Tensor:
    """Divide by the sum, the peak or the root energy along the last axis."""
    if normalize is None:
        return w
    if normalize == "sum":
        scale = w.sum(-1, keepdim=True)
        # A sum that cancels to rounding noise means the window has no DC gain to normalise.
        noise = w.shape[-1] * torch.finfo(w.dtype).eps * w.detach().abs().sum(-1, keepdim=True)
        degenerate = scale.detach().abs() <= noise
    elif normalize == "peak":
        scale = _peak_tap(w.abs())
        degenerate = scale.detach() == 0
    else:
        scale = torch.sqrt((w * w).sum(-1, keepdim=True))
        degenerate = scale.detach() == 0
    if has_values(degenerate) and bool(readable(degenerate).any()):
        raise ValueError(
            f"cannot normalize={normalize!r}: the {name} window of length {w.shape[-1]} "
            f"has {'an' if normalize == 'energy' else 'a'} {normalize} of zero"
        )
    return w / scale


def _peak_scaled(log_shape: Callable[..., Tensor], kept: int, t: Tensor, m: int, **args) -> Tensor:
    """A window from the logarithm of its taps, scaled so that its largest kept tap (of the
    first ``kept``) is 1: what normalising divides out anyway, but a narrow window (a
    Gaussian's std of 0.01 samples, at an even length) keeps its shape instead of
    underflowing to zeros. The normalised window does not depend on the scale; recorded by
    autograd, its share of the gradient cancels the peak tap's own exactly (detached, a
    std of 2e-16 samples left a gradient of 2e31 from the sum's rounding)."""
    log_taps = log_shape(t, m, **args)
    peak = log_taps[..., :kept].amax(-1, keepdim=True)
    # Every tap -inf (a general Gaussian whose powers all overflow): left so, and refused
    # by the normalisation as a window of zeros.
    return torch.exp(log_taps - torch.where(torch.isfinite(peak), peak, 0.0))


def sample_overlap(t: Tensor, width: Tensor) -> Tensor:
    """Length of the overlap of each tap's cell [t - 1/2, t + 1/2] with [-w/2, w/2]."""
    half = width / 2.0
    # Ties go to the support's edge: at width == length (the largest allowed, and the usual
    # starting point of a learned width) the gradient is then the left derivative, not the
    # half of it that torch.minimum/maximum give by splitting a tie.
    hi = torch.where(t + 0.5 < half, t + 0.5, half)
    lo = torch.where(t - 0.5 > -half, t - 0.5, -half)
    return torch.clamp(hi - lo, min=0.0)


@eager_under_compile  # its checks read numbers; a window is a few taps' arithmetic
def build(
    spec: Spec,
    length: Any,
    *,
    sym: bool,
    params: dict[str, Any],
    normalize: str | None = None,
    width: Any = None,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> Tensor:
    """Validate everything, then evaluate ``spec`` at the taps (see ``get_window``)."""
    length = check_length(length)
    if not isinstance(sym, bool):
        raise TypeError(f"sym must be True or False; got {sym!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(
            f"normalize must be one of None, 'sum', 'peak', 'energy'; got {normalize!r}"
        )
    check_param_names(spec, params)
    raw = {}
    for p in spec.params:
        value = params.get(p.name, p.default)
        if value is REQUIRED:
            raise ValueError(f"{spec.name} window requires parameter {p.name!r}")
        raw[p.name] = value
    if spec.name == "exponential" and sym and raw["center"] is not None:
        raise ValueError(
            f"exponential window: center must be None when sym=True; got {_show(raw['center'])}"
        )
    if spec.name == "kaiser_bessel_derived" and not sym:
        raise ValueError("kaiser_bessel_derived window: only defined for sym=True (as in scipy)")
    if spec.name == "kaiser_bessel_derived" and length % 2:
        raise ValueError(
            f"kaiser_bessel_derived window: only defined for an even length; got {length}"
        )

    given = [*raw.values(), width]
    out_dtype = result_dtype(dtype, given)
    dev = result_device(device, given)
    # Windows are small: evaluate in float64 (where the device has it) and round once at the
    # end, so that float32 windows are scipy's to rounding even where formulas amplify
    # errors (a Kaiser window with beta = 25 loses ~1e-6 when evaluated in float32).
    work = torch.float32 if dev.type == "mps" else torch.float64

    values: dict[str, Any] = {}
    batch: tuple[int, ...] = ()
    for p in spec.params:
        if raw[p.name] is None and p.continuous and not p.allow_none:
            raise TypeError(f"{spec.name} parameter {p.name} must be {p.range_text()}; got None")
        if raw[p.name] is None or not p.continuous:
            values[p.name] = _discrete(spec.name, p, raw[p.name])
            continue
        tensor = as_tensor(raw[p.name], f"{spec.name} parameter {p.name}", work, dev)
        check_param(spec.name, p, tensor, raw[p.name])
        high, high_open = upper_bound(spec.name, p, length)
        if high != p.high and not _in_range(tensor, replace(p, high=high, high_open=high_open)):
            # A bound that depends on the length (dpss's NW): say what it is here.
            raise ValueError(
                f"{spec.name} parameter {p.name} must be {p.range_text()} ({high:g} for length "
                f"{length}); got {_show(raw[p.name])}"
            )
        values[p.name] = tensor
        batch = broadcast_shapes(batch, tensor.shape[:-1] if p.vector else tensor.shape)

    # scipy answers [1.0] for any one-tap window, periodic or not.
    m = length if sym or length == 1 else length + 1
    w_tensor = None
    if width is not None:
        if isinstance(width, bool):  # as length=True is refused: not a number of samples
            raise TypeError(f"width must be a number or a tensor; got {width!r}")
        w_tensor = as_tensor(width, "width", work, dev)
        if not _in_range(w_tensor, Param("width", None, 0.0, float(length), low_open=True)):
            raise ValueError(f"width must be in (0, {length}] (the length); got {_show(width)}")
        # The periodic window is the first `length` taps of an (length + 1)-tap one: stretch
        # that one so that width == length still gives exactly the plain periodic window.
        if m != length:
            w_tensor = w_tensor * m / length
        batch = broadcast_shapes(batch, w_tensor.shape)

    # Parameters gain a trailing tap axis (vectors already have their own last axis).
    args = {
        k: (v if not isinstance(v, Tensor) or spec.params[i].vector else v.unsqueeze(-1))
        for i, (k, v) in enumerate(values.items())
    }
    if m == 1:
        # Stay connected to the parameters (zero gradient) so that backward() works.
        w = torch.ones((*batch, 1), dtype=work, device=dev)
        for p in spec.params:
            v = args[p.name]
            if isinstance(v, Tensor) and v.requires_grad:
                w = w + 0.0 * (v.sum(-1, keepdim=True) if p.vector else v)
    else:
        t = torch.arange(m, dtype=work, device=dev) - (m - 1) / 2.0
        shape = spec.shape
        if normalize is not None and spec.log_shape is not None:
            shape = functools.partial(_peak_scaled, spec.log_shape, length)
        if w_tensor is None:
            w = (spec.on_grid or shape)(t, m, **args)
        else:
            half = (m - 1) / 2.0
            scaled = t * (m / w_tensor.unsqueeze(-1))
            # The end taps reach the clip exactly at width == length, where torch.clamp would
            # pass the gradient: take the clipped (constant) side of the tie, so that the
            # gradient is the left derivative.
            clipped = scaled.detach().clamp(-half, half)
            stretched = torch.where(scaled.abs() < half, scaled, clipped)
            w = shape(stretched, m, **args)
    if w_tensor is not None:
        t = torch.arange(m, dtype=work, device=dev) - (m - 1) / 2.0
        w = w * sample_overlap(t, w_tensor.unsqueeze(-1))
    w = w.expand(*broadcast_shapes(batch, w.shape[:-1]), m)
    w = w[..., :length]
    w = normalize_window(w, normalize, spec.name).to(out_dtype)
    if has_values(w) and not bool(torch.isfinite(readable(w)).all()):
        # Parameters inside their ranges whose arithmetic (or the dtype) still overflows: a
        # NaN or Inf window would silently spoil every output.
        shown = ", ".join(f"{name}={_show(value)}" for name, value in raw.items())
        raise ValueError(
            f"the {spec.name} window of length {length} is not finite in {out_dtype} for "
            f"these parameters{' (' + shown + ')' if shown else ''}"
        )
    return w
