"""Signal extension past its ends, for any pad width.

Every mode is an index map into the original signal, gathered in one step. Autograd's
adjoint of a gather is a scatter-add, which is exactly the transpose of the padding, so the
gradient at the edges needs no special case. Unlike ``torch.nn.functional.pad``, reflect and
symmetric accept pads longer than the signal (the mirror simply repeats, as ``numpy.pad``).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from diffconv_core._validation import PADDINGS, check_choice, check_count, check_device


def padding_index(length: int, left: int, right: int, mode: str, device=None) -> torch.Tensor:
    """Indices into a signal of ``length`` samples that extend it by ``left`` and ``right``.

    Shape:
        returns ``(left + length + right,)`` int64.

    Example:
        >>> from diffconv_core.padding import padding_index
        >>> padding_index(4, 3, 2, "reflect").tolist()
        [3, 2, 1, 0, 1, 2, 3, 2, 1]
        >>> padding_index(4, 3, 2, "symmetric").tolist()
        [2, 1, 0, 0, 1, 2, 3, 3, 2]
    """
    check_choice("padding", mode, PADDINGS)
    if mode == "zeros":
        raise ValueError("padding_index has no index map for 'zeros'; use pad() instead")
    length = check_count(length, "length", minimum=1)
    left, right = _check_widths(left, right)
    device = None if device is None else check_device(device)
    return fold_positions(torch.arange(-left, length + right, device=device), length, mode)


def _check_widths(left: object, right: object) -> tuple[int, int]:
    try:
        if isinstance(left, bool) or isinstance(right, bool):  # True is not a pad width
            raise TypeError
        left, right = operator.index(left), operator.index(right)
    except TypeError:
        raise TypeError(
            f"pad widths must be integers; got left={left!r}, right={right!r}"
        ) from None
    if left < 0 or right < 0:
        raise ValueError(f"pad widths must be non-negative; got left={left}, right={right}")
    return left, right


def fold_positions(positions: torch.Tensor, length: int, mode: str) -> torch.Tensor:
    """Map signal positions (any integers) to indices in ``[0, length)`` under ``mode``."""
    if mode == "replicate":
        return positions.clamp(0, length - 1)
    if mode == "circular":
        return positions.remainder(length)
    if mode == "reflect":
        if length == 1:
            return torch.zeros_like(positions)
        period = 2 * length - 2
        folded = positions.remainder(period)
        return torch.where(folded < length, folded, period - folded)
    # symmetric: the mirror repeats the edge sample, period 2 * length
    period = 2 * length
    folded = positions.remainder(period)
    return torch.where(folded < length, folded, period - 1 - folded)


def pad(signal: torch.Tensor, left: int, right: int, mode: str = "zeros") -> torch.Tensor:
    """Extend ``signal`` along its last axis by ``left`` and ``right`` samples.

    Args:
        signal: the signal, time last.
        left, right: non-negative pad widths; any size, also larger than the signal.
        mode: "zeros", "reflect" (mirror without repeating the edge sample), "symmetric"
            (mirror repeating it), "replicate" (repeat the edge sample) or "circular".

    Shape:
        signal ``(..., T)`` -> ``(..., left + T + right)``.

    Example:
        >>> import torch
        >>> from diffconv_core.padding import pad
        >>> pad(torch.tensor([1.0, 2.0, 3.0]), 4, 1, "reflect")
        tensor([1., 2., 3., 2., 1., 2., 3., 2.])
    """
    check_choice("padding", mode, PADDINGS)
    if not isinstance(signal, torch.Tensor):
        raise TypeError(f"signal must be a torch.Tensor; got {type(signal).__name__}")
    if signal.dim() == 0:
        raise ValueError("signal must have at least one dimension (time last); got a 0-d tensor")
    left, right = _check_widths(left, right)
    if left == 0 and right == 0:
        return signal
    if mode == "zeros":
        return F.pad(signal, (left, right))
    if signal.shape[-1] == 0:
        raise ValueError(
            f"cannot extend an empty signal with padding={mode!r}: there is no sample to "
            f"repeat; got shape {tuple(signal.shape)}"
        )
    # Only the pads are gathered; the signal itself is one plain copy (an index map over the
    # whole length cost 40x the copy: int64 remainders and a gather per sample).
    length, device = signal.shape[-1], signal.device
    pieces = [signal]
    if left:
        before = fold_positions(torch.arange(-left, 0, device=device), length, mode)
        pieces.insert(0, signal.index_select(-1, before))
    if right:
        after = fold_positions(torch.arange(length, length + right, device=device), length, mode)
        pieces.append(signal.index_select(-1, after))
    return torch.cat(pieces, dim=-1)
