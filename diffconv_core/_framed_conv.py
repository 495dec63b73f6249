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

Contiguous rows skip the pieces altogether (:func:`correlate_rows`): one convolution over
every row, the zeros past their ends its own padding and its output the result, with no copy
of the signal into pieces nor of the pieces' outputs into the result where the rows are whole
frames (``T % FRAME == 0``; 0.5-0.96x the time in pieces, 31-255 taps). Other rows are first
copied into whole frames, up to ``PADDED_ROWS_BYTES`` (0.52-0.81x the time in pieces).

A shared kernel's gradient is this convolution's weight gradient (:func:`frame_products`)
where pieces hold several rows, up to ``MAX_GRADIENT_TAPS``: 0.7-0.8x the lagged-product
GEMMs' time for 4 x 480,000, 64 x 8,000 and 512 x 1,024 at 127-191 taps, 0.65-0.9x at 13-63
(interleaved, 2 cores). For one long row a piece it was 1.0-1.3x their time, and from 255 taps
5-9x, so the GEMMs keep those. Rows of whole frames take one weight gradient over every row
(:func:`gradient_products_rows`), reading them where they lie: 0.54-0.84x the time of the
pieces or GEMMs they replace (1 x 4,194,304 with 31 taps 3.7 against 6.4 ms, 512 x 1,024 with
127 taps 0.43 against 0.57 ms), one long row included.

Every row is a line of one image (a batch of one), and the convolution is chosen by its work:
torch's native one (an unfold and a GEMM) for small calls, where oneDNN's ~30 us a call
doubled the time of short signals, oneDNN's beyond (``NATIVE_MAX_WORK``). torch's own choice
goes by the batch: it sent any batch of two rows or more to oneDNN and kept one short row
native however long its kernel (1 x 16,384 with 1,023 taps: 308 us, oneDNN's 107).

``convolve`` calls that one convolution straight away (:func:`correlate_rows_direct`, from
the kernels as given: their filters are one gather), recorded by autograd as ``conv2d`` where
a gradient is wanted; float64 takes its native form for small work (oneDNN takes no
float64), and a bank of kernels, every row with every kernel, the filters of all kernels as
output channels.

oneDNN computes float32 in float32 only while torch's fp32 precision settings for it are
left at "ieee" (or unset); with "bf16" or "tf32" asked for, or without oneDNN, the GEMMs run.
``torch.autocast`` would lower conv2d's operands too, so the convolution runs with it off.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from diffconv_core._autocast import autocast_off
from diffconv_core._validation import needs_graph
from diffconv_core._workspace import kept_tensors, scratch

#: Frames of 16 samples were fastest at every kernel length from 13 to 511 taps and batch
#: shape tried (4 x 480,000, 1 x 4,194,304, 512 x 1,024, 64 x 8,000): 8 and 32 were up to
#: 1.8x and 1.4x slower.
FRAME = 16
#: Up to this many taps (13 frames read per output frame) oneDNN's weight gradient beat the
#: GEMMs' lagged products; at 255 taps it took 5-9x their time.
MAX_GRADIENT_TAPS = 191
_EXACT = ("ieee", "none")

#: Up to this much work (samples times frames read per output frame), torch's native
#: convolution (an unfold and one GEMM: ~10 us a call) beats oneDNN's (~30 us a call, but
#: 3-4x faster per unit of work): 1 x 1,024 with 31 taps 10 against 30 us, 4 x 1,024 with 31
#: taps 13 against 30, 1 x 4,096 with 255 taps 29 against 35, 16 x 1,024 with 63 taps 33
#: against 40; past it oneDNN (1 x 16,384 with 1,023 taps: 107 against 308; 16 x 1,024 with
#: 255 taps 53 against 84; 2 cores, medians).
NATIVE_MAX_WORK = 81920
#: The same for the weight gradient: native 21-28 us where oneDNN took 43-52 for 1,024-4,096
#: samples with 7-127 taps, 36-38 against 43-45 for 8,192 samples with 7-31 taps; 1.2-2x
#: oneDNN's time beyond (8,192 samples with 127 taps, 16,384 with 7 or more).
NATIVE_MAX_GRADIENT_WORK = 24576


def _conv2d(image, weight, bias, padding, stride, dilation, groups):
    # torch's own choice of convolution, where this torch lacks oneDNN's entry point.
    return F.conv2d(image, weight, bias, stride, padding, dilation, groups)


# torch's native convolution (an unfold and one GEMM), where this torch exposes it, and
# oneDNN's, called by name: torch's own choice depends on the batch, not on the work.
_native_conv2d = getattr(torch._C._nn, "thnn_conv2d", None)
_onednn_conv2d = getattr(torch, "mkldnn_convolution", _conv2d)
_convolution_backward = torch.ops.aten.convolution_backward


def usable(x: torch.Tensor) -> bool:
    """Whether the convolution computes ``x``'s products exactly as the GEMMs would (in its
    own dtype, float32, on a CPU with oneDNN enabled and no reduced precision asked for)."""
    return usable_for(x.dtype, x.device)


def usable_for(dtype: torch.dtype, device: torch.device) -> bool:
    """:func:`usable` for a tensor of this dtype on this device."""
    if dtype != torch.float32 or device.type != "cpu":
        return False
    if _precision_getter is not None:
        # The settings' own getters: ~0.3 us where the attributes took 2.7 (a convolve call
        # asks up to three times; its whole host time is ~40 us for a short signal).
        return torch._C._get_mkldnn_enabled() and all(
            _precision_getter(*setting) in _EXACT for setting in _PRECISION_SETTINGS
        )
    backends = torch.backends
    if not (backends.mkldnn.is_available() and backends.mkldnn.enabled):
        return False
    settings = (backends, backends.mkldnn, backends.mkldnn.conv)
    return all(getattr(s, "fp32_precision", "none") in _EXACT for s in settings)


#: (backend, op) of torch.backends.fp32_precision, .mkldnn.fp32_precision and
#: .mkldnn.conv.fp32_precision, as torch's settings objects read them.
_PRECISION_SETTINGS = (("generic", "all"), ("mkldnn", "all"), ("mkldnn", "conv"))


def _fast_precision_getter():
    # torch's private getter behind those attributes, where this torch has it, oneDNN is
    # built in and the getter reads what the attributes do; else None (the attributes).
    getter = getattr(torch._C, "_get_fp32_precision_getter", None)
    if getter is None or not torch.backends.mkldnn.is_available():
        return None
    backends = torch.backends
    try:
        public = [
            getattr(s, "fp32_precision", None)
            for s in (backends, backends.mkldnn, backends.mkldnn.conv)
        ]
        if public != [getter(*setting) for setting in _PRECISION_SETTINGS]:
            return None
    except (RuntimeError, TypeError, AttributeError):
        return None
    return getter


_precision_getter = _fast_precision_getter()


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
    return _convolve_frames(piece, weight, 0)


def runs_native(rows: int, T: int, J: int) -> bool:
    """Whether the convolution over ``rows`` rows of ``T`` samples (zeros after them to
    whole frames), each output frame reading ``J`` frames, is torch's native one (see
    ``NATIVE_MAX_WORK``; the cost model prices the two apart).

    Example:
        >>> runs_native(4, 1024, 3), runs_native(512, 1024, 3)
        (True, False)
    """
    return rows * -(-T // FRAME) * FRAME * J <= NATIVE_MAX_WORK and _native_conv2d is not None


def _convolve_frames(rows: torch.Tensor, weight: torch.Tensor, pad: int) -> torch.Tensor:
    # Every row's output frames, with `pad` frames of zeros on both sides of each row. The
    # rows are the lines of one image (a batch of one; as a batch of rows, oneDNN's
    # convolution took the same time), and which convolution runs is chosen here:
    # torch's own heuristic sends a batch of more than one to oneDNN whatever its size.
    R, length = rows.shape
    P, J = weight.shape[0], weight.shape[-1]
    image = rows.view(1, R, length // P, P).permute(0, 3, 1, 2)
    # conv2d is on autocast's lower-precision list, where the GEMMs' out= forms are not.
    with autocast_off("cpu"):
        if runs_native(R, length, J):
            frames = _native_conv2d(image, weight, (1, J), None, (1, 1), (0, pad))
        else:
            frames = _onednn_conv2d(image, weight, None, (0, pad), (1, 1), (1, 1), 1)
    return frames.permute(0, 2, 3, 1).reshape(R, -1)


#: The most frames of zero taps :func:`correlate_rows` adds to line its output up with the
#: result (each costs ``P`` more multiply-adds per output; "same" with an odd kernel needs none).
MAX_ALIGNING_FRAMES = 1


#: Rows that are not whole frames are copied, zeros after, into a work array of whole
#: frames for :func:`correlate_rows` up to this many bytes (those the work array is kept at,
#: ``_workspace.MAX_KEPT_BYTES``); longer batches go in pieces, whose work arrays stay small.
PADDED_ROWS_BYTES = 16 * 2**20


def whole_rows_plan(
    T: int, K: int, n_out: int, shift: int, rows: int = 1
) -> tuple[int, int, int] | None:
    """How :func:`correlate_rows` lays out ``rows`` rows of ``T`` samples (zeros after them
    to whole frames), ``K`` taps, ``n_out`` outputs and a ``shift``: ``(pad, lead, J)``, the
    frames of zeros on both sides of each row, the zero taps before the kernel and the frames
    each output frame reads (the taps padded with zeros after them to ``J * P``); None where
    it does not apply (a negative shift, too unaligned an output, or rows that are not whole
    frames past ``PADDED_ROWS_BYTES`` of float32).

    Example:
        >>> whole_rows_plan(1024, 31, 1024, 15)  # mode "same": 15 = 1 frame less 1 sample
        (1, 1, 3)
        >>> whole_rows_plan(1000, 31, 1000, 15)  # copied to 1,008 samples a row
        (1, 1, 3)
        >>> whole_rows_plan(1000, 31, 1000, 15, rows=10_000) is None  # 40 MB to copy
        True
    """
    P = FRAME
    frames = -(-T // P)
    if T % P and rows * frames * P * 4 > PADDED_ROWS_BYTES:
        return None
    if shift < 0 or n_out <= 0 or T <= 0:
        return None
    pad = -(-shift // P)
    lead = pad * P - shift
    J = 1 + -(-(K + lead - 1) // P)
    surplus = frames + 2 * pad - J + 1 - -(-n_out // P)  # frames the symmetric padding gives
    if abs(surplus) > MAX_ALIGNING_FRAMES:
        return None
    if surplus < 0:  # too few zeros after: a frame more on both sides, taps delayed by it
        return pad - surplus, lead - surplus * P, J - surplus
    return pad, lead, J + surplus  # too many: a frame of zero taps reads one frame fewer


@kept_tensors(maxsize=64)
def _filter_taps(J: int, P: int, device: torch.device) -> torch.Tensor:
    # Which of J * P aligned taps (or, for a negative lag, the zero appended at index J * P)
    # filter entry (s, r, 0, j) of :func:`filters`' layout holds: tap j * P + r - s. Laid out
    # (s, 0, j, r), so that the gathered taps permuted to (s, r, 0, j) are channels-last as
    # they stand (one gather, no copy into that layout).
    s = torch.arange(P, device=device).view(P, 1, 1, 1)
    j = torch.arange(J, device=device).view(1, 1, J, 1)
    r = torch.arange(P, device=device).view(1, 1, 1, P)
    lag = j * P + r - s
    return torch.where(lag >= 0, lag, J * P)


def takes_whole_rows(source: torch.Tensor, K: int, n_out: int, shift: int) -> bool:
    """Whether a shared kernel of ``K`` taps over ``source`` (its dtype's, every row) takes
    :func:`correlate_rows`: float32 oneDNN, contiguous rows, a plan."""
    T = source.shape[-1]
    rows = source.numel() // max(T, 1)
    return (
        usable(source)
        and source.is_contiguous()
        and whole_rows_plan(T, K, n_out, shift, rows) is not None
    )


def _in_whole_frames(rows: torch.Tensor) -> torch.Tensor:
    # The rows as they lie where they are whole frames, else copied with zeros after them to
    # whole frames into this thread's work array (read only until the next call).
    R, T = rows.shape
    width = -(-T // FRAME) * FRAME
    if width == T:
        return rows
    padded = scratch("whole rows", R * width, rows.dtype, rows.device).view(R, width)
    padded[:, :T].copy_(rows)
    padded[:, T:].zero_()
    return padded


def correlate_rows(
    rows: torch.Tensor, taps: torch.Tensor, n_out: int, shift: int
) -> torch.Tensor | None:
    """``out[r, m] = sum_j taps[j] * rows[r, m + j - shift]`` for ``0 <= m < n_out`` (zero
    outside the rows), every row at once: one convolution reading the rows where they lie
    and writing the result as its own output (rows that are not whole frames of ``FRAME``
    samples are copied to whole frames first, and an output that is not whole frames is
    copied out of the convolution's). None where the rows are not contiguous, or
    :func:`whole_rows_plan` has no plan (a negative shift, or too much to copy).

    In pieces (``_toeplitz``) each piece of short rows is first copied into frames with zeros
    around, and each piece's output copied into the result. Here the zeros before and after
    the rows are the convolution's own padding, in whole frames: the part of the shift short
    of a frame is folded into the taps as leading zeros, and a side that needs more (or less)
    padding than the other gets a frame of zero taps (at most ``MAX_ALIGNING_FRAMES``). With
    ``n_out`` whole frames the output is the result; else its first ``n_out`` samples are.
    ``convolve(method="direct")``, freed memory retained, 2 cores, interleaved medians: 512 x
    1,024 with 31 taps 0.33 against 0.41 ms in pieces, 4 x 480,000 with 31 taps 0.64
    against 1.30 ms, 1 x 4,194,304 with 127 taps 2.9 against 4.0 ms, 512 x 1,024 with 255
    taps 0.98 against 1.02 ms; rows that are not whole frames, 4 x 480,008 with 31 taps 0.94
    against 1.15 ms, 1 x 44,100 with 31 taps 0.065 against 0.124 ms.

    Shape:
        rows ``(R, T)``, taps ``(K,)`` -> ``(R, n_out)``.

    Example:
        >>> x = torch.arange(32.0).reshape(1, 32)  # out[m] = x[m - 1] + 2 x[m]
        >>> correlate_rows(x, torch.tensor([1.0, 2.0, 0.0]), 32, 1)[0, :4].tolist()
        [0.0, 2.0, 5.0, 8.0]
        >>> correlate_rows(x[:, :30], torch.tensor([1.0]), 30, -1) is None  # a negative shift
        True
    """
    R, T = rows.shape
    plan = whole_rows_plan(T, taps.shape[-1], n_out, shift, R)
    if plan is None or R == 0 or not rows.is_contiguous():
        return None
    P, (pad, lead, J) = FRAME, plan
    rows = _in_whole_frames(rows)
    T = rows.shape[-1]
    # The aligned taps and one zero after them: (J * P + 1,).
    aligned = F.pad(taps, (lead, J * P + 1 - lead - taps.shape[-1]))
    weight = aligned[_filter_taps(J, P, taps.device)].permute(0, 3, 1, 2)
    out = _convolve_frames(rows, weight, pad)
    frames_out = -(-n_out // P)
    return out if frames_out * P == n_out else out[:, :n_out].contiguous()


#: Recorded by autograd, oneDNN's convolution (past native work) runs straight from convolve
#: up to this many taps, its backward oneDNN's: a training step of 512 x 1,024 with 31 taps
#: 1.44 ms against 1.78 through the direct method's Function, 16 x 2,000 with 127 taps 0.38
#: against 0.53, but 512 x 1,024 with 127 taps 2.18 against 2.10 (interleaved, 2 cores).
MAX_RECORDED_ONEDNN_TAPS = 63


def recorded_directly(rows: int, T: int, K: int, J: int) -> bool:
    """Whether autograd records the one convolution over ``rows`` rows of ``T`` samples
    (``K`` taps, ``J`` frames read per output frame) as it stands: native work, or oneDNN's
    up to ``MAX_RECORDED_ONEDNN_TAPS``. Elsewhere the direct method's own Function runs
    (oneDNN's weight gradient took 5-9x the GEMMs' from 255 taps).

    Example:
        >>> recorded_directly(512, 1024, 31, 3), recorded_directly(512, 1024, 127, 9)
        (True, False)
    """
    return K <= MAX_RECORDED_ONEDNN_TAPS or runs_native(rows, T, J)


def direct_rows_plan(
    rows: int,
    T: int,
    K: int,
    n_out: int,
    shift: int,
    recorded: bool,
    native_only: bool = False,
    kernels: int = 1,
) -> tuple[int, int, int] | None:
    """:func:`whole_rows_plan` for :func:`correlate_rows_direct` with ``kernels`` kernels,
    else None: recorded by autograd only where :func:`recorded_directly`, and only for
    native work with ``native_only`` (float64, which oneDNN does not take); the work counted
    over every row and kernel.

    Example:
        >>> direct_rows_plan(512, 1024, 127, 1024, 63, recorded=False)
        (4, 1, 9)
        >>> direct_rows_plan(512, 1024, 127, 1024, 63, recorded=True) is None
        True
        >>> direct_rows_plan(512, 1024, 127, 1024, 63, False, native_only=True) is None
        True
    """
    plan = whole_rows_plan(T, K, n_out, shift, rows)
    work_rows = rows * kernels
    if plan is None or (native_only and not runs_native(work_rows, T, plan[2])):
        return None
    if recorded and not recorded_directly(work_rows, T, K, plan[2]):
        return None
    return plan


@kept_tensors(maxsize=64)
def _filters_index(K: int, lead: int, J: int, count: int, device: torch.device) -> torch.Tensor:
    # _filter_taps read from `count` kernels of K taps as given, each with a zero appended and
    # laid end to end: aligned tap a of kernel f is its reversed tap a - lead, the kernel's
    # K - 1 - (a - lead), at f * (K + 1) + that; every other entry the kernel's zero. The
    # reversal and the alignment of every kernel are then one gather, kernel after kernel:
    # (count * P, 1, J, P), channels-last filters once permuted.
    aligned = _filter_taps(J, FRAME, device)
    tap = K - 1 + lead - aligned
    one = torch.where((aligned < J * FRAME) & (tap >= 0) & (tap < K), tap, K)
    offsets = torch.arange(count, device=device).view(count, 1, 1, 1, 1) * (K + 1)
    return (one.unsqueeze(0) + offsets).reshape(count * FRAME, 1, J, FRAME)


_last_filters = threading.local()


def _filters_of(kernels: torch.Tensor, lead: int, J: int, recorded: bool) -> torch.Tensor:
    # The (count * P, P, 1, J) filters of the kernels (count, K) as given (_filters_index),
    # recorded by autograd where asked. Without a graph this thread's last filters are reused
    # for kernels of the same bits (a window applied to signal after signal): one
    # comparison, ~0.5 us, where building them took ~4 (a third of a small call's own time).
    count, K = kernels.shape
    key = (count, K, lead, J, kernels.dtype, kernels.device)
    bits_dtype = _BITS.get(kernels.dtype)
    bits = None if recorded or bits_dtype is None else kernels.view(bits_dtype)
    if bits is not None:
        last = getattr(_last_filters, "entry", None)
        if last is not None and last[0] == key and torch.equal(last[1], bits):
            return last[2]
    index = _filters_index(K, lead, J, count, kernels.device)
    # take: ~1 us less than indexing with the same tensor.
    weight = torch.take(torch.constant_pad_nd(kernels, (0, 1)), index).permute(0, 3, 1, 2)
    if bits is not None:
        _last_filters.entry = (key, bits.clone(), weight)
    return weight


#: The integer dtype whose values are a float dtype's bits (NaN payloads and signed zeros
#: compared as they are).
_BITS = {torch.float32: torch.int32, torch.float64: torch.int64}


def _rows_in_frames(rows: torch.Tensor, recorded: bool) -> torch.Tensor:
    # The rows padded with zeros to whole frames: by F.pad where autograd records it, else
    # copied into this thread's work array (_in_whole_frames).
    width = -(-rows.shape[-1] // FRAME) * FRAME
    if width == rows.shape[-1]:
        return rows
    return F.pad(rows, (0, width - rows.shape[-1])) if recorded else _in_whole_frames(rows)


def correlate_rows_direct(
    rows: torch.Tensor, kernels: torch.Tensor, n_out: int, plan: tuple[int, int, int]
) -> torch.Tensor:
    """:func:`correlate_rows` with kernels as given, every row with every kernel (``out[r, f,
    m] = sum_k kernels[f, K - 1 - k] * rows[r, m + k - shift]``; one kernel for every row
    is a bank of one), and a :func:`direct_rows_plan`, in as few operations as host time
    allows: the taps' one gather, one convolution with every kernel's filters as its output
    channels (what ``conv1d`` does with one input channel and a filter per output channel),
    and the output's layout (a copy from frames of every kernel to rows of one kernel each,
    a view for one kernel). Autograd records every step (the convolution as conv2d, which
    takes the same native or oneDNN convolution), so with operands that require gradients
    it is differentiable to any order, forward-over-reverse included, with no Python on the
    way back; rows that are not whole frames are then padded by ``F.pad`` rather than copied
    into the work array. ``convolve`` calls it straight away (1 x 4,096 with 31 taps: ~21 us
    alone, where the direct method's layers took 44 and ``conv1d`` 14-17; 512 x 1,024 with
    31 taps 201 us against 238, interleaved).

    Shape:
        rows ``(R, T)`` contiguous, kernels ``(F, K)`` -> ``(R, F, n_out)``.

    Example:
        >>> x = torch.arange(32.0).reshape(1, 32)  # "same" with [0, 2, 1]: x[m - 1] + 2 x[m]
        >>> plan = direct_rows_plan(1, 32, 3, 32, 1, recorded=False)
        >>> correlate_rows_direct(x, torch.tensor([[0.0, 2.0, 1.0]]), 32, plan)[0, 0, :4].tolist()
        [0.0, 2.0, 5.0, 8.0]
        >>> bank = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 1.0]])  # x[m]; x[m - 1] + 2 x[m]
        >>> correlate_rows_direct(x, bank, 32, plan)[0, :, :3].tolist()
        [[0.0, 1.0, 2.0], [0.0, 2.0, 5.0]]
    """
    count = kernels.shape[0]
    pad, lead, J = plan
    recorded = needs_graph(rows, kernels)
    rows = _rows_in_frames(rows, recorded)
    R, width = rows.shape
    weight = _filters_of(kernels, lead, J, recorded)
    image = rows.view(1, R, width // FRAME, FRAME).permute(0, 3, 1, 2)
    # conv2d is on autocast's lower-precision list, where the GEMMs' out= forms are not.
    with autocast_off("cpu"):
        if recorded:
            # conv2d, recorded as a convolution: its backward has forward-mode rules too
            # (forward-over-reverse Hessian products), which torch's native convolution
            # called by name lacks. It takes the same native convolution for small work.
            frames = F.conv2d(image, weight, None, 1, (0, pad))
        elif runs_native(R * count, width, J):
            frames = _native_conv2d(image, weight, (1, J), None, (1, 1), (0, pad))
        else:
            frames = _onednn_conv2d(image, weight, None, (0, pad), (1, 1), (1, 1), 1)
    # (1, count * P, R, q), channels-last -> (R, count, q * P): for one kernel a view (its
    # frames are its rows' samples in order), with one autograd node fewer than the bank's.
    q = frames.shape[-1]
    if count == 1:
        out = frames.permute(0, 2, 3, 1).reshape(R, 1, q * FRAME)
    else:
        out = frames.view(count, FRAME, R, q).permute(2, 0, 3, 1).reshape(R, count, q * FRAME)
    return out if q * FRAME == n_out else out[..., :n_out].contiguous()


def gradient_products_rows(
    g: torch.Tensor, rows: torch.Tensor, lo: int, K: int
) -> torch.Tensor | None:
    """The lagged products of ``g`` with ``rows`` (zero outside them) summed over every row,
    laid out as ``_toeplitz.toeplitz_lagged_products`` sums them into a shared kernel's
    gradient (lag ``j``: the sum of entries ``(i + j, i)``): the weight gradient of
    :func:`correlate_rows`' one convolution, reading the rows where they lie, from the
    kernel's first tap on. None where that convolution does not apply, or past
    ``MAX_GRADIENT_TAPS``.

    Shape:
        g ``(R, L)``, rows ``(R, T)`` -> ``(N, P)`` with ``N >= K + P - 1``.

    Example:
        >>> x = torch.arange(32.0).reshape(1, 32)
        >>> g = torch.zeros(1, 32)
        >>> g[0, 5] = 1.0  # lag j (the last tap first): x[5 + 1 - (2 - j)]
        >>> products = gradient_products_rows(g, x, 1, 3)
        >>> [float(products.diagonal(-j)[:16].sum()) for j in range(3)]
        [4.0, 5.0, 6.0]
    """
    R, L = g.shape
    T = rows.shape[-1]
    plan = whole_rows_plan(T, K, L, K - 1 - lo, R)
    if plan is None or K > MAX_GRADIENT_TAPS or not rows.is_contiguous() or R == 0:
        return None
    P, (pad, lead, J) = FRAME, plan
    rows = _in_whole_frames(rows)
    frames_out = -(-L // P)
    if frames_out * P != L or not g.is_contiguous():
        g = F.pad(g, (0, frames_out * P - L))  # whole frames, zeros after
    # Entry (c, s) adds to aligned tap c - s; the kernel's taps are the aligned ones from
    # ``lead`` on.
    return _toeplitz_gradient(rows, g, P, J, pad).contiguous()[lead:]


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
    return _toeplitz_gradient(piece, grad_frames, P, J, 0)


def _toeplitz_gradient(
    piece: torch.Tensor, grad_frames: torch.Tensor, P: int, J: int, pad: int
) -> torch.Tensor:
    # frame_products with `pad` frames of zeros on both sides of each row, as correlate_rows
    # convolves: grad_frames (rows, (F + 2 * pad - J + 1) * P).
    rows, length = piece.shape
    # As one image (a batch of one) torch takes its native weight gradient below 20,480
    # samples, which beats oneDNN's up to about NATIVE_MAX_GRADIENT_WORK (see there).
    lines = (1, rows) if rows * length * J <= NATIVE_MAX_GRADIENT_WORK else (rows, 1)
    image = piece.view(*lines, length // P, P).permute(0, 3, 1, 2)
    grad = grad_frames.view(*lines, -1, P).permute(0, 3, 1, 2)
    weight = torch.empty((P, P, 1, J), dtype=piece.dtype, device=piece.device)
    with autocast_off("cpu"):
        _, grad_weight, _ = _convolution_backward(
            grad,
            image,
            weight.contiguous(memory_format=torch.channels_last),
            None,
            [1, 1],
            [0, pad],
            [1, 1],
            False,
            [0, 0],
            1,
            [False, True, False],
        )
    return grad_weight[:, :, 0, :].permute(2, 1, 0).reshape(J * P, P)
