"""Argument checks shared by every public entry point of the core.

Errors name the offending value and what is accepted, so a user never has to guess.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.autograd.forward_ad as forward_ad

MODES = ("full", "same", "valid")
PADDINGS = ("zeros", "reflect", "symmetric", "replicate", "circular")
METHODS = ("auto", "direct", "fft", "overlap")

HALF_DTYPES = (torch.float16, torch.bfloat16)
FLOAT_DTYPES = (*HALF_DTYPES, torch.float32, torch.float64)


def check_choice(name: str, value: object, accepted: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``accepted``, else raise a ``ValueError`` naming both."""
    if not isinstance(value, str) or value not in accepted:
        listed = ", ".join(repr(a) for a in accepted)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_flag(value: object, what: str) -> bool:
    """``value`` if it is True or False (numpy's bools too), else a ``TypeError`` naming
    ``what``: a string such as "no" is truthy, and was taken as True.

    Example:
        >>> check_flag(False, "scale")
        False
    """
    if is_bool(value):
        return bool(value)
    raise TypeError(f"{what} must be True or False; got {value!r}")


def is_bool(value: object) -> bool:
    """Whether ``value`` is True or False: a Python bool or numpy's (``np.True_``).

    Example:
        >>> import numpy as np
        >>> is_bool(np.False_), is_bool(0)
        (True, False)
    """
    kind = type(value)
    return kind is bool or (kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"))


def check_count(value: object, what: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (numpy's included, bool not) ``>= minimum``,
    else a ``TypeError``/``ValueError`` naming ``what``.

    Example:
        >>> check_count(3, "length")
        3
    """
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer; got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer; got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{what} must be >= {minimum}; got {number}")
    return number


def check_tensor(name: str, value: object) -> torch.Tensor:
    """A real floating-point tensor with at least one dimension and no empty time axis (an
    empty batch, ``(0, T)``, is a tensor like any other)."""
    if not isinstance(value, torch.Tensor):
        hint = (
            "; convert it with torch.from_numpy(...) or torch.as_tensor(...)"
            if type(value).__module__ == "numpy" or isinstance(value, (list, tuple))
            else ""
        )
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}{hint}")
    if value.is_complex():
        raise TypeError(
            f"{name} must be a real floating-point tensor; got complex dtype {value.dtype}"
        )
    if value.dtype not in FLOAT_DTYPES:  # float8 types are floating point too, but no
        raise TypeError(  # operation a convolution needs takes them
            f"{name} must be a floating-point tensor (float16, bfloat16, float32, float64); "
            f"got dtype {value.dtype}"
            + ("; convert it with .float() or .double()" if not value.is_floating_point() else "")
        )
    if value.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor; got layout {value.layout}")
    if value.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (time last); got a 0-d tensor")
    if value.shape[-1] == 0:
        raise ValueError(
            f"{name} must not be empty along time (the last axis); got shape {tuple(value.shape)}"
        )
    return value


def check_device(device: object) -> torch.device:
    """``device`` as a ``torch.device``; a ``ValueError``/``TypeError`` naming a bad one.

    Example:
        >>> check_device("cpu")
        device(type='cpu')
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a torch.device or a string; got {device!r}")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device must name a torch device ('cpu', 'cuda', 'cuda:0' ...); got {device!r}"
        ) from None


def needs_graph(*tensors: torch.Tensor) -> bool:
    """Whether autograd will record an operation on these tensors."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def batched_gradient(grad: torch.Tensor) -> bool:
    """Whether a backward pass runs under vmap with one gradient per row of a batch
    (``autograd.grad(..., is_grads_batched=True)``, as ``torch.autograd.functional.jacobian``
    and ``hessian`` with ``vectorize=True`` call it): only operations with a batching rule
    work on ``grad`` then, no writes into ``out=`` and no reading of its values."""
    return torch._C._functorch.is_legacy_batchedtensor(grad)


def under_vmap(t: torch.Tensor) -> bool:
    """Whether ``t`` is batched by vmap (``torch.func.vmap``, or a backward pass with batched
    gradients): operations with ``out=`` have no batching rule there.

    Example:
        >>> under_vmap(torch.ones(3))
        False
    """
    functorch = torch._C._functorch
    return functorch.is_legacy_batchedtensor(t) or functorch.is_batchedtensor(t)


def carries_tangent(t: torch.Tensor) -> bool:
    """Whether ``t`` carries a forward-mode tangent (``torch.autograd.forward_ad``). Custom
    Functions have no jvp rule: an operand with one takes the plain path, and so does a
    backward pass whose incoming gradient has one (forward-over-reverse Hessian-vector
    products, ``gradgradcheck``'s ``check_fwd_over_rev``)."""
    # No dual level entered: no tangents anywhere, and nothing to unpack.
    return forward_ad._current_level >= 0 and forward_ad.unpack_dual(t).tangent is not None


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """``torch.broadcast_shapes`` without its cost (its first call imports sympy, ~0.3 s, and
    every call takes tens of microseconds): raises ``ValueError`` if the shapes don't broadcast.

    Example:
        >>> broadcast_shapes((4, 1), (3,)), broadcast_shapes((2, 5), ()), broadcast_shapes((), (3,))
        ((4, 3), (2, 5), (3,))
    """
    if len(shapes) == 2:
        # A shared kernel (K,) has no batch, and a kernel per row the signals' batch: both
        # are the rule's answer without the loops (~0.2 against ~1 us, on every call).
        first, second = shapes
        if not second or first == second:
            return tuple(first)
        if not first:
            return tuple(second)
    ndim = max([0, *map(len, shapes)])  # no generator: dynamo (strict export) refuses max() of one
    out = [1] * ndim
    for shape in shapes:
        for i, size in enumerate(shape, start=ndim - len(shape)):
            if size != 1:
                if out[i] not in (1, size):
                    raise ValueError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
                out[i] = size
    return tuple(out)


def check_pair(signal: torch.Tensor, kernel: torch.Tensor) -> tuple[int, ...]:
    """Check devices and broadcasting; return the broadcast leading (batch) shape."""
    if signal.device != kernel.device:
        raise ValueError(
            f"signal and kernel must be on the same device; got signal on {signal.device} "
            f"and kernel on {kernel.device}"
        )
    if kernel.dim() == 1:  # one kernel for every signal: the common case, checked cheaply
        return tuple(signal.shape[:-1])
    try:
        return broadcast_shapes(signal.shape[:-1], kernel.shape[:-1])
    except ValueError:
        raise ValueError(
            "the leading dimensions of signal and kernel must broadcast; got signal shape "
            f"{tuple(signal.shape)} and kernel shape {tuple(kernel.shape)} "
            "(time is the last axis; a kernel (K,) is shared by every signal)"
        ) from None


def unwrapped(t: torch.Tensor) -> torch.Tensor:
    """The plain tensor inside every ``torch.func`` transform level (a vmapped one with its
    batch dimensions), where values can be read; ``t`` itself outside transforms."""
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def small_view(t: torch.Tensor) -> bool:
    """Whether ``t`` is a view of under half of its base's elements: kept as a result, it
    would hold the rest of that memory too.

    Example:
        >>> buffer = torch.zeros(10)
        >>> small_view(buffer[:4]), small_view(buffer[:6]), small_view(buffer)
        (True, False, False)
    """
    return t._base is not None and 2 * t.numel() < t._base.numel()


def owned(out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """A custom autograd Function's result as a tensor of its own rather than a view.

    A view of a buffer made inside ``forward`` cannot be modified in place while autograd
    records (``relu_()``, ``nn.ReLU(inplace=True)`` after a convolution: "Output 0 of ... is a
    view and is being modified inplace"). A view spanning at least half its buffer is wrapped
    anew without a copy (no Function here saves its output for backward); a smaller one, or
    one that shares memory with an input, is copied, which also frees the rest of the buffer.

    Example:
        >>> buffer = torch.arange(6.0)
        >>> owned(buffer.reshape(2, 3))._base is None
        True
    """
    if out._base is None:
        return out
    storage = out.untyped_storage()
    if small_view(out) or any(
        t.untyped_storage().data_ptr() == storage.data_ptr()
        for t in inputs
        if t.device == out.device
    ):
        return out.clone()
    return out.new_empty(0).set_(storage, out.storage_offset(), out.shape, out.stride())
