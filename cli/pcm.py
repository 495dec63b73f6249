"""Integer PCM samples converted in numpy rather than by libsndfile.

libsndfile's own float <-> integer conversion costs more than the file I/O around it (about
5 ns a sample when writing 16-bit), and when writing it rounds toward minus infinity, which
biases every sample by half a step. Here floats become integer codes by rounding to the
nearest step, and codes become floats by the same power-of-two scale libsndfile reads with,
so reading gives bit-identical floats and writing is exact to half a step (and faster).

The scale is the one every reader uses: code / 2**15 for 16-bit, so +1.0 does not fit and
becomes the largest code. 8-bit samples (signed or unsigned) travel as int16 codes, whose low
byte libsndfile drops: left to libsndfile, they were floored too (half a step of 8 bits, a DC
offset of -1/256 of full scale). Samples beyond [-1, 1] are clipped (never wrapped) and counted;
NaN and Inf have no code and are written as 0, also counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# subtype -> (numpy dtype handed to soundfile, bits that carry the sample). 24-bit samples
# travel as int32 whose low 8 bits libsndfile drops, so they are rounded to 24 bits here;
# 8-bit ones (PCM_U8's offset of 128 is libsndfile's business) as int16, the same way.
_CODES = {
    "PCM_S8": (np.dtype("int16"), 8),
    "PCM_U8": (np.dtype("int16"), 8),
    "PCM_16": (np.dtype("int16"), 16),
    "PCM_24": (np.dtype("int32"), 24),
    "PCM_32": (np.dtype("int32"), 32),
    # ALAC is lossless integer audio too: libsndfile floored floats written to it.
    "ALAC_16": (np.dtype("int16"), 16),
    "ALAC_20": (np.dtype("int32"), 20),
    "ALAC_24": (np.dtype("int32"), 24),
    "ALAC_32": (np.dtype("int32"), 32),
}


def integer_dtype(subtype: str | None) -> np.dtype | None:
    """The integer dtype samples of ``subtype`` are read and written as here, or None when
    libsndfile converts them itself (float subtypes, companded and lossy codecs).

    Example:
        >>> integer_dtype("PCM_16"), integer_dtype("PCM_24"), integer_dtype("FLOAT")
        (dtype('int16'), dtype('int32'), None)
        >>> integer_dtype("PCM_U8")
        dtype('int16')
    """
    entry = _CODES.get(subtype or "")
    return entry[0] if entry else None


def decode(codes: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integer codes ``(frames, channels)`` as soundfile reads them -> floats ``(channels,
    frames)`` in ``dtype``, C-contiguous, exactly the values libsndfile would give.

    Example:
        >>> decode(np.array([[-32768], [16384]], np.int16), np.dtype("float32"))
        array([[-1. ,  0.5]], dtype=float32)
    """
    scale = dtype.type(2.0 ** -(8 * codes.dtype.itemsize - 1))
    out = np.empty(codes.shape[::-1], dtype=dtype)
    np.multiply(codes.T, scale, out=out)
    return out


@dataclass
class Encoded:
    """Codes ``(frames, channels)`` ready for soundfile, and what had to be changed."""

    codes: np.ndarray
    clipped: int
    nonfinite: int


def limit_to_full_scale(block: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``(block, clipped, nonfinite)``: ``block`` with NaN/Inf set to 0 and samples beyond
    [-1, 1] clipped (a new array only when something had to change), and how many of each.

    Example:
        >>> samples, clipped, nonfinite = limit_to_full_scale(np.array([0.5, 2.0, np.nan]))
        >>> samples.tolist(), clipped, nonfinite
        ([0.5, 1.0, 0.0], 1, 1)
    """
    # min and max carry any NaN: two cheap passes decide whether to look closer.
    if block.size == 0 or (block.min() >= -1.0 and block.max() <= 1.0):
        return block, 0, 0
    finite = np.isfinite(block)
    nonfinite = block.size - int(np.count_nonzero(finite))
    if nonfinite:  # NaN has no integer code; silence is the least surprising stand-in
        block = np.where(finite, block, 0.0).astype(block.dtype, copy=False)
    clipped = int(np.count_nonzero(np.abs(block) > 1.0))
    if clipped:
        block = np.clip(block, -1.0, 1.0)
    return block, clipped, nonfinite


def encode(block: np.ndarray, subtype: str) -> Encoded:
    """Floats ``(channels, frames)`` -> integer codes ``(frames, channels)`` for ``subtype``
    (one that :func:`integer_dtype` knows), rounded to the nearest step.

    Example:
        >>> e = encode(np.array([[0.5, 1.0, -2.0, np.nan]], np.float32), "PCM_16")
        >>> e.codes.ravel().tolist(), e.clipped, e.nonfinite
        ([16384, 32767, -32768, 0], 1, 1)
    """
    dtype, bits = _CODES[subtype]
    samples, clipped, nonfinite = limit_to_full_scale(block)
    # float32 cannot hold 2**31 - 1, the largest 32-bit code; float64 holds every code.
    work = np.float64 if bits > 24 or block.dtype == np.float64 else np.float32
    steps = float(2 ** (bits - 1))
    scaled = np.multiply(samples, steps, dtype=work)  # a power of two: exact
    np.rint(scaled, out=scaled)
    np.clip(scaled, -steps, steps - 1, out=scaled)  # +1.0 has no code: the largest one
    if dtype.itemsize * 8 > bits:  # left-align: libsndfile keeps the top bits
        scaled *= float(2 ** (8 * dtype.itemsize - bits))
    codes = np.empty(block.shape[::-1], dtype=dtype)
    codes[...] = scaled.T
    return Encoded(codes, clipped, nonfinite)
