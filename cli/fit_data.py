"""Input/target pairs for ``diffconv fit``: discovery, checks, and reading one rank's shard.

INPUTS and TARGETS are two files, or two directories whose files are matched by their path
relative to each directory (``--glob``/``--recursive`` choose the files, as in every batch
command). Every pair is checked from the file headers before any sample is read: each input
needs a target and each target an input, and partners must agree in length, channel count
and sample rate; all pairs must share one rate (a kernel in samples means another filter at
another rate). All problems are collected and raised together as one error listing the
offending pairs, found before any work: a usage error (exit code 2) where any is a problem
with what was given (a missing partner, a mismatch), else a runtime failure (exit code 1:
files that cannot be read, as every command reports them).

Under torchrun every rank discovers and checks the same sorted list (headers only, cheap),
then reads only its shard of the samples: pair ``i`` belongs to rank ``i % world_size``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from cli.audio_io import SignalInfo, probe, read_signal
from cli.errors import EXIT_USAGE, FileProblem
from cli.jobs import plan_jobs, refused_paths, why_missing


@dataclass(frozen=True)
class Pair:
    """A checked input/target pair (headers read, samples not yet)."""

    name: str  # relative path shown in messages and stored in checkpoints
    input: SignalInfo
    target: SignalInfo

    @property
    def frames(self) -> int:
        return self.input.frames

    @property
    def rows(self) -> int:
        # Every channel (and every signal of a 3-D .npy) is one row sharing the kernel.
        return int(np.prod(self.input.shape[:-1]))


class PairProblems(click.ClickException):
    """All problems with the pairs, in one message; exit code 2 (usage) unless given.

    Example:
        >>> err = PairProblems(["a.wav: no target (t/a.wav missing)"])
        >>> err.exit_code, err.format_message()
        (2, 'the input/target pairs cannot be used:\\n  a.wav: no target (t/a.wav missing)')
        >>> PairProblems(["a.wav: file is empty"], exit_code=1).exit_code
        1
    """

    def __init__(self, problems: list[str], exit_code: int = EXIT_USAGE) -> None:
        self.problems = problems
        self.exit_code = exit_code
        super().__init__("the input/target pairs cannot be used:\n  " + "\n  ".join(problems))


def discover_pairs(
    inputs: str | os.PathLike,
    targets: str | os.PathLike,
    *,
    glob: str | None = None,
    recursive: bool = False,
    rate: float | None = None,
) -> list[Pair]:
    """Match INPUTS with TARGETS and check every pair from the headers.

    Args:
        inputs, targets: two files or two directories.
        glob, recursive: which files of the directories take part.
        rate: sample rate of .npy files (audio files carry their own).

    Raises:
        PairProblems: missing partners, unreadable files, length/channel/rate mismatches,
            pairs at different rates; all listed at once (exit code 1 where every one is a
            file that cannot be read, else 2).
        click.UsageError: a missing path, or a file paired with a directory.

    Example:
        >>> [p.name for p in discover_pairs("sample_data/speech_mono16.wav",
        ...                                 "sample_data/speech_mono16.wav")]
        ['speech_mono16.wav']
    """
    src, dst = Path(inputs), Path(targets)
    for path, what in ((src, "INPUTS"), (dst, "TARGETS")):
        with refused_paths():
            if not path.exists():
                raise click.BadParameter(f"{path}: {why_missing(path)}", param_hint=what)
    if src.is_dir() != dst.is_dir():
        raise click.UsageError(
            f"INPUTS and TARGETS must be two files or two directories; got {src} "
            f"({'directory' if src.is_dir() else 'file'}) and {dst} "
            f"({'directory' if dst.is_dir() else 'file'})"
        )
    problems: list[str] = []
    file_codes: list[int] = []  # the exit codes of the files that could not be read
    if src.is_dir():
        # plan_jobs maps each file of one tree to the same relative path in the other.
        # Nothing is written to the other tree: two files there may be one (a symlink).
        forward = plan_jobs([src], dst, glob=glob, recursive=recursive, writes=False)
        backward = plan_jobs([dst], src, glob=glob, recursive=recursive, writes=False)
        matched = []
        for job in forward:
            rel = job.source.relative_to(src).as_posix()
            if job.dest.is_file():
                matched.append((rel, job.source, job.dest))
            else:
                problems.append(f"{rel}: input {job.source} has no target ({job.dest} missing)")
        for job in backward:
            if not job.dest.is_file():
                rel = job.source.relative_to(dst).as_posix()
                problems.append(f"{rel}: target {job.source} has no input ({job.dest} missing)")
    else:
        matched = [(src.name, src, dst)]
    pairs = []
    for name, x_path, y_path in matched:
        try:
            x, y = probe(x_path), probe(y_path)
        except FileProblem as err:
            problems.append(pair_problem(name, err))
            file_codes.append(err.exit_code)
            continue
        mismatch = _mismatch(x, y, rate)
        if mismatch:
            problems.append(f"{name}: {mismatch} ({x.path} vs {y.path})")
        else:
            pairs.append(Pair(name, x, y))
    rates = sorted({_rate(p.input, rate) for p in pairs} - {None})
    unknown = [p.name for p in pairs if _rate(p.input, rate) is None]
    if unknown and rates:
        # Else the rate came from whichever pair sorted first: the .npy pairs trained as if
        # at the audio's rate, or the run was refused, depending on the files' names.
        problems.append(
            f"{', '.join(unknown)}: .npy pairs carry no sample rate, the others are at "
            f"{', '.join(f'{r:g} Hz' for r in rates)}; give --rate"
        )
    if len(rates) > 1:
        listing = ", ".join(f"{p.name} at {_rate(p.input, rate):g} Hz" for p in pairs)
        problems.append(f"pairs at different sample rates ({listing}); resample them to one rate")
    if problems:
        # Only unreadable files: a runtime failure, as in every batch command; anything else
        # is a problem with what was given.
        only_files = len(file_codes) == len(problems)
        raise PairProblems(sorted(problems), max(file_codes) if only_files else EXIT_USAGE)
    return sorted(pairs, key=lambda p: p.name)


def _rate(info: SignalInfo, rate: float | None) -> float | None:
    return info.rate if info.rate else rate


def _mismatch(x: SignalInfo, y: SignalInfo, rate: float | None) -> str | None:
    if x.frames != y.frames:
        return f"lengths differ: {x.frames} vs {y.frames} frames"
    if x.shape[:-1] != y.shape[:-1]:
        return f"channel counts differ: {x.shape[:-1]} vs {y.shape[:-1]}"
    if _rate(x, rate) != _rate(y, rate):
        return f"sample rates differ: {_hertz(_rate(x, rate))} vs {_hertz(_rate(y, rate))}"
    return None


def _hertz(rate: float | None) -> str:
    # A .npy file carries no rate: it takes --rate, and without it matches no audio file.
    return "none (.npy: give --rate)" if rate is None else f"{rate:g} Hz"


def pair_problem(name: str, err: FileProblem) -> str:
    """One line for a pair whose file failed: the pair's name, the file and the reason.

    The name is left out where the file's path already ends with it (a pair of two files,
    or a file of a directory pair), so that no line says ``a.wav: a.wav: ...``.

    Example:
        >>> pair_problem("a.wav", FileProblem("a.wav", "file is empty"))
        'a.wav: file is empty'
        >>> pair_problem("sub/a.wav", FileProblem("tg/sub/a.wav", "file is empty"))
        'tg/sub/a.wav: file is empty'
        >>> pair_problem("a.wav", FileProblem("tg/ba.wav", "file is empty"))
        'a.wav: tg/ba.wav: file is empty'
    """
    parts = Path(name).parts
    if Path(err.path).parts[-len(parts) :] == parts:
        return str(err)
    return f"{name}: {err}"


def nonfinite_problems(pair: Pair, x: np.ndarray, y: np.ndarray) -> list[str]:
    """One line per file of ``pair`` whose samples ``x`` (input) or ``y`` (target) hold NaN
    or Inf: a fit on them gives a NaN loss and a NaN kernel.

    Example:
        >>> info = probe("sample_data/sensor_gaps.npy")
        >>> x = read_signal(info)
        >>> nonfinite_problems(Pair("gaps", info, info), x, np.zeros_like(x))
        ['gaps: input sample_data/sensor_gaps.npy holds 165 non-finite samples (165 NaN)']
    """
    problems = []
    for side, info, samples in (("input", pair.input, x), ("target", pair.target, y)):
        nan = int(np.count_nonzero(np.isnan(samples)))
        inf = int(np.count_nonzero(np.isinf(samples)))
        if nan or inf:
            kinds = ", ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "Inf")) if n)
            problems.append(
                f"{pair.name}: {side} {info.path} holds {nan + inf} non-finite "
                f"{'sample' if nan + inf == 1 else 'samples'} ({kinds})"
            )
    return problems


def pairs_rate(pairs: list[Pair], rate: float | None) -> float | None:
    """The one sample rate of the pairs (``rate`` for .npy), None when unknown."""
    return _rate(pairs[0].input, rate) if pairs else None


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """The samples of one pair as ``(rows, T)`` arrays of one floating dtype.

    Shape:
        both ``(rows, T)``; a 3-D .npy ``(N, C, T)`` gives ``N * C`` rows.
    """
    x, y = read_signal(pair.input), read_signal(pair.target)
    dtype = np.promote_types(x.dtype, y.dtype)
    return (
        x.reshape(-1, x.shape[-1]).astype(dtype, copy=False),
        y.reshape(-1, y.shape[-1]).astype(dtype, copy=False),
    )


def common_dtype(pairs: list[Pair]) -> np.dtype:
    """The dtype every pair is computed in: float64 if any file needs it, else float32."""
    dtype = np.dtype("float32")
    for p in pairs:
        dtype = np.promote_types(dtype, np.promote_types(p.input.dtype, p.target.dtype))
    return dtype


def shard_indices(n_pairs: int, rank: int, world_size: int) -> list[int]:
    """The pairs rank ``rank`` reads: every ``world_size``-th from ``rank``.

    Example:
        >>> shard_indices(5, 1, 2)
        [1, 3]
    """
    return list(range(rank, n_pairs, world_size))
