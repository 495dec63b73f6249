"""The collector during a command's start-up.

Importing torch allocates hundreds of thousands of objects that live until exit; at Python's
default threshold the collector walks them again and again meanwhile, and after every few
hundred allocations later on (7% of a 2,000-file run on 2 cores). :func:`begin` (called by
``diffconv``'s entry point) makes collections rare while the command starts; :func:`end`
(called by the runner once the imports are done) moves everything alive out of the
collector's sight and restores the default thresholds; it also turns on
:func:`diffconv_core.memory.retain_freed_memory` for the command's process. A program that
calls the runner as a library never called :func:`begin`, so its own collector and allocator
settings are left alone.
"""

from __future__ import annotations

import gc

#: Allocations between young-generation collections while a command starts (default 700).
STARTUP_THRESHOLD = 50_000
#: Python's default thresholds, restored by :func:`end`.
DEFAULT_THRESHOLDS = (700, 10, 10)


def begin() -> None:
    """Make collections rare until :func:`end`."""
    gc.set_threshold(STARTUP_THRESHOLD)


def end() -> None:
    """Freeze what start-up left alive, restore the default thresholds and keep freed memory
    for reuse (only after :func:`begin`; otherwise nothing changes)."""
    if gc.get_threshold()[0] == STARTUP_THRESHOLD:
        gc.freeze()
        gc.set_threshold(*DEFAULT_THRESHOLDS)
        # The command owns its process: every file's work arrays then reuse the last one's
        # pages instead of faulting in fresh ones. Imported here, not at start-up: ctypes
        # costs `diffconv --help` 6 ms that it never needs.
        from diffconv_core.memory import retain_freed_memory

        retain_freed_memory()
