"""Measured method choices per device ("wisdom"), consulted by ``choose_method``.

Filled by ``diffconv tune``; until then ``lookup`` answers None and the cost model decides.
"""

from __future__ import annotations

import torch


def lookup(
    device_type: str, batch: int, T: int, K: int, mode: str, dtype: torch.dtype
) -> str | None:
    """The cached best method for this problem on this device, or None when not measured."""
    return None
