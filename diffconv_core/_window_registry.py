"""The window registry: names, aliases, shape formulas and parameters with their ranges.

One row per window. :mod:`diffconv_core._window_build` evaluates them; the public API is in
:mod:`diffconv_core.windows`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from diffconv_core import _window_shapes as shapes


class _Required:
    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    """One continuous window parameter and its valid range."""

    name: str
    default: Any
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    vector: bool = False  # general_cosine's coefficient sequence (a trailing axis)
    allow_none: bool = False  # exponential's ``center``
    kind: str = "float"  # "int", "bool" and "choice" parameters are plain Python values
    choices: tuple[Any, ...] = ()  # the values a "choice" parameter takes (dpss's ``norm``)
    text: str | None = None  # the range in words, where low/high do not tell all of it

    @property
    def continuous(self) -> bool:
        return self.kind == "float"

    def range_text(self) -> str:
        if self.text is not None:
            return self.text
        if self.kind == "choice":
            options = ([None] if self.allow_none else []) + list(self.choices)
            return "one of " + ", ".join(map(repr, options))
        if self.kind == "bool":
            return "True or False"
        if self.kind == "int" and self.high is not None:
            return f"an integer from {self.low:g} to {self.high:g}"
        if self.kind == "int":
            return f"an integer >= {self.low:g}"
        if self.vector:
            return "a non-empty sequence of finite numbers"
        if self.low is None and self.high is None:
            return "a finite number"
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class Spec:
    """A registered window: its canonical name, aliases, shape formula and parameters."""

    name: str
    aliases: tuple[str, ...]
    shape: Callable[..., Tensor]
    params: tuple[Param, ...]
    description: str
    # The same shape at the taps themselves (no fractional width), where it has a cheaper
    # formulation (chebwin: one inverse FFT instead of a dense cosine matrix); else None.
    on_grid: Callable[..., Tensor] | None = None
    # The logarithm of the shape, for windows whose taps can all underflow (the Gaussians,
    # exponential, Kaiser): normalised windows are computed from it, shifted by its peak.
    log_shape: Callable[..., Tensor] | None = None


def _spec(name, aliases, params, description):
    shape, on_grid = getattr(shapes, name), getattr(shapes, f"{name}_on_grid", None)
    log_shape = getattr(shapes, f"{name}_log", None)
    return Spec(name, tuple(aliases), shape, tuple(params), description, on_grid, log_shape)


_POSITIVE = {"low": 0.0, "low_open": True}
_UNIT = {"low": 0.0, "high": 1.0}

SPECS: tuple[Spec, ...] = (
    _spec("barthann", ["brthan", "bth"], [], "Bartlett-Hann window"),
    _spec("bartlett", ["bart", "brt"], [], "triangle with zero end taps"),
    _spec("blackman", ["black", "blk"], [], "3-term cosine sum (0.42, 0.5, 0.08)"),
    _spec("blackmanharris", ["blackharr", "bkh"], [], "minimum 4-term Blackman-Harris"),
    _spec("bohman", ["bman", "bmn"], [], "convolution of two half-cosines"),
    _spec("boxcar", ["box", "ones", "rect", "rectangular"], [], "rectangle: all ones"),
    _spec(
        "chebwin",
        ["cheb"],
        # Past ~6,150 dB the Chebyshev spectrum overflows float64 (scipy: OverflowError).
        [Param("at", REQUIRED, **_POSITIVE, high=6000.0, text="> 0 and <= 6000")],
        "Dolph-Chebyshev: equiripple side lobes `at` dB below the main lobe",
    ),
    _spec("cosine", ["halfcosine"], [], "half a period of a sine"),
    _spec(
        "dpss",
        [],
        [
            Param("NW", REQUIRED, **_POSITIVE, text="> 0 and < length / 2"),
            Param(
                "norm",
                None,
                allow_none=True,
                kind="choice",
                choices=(2, "approximate", "subsample"),
            ),
        ],
        "first Slepian sequence: most energy within |f| < NW / length",
    ),
    _spec(
        "exponential",
        ["poisson"],
        [Param("center", None, allow_none=True), Param("tau", 1.0, **_POSITIVE)],
        "exp(-|n - center| / tau); center only with sym=False",
    ),
    _spec("flattop", ["flat", "flt"], [], "5-term flat-top cosine sum"),
    _spec("gaussian", ["gauss", "gss"], [Param("std", REQUIRED, **_POSITIVE)], "Gaussian"),
    _spec(
        "general_cosine",
        ["general cosine"],
        [Param("a", REQUIRED, vector=True)],
        "sum_k a[k] cos(k x), x from -pi to pi",
    ),
    _spec(
        "general_gaussian",
        ["general gaussian", "general gauss", "general_gauss", "ggs"],
        [Param("p", REQUIRED, **_POSITIVE), Param("sig", REQUIRED, **_POSITIVE)],
        "exp(-|n / sig| ** (2 p) / 2)",
    ),
    _spec(
        "general_hamming",
        ["general hamming"],
        [Param("alpha", REQUIRED, **_UNIT)],
        "alpha - (1 - alpha) cos(2 pi n / (M - 1))",
    ),
    _spec("hamming", ["hamm", "ham"], [], "general_hamming with alpha = 0.54"),
    _spec("hann", ["han", "hanning"], [], "raised cosine with zero end taps"),
    _spec(
        "kaiser",
        ["ksr"],
        [Param("beta", REQUIRED, low=0.0)],
        "I0(beta sqrt(1 - x^2)) / I0(beta)",
    ),
    _spec(
        "kaiser_bessel_derived",
        ["kaiser bessel derived", "kbd"],
        [Param("beta", REQUIRED, low=0.0)],
        "sqrt of a running Kaiser sum (MDCT); even lengths, sym=True only",
    ),
    _spec("lanczos", ["sinc"], [], "central lobe of a sinc"),
    _spec("nuttall", ["nutl", "nut"], [], "minimum 4-term Nuttall"),
    _spec("parzen", ["parz", "par"], [], "piecewise cubic (de la Vallee Poussin)"),
    _spec(
        "taylor",
        ["taylorwin"],
        [
            # Its coefficients take products over (nbar - 1)**2 pairs, which overflow from
            # nbar 489-519 (by sll; scipy's are NaN from ~500): a bound below that, not a
            # grid past memory (10**6 asked 8 TB).
            Param("nbar", 4, low=1.0, high=450.0, kind="int"),
            Param("sll", 30.0, **_POSITIVE),
            Param("norm", True, kind="bool"),
        ],
        "Taylor window: `nbar` nearly constant side lobes `sll` dB below the main lobe",
    ),
    _spec("triang", ["triangle", "tri"], [], "triangle with non-zero end taps"),
    _spec(
        "tukey",
        ["tuk"],
        [Param("alpha", 0.5, **_UNIT)],
        "flat top with cosine tapers over a fraction alpha",
    ),
)

_BY_NAME: dict[str, Spec] = {}
for _s in SPECS:
    for _n in (_s.name, *_s.aliases):
        _BY_NAME[_n] = _s


def lookup(name: str) -> tuple[Spec, bool | None]:
    """Resolve a name or alias; also return the sym forced by a _symmetric/_periodic suffix."""
    if not isinstance(name, str):
        raise TypeError(f"window name must be a string; got {name!r}")
    key = name.strip().lower()
    forced = None
    if key.endswith("_symmetric"):
        key, forced = key[: -len("_symmetric")], True
    elif key.endswith("_periodic"):
        key, forced = key[: -len("_periodic")], False
    if key not in _BY_NAME:
        known = ", ".join(s.name for s in SPECS)
        close = difflib.get_close_matches(key, list(_BY_NAME), n=1)
        guess = f" (did you mean {_BY_NAME[close[0]].name!r}?)" if close else ""
        raise ValueError(f"unknown window {name!r}{guess}; known windows: {known}")
    return _BY_NAME[key], forced


def is_continuous(window: str, name: str) -> bool:
    """Whether parameter ``name`` of ``window`` is continuous, so it can be learned (an
    integer or boolean setting such as taylor's ``nbar`` cannot). An unknown name counts as
    continuous: :func:`diffconv_core.windows.get_window` names the accepted ones.

    Example:
        >>> is_continuous("taylor", "sll"), is_continuous("taylor", "nbar")
        (True, False)
    """
    param = _param(window, name)
    return param is None or param.continuous


def is_learnable(window: str, name: str) -> bool:
    """Whether parameter ``name`` of ``window`` is one continuous number, which a fit can
    learn: not a setting (taylor's ``nbar``) nor a sequence (general_cosine's ``a``, whose
    coefficients are given, not learned).

    Example:
        >>> is_learnable("gaussian", "std"), is_learnable("general_cosine", "a")
        (True, False)
    """
    param = _param(window, name)
    return param is None or (param.continuous and not param.vector)


def _param(window: str, name: str) -> Param | None:
    spec, _ = lookup(window)
    return next((p for p in spec.params if p.name == name), None)


def describe() -> list[dict[str, Any]]:
    out = []
    for s in SPECS:
        out.append(
            {
                "name": s.name,
                "aliases": list(s.aliases),
                "params": {
                    p.name: (None if p.default is REQUIRED else p.default) for p in s.params
                },
                "required": [p.name for p in s.params if p.default is REQUIRED],
                "ranges": {p.name: p.range_text() for p in s.params},
                "description": s.description,
            }
        )
    return out
