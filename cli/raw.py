"""Headerless (raw) PCM inputs: how to read them, as sox's ``-r``/``-e``/``-b``/``-c`` say.

A raw input is a file named ``*.raw`` or ``*.pcm``, or stdin (``-``) when ``--raw-subtype``
is given: such bytes say nothing of their rate, sample format, channels or byte order, so
``--rate`` and ``--raw-subtype`` must (``--channels`` and ``--endian`` may) say it. Directory
INPUTs take raw files only once ``--raw-subtype`` says how to read them.

Nothing here imports numpy or soundfile: the options and the usage checks stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

#: Extensions of headerless files (soundfile calls the format RAW).
RAW_EXTENSIONS = frozenset({".raw", ".pcm"})
#: The soundfile subtypes a raw input may hold, and the bytes one sample takes.
SAMPLE_BYTES = {
    "PCM_S8": 1,
    "PCM_U8": 1,
    "PCM_16": 2,
    "PCM_24": 3,
    "PCM_32": 4,
    "FLOAT": 4,
    "DOUBLE": 8,
    "ULAW": 1,
    "ALAW": 1,
}
ENDIANS = ("little", "big")
#: The most channels libsndfile reads (SF_MAX_CHANNELS); more is "Bad format field".
MAX_CHANNELS = 1024


# libsndfile keeps a sample rate in a C int.
MAX_HEADER_RATE = 2**31 - 1


def libsndfile_rate(rate: float | None) -> int:
    """The whole rate libsndfile is given for headerless samples: any positive one, since
    the file stores none and reading ignores it, but libsndfile refuses 0 (which a rate
    below 0.5 Hz rounds to), fractions, and rates past a C int.

    Example:
        >>> libsndfile_rate(0.4), libsndfile_rate(44100.4), libsndfile_rate(None)
        (1, 44100, 1)
        >>> libsndfile_rate(3e9)
        2147483647
    """
    return min(max(1, int(round(rate or 0))), MAX_HEADER_RATE)


def is_raw_path(path: str | os.PathLike) -> bool:
    """Whether a file's name says it holds headerless samples.

    Example:
        >>> is_raw_path("take1.RAW"), is_raw_path("x.pcm"), is_raw_path("x.wav")
        (True, True, False)
    """
    return Path(path).suffix.lower() in RAW_EXTENSIONS


@dataclass(frozen=True)
class RawFormat:
    """What the command line says of headerless inputs (None: not given).

    Example:
        >>> raw = RawFormat(rate=16000.0, subtype="PCM_16", channels=2)
        >>> raw.missing(), raw.frame_bytes, raw.soundfile_args()["endian"]
        ([], 4, 'LITTLE')
    """

    rate: float | None = None
    subtype: str | None = None
    channels: int | None = None
    endian: str | None = None  # "little" or "big"

    @classmethod
    def from_options(cls, options: dict) -> RawFormat:
        """From a command's click parameters (``rate``, ``raw_subtype``, ``channels``,
        ``endian``)."""
        return cls(
            rate=options.get("rate"),
            subtype=options.get("raw_subtype"),
            channels=options.get("channels"),
            endian=options.get("endian"),
        )

    @property
    def reads_stdin(self) -> bool:
        """stdin holds raw samples only when ``--raw-subtype`` says so (a piped WAV or .npy
        tells itself by its header)."""
        return self.subtype is not None

    @property
    def complete(self) -> bool:
        return not self.missing()

    def missing(self) -> list[str]:
        """The options a raw input cannot be read without, as the command line names them."""
        return [
            name
            for name, value in (("--rate", self.rate), ("--raw-subtype", self.subtype))
            if value is None
        ]

    def raw_only_given(self) -> list[str]:
        """The options given that only raw inputs use (``--rate`` also serves .npy)."""
        return [
            name
            for name, value in (
                ("--raw-subtype", self.subtype),
                ("--channels", self.channels),
                ("--endian", self.endian),
            )
            if value is not None
        ]

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame (one sample of every channel)."""
        return SAMPLE_BYTES[self.subtype] * (self.channels or 1)

    def soundfile_args(self) -> dict:
        """Keyword arguments with which soundfile opens the samples (a complete format)."""
        return {
            "format": "RAW",
            "samplerate": libsndfile_rate(self.rate),
            "channels": self.channels or 1,
            "subtype": self.subtype,
            "endian": (self.endian or "little").upper(),
        }


def check_usage(
    raw: RawFormat,
    raw_inputs: Sequence[str | os.PathLike],
    *,
    what: str = "INPUT",
    rate_is_raw_only: bool = False,
) -> None:
    """Usage errors: a raw input without ``--rate`` or ``--raw-subtype``, or options for raw
    inputs given where no input is raw (they would be dropped without a word).

    Args:
        raw_inputs: the inputs that are raw (``<stdin>`` for a raw stdin).
        what: how the command's help names its inputs (INPUT, FILE).
        rate_is_raw_only: ``--rate`` has no other use in this command (``info``).

    Raises:
        click.UsageError: the first problem.

    Example:
        >>> check_usage(RawFormat(rate=8000.0), ["a.raw"])
        Traceback (most recent call last):
        click.exceptions.UsageError: a.raw: headerless (raw) input needs --raw-subtype ...
    """
    if raw_inputs:
        missing = raw.missing()
        if missing:
            raise click.UsageError(
                f"{os.fspath(raw_inputs[0])}: headerless (raw) input needs "
                f"{' and '.join(missing)} (e.g. --rate 16000 --raw-subtype PCM_16; "
                "--channels and --endian default to 1 and little)"
            )
        return
    given = raw.raw_only_given()
    if rate_is_raw_only and raw.rate is not None:
        given.insert(0, "--rate")
    if given:
        raise click.UsageError(
            f"{', '.join(given)} describe{'s' if len(given) == 1 else ''} headerless inputs "
            f"(*.raw, *.pcm, or - with --raw-subtype), but no {what} is one"
        )
