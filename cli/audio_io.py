"""Reading signals from audio files and .npy arrays, and what a file holds (``info``).

Audio goes through soundfile (every format libsndfile reads) and becomes ``(channels, T)``;
headerless (raw) samples as the command line's :class:`~cli.raw.RawFormat` says (they are
refused without one);
.npy arrays ``(T,)``, ``(C, T)`` or ``(N, C, T)`` are loaded without pickle and promoted to at
least ``(1, T)`` so that every signal has a channel axis. Every problem is raised as
:class:`~cli.errors.FileProblem` naming the file and the reason. Writing lives in
:mod:`cli.writing`.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import stat
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from cli import pcm
from cli.errors import FileProblem
from cli.extensions import EXTENSION_FORMATS, OUTPUT_EXTENSIONS
from cli.raw import SAMPLE_BYTES, RawFormat, is_raw_path

#: The first bytes of every .npy file (a stream has no extension to tell it by).
NPY_MAGIC = b"\x93NUMPY"

# Subtypes whose frames libsndfile seeks to exactly (FLAC's too); in the others it lands near.
_EXACT_SEEK_SUBTYPES = {
    "PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"
}  # fmt: skip
_TAIL_BLOCK_FRAMES = 1 << 16

# Subtypes computed in float64: those whose samples need more than float32's 24-bit mantissa
# to survive a round trip, and those of 20 and 24 bits, which float32 holds but whose filtered
# values it does not (its rounding is about one 24-bit step: 1 in 7 codes came out one off).
FLOAT64_SUBTYPES = {"PCM_24", "PCM_32", "ALAC_20", "ALAC_24", "ALAC_32", "DOUBLE"}


@dataclass
class SignalInfo:
    """What a file holds, read from its header only.

    ``shape`` is the array as the command layer sees it: ``(C, T)`` for audio, the .npy
    array's shape promoted to at least 2-D for .npy (``original_shape`` keeps the file's).
    """

    path: str
    kind: str  # "audio" or "npy"
    shape: tuple[int, ...]
    dtype: np.dtype  # the floating dtype samples are computed in
    rate: float | None = None
    format: str | None = None
    subtype: str | None = None
    endian: str | None = None
    original_shape: tuple[int, ...] | None = None  # .npy only: the array's shape in the file
    file_dtype: str | None = None  # .npy only: dtype stored in the file
    #: The whole file, for one read from a stream (stdin) rather than a path; ``path`` then
    #: only names it in messages ("<stdin>").
    buffer: bytes | None = field(default=None, repr=False)
    #: Text tags (title, artist, comment, date ...), written to audio outputs again.
    tags: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def frames(self) -> int:
        return self.shape[-1]

    @property
    def channels(self) -> int:
        return self.shape[-2]

    @property
    def samples(self) -> int:
        return int(np.prod(self.shape))

    @property
    def duration(self) -> float | None:
        return self.frames / self.rate if self.rate else None

    def describe(self) -> str:
        """One line for ``diffconv info``.

        Example:
            >>> SignalInfo("a.wav", "audio", (2, 48000), np.dtype("float32"), 48000,
            ...            "WAV", "PCM_24").describe()
            'a.wav: 48000 frames, 48000 Hz, 2 channels, WAV/PCM_24, 1.000 s'
        """
        if self.kind == "npy":
            return f"{self.path}: shape {self.original_shape}, {self.file_dtype}"
        frames = "frame" if self.frames == 1 else "frames"
        ch = "channel" if self.channels == 1 else "channels"
        rate = f"{self.rate:.15g} Hz"  # every digit: :g printed 1234567 Hz as 1.23457e+06
        kind = f"{self.format}/{self.subtype}"
        if self.format == "RAW" and SAMPLE_BYTES.get(self.subtype, 1) > 1:
            kind += f" {self.endian.lower()}-endian"  # the command line said so: no header
        return (
            f"{self.path}: {self.frames} {frames}, {rate}, {self.channels} {ch}, "
            f"{kind}, {self.duration:.3f} s"
        )


def probe(path: str | os.PathLike, raw: RawFormat | None = None) -> SignalInfo:
    """Read a file's header and check that it holds a usable signal.

    A ``*.raw``/``*.pcm`` file has no header: ``raw`` (complete) says how to read it.

    Raises:
        FileProblem: missing, empty, unreadable, corrupt, pickled, of an unsupported shape;
            headerless without a complete ``raw``, or not a whole number of its frames.

    Shape:
        ``SignalInfo.shape`` is ``(C, T)`` for audio and ``(1, T)``, ``(C, T)`` or
        ``(N, C, T)`` for .npy.

    Example:
        >>> probe("sample_data/speech_mono16.wav").shape
        (1, 32000)
    """
    path = os.fspath(path)
    mode = _check_readable(path)
    raw_file = is_raw_path(path)
    if raw_file and (raw is None or not raw.complete):
        # soundfile takes a .raw name for headerless PCM, which it cannot open without being
        # told the rate, channels and sample format ("samplerate must be specified").
        raise FileProblem(
            path,
            "headerless (raw) samples: no rate, channel count or sample format to read; "
            "convert it to WAV (sox -r RATE -e signed -b 16 -c 1 IN.raw OUT.wav) or .npy "
            "(as an INPUT of smooth, convolve or filter, or for info, give --rate and "
            "--raw-subtype)",
        )
    if stat.S_ISFIFO(mode):
        # A pipe with a path (<(cmd), a FIFO) has no size and can be read only once: read it
        # whole, as stdin is.
        return probe_bytes(_read_pipe(path), path, raw if raw_file else None)
    if raw_file:
        return _probe_raw(path, raw, os.stat(path).st_size)
    if Path(path).suffix.lower() == ".npy":
        return _probe_npy(path)
    return _probe_audio(path)


def probe_bytes(data: bytes, name: str, raw: RawFormat | None = None) -> SignalInfo:
    """:func:`probe` for a whole file held in memory (read from stdin), called ``name`` in
    messages. With ``raw`` (complete) the bytes are headerless samples in that format.
    Else a .npy array is told by its magic bytes and never unpickled; anything else goes to
    soundfile, which knows self-describing formats (WAV, FLAC, OGG, AIFF, CAF...) by their
    headers.

    Raises:
        FileProblem: empty, unreadable, corrupt, pickled, of an unsupported shape.

    Example:
        >>> data = open("sample_data/speech_mono16.wav", "rb").read()
        >>> info = probe_bytes(data, "<stdin>")
        >>> info.path, info.shape, info.subtype
        ('<stdin>', (1, 32000), 'PCM_16')
    """
    if not data:
        raise FileProblem(name, "stream is empty (nothing was piped in)")
    if raw is not None:
        info = _probe_raw(name, raw, len(data), io.BytesIO(data))
    elif is_npy(data):
        info = _probe_npy(name, io.BytesIO(data))
    else:
        info = _probe_audio(name, io.BytesIO(data))
    info.buffer = data
    return info


def is_npy(data: bytes) -> bool:
    """Whether ``data`` is a .npy file (by its magic bytes).

    Example:
        >>> is_npy(b"\\x93NUMPY\\x01\\x00..."), is_npy(b"RIFF....WAVE")
        (True, False)
    """
    return data.startswith(NPY_MAGIC)


def _source(info: SignalInfo) -> str | io.BytesIO:
    """What numpy opens for ``info``: its path, or its bytes as a new file (soundfile takes
    :func:`_for_soundfile`)."""
    return io.BytesIO(info.buffer) if info.buffer is not None else _not_stdin(info.path)


def _not_stdin(path: str) -> bytes:
    # libsndfile opens a path "-" as stdin; a file named "-" (given as ./-, which pathlib
    # shortens to -) is a file. Bytes, as the file system has them: soundfile encodes a str
    # path without surrogateescape, so a name that is not UTF-8 (b"bad\xff.wav", legal on
    # POSIX) raised UnicodeEncodeError.
    return os.fsencode(os.path.join(os.curdir, path) if path == "-" else path)


#: The longest path, in bytes, that libsndfile opens by name: its buffer holds 1,024 bytes
#: with the terminating NUL (a 1,024-byte path failed with "System error", longer ones with
#: "Supplied filename too long"), where Linux takes paths of up to 4,096.
LIBSNDFILE_PATH_MAX = 1023


def _for_soundfile(path: str) -> bytes | int:
    """``path`` as soundfile should open it: its name (:func:`_not_stdin`), or, past
    libsndfile's limit on names, a descriptor opened here, which soundfile closes with the
    file (and libsndfile at once when the open fails)."""
    name = _not_stdin(path)
    if len(name) <= LIBSNDFILE_PATH_MAX:
        return name
    try:
        return os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise FileProblem(path, f"cannot read ({err.strerror or err})") from err


def _check_readable(path: str) -> int:
    """``st_mode`` of an existing file that is not a directory, nor an empty regular file."""
    try:
        status = os.stat(path)  # one system call answers all three questions
    except FileNotFoundError:
        raise FileProblem(path, "no such file") from None
    except OSError as err:
        raise FileProblem(path, f"cannot read ({err.strerror or err})") from err
    if stat.S_ISDIR(status.st_mode):
        raise FileProblem(path, "is a directory, not a file")
    if status.st_size == 0 and stat.S_ISREG(status.st_mode):
        raise FileProblem(path, "file is empty")
    if stat.S_ISREG(status.st_mode):
        # libsndfile says only "System error" for a file it may not open: ask the system.
        # Regular files only: opening a FIFO would unblock its writer, which a close right
        # after would leave writing into no reader.
        try:
            os.close(os.open(path, os.O_RDONLY))
        except OSError as err:
            raise FileProblem(path, f"cannot read ({err.strerror or err})") from err
    return status.st_mode


def _read_pipe(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise FileProblem(path, f"cannot read ({err.strerror or err})") from err


def _probe_audio(path: str, source: str | io.BytesIO | None = None) -> SignalInfo:
    try:
        # One open for the header and the tags (sf.info would be a second).
        with sf.SoundFile(_for_soundfile(path) if source is None else source) as info:
            tags = _tags(info)
            cut = truncation(info.extra_info)
            last_frame = _last_frame_problem(info)
    except (sf.SoundFileError, RuntimeError) as err:
        raise FileProblem(path, f"not a readable sound file ({_libsndfile_reason(err)})") from err
    if last_frame is not None:
        raise FileProblem(
            path,
            f"truncated or corrupt: its header declares {info.frames:,} frames, the last of "
            f"which cannot be read ({last_frame})",
        )
    if cut is not None:
        declared, held = cut
        raise FileProblem(
            path,
            f"truncated: its header declares {declared:,} bytes of samples, the file holds "
            f"{held:,} (the end is missing)",
        )
    if info.frames <= 0:
        raise FileProblem(path, "sound file holds no samples")
    dtype = np.dtype("float64" if info.subtype in FLOAT64_SUBTYPES else "float32")
    return SignalInfo(
        path=path,
        kind="audio",
        shape=(info.channels, info.frames),
        dtype=dtype,
        rate=float(info.samplerate),
        format=info.format,
        subtype=info.subtype,
        endian=info.endian,
        tags=tags,
    )


#: Compressed formats whose header states the frame count while the frames themselves may be
#: missing (a cut-off download): FLAC's STREAMINFO, an MP3's Xing header. Ogg has no such
#: count (libsndfile reads it from the last page there is), and uncompressed formats are
#: checked against their sample chunk's size (truncation()).
_COUNTED_COMPRESSED = ("FLAC", "MP3")


def _last_frame_problem(f: sf.SoundFile) -> str | None:
    """Why the last frame ``f``'s header declares cannot be read, or None where it can (or
    the format is not one of ``_COUNTED_COMPRESSED``): a FLAC cut in half still says all
    its frames are there, and only reading them found out (``smooth`` failed with "lost
    sync" where ``info`` had described the file as whole). Leaves ``f`` at the end: the
    probe closes it next."""
    if f.format not in _COUNTED_COMPRESSED or f.frames <= 0 or not f.seekable():
        return None
    try:
        f.seek(f.frames - 1)
        if len(f.read(1)) == 1:
            return None
        return "the file ends before it"
    except (sf.SoundFileError, RuntimeError) as err:
        return _libsndfile_reason(err).rstrip(".")


# libsndfile's log of the header it read, where a sample chunk's declared size exceeds what
# the file holds: "data : 6000 (should be 2978)" (WAV), " SSND : 4008 (should be 1954)"
# (AIFF), "  Data Size   : 4000 (should be 1976)" (AU). It then reads what is there, and
# the rest of the recording was silently missing from the output.
_SHORT_SAMPLE_CHUNK = re.compile(
    r"^\s*(?:data|SSND|Data Size)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M
)

# A writer that could not seek back (to a pipe) leaves a placeholder for the size it did not
# know yet: 0xFFFFFFFF, 0x7FFFFFFF, sox's 0x7FFFF000. Sizes this large are taken as unknown,
# not as a promise the file broke.
_UNKNOWN_SIZE_FROM = 0x7FF00000


def truncation(log: str) -> tuple[int, int] | None:
    """The sample bytes a sound file's header declares and those it holds, where it holds
    fewer (the file was cut short: an interrupted copy, download or recording), from
    libsndfile's log of its header (``SoundFile.extra_info``); else None.

    Example:
        >>> truncation("RIFF : 6036 (should be 3014)\\nWAVE\\ndata : 6000 (should be 2978)\\n")
        (6000, 2978)
        >>> truncation("data : 4294967295 (should be 4000)\\n") is None  # streamed: size unknown
        True
    """
    match = _SHORT_SAMPLE_CHUNK.search(log)
    if match is None:
        return None
    declared, held = int(match[1]), int(match[2])
    return (declared, held) if held < declared < _UNKNOWN_SIZE_FROM else None


def _tags(f: sf.SoundFile) -> dict[str, str]:
    """The file's text tags, as sox and ffmpeg carry them over ({} where they cannot be
    read: they are never a reason to fail a file)."""
    try:
        return f.copy_metadata()
    except Exception:  # noqa: BLE001  (optional: libsndfile and cffi raise several types)
        return {}


def _probe_raw(
    path: str, raw: RawFormat, size: int, source: io.BytesIO | None = None
) -> SignalInfo:
    """A headerless file of ``size`` bytes, read as ``raw`` says (every frame whole)."""
    frame = raw.frame_bytes
    if size % frame:
        channels = raw.channels or 1
        raise FileProblem(
            path,
            f"headerless (raw) samples: {size} bytes is not a whole number of {frame}-byte "
            f"frames ({channels} channel{'' if channels == 1 else 's'} of {raw.subtype}); "
            "check --raw-subtype and --channels",
        )
    args = raw.soundfile_args()
    try:
        with sf.SoundFile(_for_soundfile(path) if source is None else source, **args) as f:
            frames = f.frames
    except (sf.SoundFileError, RuntimeError, ValueError) as err:
        raise FileProblem(path, f"cannot read raw samples ({_libsndfile_reason(err)})") from err
    if frames <= 0:
        raise FileProblem(path, "sound file holds no samples")
    return SignalInfo(
        path=path,
        kind="audio",
        shape=(args["channels"], frames),
        dtype=np.dtype("float64" if raw.subtype in FLOAT64_SUBTYPES else "float32"),
        rate=float(raw.rate),
        format="RAW",
        subtype=raw.subtype,
        endian=args["endian"],
    )


def _open_sound(info: SignalInfo) -> sf.SoundFile:
    """The probed audio file, open for reading (a headerless one as it was probed)."""
    source = io.BytesIO(info.buffer) if info.buffer is not None else _for_soundfile(info.path)
    if info.format != "RAW":
        return sf.SoundFile(source)
    raw = RawFormat(info.rate, info.subtype, info.channels, endian=info.endian.lower())
    return sf.SoundFile(source, **raw.soundfile_args())


def _libsndfile_reason(err: Exception) -> str:
    # soundfile says "Error opening 'x': Format not recognised."; keep only the reason.
    text = str(err)
    return text.split(": ", 1)[1].rstrip(".") if ": " in text else text


def _probe_npy(path: str, source: io.BytesIO | None = None) -> SignalInfo:
    try:
        with open(path, "rb") if source is None else source as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # 3.0 only adds unicode field names: structured arrays, refused anyway
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
            data_offset = f.tell()
            size = os.fstat(f.fileno()).st_size if source is None else len(source.getbuffer())
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as err:
        # numpy parses the header dict as Python source: an unterminated one raised
        # tokenize.TokenError, which escaped as a traceback and stopped a whole batch.
        reason = err.args[0] if isinstance(err, tokenize.TokenError) and err.args else err
        raise FileProblem(path, f"not a valid .npy file ({reason})") from err
    if dtype.hasobject:
        raise FileProblem(path, "holds Python objects (pickled data), which are never loaded")
    if dtype.kind not in "biuf":
        raise FileProblem(path, f"dtype {dtype} is not a real number type")
    if not 1 <= len(shape) <= 3:
        raise FileProblem(
            path, f"array of shape {shape} ({len(shape)}-D); expected (T,), (C, T) or (N, C, T)"
        )
    if any(isinstance(n, bool) or not isinstance(n, int) for n in shape):
        # (True,) passed as a length here, then np.load raised TypeError: a traceback.
        raise FileProblem(path, f"corrupt .npy header: shape {shape} is not made of integers")
    if any(n < 0 for n in shape):  # numpy's np.load refuses these
        raise FileProblem(path, f"corrupt .npy header: shape {shape} has a negative dimension")
    if 0 in shape:
        raise FileProblem(path, f"array of shape {shape} holds no samples")
    expected = math.prod(shape) * dtype.itemsize
    if size - data_offset < expected:
        # Read only when its block is reached, a short file failed late, or as the output's
        # error ("No space left" for a header claiming 8 TB); info listed it as sound.
        raise FileProblem(
            path,
            f"truncated .npy: its header promises {expected:,} bytes of samples, the file "
            f"holds {max(0, size - data_offset):,}",
        )
    # Always native float32 or float64: torch takes neither big-endian arrays ('>f4', as
    # some instruments write) nor long doubles, and a file's byte order is no output choice.
    wide = dtype.itemsize >= 8 if dtype.kind == "f" else dtype.itemsize >= 4
    # int32/int64 values need float64 to stay exact.
    compute = np.dtype("float64" if wide and dtype.kind in "fiu" else "float32")
    return SignalInfo(
        path=path,
        kind="npy",
        shape=tuple(shape) if len(shape) > 1 else (1, shape[0]),
        dtype=np.dtype(compute),
        original_shape=tuple(shape),
        file_dtype=str(dtype),
    )


def read_signal(info: SignalInfo) -> np.ndarray:
    """Load the samples of a probed file, in ``info.dtype``.

    Shape:
        returns ``info.shape``: ``(C, T)`` (or ``(N, C, T)`` for a 3-D .npy).

    Example:
        >>> x = read_signal(probe("sample_data/music_stereo24.wav"))
        >>> x.shape, x.dtype
        ((2, 96000), dtype('float64'))
    """
    if info.kind == "npy":
        try:
            array = np.load(_source(info), allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise FileProblem(info.path, f"cannot read .npy data ({err})") from err
        return np.ascontiguousarray(array, dtype=info.dtype).reshape(info.shape)
    try:
        with _open_sound(info) as f:
            # The frames the header declares, not "to the end": libsndfile reads GSM 6.10,
            # G.72x and other files it cannot seek in only by a count (ValueError otherwise).
            data = _read_frames(f, info, info.frames)
    except (sf.SoundFileError, RuntimeError, ValueError) as err:
        raise _read_failure(info, err) from err
    if data.shape[-1] < info.frames:
        raise _ended_early(info, data.shape[-1])
    return data


def _read_failure(info: SignalInfo, err: Exception) -> FileProblem:
    # libsndfile says "System error" for a file removed after the batch probed it.
    if info.buffer is None and not os.path.lexists(info.path):
        return FileProblem(info.path, "no such file (removed since it was checked)")
    return FileProblem(info.path, f"cannot read audio ({_libsndfile_reason(err)})")


def _ended_early(info: SignalInfo, frames_read: int) -> FileProblem:
    # A damaged Ogg decodes fewer frames than its header counts, and a file may be cut short
    # after the batch checked it: the frames read would have been written as the result.
    return FileProblem(
        info.path,
        f"damaged or cut short: its header declares {info.frames:,} frames, decoding ended "
        f"after {frames_read:,}",
    )


def _read_frames(f: sf.SoundFile, info: SignalInfo, frames: int) -> np.ndarray:
    # soundfile gives (frames, channels); the command layer works on (channels, frames).
    # Integer PCM is read as its codes and scaled here: the same floats, several times faster.
    codes = pcm.integer_dtype(info.subtype)
    if codes is not None:
        return pcm.decode(f.read(frames, dtype=codes.name, always_2d=True), info.dtype)
    return np.ascontiguousarray(f.read(frames, dtype=info.dtype.name, always_2d=True).T)


def read_blocks(info: SignalInfo, block_frames: int) -> Iterator[np.ndarray]:
    """Yield a file's samples block by block along time, so memory stays bounded (.npy
    files are memory-mapped, never loaded whole; a file read from stdin is in memory anyway).

    Shape:
        yields ``(C, n)`` arrays (``(N, C, n)`` for a 3-D .npy) with ``n <= block_frames``;
        together they hold the file.

    Example:
        >>> blocks = list(read_blocks(probe("sample_data/sensor_gaps.npy"), 1500))
        >>> [b.shape for b in blocks]
        [(1, 1500), (1, 1500), (1, 1000)]
    """
    if info.kind == "npy":
        array = _npy_map(info)
        for start in range(0, info.frames, block_frames):
            # A copy: a view would pin the mapping and is read-only.
            yield np.array(array[..., start : start + block_frames], dtype=info.dtype, order="C")
        return
    try:
        with _open_sound(info) as f:
            done = 0
            while done < info.frames:
                block = _read_frames(f, info, min(block_frames, info.frames - done))
                if block.shape[-1] == 0:
                    raise _ended_early(info, done)
                done += block.shape[-1]
                yield block
    except (sf.SoundFileError, RuntimeError, ValueError) as err:
        raise _read_failure(info, err) from err


def _npy_map(info: SignalInfo) -> np.ndarray:
    try:
        if info.buffer is not None:  # already in memory: nothing to map
            array = np.load(_source(info), allow_pickle=False)
        else:
            array = np.load(info.path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise FileProblem(info.path, f"cannot read .npy data ({err})") from err
    return array.reshape(info.shape)


def audio_format_for(path: str | os.PathLike) -> str | None:
    """The soundfile format an output path's extension asks for (None for .npy).

    Raises:
        ValueError: the extension names no known format.

    Example:
        >>> audio_format_for("out.aif"), audio_format_for("x.npy")
        ('AIFF', None)
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        return None
    fmt = EXTENSION_FORMATS.get(suffix) or (suffix[1:].upper() if suffix else "")
    if fmt == "SD2":
        # libsndfile keeps Sound Designer II's header in a resource fork beside a named file;
        # written through a file object, the result could not be read back (not even here).
        raise ValueError(
            f"cannot write Sound Designer II ({os.fspath(path)!r}): its header lives in a "
            "resource fork, which is not written here; use .aiff or .wav"
        )
    if fmt not in _available_formats():
        known = ", ".join(sorted(OUTPUT_EXTENSIONS))
        raise ValueError(
            f"cannot tell the output format from the extension {suffix or '(none)'!r} of "
            f"{os.fspath(path)!r}; use one of {known}"
        )
    return fmt


@functools.cache
def _available_formats() -> frozenset[str]:
    # soundfile enumerates libsndfile's formats on every call; once per process is enough.
    return frozenset(sf.available_formats())


def read_tail(info: SignalInfo, frames: int) -> np.ndarray:
    """The last ``frames`` frames of a file (circular padding needs the end first).

    Shape:
        returns ``(C, min(frames, T))`` (``(N, C, ...)`` for a 3-D .npy).

    Example:
        >>> read_tail(probe("sample_data/music_stereo24.wav"), 5).shape
        (2, 5)
    """
    frames = min(frames, info.frames)
    if frames == 0:
        return np.zeros((*info.shape[:-1], 0), info.dtype)
    if info.kind == "npy":
        return np.array(_npy_map(info)[..., info.frames - frames :], dtype=info.dtype, order="C")
    try:
        with _open_sound(info) as f:
            if info.subtype in _EXACT_SEEK_SUBTYPES or info.format == "FLAC":
                f.seek(info.frames - frames)
                return _read_frames(f, info, frames)
            # libsndfile's seek in Vorbis, Opus and MP3 lands near the frame asked for, not
            # on it (a circular convolution then found its tail differing from the signal's
            # end and failed): decode the whole file in order, keeping only its end.
            tail = np.zeros((info.shape[0], 0), info.dtype)
            while (block := _read_frames(f, info, _TAIL_BLOCK_FRAMES)).shape[-1]:
                tail = np.concatenate([tail, block], axis=-1)[:, -frames:]
            return np.ascontiguousarray(tail)
    except (sf.SoundFileError, RuntimeError, ValueError) as err:
        raise _read_failure(info, err) from err
