"""Keep the core's products in their operands' dtype under ``torch.autocast``.

autocast rounds the float32 operands of convolutions and matrix products to bfloat16 or
float16 (on CPU as on CUDA), and the result comes back as float32 all the same. The core
promises float32 numerics for float32 inputs, so the few torch ops of it that autocast
would lower (``conv1d``, ``conv2d``) run with autocast off.
"""

from __future__ import annotations

import contextlib

import torch


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A context without autocast for ``device_type`` ("cpu", "cuda", ...): a do-nothing one
    unless autocast is on there (entering ``torch.autocast`` costs host time on every call).

    Example:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16), autocast_off("cpu"):
        ...     torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype
        torch.float32
    """
    # The meta device has no autocast (is_autocast_enabled raises there).
    if device_type != "meta" and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
