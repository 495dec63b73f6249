"""Work arrays kept from one call to the next (CPU paths without autograd).

A convolution cut into cache-sized pieces needs the same few scratch arrays of about a megabyte
on every call. Allocated afresh each time, glibc may hand them back to the kernel on ``free``
and fault them in again page by page on the next call (see :mod:`diffconv_core.memory`), a
cost comparable to the GEMMs that use them; kept here, they are allocated once per thread.
Tables that depend only on sizes (gather indices, twiddles) are kept too
(:func:`kept_tensors`), built so that any later call may use them, with autograd or not.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable[..., torch.Tensor])

#: Arrays larger than this many bytes are never kept (a rare huge piece must not pin memory).
MAX_KEPT_BYTES = 16 * 2**20

_local = threading.local()


def scratch(name: str, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 1-D array of ``numel`` elements, contents undefined, for this thread's exclusive use
    until its next request under the same ``name``, ``dtype`` and ``device``.

    Example:
        >>> a = scratch("example", 10, torch.float32, torch.device("cpu"))
        >>> b = scratch("example", 8, torch.float32, torch.device("cpu"))
        >>> a.shape, b.shape, a.data_ptr() == b.data_ptr()
        (torch.Size([10]), torch.Size([8]), True)
    """
    if numel * torch.empty((), dtype=dtype).element_size() > MAX_KEPT_BYTES:
        return torch.empty(numel, dtype=dtype, device=device)
    kept = _local.__dict__.setdefault("arrays", {})
    key = (name, dtype, device)
    array = kept.get(key)
    if array is None or array.numel() < numel:
        # Kept arrays outlive the call: one first made under torch.inference_mode() would be an
        # inference tensor, which no later call outside that mode may write into. A normal
        # tensor, by contrast, can be written in place inside inference mode too.
        with torch.inference_mode(False):
            array = kept[key] = torch.empty(numel, dtype=dtype, device=device)
    return array[:numel]


def kept_tensors(maxsize: int) -> Callable[[F], F]:
    """``functools.lru_cache`` for a function that builds a tensor from hashable arguments
    (an index, a twiddle table), the tensor built outside ``torch.inference_mode``.

    A cached tensor outlives the call that made it: one first made under inference mode is an
    inference tensor, which autograd refuses to save for backward in every later call outside
    that mode ("Inference tensors cannot be saved for backward": a direct convolution with
    gradients after the same shape under inference mode). A normal tensor works in both.

    Example:
        >>> @kept_tensors(maxsize=4)
        ... def ramp(n):
        ...     return torch.arange(n)
        >>> with torch.inference_mode():
        ...     made_there = ramp(3)
        >>> made_there.is_inference(), ramp(3) is made_there
        (False, True)
    """

    def decorate(build: F) -> F:
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(build)
        def cached(*args):
            with torch.inference_mode(False):
                return build(*args)

        return cached  # type: ignore[return-value]

    return decorate
