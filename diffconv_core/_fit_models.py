"""What :mod:`diffconv_core.fitting` learns: free FIR taps, or a window's parameters.

Each is an ``nn.Module`` whose ``forward()`` returns the kernel ``(K,)`` and whose
``learned()`` describes the result as plain data (for the fit's JSON).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from diffconv_core._validation import check_choice, check_tensor
from diffconv_core._window_build import (
    check_length,
    clamp_straight_through,
    narrowest_width,
    upper_bound,
)
from diffconv_core._window_registry import is_learnable, lookup


def _upper_bound(window: str, name: str, length: int) -> float | None:
    """The largest value a learned width or window parameter may take (None: unbounded)."""
    if name == "width":
        return float(length)
    spec, _ = lookup(window)
    param = next((p for p in spec.params if p.name == name), None)
    # An unknown name is left to get_window, which names the accepted parameters.
    if param is None:
        return None
    high, high_open = upper_bound(spec.name, param, length)
    if high is None:
        return None
    return high * (1 - 1e-7) if high_open else high


class FIRKernel(nn.Module):
    """Every tap is a free parameter.

    ``init`` is copied (detached) into the parameter ``taps``; ``forward()`` returns it.

    Shape:
        - init: ``(K,)``
        - output: ``(K,)``

    Example:
        >>> import torch
        >>> FIRKernel(torch.ones(3))().tolist()
        [1.0, 1.0, 1.0]
    """

    def __init__(self, init: torch.Tensor) -> None:
        super().__init__()
        check_tensor("init", init)
        if init.dim() != 1:
            raise ValueError(f"init must be one kernel (K,); got shape {tuple(init.shape)}")
        self.taps = nn.Parameter(init.detach().clone())

    def forward(self) -> torch.Tensor:
        return self.taps

    def learned(self) -> dict[str, object]:
        """The kernel as plain data for the fit's JSON: its kind and number of taps (the
        tap values are ``forward()``'s, not repeated here).

        Example:
            >>> import torch
            >>> FIRKernel(torch.zeros(5)).learned()
            {'kind': 'fir', 'taps': 5}
        """
        return {"kind": "fir", "taps": len(self.taps)}


class WindowKernel(nn.Module):
    """A window from :func:`diffconv_core.windows.get_window` with learned shape parameters.

    ``learn="params"`` learns the window's continuous parameters (e.g. a Gaussian's ``std``),
    ``learn="width"`` the fractional width of its support. Every learned value is positive,
    kept so by a log parametrisation (Adam then takes steps relative to the value's size).

    Shape:
        - output: ``(length,)``, in ``dtype``

    Example:
        >>> import torch
        >>> k = WindowKernel("gaussian", 15, learn="params", params={"std": 2.0})
        >>> k().shape, round(k.learned()["params"]["std"], 6)
        (torch.Size([15]), 2.0)
    """

    def __init__(
        self,
        window: str,
        length: int,
        *,
        learn: str = "params",
        params: Mapping[str, float] | None = None,
        width: float | None = None,
        normalize: str | None = "sum",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        check_choice("learn", learn, ("params", "width"))
        length = check_length(length)
        self.window, self.length, self.learn, self.normalize = window, length, learn, normalize
        self.fixed = dict(params or {})
        self.width = float(length if width is None else width)
        if learn == "params":
            # Integer and boolean settings (taylor's nbar) and sequences (general_cosine's
            # coefficients) stay fixed: only single numbers are learned.
            names = sorted(n for n in self.fixed if is_learnable(window, n))
            if not names:
                raise ValueError(
                    f"window {window!r}: learn='params' needs at least one parameter to learn "
                    "(integer, boolean and sequence settings stay fixed); got "
                    f"{sorted(self.fixed) or 'none'}"
                )
            self.names = names
            values = [float(self.fixed[n]) for n in names]
        else:
            self.names = ["width"]
            values = [self.width]
        # Upper bounds of the learned values (the width's is the length, tukey's alpha 1):
        # values() clamps into them so that a step past one does not fail mid-training, but
        # a start past one is the caller's mistake, refused as get_window refuses it.
        self.highs = [_upper_bound(window, name, length) for name in self.names]
        # The log keeps every value positive; a width also stays above the narrowest that
        # can be built (an even-length window has no centre tap: narrowest_width).
        eps = torch.finfo(dtype).eps
        narrowest = narrowest_width(length, True, normalize, eps)
        self.lows = [narrowest if name == "width" else None for name in self.names]
        for name, value, high in zip(self.names, values, self.highs, strict=True):
            if not value > 0:
                raise ValueError(f"learned parameter {name} must start positive; got {value}")
            if name == "width" and value < narrowest:
                raise ValueError(
                    f"learned parameter width must start at least {narrowest:.7g} (narrower, "
                    f"the {length}-tap window has no non-zero tap to normalize); got {value}"
                )
            if high is not None and value > high:
                raise ValueError(
                    f"learned parameter {name} must start at most {high:g}"
                    f"{' (the length)' if name == 'width' else ''}; got {value}"
                )
        start = torch.tensor(values, dtype=dtype)
        logs = start.log()
        # exp(log(v)) can round above v (31 -> 31.000002 in float32): a start at an upper bound
        # (the default width == length) would then be out of range, or clamped with no
        # gradient. Step such logs down by an ulp until they give back at most v.
        for _ in range(4):
            over = logs.exp() > start
            if not bool(over.any()):
                break
            logs = torch.where(over, torch.nextafter(logs, torch.full_like(logs, -math.inf)), logs)
        self.log_values = nn.Parameter(logs)

    def values(self) -> dict[str, torch.Tensor]:
        """The learned values by name (``"width"`` when learning the width), as
        differentiable tensors clamped into their ranges (a width into
        ``[narrowest, length]``, tukey's ``alpha`` to at most 1, ...); the clamp passes the
        gradient through unchanged, so a value an optimiser step took out of range can come
        back.

        Shape:
            - each value: ``()``

        Example:
            >>> import math
            >>> import torch
            >>> k = WindowKernel("tukey", 9, params={"alpha": 0.5})
            >>> round(float(k.values()["alpha"].detach()), 6)
            0.5
            >>> with torch.no_grad():
            ...     _ = k.log_values.fill_(math.log(3.0))  # a step past alpha's upper bound
            >>> float(k.values()["alpha"].detach())
            1.0
        """
        raw = self.log_values.exp().unbind()
        bounds = zip(raw, self.lows, self.highs, strict=True)
        clamped = [clamp_straight_through(v, low, high) for v, low, high in bounds]
        return dict(zip(self.names, clamped, strict=True))

    def forward(self) -> torch.Tensor:
        from diffconv_core.windows import get_window

        values = self.values()
        kwargs = dict(self.fixed)
        width = self.width
        if self.learn == "params":
            kwargs.update(values)
        else:
            width = values["width"]
        return get_window(
            self.window,
            self.length,
            normalize=self.normalize,
            width=width,
            dtype=self.log_values.dtype,
            device=self.log_values.device,
            **kwargs,
        )

    def learned(self) -> dict[str, object]:
        """The window as plain data for the fit's JSON: ``kind`` ("window"), ``window``,
        ``taps``, ``normalize``, ``params`` (fixed settings and learned values, as Python
        numbers) and ``width``: what :func:`diffconv_core.windows.get_window` needs to build
        the kernel again.

        Example:
            >>> k = WindowKernel("hann", 9, learn="width", width=6.0)
            >>> out = k.learned()
            >>> out["window"], out["taps"], out["params"], round(out["width"], 4)
            ('hann', 9, {}, 6.0)
        """
        values = {k: float(v.detach()) for k, v in self.values().items()}
        out: dict[str, object] = {"kind": "window", "window": self.window, "taps": self.length}
        out["normalize"] = self.normalize
        if self.learn == "params":
            settings = {k: v for k, v in self.fixed.items() if k not in values}
            out["params"] = {**settings, **values}
            out["width"] = self.width
        else:
            out["params"] = {k: _plain(v) for k, v in self.fixed.items()}
            out["width"] = values["width"]
        return out


def _plain(value: object) -> object:
    # A fixed setting as JSON takes it: integer and boolean settings (taylor's nbar and norm)
    # and words as given, a sequence as a list of floats, any other number as a float.
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (list, tuple, torch.Tensor)):
        return [float(v) for v in (value.tolist() if isinstance(value, torch.Tensor) else value)]
    return float(value)
