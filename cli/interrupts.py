"""SIGTERM and SIGHUP unwind the stack as Ctrl-C does, and none is raised inside libsndfile.

By default SIGTERM (``timeout``, ``kill``, a job scheduler) or SIGHUP (the terminal or ssh
session closed) ends the process on the spot, and a file being written stays behind as a
hidden ``.NAME.xxxx.part`` temporary; raised as ``SystemExit`` instead, every writer's
clean-up runs and the exit status is still 128 + the signal (143, 129). A SIGHUP ignored when
the command starts (``nohup``) stays ignored.
An exception raised while libsndfile is calling back into Python (soundfile writes to Python
file objects through such callbacks) is swallowed by cffi ("Exception ignored from cffi
callback"), and the half-written file then failed again in the clean-up, so writers run
those calls under :func:`deferred`: a SIGTERM or Ctrl-C that arrives inside is raised when
they return (``SystemExit(143)`` and ``KeyboardInterrupt`` as usual).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import click

from cli import distributed

# What a shell reports for a process ended by Ctrl-C; the command group exits with it.
EXIT_CTRL_C = 128 + signal.SIGINT

# A stop signal this soon after the first is that one's echo, not the user insisting:
# torchrun forwards to its workers the Ctrl-C or SIGTERM that the terminal or scheduler has
# already sent the whole process group. The echo must not cut the clean-up short (a hidden
# temporary left behind, fit's checkpoint unwritten); a later one stops at once, as before.
ECHO_SECONDS = 3.0

#: The signals that stop a command: Ctrl-C, then those whose default action is to end it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_depth = 0
_pending: int | None = None
_first_stop_at: float | None = None


def unwind_on_sigterm() -> None:
    """Install the handlers where the defaults are in place (an embedding program's own are
    left alone); ``fit`` installs its own while it trains."""
    global _first_stop_at, _pending
    _first_stop_at, _pending = None, None  # a new command: no signal seen yet
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_signal)


def is_ours_or_pythons(handler: object) -> bool:
    """Whether ``handler`` is this module's or Python's own Ctrl-C handler (as opposed to an
    ignored signal, the default action or an embedding program's handler).

    Example:
        >>> is_ours_or_pythons(signal.default_int_handler), is_ours_or_pythons(signal.SIG_IGN)
        (True, False)
    """
    return handler is _on_signal or handler is signal.default_int_handler


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a SIGTERM or Ctrl-C that arrives inside the block until the block ends.

    Example:
        >>> with deferred():
        ...     pass
    """
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        # Python runs signal handlers in the main thread only, so nothing is raised here
        # anyway. Counting this block would make the main thread hold a signal that this
        # thread then raised when its block ended, in the middle of a write task.
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            signum, _pending = _pending, None
            _stop(signum)


def _under_torchrun() -> bool:
    # Only torchrun echoes signals; elsewhere a second one is the user's, acted on at once.
    return distributed.ranks_from_env().distributed


def note_stop_signal() -> bool:
    """Record a stop signal (SIGINT or SIGTERM) under torchrun; whether it is an echo of one
    already being acted on (see ``ECHO_SECONDS``), to be ignored. Outside torchrun nothing
    is recorded and nothing is an echo.

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"RANK": "0", "WORLD_SIZE": "2"}):
        ...     unwind_on_sigterm(); note_stop_signal(), note_stop_signal()
        (False, True)
        >>> forget_stop_signal()
    """
    global _first_stop_at
    if not _under_torchrun():
        return False
    now = time.monotonic()
    if _first_stop_at is not None and now - _first_stop_at < ECHO_SECONDS:
        return True
    if _first_stop_at is None:
        _first_stop_at = now
    return False


def forget_stop_signal() -> None:
    """Forget the stop signal recorded (a command that caught one and ended, e.g. ``fit``):
    the next command in this process starts afresh."""
    global _first_stop_at
    _first_stop_at = None


def _on_signal(signum: int, frame) -> None:
    global _pending
    if not _under_torchrun():
        if signum != signal.SIGINT:
            signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    else:
        insisting = _first_stop_at is not None
        if note_stop_signal():
            return  # torchrun's copy of the signal being acted on: let the clean-up finish
        if insisting and signum != signal.SIGINT:
            # Asked again, later: the default action, at once.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
    if _depth:
        _pending = signum
    else:
        _stop(signum)


_chosen_exit: int | None = None


def quiet_after_command(exit_code: int | None = None) -> None:
    """From here on a Ctrl-C or SIGTERM ends the process at once, by the signal's default
    action: for the interpreter's shutdown after the command has returned or raised (its
    writes finished or discarded, its exit status ``exit_code`` chosen). Raised during the
    shutdown, the KeyboardInterrupt of a second Ctrl-C printed "Exception ignored in atexit
    callback" and a traceback (torch's finalizers run there). Under torchrun, which stops
    the other workers as soon as one exits, the process exits with ``exit_code`` instead: a
    rank that had reported its files failed now and then as killed by SIGTERM (-15). Handlers
    other than ours and Python's own are left alone."""
    global _chosen_exit
    _chosen_exit = exit_code
    for signum in STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if is_ours_or_pythons(handler) or (signum != signal.SIGINT and handler is signal.SIG_DFL):
            signal.signal(signum, _end_now)


def _end_now(signum: int, frame) -> None:
    if note_stop_signal():
        return  # torchrun's copy of the signal the command acted on: the shutdown goes on
    # Whatever a command printed is out before the process ends (click.echo flushes, but a
    # buffered write of the interpreter's own may be pending).
    signal.signal(signum, signal.SIG_DFL)  # a flush stuck on a full pipe: the next one ends it
    if _chosen_exit is not None and _under_torchrun():
        end_rank(_chosen_exit)
    _flush_output()
    os.kill(os.getpid(), signum)


def end_rank(exit_code: int) -> None:
    """End a torchrun worker whose command has ended, with its status, at once (output
    flushed, no interpreter shutdown). torchrun stops the other workers with SIGTERM once
    one exits; late in the shutdown Python puts the signals' default actions back, and a
    rank whose command had ended (files reported, status chosen) was then recorded as
    killed (-15), about half the time with 3 ranks. Its process group is already left."""
    _flush_output()
    os._exit(exit_code)


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _stop(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt  # as Ctrl-C always does; the command group exits 130 on it
    with contextlib.suppress(OSError):  # after a hangup the terminal may be gone (EIO)
        click.echo(f"diffconv: stopped by signal {signum}", err=True)
    raise SystemExit(128 + signum)
