"""Keep freed memory for reuse: one process-wide switch, off unless asked for.

Every CPU convolution allocates its output and some work arrays of a few megabytes (pieces,
spectra, blocks). With glibc's default policy such blocks are often handed back to the kernel
on ``free`` and fetched again, page by page, on the next call, depending on the process's
history: on a 2-core virtual machine that costs about 1.4 us a page, which made a
4 x 480,000-sample overlap-save with 1,023 taps take 11-15 ms instead of 5-8 ms (3,700 page
faults a call). The direct path keeps its own work arrays (``_workspace``); the FFTs' live
inside torch. Asking glibc to serve blocks of up to 32 MiB from its heap and to keep up to
``limit_bytes`` (64 MiB by default) of freed heap brings that to nearly zero faults.

It changes the whole process's allocator, for every library in it, and the process keeps up
to ``limit_bytes`` of freed memory, so the library never does it on import: the ``diffconv``
command turns it on for its own process, and a program calls :func:`retain_freed_memory`
once if it wants the same. Other C libraries (musl, macOS, Windows) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from diffconv_core._validation import check_count

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's upper bound for the mmap threshold on 64-bit systems; larger values are refused.
_MAX_MMAP_THRESHOLD = 32 * 2**20
#: glibc's own starting mmap and trim thresholds: a limit at or below them retains nothing
#: more than glibc already does.
_GLIBC_DEFAULT_THRESHOLD = 128 * 2**10

# The largest block glibc now serves from its heap and keeps once freed (retain_freed_memory).
_retained_bytes = 0


def retained_bytes() -> int:
    """The largest block glibc serves from its heap and keeps for reuse once freed, as set by
    :func:`retain_freed_memory` (0 before it, or where it could not be set): paths that keep
    work arrays of their own to spare page faults (the CPU FFT of a batch) allocate afresh
    within it.

    Example:
        >>> from diffconv_core.memory import retained_bytes
        >>> retained_bytes() >= 0
        True
    """
    return _retained_bytes


def retain_freed_memory(limit_bytes: int = 64 * 2**20) -> bool:
    """Let glibc serve blocks of up to ``limit_bytes`` (at most 32 MiB) from its heap and
    keep up to ``limit_bytes`` of freed heap for reuse instead of returning it to the kernel.
    Returns whether glibc's policy is now at least that generous (False where the C library
    is not glibc).

    A limit at or below glibc's own thresholds (128 KiB) leaves its policy alone: setting
    the thresholds that low would hand even small blocks back to the kernel (a limit of 0
    made every allocation a fresh mapping, ~90,000 page faults where the default took 500).

    Example:
        >>> from diffconv_core.memory import retain_freed_memory
        >>> isinstance(retain_freed_memory(), bool)
        True
    """
    limit_bytes = check_count(limit_bytes, "limit_bytes", minimum=0)
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    if limit_bytes <= _GLIBC_DEFAULT_THRESHOLD:
        return True
    global _retained_bytes
    limit = min(limit_bytes, 2**31 - 1)  # mallopt takes a C int
    served = min(limit, _MAX_MMAP_THRESHOLD)
    if mallopt(_M_MMAP_THRESHOLD, served) and mallopt(_M_TRIM_THRESHOLD, limit):
        _retained_bytes = max(_retained_bytes, served)
        return True
    return False


@functools.cache
def _glibc_mallopt():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 -- only glibc has it
    except (OSError, AttributeError):
        return None
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt
