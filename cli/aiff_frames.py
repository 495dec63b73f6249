"""Correct the frame count libsndfile writes into a mono AIFF of 1-byte samples.

AIFF pads a chunk of an odd number of bytes with one more. libsndfile 1.2 counts that pad
byte as a sample of its own in the header of a mono file of 1-byte samples (8-bit PCM,
u-law, A-law) and an odd number of frames: 2,091 frames written read back as 2,092 (the
last a zero), in libsndfile and in every reader that trusts the header. Its other sample
sizes and channel counts are right. The two header fields are set back once the file is
closed, before it is moved into place.
"""

from __future__ import annotations

import io
import struct

#: Subtypes of one byte a sample: a mono file of them has an odd sample chunk for an odd
#: number of frames.
ONE_BYTE_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "ULAW", "ALAW"})


def needs_fix(fmt: str, subtype: str, channels: int, frames: int) -> bool:
    """Whether libsndfile wrote one frame too many into this file's header.

    Example:
        >>> needs_fix("AIFF", "PCM_S8", 1, 2091), needs_fix("AIFF", "PCM_S8", 2, 2091)
        (True, False)
        >>> needs_fix("AIFF", "PCM_16", 1, 2091), needs_fix("WAV", "PCM_U8", 1, 2091)
        (False, False)
    """
    return fmt == "AIFF" and subtype in ONE_BYTE_SUBTYPES and channels == 1 and frames % 2 == 1


def fix_frame_count(file: io.BufferedIOBase, frames: int) -> bool:
    """Set the frame count (COMM) and the sample chunk's size (SSND) of the AIFF or AIFF-C
    in ``file`` (readable, writable, seekable) back to ``frames`` one-byte mono frames where
    they count one more, the pad byte; returns whether it changed them.

    Example:
        >>> import io, struct
        >>> comm = b"COMM" + struct.pack(">IhIh", 18, 1, 4, 8) + bytes(10)
        >>> ssnd = b"SSND" + struct.pack(">III", 12, 0, 0) + bytes(4)
        >>> body = b"AIFF" + comm + ssnd
        >>> file = io.BytesIO(b"FORM" + struct.pack(">I", len(body)) + body)
        >>> fix_frame_count(file, 3)
        True
        >>> data = file.getvalue()
        >>> struct.unpack(">I", data[22:26])[0], struct.unpack(">I", data[42:46])[0]
        (3, 11)
    """
    file.seek(0)
    head = file.read(12)
    if len(head) < 12 or head[:4] != b"FORM" or head[8:] not in (b"AIFF", b"AIFC"):
        return False
    changed = False
    position = 12
    while True:
        file.seek(position)
        chunk = file.read(8)
        if len(chunk) < 8:
            return changed
        name, size = chunk[:4], struct.unpack(">I", chunk[4:])[0]
        if name == b"COMM":
            file.seek(position + 10)  # past the channel count
            if struct.unpack(">I", file.read(4))[0] == frames + 1:
                file.seek(position + 10)
                file.write(struct.pack(">I", frames))
                changed = True
        elif name == b"SSND" and size == 8 + frames + 1:  # offset, block size, samples
            file.seek(position + 4)
            file.write(struct.pack(">I", 8 + frames))  # the pad byte stays, uncounted
            changed = True
        position += 8 + size + (size & 1)
