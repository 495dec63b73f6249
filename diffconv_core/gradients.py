"""Gradient maps: how an objective on a filtered output depends on every sample and tap.

Two questions users ask when they debug a filter:

* :func:`gradient_map` — which input samples, which kernel taps and which window
  parameters (std, beta, width, cutoff, ...) an objective on the output is most sensitive
  to: ``d objective / d signal``, ``d objective / d kernel`` and ``d objective / d params``.
* :func:`jacobian` — the whole linear map from the signal (or the kernel) to the output,
  exactly, for short excerpts.

A kernel is either a tensor, or a :class:`ParametricKernel`: a function that builds the
taps from named parameters (see :func:`window_kernel` and :func:`filter_kernel`), so
gradients reach the parameters by name. A tuple ``(window_name, length, {param: value})``
is shorthand for :func:`window_kernel`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from diffconv_core._validation import broadcast_shapes, check_tensor
from diffconv_core._window_registry import is_continuous as is_continuous_param

__all__ = [
    "GradientMap",
    "ParametricKernel",
    "window_kernel",
    "filter_kernel",
    "gradient_map",
    "jacobian",
    "OBJECTIVES",
    "JACOBIAN_MAX_ELEMENTS",
]

OBJECTIVES = ("energy", "mse", "l1")
_WRT_CHOICES = ("signal", "kernel", "params")

# 2**24 elements: 128 MiB in float64 for the result, and the batched forward pass that
# builds it allocates about as much again. Larger Jacobians are rarely readable anyway.
JACOBIAN_MAX_ELEMENTS = 2**24


@dataclass(frozen=True)
class ParametricKernel:
    """A kernel built from named parameters, so that gradients reach them by name.

    ``build(**params)`` must return the kernel, ``(K,)`` or ``(..., K)``, as a
    differentiable function of the parameter tensors it receives. Parameters given as
    Python numbers are turned into tensors of the signal's dtype and device. With
    ``takes_dtype=True`` the builder is also called with ``dtype=`` and ``device=`` (the
    signal's), so kernels without any parameter are built at the signal's precision too.
    ``fixed`` records the non-differentiable settings, for display.

    Shape:
        - params: each a number, or a floating tensor of any shape
        - built kernel (``build(**params)``): ``(K,)`` or ``(..., K)``

    Example:
        >>> import torch
        >>> from diffconv_core.gradients import ParametricKernel
        >>> pk = ParametricKernel(lambda gain: gain * torch.ones(3), {"gain": 2.0}, "ones")
        >>> pk.params
        {'gain': 2.0}
    """

    build: Callable[..., Tensor]
    params: Mapping[str, Any]
    name: str = "kernel"
    fixed: Mapping[str, Any] = field(default_factory=dict)
    takes_dtype: bool = False

    def __post_init__(self) -> None:
        if not callable(self.build):
            raise TypeError(f"ParametricKernel.build must be callable; got {self.build!r}")
        if not isinstance(self.params, Mapping):
            raise TypeError(
                f"ParametricKernel.params must map names to values; got {self.params!r}"
            )
        for key, value in self.params.items():
            if not _is_continuous(value):
                raise TypeError(
                    f"parameter {key!r} must be a real number or a floating tensor; got {value!r}"
                )


KernelLike = Tensor | ParametricKernel | tuple


@dataclass(frozen=True)
class GradientMap:
    """What :func:`gradient_map` returns (all tensors detached).

    Attributes:
        output: the filtered signal the objective was evaluated on.
        value: the objective, a 0-d tensor.
        objective: the objective's name (``"callable"`` for a function).
        kernel: the kernel that was applied (built from its parameters if parametric).
        grad_signal: d objective / d signal, the signal's shape; ``None`` if not asked.
        grad_kernel: d objective / d kernel, the kernel's shape; ``None`` if not asked.
        grad_params: d objective / d parameter by name; empty for a plain tensor kernel.
        params: the parameter values used, by name (tensors).

    Shape:
        - output: as :func:`diffconv_core.convolve` returns it (``(..., T)`` in mode "same")
        - value: ``()``
        - kernel: ``(K,)`` or ``(..., K)``
        - grad_signal: like the signal, ``(..., T)``; grad_kernel: like ``kernel``
        - grad_params, params: each like its parameter (``()`` for a scalar)

    Example:
        >>> import torch
        >>> from diffconv_core.gradients import gradient_map
        >>> g = gradient_map(torch.randn(2, 100), ("gaussian", 9, {"std": 2.0}))
        >>> g.objective, g.value.shape, g.output.shape, g.kernel.shape
        ('energy', torch.Size([]), torch.Size([2, 100]), torch.Size([9]))
        >>> g.grad_signal.shape, g.grad_kernel.shape, g.grad_params["std"].shape
        (torch.Size([2, 100]), torch.Size([9]), torch.Size([]))
        >>> g.params
        {'std': tensor(2.)}
    """

    output: Tensor
    value: Tensor
    objective: str
    kernel: Tensor
    grad_signal: Tensor | None
    grad_kernel: Tensor | None
    grad_params: dict[str, Tensor]
    params: dict[str, Tensor]


def _is_continuous(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, (list, tuple)):  # coefficients, e.g. general_cosine's a=[...]
        return bool(value) and all(_is_continuous(v) for v in value)
    return isinstance(value, Tensor) and value.is_floating_point()


def window_kernel(
    name: str,
    length: int,
    *,
    sym: bool = True,
    normalize: str | None = None,
    width: float | Tensor | None = None,
    **params: Any,
) -> ParametricKernel:
    """A window from :func:`diffconv_core.windows.get_window` as a parametric kernel.

    Continuous parameters (numbers and floating tensors, e.g. ``std``, ``beta``,
    ``alpha``) and ``width`` become differentiable parameters; everything else (integer
    and boolean settings such as taylor's ``nbar``, even given as numbers) is passed
    through unchanged.

    Shape:
        The built kernel is ``(length,)``.

    Example:
        >>> from diffconv_core.gradients import window_kernel
        >>> pk = window_kernel("gaussian", 7, std=1.5, normalize="sum")
        >>> sorted(pk.params), pk.name
        (['std'], 'gaussian')
    """
    continuous = {
        k: v for k, v in params.items() if _is_continuous(v) and is_continuous_param(name, k)
    }
    fixed = {k: v for k, v in params.items() if k not in continuous}
    if width is not None:
        continuous["width"] = width

    def build(dtype=None, device=None, **named: Tensor) -> Tensor:
        from diffconv_core.windows import get_window

        w = named.pop("width", None)
        return get_window(
            name,
            length,
            sym=sym,
            normalize=normalize,
            width=w,
            dtype=dtype,
            device=device,
            **fixed,
            **named,
        )

    return _built_once(ParametricKernel(build, continuous, name, fixed, takes_dtype=True))


_FILTER_KINDS = ("lowpass", "highpass", "bandpass", "bandstop")
_FILTER_SETTINGS = {"fs", "width", "window", "scale", "pass_zero"}


def filter_kernel(
    kind: str, cutoff: float | Tensor | tuple, numtaps: int, **options: Any
) -> ParametricKernel:
    """A windowed-sinc FIR design from :mod:`diffconv_core.filters` as a parametric kernel.

    ``kind`` is one of lowpass, highpass, bandpass, bandstop. The cutoff (one value, or
    ``(low, high)`` for band filters, whose gradients come back as ``"cutoff_low"`` and
    ``"cutoff_high"``) is differentiable, and so are the window's parameters (``beta=``,
    ``std=`` ...); design settings (``fs``, ``width``, ``window``, ``scale``) pass through
    unchanged. With ``fs`` the cutoff gradients are per Hz.

    Shape:
        The built kernel is ``(numtaps,)``.

    Example:
        >>> from diffconv_core.gradients import filter_kernel
        >>> pk = filter_kernel("bandpass", (0.1, 0.3), 31)
        >>> sorted(pk.params)
        ['cutoff_high', 'cutoff_low']
    """
    if kind not in _FILTER_KINDS:
        raise ValueError(f"filter kind must be one of {', '.join(_FILTER_KINDS)}; got {kind!r}")
    band = kind in ("bandpass", "bandstop")
    params: dict[str, Any] = {}
    if band:
        if isinstance(cutoff, Tensor) and cutoff.numel() == 2:
            low, high = cutoff.reshape(2).unbind()
        elif isinstance(cutoff, (tuple, list)) and len(cutoff) == 2:
            low, high = cutoff
        else:
            raise ValueError(f"a {kind} filter needs two cutoffs (low, high); got {cutoff!r}")
        params["cutoff_low"], params["cutoff_high"] = low, high
    else:
        params["cutoff"] = cutoff
    # Design settings (fs, a Kaiser transition width, the window's name, scale) are not
    # parameters even when they are numbers; the window's own parameters (beta, std) are.
    fixed = {k: v for k, v in options.items() if k in _FILTER_SETTINGS or not _is_continuous(v)}
    params.update({k: v for k, v in options.items() if k not in fixed})

    def build(dtype=None, device=None, **named: Tensor) -> Tensor:
        from diffconv_core import filters

        if band:
            cut: Any = torch.stack([named.pop("cutoff_low"), named.pop("cutoff_high")])
        else:
            cut = named.pop("cutoff")
        design = getattr(filters, kind)
        return design(numtaps, cut, dtype=dtype, device=device, **fixed, **named)

    return _built_once(ParametricKernel(build, params, kind, fixed, takes_dtype=True))


def _built_once(pk: ParametricKernel) -> ParametricKernel:
    # Built here once, so that an unknown window, a parameter out of range or an option the
    # design does not take fails when the kernel is described, not at gradient_map.
    # As gradient_map builds it, for a float64 signal on the parameters' device.
    devices = [v.device for v in pk.params.values() if isinstance(v, Tensor)]
    like = torch.empty(0, dtype=torch.float64, device=devices[0] if devices else None)
    with torch.no_grad():
        _build(pk, _leaf_params(pk, like, False), like)
    return pk


def _as_parametric(kernel: Any) -> Tensor | ParametricKernel:
    if isinstance(kernel, (Tensor, ParametricKernel)):
        return kernel
    if isinstance(kernel, tuple) and len(kernel) in (2, 3) and isinstance(kernel[0], str):
        extra = kernel[2] if len(kernel) == 3 else {}
        if not isinstance(extra, Mapping):
            raise TypeError(
                f"the third item of a window spec must be a dict of parameters; got {extra!r}"
            )
        return window_kernel(kernel[0], kernel[1], **extra)
    raise TypeError(
        "kernel must be a tensor, a ParametricKernel or a window spec "
        f"(name, length, {{param: value}}); got {type(kernel).__name__}"
    )


def _leaf_params(pk: ParametricKernel, like: Tensor, track: bool) -> dict[str, Tensor]:
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    leaves = {}
    for key, value in pk.params.items():
        t = torch.as_tensor(value, dtype=dtype, device=like.device).detach().clone()
        leaves[key] = t.requires_grad_(track)
    return leaves


def _build(spec: ParametricKernel, params: dict[str, Tensor], like: Tensor) -> Tensor:
    if spec.takes_dtype:
        dtype = like.dtype if like.is_floating_point() else None
        kernel = spec.build(dtype=dtype, device=like.device, **params)
    else:
        kernel = spec.build(**params)
    if not isinstance(kernel, Tensor):
        raise TypeError(
            f"the kernel builder {spec.name!r} returned {type(kernel).__name__}, not a tensor"
        )
    return check_tensor("kernel", kernel)


def _parse_wrt(wrt: str | Iterable[str]) -> tuple[str, ...]:
    items = (wrt,) if isinstance(wrt, str) else tuple(wrt)
    for item in items:
        if item not in _WRT_CHOICES:
            raise ValueError(f"wrt must name some of {', '.join(_WRT_CHOICES)}; got {item!r}")
    if not items:
        raise ValueError("wrt is empty: ask for at least one of signal, kernel, params")
    return items


def _objective_fn(
    objective: str | Callable[[Tensor], Tensor], target: Tensor | None, out_shape: torch.Size
) -> Callable[[Tensor], Tensor]:
    if callable(objective):
        if target is not None:
            raise ValueError("target is only used by the 'mse' and 'l1' objectives, not a callable")
        return objective
    if objective not in OBJECTIVES:
        raise ValueError(
            f"objective must be one of {', '.join(OBJECTIVES)} or a callable; got {objective!r}"
        )
    if objective == "energy":
        if target is not None:
            raise ValueError("target is only used by the 'mse' and 'l1' objectives, not 'energy'")
        return lambda y: (y * y).sum()
    if target is None:
        raise ValueError(f"objective {objective!r} needs a target of the output's shape")
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a tensor; got {type(target).__name__}")
    if target.shape != out_shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match the output shape {tuple(out_shape)}"
        )
    if objective == "mse":
        return lambda y: ((y - target) ** 2).mean()
    return lambda y: (y - target).abs().mean()


def gradient_map(
    signal: Tensor,
    kernel: KernelLike,
    objective: str | Callable[[Tensor], Tensor] = "energy",
    *,
    target: Tensor | None = None,
    wrt: str | Iterable[str] = ("signal", "kernel", "params"),
    **convolve_options: Any,
) -> GradientMap:
    """Convolve, evaluate an objective on the output, and return its gradients.

    Args:
        signal: the input.
        kernel: a tensor, a :class:`ParametricKernel` (from :func:`window_kernel`,
            :func:`filter_kernel` or your own builder) or ``(window, length, {params})``.
        objective: "energy" (sum of squared output), "mse" (mean squared error to
            ``target``), "l1" (mean absolute error to ``target``), or a callable
            ``f(output) -> scalar tensor``.
        target: the reference for "mse" and "l1", the output's shape.
        wrt: which gradients to compute, any of "signal", "kernel", "params" ("params"
            gives an empty dict for a plain tensor kernel).
        **convolve_options: ``mode``, ``padding``, ``method`` as in
            :func:`diffconv_core.convolve`.

    Shape:
        - signal: ``(..., T)``; kernel: ``(K,)`` or ``(..., K)``
        - output: as :func:`diffconv_core.convolve` returns it; target: the same
        - grad_signal: ``(..., T)`` like the signal; grad_kernel: like the kernel
        - grad_params: each like its parameter (0-d for a scalar)

    Example:
        >>> import torch
        >>> from diffconv_core.gradients import gradient_map
        >>> x = torch.tensor([0.0, 1.0, 0.0, 0.0])
        >>> g = gradient_map(x, torch.tensor([1.0, 2.0, 1.0]), method="direct")  # exact sums
        >>> g.output
        tensor([1., 2., 1., 0.])
        >>> g.value
        tensor(6.)
        >>> g.grad_signal  # 2 * correlate(output, kernel)
        tensor([ 8., 12.,  8.,  2.])
    """
    from diffconv_core.convolution import convolve

    check_tensor("signal", signal)
    wanted = _parse_wrt(wrt)
    spec = _as_parametric(kernel)
    if isinstance(spec, Tensor):
        check_tensor("kernel", spec)

    x = signal.detach().clone().requires_grad_("signal" in wanted)
    params: dict[str, Tensor] = {}
    if isinstance(spec, ParametricKernel):
        params = _leaf_params(spec, x, "params" in wanted)
        with torch.enable_grad():
            w = _build(spec, params, x)
        if "kernel" in wanted and not w.requires_grad:
            # A builder that does not depend on its parameters still has taps to study.
            w = w.detach().clone().requires_grad_(True)
    else:
        w = spec.detach().clone().requires_grad_("kernel" in wanted)

    with torch.enable_grad():
        y = convolve(x, w, **convolve_options)
        fn = _objective_fn(objective, target, y.shape)
        value = fn(y)
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise ValueError(
                "the objective must return a scalar tensor; got "
                + (f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else repr(value))
            )
        value = value.reshape(())
        inputs: list[Tensor] = []
        names: list[str] = []
        if "signal" in wanted:
            inputs.append(x)
            names.append("signal")
        if "kernel" in wanted:
            inputs.append(w)
            names.append("kernel")
        if "params" in wanted:
            for key, p in params.items():
                inputs.append(p)
                names.append("param:" + key)
        grads: list[Tensor | None] = []
        if inputs and value.requires_grad:
            grads = list(torch.autograd.grad(value, inputs, allow_unused=True))
        else:
            grads = [None] * len(inputs)
    # A quantity the objective does not depend on has gradient zero, not "missing".
    by_name = {
        n: (torch.zeros_like(t) if g is None else g.detach())
        for n, t, g in zip(names, inputs, grads, strict=True)
    }
    return GradientMap(
        output=y.detach(),
        value=value.detach(),
        objective=objective if isinstance(objective, str) else "callable",
        kernel=w.detach(),
        grad_signal=by_name.get("signal"),
        grad_kernel=by_name.get("kernel"),
        grad_params={k[6:]: v for k, v in by_name.items() if k.startswith("param:")},
        params={k: v.detach() for k, v in params.items()},
    )


def jacobian(
    signal: Tensor,
    kernel: KernelLike,
    wrt: str = "signal",
    *,
    max_elements: int = JACOBIAN_MAX_ELEMENTS,
    **convolve_options: Any,
) -> Tensor:
    """The exact Jacobian of ``convolve(signal, kernel, ...)`` for each channel.

    The output is linear in the signal and in the kernel separately (every padding mode is a
    linear map). With respect to the signal the Jacobian is the banded Toeplitz matrix of the
    kernel plus the padding's edge effects (taps folded back onto the samples a padding
    copies); with respect to the kernel, a Toeplitz matrix of the (padded) signal. Both are
    assembled from the taps and samples themselves, so every entry is exact: zeros off the
    band, the taps bit for bit, whatever ``method`` (only checked here) would have chosen.
    Channels are independent, so each gets its own ``L x T`` (or ``L x K``) block and the zero
    blocks between channels are not stored. With respect to the signal the blocks depend only
    on the kernel: channels that share a kernel share one block, and the result is a broadcast
    view of it (``.contiguous()`` makes copies). The result is detached.

    Args:
        wrt: "signal" or "kernel".
        max_elements: refuse Jacobians larger than this (crop the signal first).
        **convolve_options: ``mode``, ``padding`` (and ``method``, checked but not needed)
            as in :func:`diffconv_core.convolve`.

    Shape:
        - signal: ``(..., T)``; kernel: ``(K,)`` or ``(..., K)``; ``...`` broadcast to ``B``
        - output: ``(*B, L, T)`` for wrt="signal", ``(*B, L, K)`` for wrt="kernel", where
          ``L`` is the output length of the mode

    Example:
        >>> import torch
        >>> from diffconv_core.gradients import jacobian
        >>> jacobian(torch.zeros(4), torch.tensor([1.0, 2.0, 3.0]))
        tensor([[2., 1., 0., 0.],
                [3., 2., 1., 0.],
                [0., 3., 2., 1.],
                [0., 0., 3., 2.]])
    """
    from diffconv_core.convolution import convolve

    if wrt not in ("signal", "kernel"):
        raise ValueError(f"wrt must be 'signal' or 'kernel'; got {wrt!r}")
    check_tensor("signal", signal)
    spec = _as_parametric(kernel)
    if isinstance(spec, ParametricKernel):
        with torch.no_grad():
            spec = _build(spec, _leaf_params(spec, signal, False), signal)
    x, w = signal.detach(), check_tensor("kernel", spec).detach()

    try:
        broadcast_shapes(x.shape[:-1], w.shape[:-1])
    except ValueError:  # said here: the probe below would show its own one-sample shapes
        raise ValueError(
            "the leading dimensions of signal and kernel must broadcast; got signal shape "
            f"{tuple(x.shape)} and kernel shape {tuple(w.shape)}"
        ) from None
    with torch.no_grad():
        # A one-sample call lets convolve validate every option before any real work, and
        # gives the result dtype.
        probe = convolve(
            x.new_zeros(*x.shape[:-1], 1), w.new_zeros(*w.shape[:-1], 1), **convolve_options
        )
    batch = tuple(probe.shape[:-1])
    t, k = x.shape[-1], w.shape[-1]
    mode = convolve_options.get("mode", "same")
    length = {"full": t + k - 1, "same": t, "valid": abs(t - k) + 1}[mode]
    n = t if wrt == "signal" else k
    # With respect to the signal only the kernel's leading dims give distinct blocks (the
    # map does not depend on the signal); the other channels are a broadcast view.
    computed = batch if wrt == "kernel" else tuple(w.shape[:-1])
    work = math.prod(computed) * length * n
    if work > max_elements:
        blocks = math.prod(computed)
        fewer = "kernels" if wrt == "signal" else "channels"
        raise ValueError(
            f"the Jacobian with respect to the {wrt} would have shape "
            f"{(*batch, length, n)} ({blocks:,} distinct block{'s' if blocks != 1 else ''} "
            f"of {length:,} x {n:,}, {work:,} elements), above the limit of "
            f"{max_elements:,}: crop the signal to fewer samples (--start/--duration in "
            f"`diffconv grad`; signal[..., start:start + n] in Python)"
            + (f", use fewer {fewer}" if blocks > 1 else "")
            + (", use a shorter kernel" if wrt == "kernel" else "")
            + ", or (in Python) raise max_elements"
        )

    padding = convolve_options.get("padding", "zeros")
    # Padded position feeding output l through tap k, and which signal sample sits there.
    src = _padded_sources(t, k, mode, padding, probe.device)
    span = src.shape[-1]
    start = k - 1 if span >= k else span - 1  # where the mode's outputs start in the full one
    if wrt == "kernel":
        # J[l, k] = padded signal at start + l - k: a gather of samples, exact.
        sample = _samples_read(src, start, torch.arange(length, device=probe.device), k)
        padded = torch.cat(
            [x.to(probe.dtype), x.new_zeros(*x.shape[:-1], 1, dtype=probe.dtype)], -1
        )
        return padded.expand(*batch, t + 1)[..., sample]
    # J[l, j] = the taps k whose padded position start + l - k holds sample j (several where
    # a padding folds samples back; none beyond a zero pad), summed: exact taps, not the
    # round-off of the convolution method.
    taps = w.to(probe.dtype)
    blocks = taps.new_zeros(*taps.shape[:-1], length, t + 1)  # column t collects zero pads
    rows_at_once = max(1, _SCATTER_ELEMENTS // (k * max(1, math.prod(taps.shape[:-1]))))
    for first in range(0, length, rows_at_once):
        rows = torch.arange(first, min(first + rows_at_once, length), device=probe.device)
        sample = _samples_read(src, start, rows, k)
        column = torch.where(sample >= 0, sample, t)  # (rows, k)
        block = blocks[..., first : first + len(rows), :]
        values = taps.unsqueeze(-2).expand(*taps.shape[:-1], len(rows), k)
        block.scatter_add_(-1, column.expand(*taps.shape[:-1], len(rows), k), values)
    return blocks[..., :t].expand(*batch, length, t)


# Index entries one step of the signal Jacobian's scatter takes (rows x taps x kernels).
_SCATTER_ELEMENTS = 1 << 22


def _samples_read(src: torch.Tensor, start: int, rows: torch.Tensor, k: int) -> torch.Tensor:
    """``(len(rows), k)``: the signal sample that output row ``l`` reads through tap ``k``,
    at padded position ``start + l - k`` (-1 for a zero pad or beyond the padded signal)."""
    span = src.shape[-1]
    where = start + rows[:, None] - torch.arange(k, device=rows.device)
    return torch.where((where >= 0) & (where < span), src[where.clamp(0, span - 1)], -1)


def _padded_sources(t: int, k: int, mode: str, padding: str, device) -> torch.Tensor:
    """Which signal sample each position of the padded signal holds (-1: a zero pad); the
    mode's output is the full convolution of that padded signal, from ``start`` on.

    Example:
        >>> _padded_sources(4, 3, "same", "reflect", None).tolist()
        [1, 0, 1, 2, 3, 2]
    """
    from diffconv_core.padding import padding_index
    from diffconv_core.streaming import mode_pads

    left, right = mode_pads(mode, k)
    if padding != "zeros":
        return padding_index(t, left, right, padding, device=device)
    inside = torch.arange(t, device=device)
    return torch.cat([inside.new_full((left,), -1), inside, inside.new_full((right,), -1)])
