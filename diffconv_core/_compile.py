"""Functions that run eagerly inside ``torch.compile``d code, as a graph break of their own."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def eager_under_compile(fn: F) -> F:
    """``fn`` as it is, but run eagerly (one graph break) while ``torch.compile`` traces.

    For code whose choices and checks read numbers or depend on shapes (every ``.item()`` a
    graph break, every new shape or dtype a recompile) and whose work is already what a
    compiler would emit. Gradients flow as usual. ``torch._disable_dynamo`` imports
    torch._dynamo only when called, and it is called only while compiling.

    Example:
        >>> double = eager_under_compile(lambda t: 2 * t)
        >>> double(torch.ones(2))
        tensor([2., 2.])
    """
    eager = getattr(torch, "_disable_dynamo", lambda f: f)(fn)

    @functools.wraps(fn)
    def dispatch(*args, **kwargs):
        return (eager if torch.compiler.is_compiling() else fn)(*args, **kwargs)

    return dispatch  # type: ignore[return-value]
