"""``torch.nn.Module`` wrappers: a window convolution and an FIR filter, both learnable.

Thin Modules over :func:`diffconv_core.windows.get_window`, :mod:`diffconv_core.filters` and
:func:`diffconv_core.convolve`: what is learned is registered as an ``nn.Parameter`` (what
is fixed as a buffer), so optimisers, ``state_dict``, ``.to(device)`` and ``.double()`` work.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from diffconv_core import _window_build as _b
from diffconv_core import filters as _filters
from diffconv_core._validation import check_flag
from diffconv_core.convolution import _check_options, convolve
from diffconv_core.windows import _resolve_name, get_window

__all__ = ["WindowConv", "FIRFilter"]

LEARN = (None, "taps", "params", "width")
KINDS = ("lowpass", "highpass", "bandpass", "bandstop")


def _clamp_to_range(value: Tensor, p: _b.Param, window: str, length: int) -> Tensor:
    # An optimiser step may leave a parameter's range: the window is built from the nearest
    # value inside (open bounds keep a margin of one ulp-ish step) instead of failing
    # mid-training, and the gradient passes as if unclamped (straight through): a plain
    # clamp's zero gradient outside left the parameter stuck there for good.
    eps = torch.finfo(value.dtype).eps
    low = None if p.low is None else p.low + (eps if p.low_open else 0.0)
    bound, bound_open = _b.upper_bound(window, p, length)
    high = None if bound is None else bound * (1 - eps) if bound_open else bound
    return _b.clamp_straight_through(value, low, high)


class _Buffer(str):
    """Marks a fixed window parameter stored as a buffer (so that ``.to()`` moves it)."""


def _keep(module: nn.Module, name: str, value: Any, factory: dict[str, Any]) -> Any:
    # Fixed tensor values become buffers: they follow .to()/.double() and enter state_dict.
    # Made on the module's device (``factory``), in their own dtype: a fixed value keeps its
    # precision (chebwin's at=6000 is 6016 in bfloat16, out of range); the window comes out
    # in the learned values' dtype all the same (WindowConv.window).
    if isinstance(value, Tensor):
        kept = torch.as_tensor(value.detach(), device=factory["device"]).clone()
        module.register_buffer(name, kept)
        return _Buffer(name)
    return value


def _resolve(module: nn.Module, fixed: dict[str, Any]) -> dict[str, Any]:
    return {k: getattr(module, v) if isinstance(v, _Buffer) else v for k, v in fixed.items()}


def _short(value: Any) -> str:
    if isinstance(value, Tensor):
        known = value.numel() == 1 and _b.has_values(value)  # a meta tensor has no value
        return repr(value.item()) if known else f"tensor{tuple(value.shape)}"
    return repr(value)


class WindowConv(nn.Module):
    """Convolution with a window from the registry, with what to learn chosen by ``learn``.

    Args:
        window: window name or ``(name, *params)`` tuple (see
            :func:`diffconv_core.windows.get_window`).
        length: number of taps.
        learn: None (a fixed window, kept as a buffer), ``"taps"`` (every tap is a free
            parameter, initialised from the window), ``"params"`` (the window's continuous
            parameters, e.g. ``std`` or ``beta``, are parameters) or ``"width"`` (the
            fractional width is a parameter, initialised to ``width`` or ``length``).
        sym, normalize, width: as in ``get_window``; ``normalize`` defaults to ``"sum"``
            (unit DC gain), so that a learned width does not also change the gain.
        mode, padding, method: as in :func:`diffconv_core.convolve`.
        dtype, device: of the parameters and buffers.
        **window_params: the window's parameters.

    Learned parameters that leave their valid range are clamped into it in ``forward``; their
    gradient passes the clamp unchanged, so that training can bring them back.

    Shape:
        - input: ``(..., T)``
        - output: ``(..., L)``, ``L`` given by ``mode`` (``T`` for "same")

    Example:
        >>> import torch
        >>> from diffconv_core.nn import WindowConv
        >>> layer = WindowConv("gaussian", 9, learn="params", std=2.0)
        >>> layer
        WindowConv(gaussian, length=9, learn='params', normalize='sum', ...)
        >>> [name for name, _ in layer.named_parameters()]
        ['std']
        >>> layer(torch.randn(2, 50)).shape
        torch.Size([2, 50])
    """

    def __init__(
        self,
        window: str | tuple = "hann",
        length: int = 31,
        learn: str | None = None,
        *,
        sym: bool = True,
        normalize: str | None = "sum",
        width: float | None = None,
        mode: str = "same",
        padding: str = "zeros",
        method: str = "auto",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        **window_params: Any,
    ) -> None:
        super().__init__()
        if learn not in LEARN:
            raise ValueError(f"learn must be one of None, 'taps', 'params', 'width'; got {learn!r}")
        _check_options(mode, padding, method)  # convolve's checks, now rather than in forward
        self.spec, forced = _resolve_name(window, window_params)
        self.length = _b.check_length(length)
        self.learn = learn
        self.sym = sym if forced is None else forced
        self.normalize = normalize
        self.mode, self.padding, self.method = mode, padding, method
        factory = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        # Build once with the given values: bad names, values or ranges fail here, not later.
        initial = get_window(
            self.spec.name,
            self.length,
            sym=self.sym,
            normalize=normalize,
            width=width,
            **factory,
            **window_params,
        )
        self._fixed: dict[str, Any] = {}
        # What the fixed or starting window was built with, for the repr (the taps alone
        # do not say that kaiser's beta was 5).
        self._built_with = (
            {p.name: window_params[p.name] for p in self.spec.params if p.name in window_params}
            if learn in (None, "taps")
            else {}
        )
        if learn == "params" and isinstance(width, Tensor):
            # A fixed tensor width is used at every forward: a buffer, so that it follows
            # .to()/.double() and enters state_dict like the fixed window parameters.
            self.register_buffer("width", width.detach().clone().to(**factory))
        else:
            self.width: Any = width
        if learn is None:
            self.register_buffer("taps", initial)
        elif learn == "taps":
            self.taps = nn.Parameter(initial)
        else:
            learnable = []
            for p in self.spec.params:
                value = window_params.get(p.name, p.default)
                if learn == "params" and value is not None and p.continuous:
                    tensor = torch.as_tensor(value, **factory).detach().clone()
                    self.register_parameter(p.name, nn.Parameter(tensor))
                    learnable.append(p.name)
                else:
                    self._fixed[p.name] = _keep(self, p.name, value, factory)
            if learn == "params" and not learnable:
                raise ValueError(
                    f"the {self.spec.name} window has no continuous parameter to learn; "
                    "use learn='width' or learn='taps'"
                )
            if learn == "width":
                start = float(self.length) if width is None else width
                self.width = nn.Parameter(torch.as_tensor(start, **factory).detach().clone())

    def window(self) -> Tensor:
        """The current taps (differentiable with respect to what is learned).

        Shape:
            - output: ``(length,)`` (or ``(*S, length)`` for batched parameters)
        """
        if self.learn in (None, "taps"):
            return self.taps
        params = _resolve(self, self._fixed)
        learned: list[Tensor] = []
        for p in self.spec.params:
            if p.name not in params:
                value = getattr(self, p.name)
                learned.append(value)
                params[p.name] = _clamp_to_range(_b.widened(value), p, self.spec.name, self.length)
        width = self.width
        if self.learn == "width":
            learned.append(width)
            eps = torch.finfo(width.dtype).eps
            narrowest = _b.narrowest_width(self.length, self.sym, self.normalize, eps)
            width = _b.clamp_straight_through(_b.widened(width), narrowest, float(self.length))
        return get_window(
            self.spec.name,
            self.length,
            sym=self.sym,
            normalize=self.normalize,
            width=width,
            dtype=_b.result_dtype(None, learned),  # the learned values' own, not widened
            **params,
        )

    def forward(self, signal: Tensor) -> Tensor:
        return convolve(signal, self.window(), self.mode, padding=self.padding, method=self.method)

    def extra_repr(self) -> str:
        parts = [self.spec.name, f"length={self.length}", f"learn={self.learn!r}"]
        fixed = {**self._built_with, **_resolve(self, self._fixed)}
        parts += [f"{k}={_short(v)}" for k, v in fixed.items() if v is not None]
        if self.width is not None and self.learn != "width":
            parts.append(f"width={self.width!r}")
        if not self.sym:
            parts.append("sym=False")
        parts += [f"normalize={self.normalize!r}", f"mode={self.mode!r}"]
        parts.append(f"padding={self.padding!r}")
        if self.method != "auto":
            parts.append(f"method={self.method!r}")
        return ", ".join(parts)


class FIRFilter(nn.Module):
    """A windowed-sinc FIR filter (:mod:`diffconv_core.filters`) with learnable cutoffs.

    Args:
        kind: "lowpass", "highpass", "bandpass" or "bandstop".
        cutoff: one cutoff, or ``(low, high)`` for band filters; Hz with ``fs``, otherwise
            normalised (Nyquist = 1).
        numtaps: number of taps (odd for highpass and bandstop).
        window: window name or ``(name, *params)`` tuple; ``**window_params`` its parameters.
        fs: sampling frequency, or None.
        scale: scipy's ``scale`` (unit gain at the centre of the first pass band).
        learnable: cutoffs are parameters (True) or fixed buffers (False).
        learn_window: the window's continuous parameters are parameters too.
        mode, padding, method: as in :func:`diffconv_core.convolve`.
        dtype, device: of the parameters and buffers.

    Cutoffs that an optimiser pushes outside ``(0, fs/2)`` are clamped into it in
    ``forward``, and band edges that cross are taken in order; the gradient passes through
    as if unclamped, so that they can come back.

    Shape:
        - input: ``(..., T)``
        - output: ``(..., L)``, ``L`` given by ``mode`` (``T`` for "same")

    Example:
        >>> import torch
        >>> from diffconv_core.nn import FIRFilter
        >>> lp = FIRFilter("lowpass", 1000.0, numtaps=63, fs=16000.0)
        >>> lp
        FIRFilter(lowpass, numtaps=63, window='hamming', fs=16000.0, learnable=True, mode='same')
        >>> lp.cutoff
        Parameter containing:
        tensor(1000., requires_grad=True)
        >>> lp(torch.randn(2, 400)).shape
        torch.Size([2, 400])
    """

    def __init__(
        self,
        kind: str,
        cutoff: Any,
        numtaps: int = 101,
        *,
        window: str | tuple = "hamming",
        fs: float | None = None,
        scale: bool = True,
        learnable: bool = True,
        learn_window: bool = False,
        mode: str = "same",
        padding: str = "zeros",
        method: str = "auto",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        **window_params: Any,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(
                f"kind must be one of 'lowpass', 'highpass', 'bandpass', 'bandstop'; got {kind!r}"
            )
        _check_options(mode, padding, method)  # convolve's checks, now rather than in forward
        self.kind = kind
        self.numtaps = _b.check_length(numtaps, "numtaps")
        self.spec, forced = _resolve_name(window, window_params)
        _b.check_param_names(self.spec, window_params)  # not silently dropped below
        if kind in ("lowpass", "highpass") and isinstance(cutoff, (list, tuple)):
            # As filters.lowpass: a list holds the one cutoff, not a batch (a tensor of
            # cutoffs is one).
            if len(cutoff) != 1:
                raise ValueError(f"a {kind} filter takes one cutoff; got {cutoff!r}")
            cutoff = cutoff[0]
        # The design keeps a _symmetric/_periodic suffix (firwin honours it).
        suffix = "" if forced is None else "_symmetric" if forced else "_periodic"
        self._window_name = self.spec.name + suffix
        scale, learnable = check_flag(scale, "scale"), check_flag(learnable, "learnable")
        learn_window = check_flag(learn_window, "learn_window")
        self.fs, self.scale, self.learnable = fs, scale, learnable
        self.mode, self.padding, self.method = mode, padding, method
        factory = {"dtype": _b.result_dtype(dtype, []), "device": device}
        # Checked as firwin checks it (a number or a real tensor, named in the error): as a
        # parameter, a complex cutoff lost its imaginary part with only a warning.
        given = cutoff.detach() if isinstance(cutoff, Tensor) else cutoff
        value = _b.as_tensor(given, "cutoff", factory["dtype"], device).clone()
        if learnable:
            self.cutoff = nn.Parameter(value)
        else:
            self.register_buffer("cutoff", value)
        self._window_fixed: dict[str, Any] = {}
        self._window_learned: list[str] = []
        for p in self.spec.params:
            given = window_params.get(p.name, p.default)
            if learn_window and p.continuous and given is not None and given is not _b.REQUIRED:
                tensor = torch.as_tensor(given, **factory).detach().clone()
                self.register_parameter(f"window_{p.name}", nn.Parameter(tensor))
                self._window_learned.append(p.name)
            elif p.name in window_params:
                self._window_fixed[p.name] = _keep(self, f"window_{p.name}", given, factory)
        if learn_window and not self._window_learned:
            raise ValueError(
                f"the {self.spec.name} window has no continuous parameter to learn; "
                "use learn_window=False"
            )
        # Design once with the values as given, so that impossible designs fail right here
        # (later, in training, cutoffs are clamped into range instead).
        self._design(self.cutoff)

    def kernel(self) -> Tensor:
        """The current taps.

        Shape:
            - output: ``(numtaps,)`` (or ``(*S, numtaps)`` for a batch of cutoffs)
        """
        nyq = 1.0 if self.fs is None else self.fs / 2.0
        # The design is computed in float64 (float32 on MPS), whatever the parameter's dtype:
        # clamp there too, so that bounds are not rounded in the parameter's dtype.
        work = torch.float32 if self.cutoff.device.type == "mps" else torch.float64
        # Kept this far (sqrt(eps) of Nyquist in the design's dtype) from 0, from Nyquist
        # and from each other: an eps-wide band's design is round-off, and its gradient 1e13
        # where this margin gives the design's true one. A cutoff inside it is used as given.
        margin = torch.finfo(work).eps ** 0.5 * nyq
        # The gradient passes straight through the clamps (_clamp_to_range says why).
        cutoff = _b.clamp_straight_through(self.cutoff.to(work), margin, nyq - margin)
        if self.kind in ("bandpass", "bandstop") and cutoff.dim() > 0:
            # An optimiser may also take the edges past each other, or onto one value at a
            # bound: the design takes them in order, each a margin above the one below and
            # leaving room below Nyquist for the ones above.
            edges = torch.sort(cutoff, dim=-1).values.unbind(-1)
            kept: list[Tensor] = []
            for i, edge in enumerate(edges):
                edge = _b.clamp_straight_through(edge, None, nyq - (len(edges) - i) * margin)
                if kept:
                    edge = _b.clamp_straight_through(edge, kept[-1].detach() + margin, None)
                kept.append(edge)
            cutoff = torch.stack(kept, dim=-1)
        return self._design(cutoff)

    def _design(self, cutoff: Tensor) -> Tensor:
        params = _resolve(self, self._window_fixed)
        for name in self._window_learned:
            p = next(q for q in self.spec.params if q.name == name)
            params[name] = _clamp_to_range(
                _b.widened(getattr(self, f"window_{name}")), p, self.spec.name, self.numtaps
            )
        design = getattr(_filters, self.kind)
        return design(
            self.numtaps,
            cutoff,
            window=self._window_name,
            fs=self.fs,
            scale=self.scale,
            dtype=self.cutoff.dtype,
            **params,
        )

    def forward(self, signal: Tensor) -> Tensor:
        return convolve(signal, self.kernel(), self.mode, padding=self.padding, method=self.method)

    def extra_repr(self) -> str:
        parts = [self.kind, f"numtaps={self.numtaps}", f"window={self._window_name!r}"]
        parts += [f"{k}={_short(v)}" for k, v in _resolve(self, self._window_fixed).items()]
        if self._window_learned:
            parts.append(f"learn_window={self._window_learned!r}")
        if self.fs is not None:
            parts.append(f"fs={self.fs!r}")
        if not self.scale:
            parts.append("scale=False")
        parts += [f"learnable={self.learnable}", f"mode={self.mode!r}"]
        if self.padding != "zeros":
            parts.append(f"padding={self.padding!r}")
        if self.method != "auto":
            parts.append(f"method={self.method!r}")
        return ", ".join(parts)
