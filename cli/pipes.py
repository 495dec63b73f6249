"""Unix pipes: ``-`` as INPUT reads stdin, ``-`` as OUTPUT writes stdout (as sox and ffmpeg).

- stdin is read whole into memory: a stream can be read only once, and the runner probes a
  file before reading it (and seeks in it to stream it or to pad circularly). A .npy stream
  is told by its magic bytes and never unpickled; anything else must be a self-describing
  sound file (WAV, FLAC, OGG, AIFF, CAF...), unless ``--raw-subtype`` says stdin holds
  headerless samples (:mod:`cli.raw`), which say nothing of their rate, channels or sample
  format themselves.
- a result for stdout is encoded in memory and sent in one piece once complete, so a failure
  sends nothing (the promise the atomic rename keeps for files). Its format is ``--type``'s,
  else the input's own (container and subtype for audio; .npy stays .npy).
- stdout carries the data and nothing else: while a command writes there, ``sys.stdout`` is
  pointed at stderr (:func:`stdout_for_data_only`), so no message can slip into the data.

``-`` always names the stream; a file called ``-`` is ``./-``.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import stat
import sys
from collections.abc import Iterator
from typing import BinaryIO, TextIO

import numpy as np

from cli.audio_io import SignalInfo, _for_soundfile, audio_format_for, is_npy
from cli.errors import ClosedOutput, FileProblem, discard_further_output
from cli.raw import is_raw_path
from cli.writing import AtomicWriter, OutputSpec, spec_for_format

#: The command-line name of stdin (as an INPUT) and stdout (as the OUTPUT).
DASH = "-"
#: How messages name the streams, where they name a file's path.
STDIN = "<stdin>"
STDOUT = "<stdout>"

# The binary stdout captured by stdout_for_data_only while sys.stdout points at stderr.
_data_sinks: list[BinaryIO] = []


def stdin_is_terminal() -> bool:
    """True when nothing is piped or redirected into stdin (or there is no stdin at all)."""
    return sys.stdin is None or sys.stdin.isatty()


def binary_stream(stream: TextIO | BinaryIO) -> BinaryIO:
    """The bytes under a standard text stream: its ``buffer``, or the stream itself where it
    is binary already (click's ``get_binary_stream`` is deprecated, to go in Click 9).

    Example:
        >>> buffer = io.BytesIO()
        >>> binary_stream(io.TextIOWrapper(buffer)) is buffer, binary_stream(buffer) is buffer
        (True, True)
    """
    return getattr(stream, "buffer", stream)


def stdout_is_closed() -> bool:
    """True when the command started with stdout closed (``>&-``)."""
    return sys.stdout is None or isinstance(sys.stdout, ClosedOutput)


def stdout_is_terminal() -> bool:
    """True when stdout is a terminal, where binary data would only garble the screen."""
    return sys.stdout is None or sys.stdout.isatty()


def read_stdin() -> bytes:
    """All of stdin, as bytes (it can be read only once: keep the result).

    Raises:
        FileProblem: stdin cannot be read.
    """
    stream = binary_stream(sys.stdin)
    chunks = []
    try:
        # One read() takes it all, unless stdin is a non-blocking pipe: then it returns what
        # has arrived so far, or None, and the rest is still to come.
        while (chunk := stream.read()) != b"":
            if chunk is None:
                select.select([stream], [], [])
            else:
                chunks.append(chunk)
    except OSError as err:
        raise FileProblem(STDIN, f"cannot read ({err.strerror or err})") from err
    return b"".join(chunks)  # the one chunk itself when it came in one


def type_format(type: str) -> str | None:
    """The soundfile format ``--type`` names (None for npy).

    Raises:
        ValueError: no output format has that extension.

    Example:
        >>> type_format("flac"), type_format("npy"), type_format("aif")
        ('FLAC', None, 'AIFF')
    """
    try:
        return audio_format_for(f"{STDOUT}.{type}")
    except ValueError:
        raise ValueError(
            f"{type!r} is not an output format; use an output extension without its dot "
            "(wav, flac, ogg, aiff, caf, npy, ...)"
        ) from None


def input_format(source: str | os.PathLike | bytes, *, raw: bool = False) -> str | None:
    """The format of an input as its header tells it: a soundfile format, or None for .npy;
    ``""`` when it cannot be read (reading it fails later, with the reason, as a file error)
    or is a pipe (<(cmd)), whose header can be read only with the rest. RAW for headerless
    samples: a ``*.raw``/``*.pcm`` file, or any input when ``raw`` says so (stdin).

    Example:
        >>> input_format("sample_data/speech_mono16.wav"), input_format(b"\\x93NUMPY")
        ('WAV', None)
    """
    import soundfile as sf

    if raw or (not isinstance(source, bytes) and is_raw_path(source)):
        return "RAW"
    if isinstance(source, bytes):
        if is_npy(source):
            return None
        source = io.BytesIO(source)
    elif os.fspath(source).lower().endswith(".npy"):
        return None
    elif _is_pipe(source):
        return ""  # reading its header would consume it: known once it is read, whole
    try:
        if not isinstance(source, io.BytesIO):
            source = _for_soundfile(os.fspath(source))
        return sf.info(source).format
    # ValueError: a bad name; FileProblem: a long one that cannot be opened
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, FileProblem):
        return ""


def _is_pipe(path: str | os.PathLike) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def stdout_spec(
    info: SignalInfo,
    *,
    type: str | None = None,
    subtype: str | None = None,
    rate: float | None = None,
) -> OutputSpec:
    """How the result of ``info``'s input is written to stdout: in ``type``'s format, else in
    the input's own.

    Raises:
        FileProblem: the combination cannot be written.

    Example:
        >>> from cli.audio_io import probe
        >>> spec = stdout_spec(probe("sample_data/speech_mono16.wav"))
        >>> spec.format, spec.subtype, stdout_spec(probe("sample_data/sensor_gaps.npy")).kind
        ('WAV', 'PCM_16', 'npy')
    """
    if type is not None:
        try:
            fmt = type_format(type)
        except ValueError as err:
            raise FileProblem(STDOUT, str(err), exit_code=2) from err
    else:
        fmt = info.format if info.kind == "audio" else None
    return spec_for_format(fmt, STDOUT, info, subtype=subtype, rate=rate)


@contextlib.contextmanager
def stdout_for_data_only(active: bool = True) -> Iterator[None]:
    """While the block runs, results for ``-`` go to the real stdout and everything else
    that is printed (by us or by a library) to stderr: a stray message in a pipe would
    corrupt the data after it. Does nothing when ``active`` is false.
    """
    if not active:
        yield
        return
    _data_sinks.append(binary_stream(sys.stdout))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _data_sinks.pop()


def send(data: bytes | memoryview) -> None:
    """Write a complete result to stdout and flush it.

    Raises:
        FileProblem: the reader closed the pipe (``| head``) or stdout cannot be written.
    """
    sink = _data_sinks[-1] if _data_sinks else binary_stream(sys.stdout)
    try:
        _write_all(sink, data)
        sink.flush()
    except BrokenPipeError as err:
        discard_further_output(sink)
        raise FileProblem(STDOUT, "broken pipe: the reader closed it before the end") from err
    except OSError as err:
        raise FileProblem(STDOUT, f"write failed ({err.strerror or err})") from err


def _write_all(sink: BinaryIO, data: bytes | memoryview) -> None:
    """Write every byte of ``data``: with PYTHONUNBUFFERED stdout is a raw file, whose
    ``write`` may take only part of it (all that fitted before the reader left, leaving the
    rest unsent and unreported) or none (a full non-blocking pipe: None)."""
    view = memoryview(data).cast("B")
    while view:
        written = sink.write(view)
        if written is None:
            select.select([], [sink], [])
            continue
        view = view[written:]


class StdoutWriter(AtomicWriter):
    """:class:`~cli.writing.AtomicWriter` for stdout: the result is encoded in memory and
    sent in one piece when the block ends without an error (with one, nothing is sent).

    Shape:
        :meth:`write` takes ``(C, n)`` blocks (or ``(N, C, n)`` for .npy), in time order.

    Example:
        >>> import contextlib, io
        >>> from cli.audio_io import probe, read_signal
        >>> info = probe("sample_data/sensor_gaps.npy")
        >>> buffer = io.BytesIO()
        >>> text = io.TextIOWrapper(buffer)  # a stand-in for sys.stdout
        >>> with contextlib.redirect_stdout(text):
        ...     with StdoutWriter(stdout_spec(info), info.shape) as w:
        ...         w.write(read_signal(info))
        >>> buffer.getvalue()[:6] == b"\\x93NUMPY"
        True
    """

    def __init__(self, spec: OutputSpec, shape: tuple[int, ...]):
        super().__init__(STDOUT, spec, shape, overwrite=True, buffered=True)

    def __enter__(self) -> StdoutWriter:
        # No temporary file and no destination to check: only the in-memory encoder.
        try:
            self._open()
        except BaseException:
            self._discard()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._discard()
            return False
        # Audio was encoded into memory as it was written: send that buffer itself (a copy
        # would hold the whole output twice); .npy is encoded here, from its blocks.
        encoded = self._encoded
        try:
            self._check_complete()
            if encoded is None:
                encoded = io.BytesIO()
                self._close(commit=True, target=encoded)
            else:
                self._close()  # completes the header in `encoded`, copies nothing
        except BaseException:
            self._discard()
            raise
        send(encoded.getbuffer())
        return False


def write_stdout(data: np.ndarray, spec: OutputSpec) -> StdoutWriter:
    """Send a whole result to stdout; returns the writer for its clip counts.

    Shape:
        data ``(C, T)`` (audio or .npy) or ``(N, C, T)`` (.npy only).
    """
    with StdoutWriter(spec, data.shape) as writer:
        writer.write(data)
    return writer
