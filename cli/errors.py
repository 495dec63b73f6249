"""The one exception type the command layer raises for a problem with a file.

Library code raises ``ValueError``/``TypeError``; the CLI wraps what concerns a file in
:class:`FileProblem` (path + reason + exit code) so that the batch report can name the file
and the reason, and the command can exit with the right code, without a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys

#: Exit codes shared by every command (as the issue and DESIGN.md fix them).
EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


class FileProblem(Exception):
    """A file could not be read, processed or written.

    Args:
        path: the file concerned (input or output).
        reason: a short, user-facing explanation ("not a sound file: ...").
        exit_code: 1 for runtime failures (the default), 2 for usage errors.

    Example:
        >>> err = FileProblem("in.wav", "file is empty")
        >>> str(err), err.exit_code
        ('in.wav: file is empty', 1)
    """

    def __init__(self, path: str | os.PathLike, reason: str, exit_code: int = EXIT_RUNTIME):
        self.path = os.fspath(path)
        self.reason = reason
        self.exit_code = exit_code
        super().__init__(f"{self.path}: {reason}")


def failure_of(err: Exception, path: str | os.PathLike) -> tuple[str, str]:
    """The file and the user-facing reason to report for ``err``, raised while handling
    ``path``: a :class:`FileProblem`'s own file and reason; the core's ValueError/TypeError
    messages as they are; anything else with its type named.

    Example:
        >>> failure_of(FileProblem("out.wav", "output exists"), "in.wav")
        ('out.wav', 'output exists')
        >>> failure_of(RuntimeError("lost sync"), "in.flac")
        ('in.flac', 'RuntimeError: lost sync')
    """
    if isinstance(err, FileProblem):
        return err.path, err.reason
    if isinstance(err, (ValueError, TypeError)):
        return os.fspath(path), str(err)
    return os.fspath(path), f"{type(err).__name__}: {err}"


def discard_further_output(stream) -> None:
    """Point ``stream``'s file descriptor at /dev/null after writing to it failed: Python
    flushes stdout once more at exit, and a stream that failed (a closed pipe, a full disk)
    would fail again there ("Exception ignored ...", exit 120) after our own message."""
    with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


class ClosedOutput(io.TextIOBase):
    """Stands in for ``sys.stdout`` when the command started with it closed (``>&-``).

    Python then leaves ``sys.stdout`` as None, and click's ``echo`` silently prints nothing:
    ``diffconv info x.wav >&-`` lost its whole answer and exited 0. Writing here fails as a
    closed descriptor does, so the command reports it and exits 1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.buffer = _ClosedBinaryOutput()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise _closed_output_error()


class _ClosedBinaryOutput(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise _closed_output_error()


def _closed_output_error() -> OSError:
    return OSError(errno.EBADF, "standard output is closed")


def stand_in_for_closed_streams() -> None:
    """Give a command started with stdin, stdout or stderr closed something in their place.

    A closed stdout fails every write (see :class:`ClosedOutput`); a closed stderr only
    loses the messages: the exit code still says how the command went. The descriptors
    themselves (0, 1, 2) are taken by /dev/null: left free, the next file opened would get
    one, and an output file on descriptor 2 would take in whatever C code prints to stderr.
    """
    took = {
        fd: _hold_with_devnull(fd)
        for fd, name in enumerate(_STANDARD)
        if getattr(sys, name) is None
    }
    if sys.stdout is None:
        sys.stdout = ClosedOutput()
    if sys.stderr is None:
        # Descriptor 2 itself when it was free; never a file opened meanwhile.
        target = 2 if took.get(2) else os.devnull
        sys.stderr = open(target, "w", closefd=target != 2)  # noqa: SIM115  (process-long)


_STANDARD = ("stdin", "stdout", "stderr")


def _hold_with_devnull(fd: int) -> bool:
    """Put /dev/null on descriptor ``fd`` if nothing is open there; whether it did."""
    try:
        os.fstat(fd)
        return False  # something opened since start-up has it: leave that alone
    except OSError:
        pass
    devnull = os.open(os.devnull, os.O_RDWR)
    if devnull != fd:
        os.dup2(devnull, fd)
        os.close(devnull)
    os.set_inheritable(fd, True)  # as a standard descriptor is, for child processes
    return True
