"""The block-Toeplitz products of ``_toeplitz`` as one oneDNN convolution per piece (CPU,
float32, one kernel shared by every row, without autograd).

A source of frames of ``P`` samples, viewed as ``P`` channels of one sample per frame, is
exactly torch's channels-last layout of a ``(rows, P, 1, frames)`` image: the samples as they
lie, no copy. Output frame ``q`` is the source frames ``q .. q + J - 1`` times a ``(J * P,
P)`` Toeplitz matrix, which is a 2-D convolution of that image with ``P`` filters of ``P``
channels and ``J`` columns, and its channels-last output is again the samples in order.
oneDNN runs that convolution 1.15-1.8x faster than ``_toeplitz``'s strided GEMMs from 13 to
511 taps (2 cores, AVX-512, interleaved, pieces of 4 MiB: 4 x 480,000 with 31 taps 3.0
against 4.8 ms, 1 x 4,194,304 with 127 taps 7.9 against 12.5 ms), and in 0.58-0.93x their
time with oneDNN and MKL held to AVX2 (ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS; 31-255
taps). Whole ``convolve`` calls gain less, as the copies into and out of the pieces, the
NaN/Inf scan and page faults stay: 0.77-0.95x of the GEMMs' forward time and 0.75-1.03x
forward+backward (interleaved A/B, 31-127 taps, glibc's default allocator).

A shared kernel's gradient is this convolution's weight gradient (:func:`frame_products`)
where pieces hold several rows, up to ``MAX_GRADIENT_TAPS``: 0.7-0.8x the lagged-product
GEMMs' time for 4 x 480,000, 64 x 8,000 and 512 x 1,024 at 127-191 taps, 0.65-0.9x at 13-63
(interleaved, 2 cores). For one long row a piece it was 1.0-1.3x their time, and from 255 taps
5-9x, so the GEMMs keep those.

oneDNN computes float32 in float32 only while torch's fp32 precision settings for it are
left at "ieee" (or unset); with "bf16" or "tf32" asked for, or without oneDNN, the GEMMs run.
``torch.autocast`` would lower conv2d's operands too, so the convolution runs with it off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffconv_core._autocast import autocast_off

#: Frames of 16 samples were fastest at every kernel length from 13 to 511 taps and batch
#: shape tried (4 x 480,000, 1 x 4,194,304, 512 x 1,024, 64 x 8,000): 8 and 32 were up to
#: 1.8x and 1.4x slower.
FRAME = 16
#: Up to this many taps (13 frames read per output frame) oneDNN's weight gradient beat the
#: GEMMs' lagged products; at 255 taps it took 5-9x their time.
MAX_GRADIENT_TAPS = 191
_EXACT = ("ieee", "none")


def usable(x: torch.Tensor) -> bool:
    """Whether the convolution computes ``x``'s products exactly as the GEMMs would (in its
    own dtype, float32, on a CPU with oneDNN enabled and no reduced precision asked for)."""
    return usable_for(x.dtype, x.device)


def usable_for(dtype: torch.dtype, device: torch.device) -> bool:
    """:func:`usable` for a tensor of this dtype on this device."""
    if dtype != torch.float32 or device.type != "cpu":
        return False
    backends = torch.backends
    if not (backends.mkldnn.is_available() and backends.mkldnn.enabled):
        return False
    settings = (backends, backends.mkldnn, backends.mkldnn.conv)
    return all(getattr(s, "fp32_precision", "none") in _EXACT for s in settings)


def frame_plan(K: int) -> tuple[int, int]:
    """Frame length ``P`` and frames read per output frame ``J`` for ``K`` taps.

    Example:
        >>> frame_plan(13), frame_plan(31), frame_plan(255)
        ((16, 2), (16, 3), (16, 17))
    """
    return FRAME, 1 + -(-(K - 1) // FRAME)


def work(K: int) -> int:
    """Multiply-adds per output of the convolution for ``K`` taps (``J * P``; the cost
    model's measure of this path's work).

    Example:
        >>> work(31)
        48
    """
    P, J = frame_plan(K)
    return J * P


def filters(matrix: torch.Tensor, P: int, J: int) -> torch.Tensor:
    """The ``(J * P, P)`` Toeplitz matrix (entry ``(j * P + r, s)``: source sample ``r`` of
    frame ``q + j`` into output sample ``s`` of frame ``q``) as ``(P, P, 1, J)`` filters."""
    weight = matrix.view(J, P, P).permute(2, 1, 0).unsqueeze(2)
    return weight.contiguous(memory_format=torch.channels_last)


def correlate_frames(piece: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Every whole output frame of each row of ``piece``: frame ``q`` is the source frames
    ``q .. q + J - 1`` times the Toeplitz matrix of ``weight`` (:func:`filters`).

    Shape:
        piece ``(rows, F * P)`` contiguous, weight ``(P, P, 1, J)`` ->
        ``(rows, (F - J + 1) * P)`` (a view of the convolution's own output).

    Example:
        >>> from diffconv_core._toeplitz import _toeplitz_index
        >>> taps = torch.tensor([1.0, 2.0, 0.0])  # out[m] = x[m] + 2 x[m + 1]; index 2: zero
        >>> matrix = taps[_toeplitz_index(2, 16, torch.device("cpu"), 2)]  # (32, 16)
        >>> out = correlate_frames(torch.arange(48.0)[None], filters(matrix, 16, 2))
        >>> out.shape, out[0, :3].tolist()
        (torch.Size([1, 32]), [2.0, 5.0, 8.0])
    """
    P = weight.shape[0]
    rows, length = piece.shape
    image = piece.view(rows, 1, length // P, P).permute(0, 3, 1, 2)
    # conv2d is on autocast's lower-precision list, where the GEMMs' out= forms are not.
    with autocast_off("cpu"):
        frames = F.conv2d(image, weight)
    return frames.permute(0, 2, 3, 1).reshape(rows, -1)


def frame_products(piece: torch.Tensor, grad_frames: torch.Tensor, P: int, J: int) -> torch.Tensor:
    """The sum over rows and frames ``q`` of the outer product of the ``J * P`` source
    samples from frame ``q`` on with gradient frame ``q``: the Toeplitz matrix's gradient,
    as the convolution's weight gradient.

    Shape:
        piece ``(rows, F * P)`` and grad_frames ``(rows, (F - J + 1) * P)``, both
        contiguous -> ``(J * P, P)`` (entry ``(j * P + r, s)`` as in :func:`filters`).

    Example:
        >>> piece, grad = torch.arange(48.0)[None], torch.zeros(1, 32)
        >>> grad[0, 0] = 1.0  # output 0 only: its products are source samples 0 .. 31
        >>> products = frame_products(piece, grad, 16, 2)
        >>> products.shape, products[:3, 0].tolist(), products[:3, 1].tolist()
        (torch.Size([32, 16]), [0.0, 1.0, 2.0], [0.0, 0.0, 0.0])
    """
    rows, length = piece.shape
    image = piece.view(rows, 1, length // P, P).permute(0, 3, 1, 2)
    grad = grad_frames.view(rows, 1, -1, P).permute(0, 3, 1, 2)
    weight = torch.empty((P, P, 1, J), dtype=piece.dtype, device=piece.device)
    with autocast_off("cpu"):
        _, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad,
            image,
            weight.contiguous(memory_format=torch.channels_last),
            None,
            [1, 1],
            [0, 0],
            [1, 1],
            False,
            [0, 0],
            1,
            [False, True, False],
        )
    return grad_weight[:, :, 0, :].permute(2, 1, 0).reshape(J * P, P)
