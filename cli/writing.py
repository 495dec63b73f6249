"""Writing results: the output's format, and atomic writes through a temporary file.

Nothing is ever written at the destination itself: samples go to a hidden temporary file in
the destination's directory (same file system, so the final ``os.replace`` is atomic), which
replaces the destination only once complete. A crash or Ctrl-C leaves the old file (or none).
Integer PCM cannot hold values outside [-1, 1]: they are clipped (never wrapped) and counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from cli import aiff_frames, interrupts, pcm
from cli.audio_io import SignalInfo, _libsndfile_reason, audio_format_for
from cli.errors import FileProblem
from cli.raw import SAMPLE_BYTES, libsndfile_rate

# Subtypes that store floats; every other subtype is a fixed range (integer PCM, codecs).
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}


@dataclass
class OutputSpec:
    """How a result is stored: an audio format/subtype/rate, or a .npy dtype and shape."""

    kind: str  # "audio" or "npy"
    format: str | None = None
    subtype: str | None = None
    endian: str | None = None
    rate: float | None = None
    dtype: np.dtype | None = None
    squeeze_channel: bool = False  # .npy (T,) input written back as (T,)
    tags: dict[str, str] | None = None  # the input's text tags, where the format holds them

    @property
    def clips(self) -> bool:
        return self.kind == "audio" and self.subtype not in _FLOAT_SUBTYPES


def output_spec(
    dest: str | os.PathLike,
    info: SignalInfo,
    *,
    subtype: str | None = None,
    rate: float | None = None,
) -> OutputSpec:
    """Decide how ``dest`` is written from the input's properties and the user's options.

    The input's format, subtype, endianness and rate are kept unless the destination's
    extension names another format (then the input's subtype is kept where that format
    allows it, else the finest subtype below it that the format has) or ``subtype`` is
    given (a headerless input written headerless keeps its byte order even then). Arrays
    from .npy become FLOAT audio where possible (24-bit FLAC, for instance).

    Raises:
        FileProblem: the combination cannot be written (exit code 2 for option problems).

    Example:
        >>> from cli.audio_io import probe
        >>> spec = output_spec("out.flac", probe("sample_data/music_stereo24.wav"))
        >>> spec.format, spec.subtype, spec.rate
        ('FLAC', 'PCM_24', 48000.0)
    """
    try:
        fmt = audio_format_for(dest)
    except ValueError as err:
        raise FileProblem(dest, str(err), exit_code=2) from err
    return spec_for_format(fmt, dest, info, subtype=subtype, rate=rate)


def spec_for_format(
    fmt: str | None,
    dest: str | os.PathLike,
    info: SignalInfo,
    *,
    subtype: str | None = None,
    rate: float | None = None,
) -> OutputSpec:
    """:func:`output_spec` with the format already chosen (a soundfile format, or None for
    .npy): for an output whose name tells none, such as stdout. ``dest`` names it in errors.

    Example:
        >>> from cli.audio_io import probe
        >>> spec_for_format("WAV", "<stdout>", probe("sample_data/music_stereo24.wav")).subtype
        'PCM_24'
    """
    if fmt is None:
        return OutputSpec(
            kind="npy",
            dtype=info.dtype,
            squeeze_channel=info.kind == "npy" and len(info.original_shape or ()) == 1,
        )
    if len(info.shape) != 2:
        raise FileProblem(
            info.path,
            f"a {len(info.shape)}-D array {info.shape} cannot be written as audio; "
            "write .npy instead",
        )
    out_rate = info.rate if info.rate else rate
    if not out_rate and fmt != "RAW":  # a headerless output stores no rate
        raise FileProblem(info.path, "writing audio from .npy needs --rate", exit_code=2)
    endian = None
    if subtype is not None:
        chosen = subtype.upper()
        if fmt == info.format == "RAW":
            endian = info.endian  # headerless: the bytes stay in the order they came in
    elif info.kind == "audio" and _carries_over(info.subtype, info.format, fmt):
        chosen = info.subtype
        endian = info.endian if fmt == info.format else None
    else:
        chosen = _closest_subtype(fmt, info.subtype if info.kind == "audio" else "FLOAT")
    if fmt == "WAV" and info.kind == "audio" and info.format in _WAV_FAMILY:
        # A .wav name is all that the other RIFF containers get too: an RF64, Wave64 or
        # extensible input written to .wav stays what it was.
        fmt = info.format
        endian = info.endian if subtype is None else endian
    if not sf.check_format(fmt, chosen):
        valid = ", ".join(sorted(sf.available_subtypes(fmt)))
        raise FileProblem(
            dest, f"subtype {chosen!r} is not valid for {fmt}; use one of {valid}", exit_code=2
        )
    return OutputSpec(
        kind="audio", format=fmt, subtype=chosen, endian=endian, rate=out_rate, tags=info.tags
    )


# From the finest to the coarsest: where the output format cannot keep the input's subtype,
# the next one down that it can (float or 32-bit audio into FLAC becomes 24-bit, as sox
# makes it, not the format's default 16 bits).
_PRECISION_LADDER = ("DOUBLE", "FLOAT", "PCM_32", "PCM_24", "PCM_16")
# Where a lossless codec's samples enter the ladder: the PCM that holds all of their bits.
_LADDER_ENTRY = {"ALAC_16": "PCM_16", "ALAC_20": "PCM_24", "ALAC_24": "PCM_24", "ALAC_32": "PCM_32"}
# Lossy codecs: kept only within their own format. sf.check_format says WAV can hold MPEG
# Layer III, but libsndfile cannot encode it there ("unsupported encoding"); their decoded
# samples enter the ladder as 16-bit, as a decoder's output usually is.
_LOSSY_CODECS = ("VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III")
_LADDER_ENTRY.update(dict.fromkeys(_LOSSY_CODECS, "PCM_16"))

# The RIFF containers that all go by .wav: plain, extensible (channel masks), and the two
# whose sizes are 64-bit (EBU RF64 and Sony Wave64).
_WAV_FAMILY = ("WAV", "WAVEX", "RF64", "W64")

# The data a 32-bit RIFF or AIFF size field can describe, less room for the header chunks.
# libsndfile writes a longer file anyway, with a header that hides what lies past 4 GiB.
_SIZE_FIELD_LIMIT = 2**32 - 2**16
_32_BIT_SIZES = ("WAV", "WAVEX", "AIFF", "AU")
_64_BIT_SIZES = ((".rf64", "RF64"), (".w64", "W64"), (".caf", "CAF"), (".flac", "FLAC"))
# Bits a sample of the compressed subtypes (GSM 6.10: 33 bytes a 160-sample frame).
_CODEC_BITS = {"IMA_ADPCM": 4, "MS_ADPCM": 4, "G721_32": 4, "G723_24": 3, "G723_40": 5,
               "VOX_ADPCM": 4, "GSM610": 2}  # fmt: skip

# The most frames handed to libsndfile in one call: its Vorbis encoder takes stack space in
# proportion (a 3-million-frame write overflowed it, SIGSEGV, the whole batch lost).
ENCODER_FRAMES = 1 << 16

# libvorbis crashes the process (SIGSEGV) beyond these rather than refusing them.
VORBIS_MAX_RATE = 200_000
VORBIS_MAX_CHANNELS = 255


def _header_rate(spec: OutputSpec) -> int:
    """The whole rate libsndfile is given for ``spec``: a headerless (RAW) file stores none,
    so any positive rate does (libsndfile refuses 0, which a rate below 0.5 Hz rounds to).

    Example:
        >>> _header_rate(OutputSpec("audio", "RAW", "PCM_16", rate=0.4))
        1
        >>> _header_rate(OutputSpec("audio", "WAV", "PCM_16", rate=44100.4))
        44100
    """
    if spec.format == "RAW":
        return libsndfile_rate(spec.rate)  # None: a signal without a rate, written headerless
    return int(round(spec.rate))


def _carries_over(subtype: str | None, from_fmt: str | None, to_fmt: str) -> bool:
    """Whether an output in ``to_fmt`` keeps the input's ``subtype`` (from ``from_fmt``).

    Example:
        >>> _carries_over("PCM_24", "WAV", "FLAC"), _carries_over("MPEG_LAYER_III", "MP3", "WAV")
        (True, False)
    """
    if subtype in _LOSSY_CODECS and from_fmt != to_fmt:
        return False
    return sf.check_format(to_fmt, subtype)


def _closest_subtype(fmt: str, wanted: str | None) -> str:
    """The subtype of ``fmt`` nearest below ``wanted`` in precision, else ``fmt``'s default.

    Example:
        >>> _closest_subtype("FLAC", "DOUBLE"), _closest_subtype("OGG", "FLOAT")
        ('PCM_24', 'VORBIS')
        >>> _closest_subtype("WAV", "ALAC_20"), _closest_subtype("RAW", "VORBIS")
        ('PCM_24', 'PCM_16')
    """
    wanted = _LADDER_ENTRY.get(wanted, wanted)
    if wanted in _PRECISION_LADDER:
        for candidate in _PRECISION_LADDER[_PRECISION_LADDER.index(wanted) :]:
            if sf.check_format(fmt, candidate):
                return candidate
    # RAW has no default subtype (None); 16-bit is the usual headerless sample.
    return sf.default_subtype(fmt) or "PCM_16"


def sized_container(spec: OutputSpec, shape: tuple[int, ...], dest) -> OutputSpec:
    """``spec`` for an audio output of ``shape`` ``(C, T)``: plain WAV becomes RF64 where its
    32-bit sizes cannot describe the data (the EBU convention for long .wav files), and what
    the format cannot hold, or what would crash libvorbis, is refused.

    Raises:
        FileProblem: the output cannot be written in ``spec``'s format.

    Example:
        >>> spec = OutputSpec("audio", "WAV", "DOUBLE", rate=48000.0)
        >>> sized_container(spec, (1, 600_000_000), "long.wav").format
        'RF64'
        >>> sized_container(spec, (1, 48_000), "short.wav").format
        'WAV'
    """
    channels, frames = shape[-2], shape[-1]
    if spec.format == "OGG" and spec.subtype == "VORBIS":
        if channels > VORBIS_MAX_CHANNELS or (spec.rate or 0) > VORBIS_MAX_RATE:
            raise FileProblem(
                dest,
                f"Ogg Vorbis holds at most {VORBIS_MAX_CHANNELS} channels at up to "
                f"{VORBIS_MAX_RATE} Hz; this is {channels} channel"
                f"{'' if channels == 1 else 's'} at {spec.rate or 0:.15g} Hz",
            )
    if spec.subtype in SAMPLE_BYTES:
        bits = 8 * SAMPLE_BYTES[spec.subtype]
    else:
        bits = _CODEC_BITS.get(spec.subtype, 8)  # others: a byte a sample at most
    data_bytes = frames * channels * bits // 8
    if spec.format not in _32_BIT_SIZES or data_bytes <= _SIZE_FIELD_LIMIT:
        return spec
    if spec.format in ("WAV", "WAVEX") and sf.check_format("RF64", spec.subtype):
        return dataclasses.replace(spec, format="RF64")
    roomy = [ext for ext, fmt in _64_BIT_SIZES if sf.check_format(fmt, spec.subtype)]
    instead = " or ".join(roomy) if roomy else ".flac or .w64 with another --subtype"
    raise FileProblem(
        dest,
        f"{data_bytes / 2**30:.1f} GiB of {spec.subtype} is more than {spec.format}'s 4 GiB "
        f"size fields can describe; write {instead} instead",
    )


class AtomicWriter:
    """Write a result block by block into a temporary file, then rename it into place.

    Use as a context manager; on any exception (or Ctrl-C) the temporary file is removed and
    the destination is left untouched. Directories the writer created for the output are
    removed again if they are still empty (never one that was there before, nor one that
    holds anything, such as another output of the same run).

    Args:
        dest: final path.
        spec: from :func:`output_spec`.
        shape: the full output shape ``(C, T)`` or ``(N, C, T)`` (.npy needs it up front;
            audio uses the channel count).
        overwrite: replace an existing destination.
        buffered: encode in memory and write the file in one go when done (for results that
            fit in memory: no per-block I/O). Unbuffered writes stream to the file. Neither
            waits for the disk (no fsync or msync), as sox does not: the rename makes the
            output appear whole; a power cut may still lose what the kernel had not written.

    Shape:
        :meth:`write` takes ``(C, n)`` blocks (or ``(N, C, n)`` for .npy), in time order.

    Example:
        >>> import tempfile, os
        >>> from cli.audio_io import probe, read_signal
        >>> info = probe("sample_data/speech_mono16.wav")
        >>> dest = os.path.join(tempfile.mkdtemp(), "copy.wav")
        >>> with AtomicWriter(dest, output_spec(dest, info), info.shape) as w:
        ...     w.write(read_signal(info) * 2.0)
        >>> w.clipped > 0, sf.info(dest).subtype
        (True, 'PCM_16')
    """

    def __init__(
        self,
        dest: str | os.PathLike,
        spec: OutputSpec,
        shape: tuple[int, ...],
        *,
        overwrite: bool = False,
        buffered: bool = False,
    ):
        self.dest = Path(dest)
        self._target = self.dest  # where the bytes go: the file a symlink at dest names
        self.buffered = buffered
        self.spec = spec
        self.shape = tuple(shape)
        self.overwrite = overwrite
        self.clipped = 0
        self.nonfinite = 0
        self._offset = 0
        self._tmp: str | None = None
        self._fd: int | None = None
        self._replaced: os.stat_result | None = None  # the file the output replaces
        self._made_dirs: list[str] = []  # directories this writer created, deepest first
        self._sound: sf.SoundFile | None = None
        self._array: np.memmap | None = None
        self._encoded: io.BytesIO | None = None
        self._stream_file: _KeepsWriteErrors | None = None
        self._blocks: list[np.ndarray] | None = None

    def __enter__(self) -> AtomicWriter:
        dest = self.dest
        try:
            self._target = _through_symlink(dest)
            self._replaced = _existing_status(self._target)
        except OSError as err:  # a symlink loop, a path through a file ...
            raise FileProblem(dest, f"cannot write there ({err.strerror or err})") from err
        if self._replaced is not None and stat.S_ISDIR(self._replaced.st_mode):
            raise FileProblem(dest, "output is a directory")
        _refuse_special(dest, self._replaced)
        if self._replaced is not None and not self.overwrite:
            raise FileProblem(dest, "output exists; use --overwrite to replace it")
        try:
            # A Ctrl-C raised inside mkstemp, after it made the file but before it returned
            # the name, would leave the file behind: hold it until the name is kept here.
            with interrupts.deferred():
                fd, self._tmp = _temporary_beside(self._target, self._made_dirs)
                if self.spec.kind == "npy" and not self.buffered:
                    os.close(fd)  # numpy's memmap opens the file by name
                else:
                    self._fd = fd  # everything else is written through this descriptor
        except OSError as err:
            self._remove_made_dirs()
            raise FileProblem(dest, f"cannot create output ({err.strerror or err})") from err
        except BaseException:  # the held Ctrl-C or SIGTERM, raised as the block ended
            self._discard()
            raise
        try:
            self._open()
        except BaseException:
            self._discard()
            raise
        return self

    def _open(self) -> None:
        spec = self.spec
        try:
            if spec.kind == "npy" and self.buffered:
                self._blocks = []
            elif spec.kind == "npy":
                self._array = np.lib.format.open_memmap(
                    self._tmp, mode="w+", dtype=spec.dtype, shape=self._npy_shape()
                )
                _reserve(self._tmp)
            else:
                self.spec = spec = sized_container(spec, self.shape, self.dest)
                if self.buffered:
                    self._encoded = io.BytesIO()
                else:
                    # A Python file rather than a path or descriptor: libsndfile then calls
                    # fsync on nothing at close (on a real file it does, and on 2 cores that
                    # wait for the disk was 90 ms of a 10-minute file's 1.5 s; batch outputs
                    # are not synced either, nor are sox's).
                    fd, self._fd = self._fd, None
                    self._stream_file = _KeepsWriteErrors(os.fdopen(fd, "w+b"))
                with interrupts.deferred():  # libsndfile calls back into Python
                    self._sound = sf.SoundFile(
                        self._encoded if self.buffered else self._stream_file,
                        "w",
                        samplerate=_header_rate(spec),
                        channels=self.shape[-2],
                        format=spec.format,
                        subtype=spec.subtype,
                        endian=spec.endian,
                    )
                    for key, value in (spec.tags or {}).items():
                        # Before any samples (WAV writes its tags with the header); a format
                        # without a place for a tag just goes without it.
                        with contextlib.suppress(RuntimeError, ValueError, sf.SoundFileError):
                            setattr(self._sound, key, value)
        except (sf.SoundFileError, RuntimeError, OSError, ValueError, OverflowError) as err:
            raise FileProblem(self.dest, self._open_failure(err)) from err

    def _open_failure(self, err: Exception) -> str:
        # libsndfile names the file it was given, here a buffer ("Error opening <_io.BytesIO
        # object at 0x...>: Format not recognised."): keep its reason and say what was asked
        # for, since "not recognised" usually means too many channels or a rate it refuses.
        spec = self.spec
        if spec.kind == "npy":
            return f"cannot write npy: {err}"
        reason = _libsndfile_reason(err) if isinstance(err, sf.SoundFileError) else str(err)
        channels = self.shape[-2]
        return (
            f"cannot write {spec.format}/{spec.subtype} with {channels} "
            f"channel{'' if channels == 1 else 's'} at {spec.rate or 0:.15g} Hz ({reason})"
        )

    def _npy_shape(self) -> tuple[int, ...]:
        return self.shape[1:] if self.spec.squeeze_channel else self.shape

    def write(self, block: np.ndarray) -> None:
        """Append ``block`` (time last) to the output."""
        n = block.shape[-1]
        try:
            if self._blocks is not None:
                self._blocks.append(block)
            elif self._array is not None:
                target = self._array[..., self._offset : self._offset + n]
                target[...] = block.reshape(target.shape)
            else:
                samples = self._samples_for_soundfile(block)
                try:
                    with interrupts.deferred():  # libsndfile calls back into Python
                        for start in range(0, len(samples), ENCODER_FRAMES):
                            self._sound.write(samples[start : start + ENCODER_FRAMES])
                except AssertionError:
                    # soundfile asserts that every frame was written; a short write is
                    # the file's error (a full disk), kept by _KeepsWriteErrors.
                    self._raise_write_error()
                    raise
                self._raise_write_error()
        except (sf.SoundFileError, RuntimeError, OSError, ValueError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else err
            raise FileProblem(self.dest, f"write failed ({reason})") from err
        self._offset += n

    def _raise_write_error(self) -> None:
        if self._stream_file is not None and self._stream_file.error is not None:
            raise self._stream_file.error

    def _samples_for_soundfile(self, block: np.ndarray) -> np.ndarray:
        # (C, n) floats -> (n, C) as soundfile takes them: integer codes for integer PCM
        # (converted here: faster than libsndfile, and rounded rather than floored), other
        # fixed-range subtypes limited to full scale, float subtypes as they are.
        if pcm.integer_dtype(self.spec.subtype) is not None:
            encoded = pcm.encode(block, self.spec.subtype)
            block, clipped, nonfinite = encoded.codes.T, encoded.clipped, encoded.nonfinite
        elif self.spec.clips:
            block, clipped, nonfinite = pcm.limit_to_full_scale(block)
        else:
            clipped = nonfinite = 0
        self.clipped += clipped
        self.nonfinite += nonfinite
        return np.ascontiguousarray(block.T)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._discard()
            return False
        try:
            self._check_complete()
            self._close(commit=True)
            _move_into_place(self._tmp, self._target, self._replaced, self.overwrite)
        except FileExistsError as err:
            self._discard()
            raise FileProblem(self.dest, _APPEARED) from err
        except OSError as err:
            self._discard()
            raise FileProblem(self.dest, f"cannot finish writing ({err.strerror or err})") from err
        except BaseException:
            self._discard()
            raise
        return False

    def _check_complete(self) -> None:
        """Refuse a .npy that received fewer frames than its shape says: its header and
        memory map are sized up front, so the frames never written would be committed as
        zeros (a damaged Ogg decodes fewer frames than its header counts). Audio headers are
        written at close with the frames actually written, so they need no check."""
        expected = self.shape[-1]
        if self.spec.kind == "npy" and self._offset != expected:
            raise FileProblem(
                self.dest, f"input ended at frame {self._offset} of {expected}; nothing written"
            )

    def _close(self, commit: bool = False, target: io.BufferedIOBase | None = None) -> None:
        # ``target``: where a buffered result goes when there is no temporary file (stdout).
        if self._sound is not None:
            sound = self._sound
            with interrupts.deferred():  # the header is written through callbacks too
                sound.close()
            self._sound = None
            # Whether committed here or sent by the caller (stdout), the header is final now.
            if aiff_frames.needs_fix(sound.format, sound.subtype, sound.channels, sound.frames):
                encoded = self._encoded if self._encoded is not None else self._stream_file
                aiff_frames.fix_frame_count(encoded, sound.frames)
        if self._stream_file is not None:
            stream, self._stream_file = self._stream_file, None
            stream.close()
            if stream.error is not None:
                raise stream.error
        fd, self._fd = self._fd, None
        opened = open(fd, "wb") if fd is not None else contextlib.nullcontext(target)
        with opened as file:
            if self._encoded is not None:
                if commit:
                    file.write(self._encoded.getbuffer())
                self._encoded = None
            if self._blocks is not None:
                if commit:
                    whole = (
                        np.concatenate(self._blocks, axis=-1)
                        if self._blocks
                        else np.zeros(self.shape)
                    )
                    array = whole.reshape(self._npy_shape()).astype(self.spec.dtype, copy=False)
                    save_npy(file, array)
                self._blocks = None
        if self._array is not None:
            # No flush: it would msync, i.e. wait for the disk; unmapping leaves the data in
            # the page cache, where readers see it, as any written file's data.
            del self._array
            self._array = None

    def _discard(self) -> None:
        try:
            self._close()
        except Exception:  # the file is being thrown away; its close error does not matter
            pass
        finally:
            # Also when a second Ctrl-C interrupts the close (raised as it ends): the
            # temporary file went on existing beside the output.
            if self._tmp and os.path.exists(self._tmp):
                os.unlink(self._tmp)
            self._remove_made_dirs()

    def _remove_made_dirs(self) -> None:
        # rmdir removes only an empty directory, so another output written there meanwhile
        # (a batch, another rank) keeps it; and only directories this writer made are tried.
        made, self._made_dirs[:] = list(self._made_dirs), []
        for folder in made:
            try:
                os.rmdir(folder)
            except OSError:
                return  # not empty (or gone): its parents are not empty either
            _MADE_DIRS.discard(folder)


class _KeepsWriteErrors:
    """The streamed output file as libsndfile's callbacks see it: a failed write (a full
    disk) is kept in :attr:`error` and reported as nothing written, rather than raised
    inside a cffi callback, which printed "Exception ignored ... OSError" with a traceback
    and left soundfile's bare AssertionError as the file's only reason."""

    def __init__(self, file: io.BufferedRandom):
        self.file = file
        self.error: OSError | None = None

    def _kept(self, call: Callable[..., int], *args) -> int:
        # ``call(*args)`` until the first error, which is kept; 0 (nothing done) from then on.
        if self.error is None:
            try:
                return call(*args)
            except OSError as err:
                self.error = err
        return 0

    def write(self, data) -> int:
        return self._kept(self.file.write, data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        # Seeking flushes the buffered writes: it fails as they do (then nothing more is
        # written, and where libsndfile thinks it is no longer matters).
        return self._kept(self.file.seek, offset, whence)

    def tell(self) -> int:
        return self._kept(self.file.tell)

    def close(self) -> None:
        try:
            self.file.close()  # flushes what is buffered: it may fail too
        except OSError as err:
            self.error = self.error or err

    def __getattr__(self, name: str):
        return getattr(self.file, name)  # read, readinto, flush, name ...


def _reserve(path: str) -> None:
    """Allocate the blocks of a new (sparse) memory-mapped output up front: storing into a
    mapped page the disk has no room for kills the process with SIGBUS, which left the
    temporary file behind; reserved, a full disk is an OSError before any sample is written.
    """
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
            raise  # ENOSPC, EFBIG ...; a file system without fallocate is left as it was
    finally:
        os.close(fd)


def save_npy(file: io.BufferedIOBase, array: np.ndarray) -> None:
    """``np.save(file, array)`` (never pickled) through the file's own ``write`` calls, so a
    failed write says why. numpy's fast path for a real file (``tofile``) reported a full
    disk as "cannot finish writing (80000 requested and 8176 written)", where Python's
    ``write`` raises ``OSError`` with the reason ("No space left on device", "File too
    large"). Its chunks cost one copy of the array in 16 MiB pieces.

    Example:
        >>> buffer = io.BytesIO()
        >>> save_npy(buffer, np.arange(3.0))
        >>> np.load(io.BytesIO(buffer.getvalue()))
        array([0., 1., 2.])
    """
    np.save(_WriteCalls(file), array, allow_pickle=False)


class _WriteCalls:
    """A file as numpy's writers see a stream: only its ``write``."""

    def __init__(self, file: io.BufferedIOBase):
        self.write = file.write


def atomic_write(
    dest: str | os.PathLike,
    fill: Callable[[io.BufferedWriter], object],
    *,
    overwrite: bool = True,
) -> None:
    """Call ``fill(file)`` on a temporary file next to ``dest``, then rename it into place.

    For small non-signal outputs (JSON, PNG, text, checkpoints); signals go through
    :class:`AtomicWriter`. On any failure the temporary file is removed and ``dest`` untouched.

    Raises:
        FileProblem: ``dest`` exists and ``overwrite`` is false, or it cannot be written.
    """
    dest = Path(dest)
    if not overwrite and dest.exists():
        raise FileProblem(dest, "output exists; use --overwrite to replace it")
    fd = tmp = None
    try:
        # As in AtomicWriter: a Ctrl-C is held until mkstemp's file has its name here.
        with interrupts.deferred():
            target = _through_symlink(dest)
            replaced = _existing_status(target)
            _refuse_special(dest, replaced)
            prefix = temporary_prefix(target.name)
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            fd = None  # closed by the with block from here on
            fill(f)
        _move_into_place(tmp, target, replaced, overwrite)
    except BaseException as err:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, FileExistsError):
            raise FileProblem(dest, _APPEARED) from err
        if isinstance(err, OSError):
            raise FileProblem(dest, f"cannot write ({err.strerror or err})") from err
        raise


_APPEARED = "output exists (made while this one was written); use --overwrite to replace it"


def _move_into_place(
    tmp: str, target: Path, replaced: os.stat_result | None, overwrite: bool
) -> None:
    """Rename the finished temporary file onto ``target``, with the permissions of the file
    it replaces (``replaced``) and, where allowed, its owner (``--overwrite`` as root had
    handed another user's file to root, as sox and cp do not), or the usual ones for a new
    file. Without ``overwrite``, raise FileExistsError (``tmp`` left for the caller to
    remove) where a file took the name since the writer found it free."""
    os.chmod(tmp, replaced.st_mode & 0o777 if replaced is not None else _default_mode())
    if replaced is not None and (replaced.st_uid, replaced.st_gid) != (os.getuid(), os.getgid()):
        with contextlib.suppress(OSError):  # only root (or the owner, for the group) may
            os.chown(tmp, replaced.st_uid, replaced.st_gid)
    if overwrite:
        os.replace(tmp, target)
    else:
        _link_into_place(tmp, target)


def _link_into_place(tmp: str, target: Path) -> None:
    # The name was free when writing began, but a long write leaves time for another run
    # (or a user) to make the file, which a rename would silently replace: two runs writing
    # one output both exited 0 and one result was lost. A hard link takes the name only if
    # it is still free (EEXIST otherwise), as atomically as the rename; then the temporary
    # name goes. Held from Ctrl-C between the two, which would leave the second name.
    with interrupts.deferred():
        try:
            os.link(tmp, target)
        except OSError as err:
            # File systems without hard links (FAT, some FUSE and network ones): a check
            # just before the rename narrows the window to microseconds. (EEXIST, the name
            # taken, is raised as it is.)
            if err.errno not in _NO_HARD_LINKS:
                raise
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from err
            os.replace(tmp, target)
            return
        os.unlink(tmp)


# What link(2) answers on a file system that has no hard links.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


def _through_symlink(dest: Path) -> Path:
    """The file that writing to ``dest`` should replace: the one a symlink there names.

    Renaming onto the link itself would turn it into a plain file and leave the file it
    points to as it was; ``sox``, ``cp`` and shell redirection write through the link.
    A dangling link names the file to create.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "link.wav").symlink_to("real.wav")
        >>> _through_symlink(root / "link.wav") == root.resolve() / "real.wav"
        True
        >>> _through_symlink(root / "plain.wav") == root / "plain.wav"
        True
    """
    if not os.path.islink(dest):
        return dest
    return Path(os.path.realpath(dest, strict=os.path.exists(dest)))


def _refuse_special(dest: Path, status: os.stat_result | None) -> None:
    """Refuse to replace a FIFO, a device or a socket: the rename would swap it for a plain
    file (``--overwrite`` onto a named pipe, or a link to one, left a regular file there and
    nothing reached the reader). Writing into it in place is not atomic, so that is left to
    the shell: ``-`` and a redirection."""
    if status is None or stat.S_ISREG(status.st_mode) or stat.S_ISDIR(status.st_mode):
        return
    mode = status.st_mode
    if stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    else:
        kind = "a socket" if stat.S_ISSOCK(mode) else "not a plain file"
    raise FileProblem(dest, f"is {kind}, not a regular file; write to - and redirect")


def _existing_status(path: Path) -> os.stat_result | None:
    """``os.stat`` of what ``path`` names, or None when nothing is there (one system call)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


_MADE_DIRS: set[str] = set()


# A file name's longest, in bytes, on the usual file systems (ext4, XFS, btrfs, APFS, NTFS's
# 255 UTF-16 units are at least as many): the temporary must fit it where the output does.
_NAME_MAX = 255
# What mkstemp adds to the prefix: 8 random characters and ".part".
_TEMPORARY_EXTRA = 8 + len(".part")


def temporary_prefix(name: str) -> str:
    """``.NAME.``, the prefix of ``name``'s hidden temporary, with ``NAME`` cut short where
    the temporary's whole name would pass 255 bytes (an output name of 241 to 255 bytes is
    valid, its temporary 15 bytes longer).

    Example:
        >>> temporary_prefix("out.wav")
        '.out.wav.'
        >>> len(os.fsencode(temporary_prefix("é" * 127 + ".wav")) + b"12345678.part")
        255
    """
    room = _NAME_MAX - _TEMPORARY_EXTRA - 2  # the two dots
    while len(os.fsencode(name)) > room:  # by whole characters: none is cut in two
        name = name[: -max(1, (len(os.fsencode(name)) - room) // 4)]
    return f".{name}."


def _temporary_beside(dest: Path, made: list[str]) -> tuple[int, str]:
    """A new hidden file in ``dest``'s directory (created if missing): ``(fd, path)``.

    The directories created for it are added to ``made``, deepest first.
    """
    parent = os.fspath(dest.parent)
    for tries_left in (2, 1, 0):
        # A batch writes thousands of files into a few directories: make sure of each once.
        if parent not in _MADE_DIRS:
            made[:0] = _make_dirs(dest.parent)
            _MADE_DIRS.add(parent)
        try:
            prefix = temporary_prefix(dest.name)
            return tempfile.mkstemp(prefix=prefix, suffix=".part", dir=parent)
        except FileNotFoundError:
            # Removed during the run (a writer that made it failed and removed it while
            # still empty, between our mkdir and mkstemp): make it again.
            _MADE_DIRS.discard(parent)
            if not tries_left:
                raise


def _make_dirs(folder: Path) -> list[str]:
    """Make ``folder`` and its missing parents; the ones made here, deepest first.

    Each level is made on its own, so that one made meanwhile by someone else (another
    writer, another rank) is not counted as made here.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> [os.path.relpath(d, root) for d in _make_dirs(root / "a" / "b")]
        ['a/b', 'a']
        >>> _make_dirs(root / "a")
        []
    """
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    made = []
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        made.append(os.fspath(path))
    return made[::-1]


_MODE: list[int] = []


def _default_mode() -> int:
    # mkstemp creates 0600; a normal output should get the user's usual permissions. The
    # umask can only be read by setting it, so read it once.
    if not _MODE:
        umask = os.umask(0)
        os.umask(umask)
        _MODE.append(0o666 & ~umask)
    return _MODE[0]


def write_signal(
    dest: str | os.PathLike, data: np.ndarray, spec: OutputSpec, *, overwrite: bool = False
) -> AtomicWriter:
    """Write a whole result at once (atomically); returns the writer for its clip counts.

    Shape:
        data ``(C, T)`` (audio or .npy) or ``(N, C, T)`` (.npy only).
    """
    with AtomicWriter(dest, spec, data.shape, overwrite=overwrite, buffered=True) as writer:
        writer.write(data)
    return writer
