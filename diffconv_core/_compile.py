"""How the core meets graph capture: functions that run eagerly inside ``torch.compile``d
code, as a graph break of their own, unless a graph is being recorded whole
(``torch.export``, or ``torch.compile`` after ``set_compile_mode("graph")``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)

#: How torch.compile meets the core: "eager" (a graph break) or "graph" (recorded).
_compile_mode = "eager"


def set_compile_mode(mode: str) -> None:
    """How ``torch.compile`` meets the convolution, windows and filter designs.

    "eager" (the default): they run eagerly inside the compiled code, a graph break of
    their own, with the core's own methods (direct sums, overlap-save, smooth FFT lengths)
    and no recompiling per signal length. "graph": they are recorded into the graph as
    ``torch.export`` records them (plain torch operations and one ``torch.cond`` for
    NaN/Inf and overflow), so that ``fullgraph=True`` works and nothing breaks the graph
    (CUDA graphs, one program); slower on the CPU (``benchmarks/bench_export.py``).
    Process-wide; compiled code guards on it, so a change takes effect at the next call.

    Example:
        >>> from diffconv_core import set_compile_mode
        >>> set_compile_mode("graph")  # torch.compile(model, fullgraph=True) records convolve
        >>> set_compile_mode("eager")  # back to the default
    """
    global _compile_mode
    if mode not in ("eager", "graph"):
        raise ValueError(f"compile mode must be 'eager' or 'graph'; got {mode!r}")
    _compile_mode = mode


def recording_graph() -> bool:
    """Whether the caller is being recorded into a graph whole, its values unreadable:
    ``torch.export`` (strict or not), or ``torch.compile`` in the "graph" mode.

    Example:
        >>> recording_graph()
        False
    """
    if torch.compiler.is_exporting():
        return True
    return _compile_mode == "graph" and torch.compiler.is_compiling()


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

    def unaliased_result(*args, **kwargs):
        result = fn(*args, **kwargs)
        return _fresh_tensor(result) if isinstance(result, torch.Tensor) else result

    eager = getattr(torch, "_disable_dynamo", lambda f: f)(unaliased_result)
    # Dynamo reads these two attributes of a function disabled for it: with them, a
    # fullgraph=True compile that meets the function says why and what to do, where it said
    # only "Attempted to call function marked as skipped ... Please file an issue to PyTorch".
    # (torch.compiler.disable(reason=...) sets them too, but imports torch._dynamo at once:
    # 1.7 s of every command's start-up.)
    eager._torchdynamo_disable = True
    eager._torchdynamo_disable_msg = (
        f"diffconv_core runs {fn.__name__} eagerly under torch.compile, a graph break of its "
        "own; for fullgraph=True call diffconv_core.set_compile_mode('graph') first, which "
        "records it into the graph"
    )

    @functools.wraps(fn)
    def dispatch(*args, **kwargs):
        # A graph recorded whole has fn itself in it (no graph break); fn asks
        # recording_graph().
        compiling = torch.compiler.is_compiling() and not recording_graph()
        return (eager if compiling else fn)(*args, **kwargs)

    return dispatch  # type: ignore[return-value]


def _fresh_tensor(t: torch.Tensor) -> torch.Tensor:
    # The compiled code resumed after the graph break guards on what it was traced with: a
    # view's base, the storage offset and the strides included. A result that is a view on
    # some paths and not on others, starts inside its buffer or is strided (the convolution's
    # FFT and overlap-save, whichever the length picks) recompiled it when the path changed.
    # Without autograd a contiguous view from the buffer's start is wrapped anew (no copy);
    # anything else is copied (a rewrap would drop its graph, or keep most of a buffer alive).
    base = t._base
    fresh = t.storage_offset() == 0 and t.is_contiguous()
    if fresh and base is None:
        return t
    if fresh and not t.requires_grad and 2 * t.numel() >= base.numel():
        return t.new_empty(0).set_(t.untyped_storage(), 0, t.shape, t.stride())
    return t.clone(memory_format=torch.contiguous_format)
