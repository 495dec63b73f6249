"""The common flow of a file-processing command: plan, check, build, run, exit.

Commands (``smooth``, ``convolve``, ``filter`` and others) parse their own options, then hand
over to :func:`execute`. Everything that can be decided before touching a file is checked
first and reported as a usage error (exit code 2): missing inputs, outputs that cannot be
written, an output format or ``--subtype`` soundfile does not know, ``--rate`` missing where
.npy inputs need it, ``--rate``/``--raw-subtype`` missing for a headerless input (or
``--raw-subtype``/``--channels``/``--endian`` given with none, :mod:`cli.raw`), any option the
core rejects (``ValueError``/``TypeError`` while the operation is built), and a ``--type``
without OUTPUT ``-`` (stdout), whose format it sets.
INPUT ``-`` reads stdin and OUTPUT ``-`` writes stdout (:mod:`cli.pipes`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from cli import distributed, pipes
from cli.audio_io import is_npy
from cli.jobs import Job, plan_jobs
from cli.options import split_paths
from cli.raw import MAX_HEADER_RATE, check_usage, is_raw_path
from cli.runner import Operation, RunOptions


@contextmanager
def option_errors(param_hint: str | None = None) -> Iterator[None]:
    """Turn a library ``ValueError``/``TypeError`` raised by an option into a usage error, and
    so a value too large to build (a window of 10**10 taps: no memory for it).

    Example:
        >>> with option_errors("'--length'"):
        ...     raise ValueError("length must be odd; got 4")
        Traceback (most recent call last):
        click.exceptions.BadParameter: length must be odd; got 4
    """
    try:
        yield
    except (ValueError, TypeError) as err:
        raise click.BadParameter(in_option_terms(str(err)), param_hint=param_hint) from err
    except (MemoryError, OverflowError, RuntimeError) as err:
        # torch's allocators raise RuntimeError (OutOfMemoryError on CUDA) saying "allocate";
        # Python's own int conversions raise OverflowError.
        if isinstance(err, RuntimeError) and "allocate" not in str(err):
            raise
        reason = "more memory than there is" if not isinstance(err, OverflowError) else err
        what = "too large" if param_hint else "the options ask for a kernel too large"
        raise click.BadParameter(f"{what} to build ({reason})", param_hint=param_hint) from err


#: Bytes a kernel of one tap costs to build and try out, measured: a smoothing window's
#: trial run peaked at 58 bytes a tap (10-20 M taps, float64: the window, its spectrum and
#: the convolution's work arrays).
BUILD_BYTES_PER_TAP = 64


def check_kernel_memory(taps: object, param_hint: str) -> None:
    """Refuse a kernel length whose building needs more memory than the machine has
    available (a usage error, exit 2), before any is allocated. Linux grants the allocation
    and kills the process with no message once the pages are touched (``--length 10**9``:
    23 GB resident, then exit 137); the allocator's own error came only under a ``ulimit``.

    Example:
        >>> check_kernel_memory(31, "'--length'")
        >>> check_kernel_memory(10**15, "'--length'")
        Traceback (most recent call last):
        click.exceptions.BadParameter: 1,000,000,000,000,000 taps: too large to build (about...
    """
    if not isinstance(taps, int) or taps <= 0:
        return  # the core says what is wrong with it
    need = taps * BUILD_BYTES_PER_TAP
    available = available_memory()
    if available is not None and need > available:
        raise click.BadParameter(
            f"{taps:,} taps: too large to build (about {need / 2**30:,.0f} GiB needed, "
            f"{available / 2**30:,.1f} GiB of memory available)",
            param_hint=param_hint,
        )


def available_memory() -> int | None:
    """Bytes this process may still allocate and use: the system's available memory
    (``MemAvailable``, else all of it) within an address-space limit (``ulimit -v``); None
    where neither can be read."""
    import resource

    found = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            pass
    try:
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (OSError, ValueError, AttributeError):
        limit = resource.RLIM_INFINITY
    if limit != resource.RLIM_INFINITY:
        found = limit if found is None else min(found, limit)
    return found


# The library's messages name its keyword arguments; on the command line the same things are
# options. (pattern, replacement) pairs, tried in order.
_OPTION_TERMS = (
    (r"numtaps=(\d+)", r"--taps \1"),
    (r"padding='(\w+)'", r"--padding \1"),
    (r"mode '(\w+)'/'(\w+)'", r"--mode \1 or \2"),
    (r"mode '(\w+)'", r"--mode \1"),
    (r"cannot normalize='sum'", "cannot scale the window to a unit sum"),
    (r"requires parameter '(\w+)'", r"requires parameter '\1' (give --param \1=VALUE)"),
    (
        r"(\w+) window: center must be None when sym=True",
        r"\1 window: center needs its periodic form (--window \1_periodic)",
    ),
)


def in_option_terms(message: str) -> str:
    """A library error message in the command line's words.

    Example:
        >>> in_option_terms("a highpass filter needs an odd number of taps; got numtaps=100")
        'a highpass filter needs an odd number of taps; got --taps 100'
        >>> in_option_terms("gaussian window requires parameter 'std'")
        "gaussian window requires parameter 'std' (give --param std=VALUE)"
    """
    for pattern, replacement in _OPTION_TERMS:
        message = re.sub(pattern, replacement, message)
    return message


def check_outputs(
    jobs: list[Job],
    options: RunOptions,
    *,
    needs_rate: str | None = None,
    notes: list[str] | None = None,
) -> list[Job]:
    """Usage checks that need only the paths: output formats, ``--type``, ``--subtype``,
    ``--rate``, the options of headerless inputs (and, for stdout without ``--type``, the
    input's header, whose format it keeps). Returns the jobs, those whose mirrored output
    name has no format (an extension none is known by) marked as failed files.

    Args:
        needs_rate: a reason .npy inputs need ``--rate`` (e.g. "filtering in Hz"), or None.
        notes: gets a line when a fractional ``--rate`` is rounded in the outputs' headers.

    Raises:
        click.UsageError: the first problem found.
    """
    import soundfile as sf

    jobs = [_with_output_format_problem(job) for job in jobs]
    checked = jobs
    # Entries that failed while their folder was listed are reported as failed files; no
    # output of theirs is ever written, so there is nothing to check.
    jobs = [job for job in jobs if job.problem is None]
    _check_type(jobs, options)
    raw_flags = [is_raw_input(job, options) for job in jobs]
    check_usage(options.raw, [job.source for job, raw in zip(jobs, raw_flags, strict=True) if raw])
    formats = []
    rounded_into: Job | None = None  # the first output whose header rounds a fractional --rate
    rate_used = False  # whether any input takes --rate (.npy or headerless)
    for job, raw in zip(jobs, raw_flags, strict=True):
        fmt = _output_format(job, options, raw)
        formats.append(fmt)
        if raw:
            from_npy = False
        elif job.from_stdin:
            from_npy = is_npy(job.stdin)
        else:
            from_npy = job.source.suffix.lower() == ".npy"
        rate_used = rate_used or raw or from_npy
        if from_npy and options.rate is None:
            if needs_rate:
                raise click.UsageError(f"{job.source}: .npy input needs --rate for {needs_rate}")
            if fmt not in (None, "RAW"):  # a headerless output stores no rate
                raise click.UsageError(
                    f"{job.source}: writing audio ({job.dest}) from .npy needs --rate"
                )
        rate = options.rate
        header = (raw or from_npy) and fmt not in (None, "RAW", "")  # gets --rate as its rate
        if header and rate is not None and round(rate) > MAX_HEADER_RATE:
            raise click.BadParameter(
                f"{rate:g} Hz is above the {MAX_HEADER_RATE} Hz an audio header can say "
                f"({job.dest}); .npy and .raw outputs store no rate",
                param_hint="'--rate'",
            )
        if header and rate not in (None, round(rate)):
            if round(rate) < 1:  # libsndfile refuses a header rate of 0 ("SF_INFO incomplete")
                raise click.BadParameter(
                    f"{rate} Hz rounds to 0 in the whole-number rate of {job.dest}'s header; "
                    "audio outputs need a rate above 0.5 Hz (.npy and .raw outputs store none)",
                    param_hint="'--rate'",
                )
            rounded_into = rounded_into or job
        # fmt "": stdout keeps the format of an input that cannot be read (it fails later).
        if options.subtype and fmt and not sf.check_format(fmt, options.subtype):
            valid = ", ".join(sorted(sf.available_subtypes(fmt)))
            raise click.BadParameter(
                f"{options.subtype!r} is not valid for {fmt} ({job.dest}); use one of {valid}",
                param_hint="'--subtype'",
            )
    if options.rate is not None and jobs and notes is not None and not rate_used:
        # Audio headers say their own rate; the option was ignored without a word.
        more = f" and {len(jobs) - 1} more" if len(jobs) > 1 else ""
        notes.append(
            f"--rate {options.rate:g} is for .npy and headerless inputs; audio files keep "
            f"their header's rate ({jobs[0].source}{more})"
        )
    if rounded_into and notes is not None:
        # The rate as given (repr), not :g, whose six digits rounded it in the note too.
        notes.append(
            f"--rate {options.rate}: audio headers store whole rates, so "
            f"{rounded_into.dest} will say {round(options.rate)} Hz "
            f"(the samples are processed at {options.rate} Hz)"
        )
    # .npy keeps the array's float dtype: a --subtype no output can take was silently dropped.
    if options.subtype and jobs and all(fmt is None for fmt in formats):
        raise click.BadParameter(
            f"{options.subtype!r} sets the sample format of audio outputs, but every output "
            f"here is .npy ({jobs[0].dest}); write .wav/.flac/... or leave --subtype out",
            param_hint="'--subtype'",
        )
    return checked


def _with_output_format_problem(job: Job) -> Job:
    # A file of a directory INPUT (or one of several) whose name gives its output no format
    # (README.md among the WAVs of a --glob '*', a WAV without an extension) fails alone:
    # refused as a usage error, it stopped the whole batch.
    if job.problem is not None or not job.mirrored or job.to_stdout:
        return job
    from cli.audio_io import audio_format_for

    try:
        audio_format_for(job.dest)
    except ValueError as err:
        return dataclasses.replace(job, problem=str(err))
    return job


def is_raw_input(job: Job, options: RunOptions) -> bool:
    """Whether ``job`` reads headerless samples: a ``*.raw``/``*.pcm`` file, or stdin when
    ``--raw-subtype`` is given."""
    return options.raw.reads_stdin if job.from_stdin else is_raw_path(job.source)


def _check_type(jobs: list[Job], options: RunOptions) -> None:
    if options.type is None:
        return
    if not any(job.to_stdout for job in jobs):
        raise click.BadParameter(
            f"sets the format of OUTPUT - (stdout); a file OUTPUT ({jobs[0].dest}) takes "
            "its format from its extension",
            param_hint="'-t' / '--type'",
        )
    try:
        pipes.type_format(options.type)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'-t' / '--type'") from err


def _output_format(job: Job, options: RunOptions, raw: bool) -> str | None:
    """The soundfile format of ``job``'s output (None: .npy; "": not known before reading)."""
    from cli.audio_io import audio_format_for

    if not job.to_stdout:
        try:
            return audio_format_for(job.dest)
        except ValueError as err:
            raise click.UsageError(str(err)) from err
    if options.type is not None:
        return pipes.type_format(options.type)  # checked by _check_type
    return pipes.input_format(job.stdin if job.from_stdin else job.source, raw=raw)


def execute(
    paths: tuple[str, ...],
    options: RunOptions,
    build: Callable[[], Operation],
    *,
    glob: str | None = None,
    recursive: bool = False,
    needs_rate: str | None = None,
) -> None:
    """Plan the jobs, check them, build the operation, run it, and exit with its code.

    Args:
        paths: ``INPUT... OUTPUT`` as click collected them.
        options: the shared options.
        build: makes the :class:`~cli.runner.Operation` (imports torch; its ValueError or
            TypeError is a usage error, so it should validate the options).
        needs_rate: see :func:`check_outputs`.
    """
    inputs, output = split_paths(paths)
    notes: list[str] = []
    jobs = plan_jobs(
        inputs,
        output,
        glob=glob,
        recursive=recursive,
        stdio=True,
        raw=options.raw.subtype is not None,
        notes=notes,
    )
    try:
        jobs = check_outputs(jobs, options, needs_rate=needs_rate, notes=notes)
    finally:  # plan_jobs' notes also explain a usage error here (raw files left out need --rate)
        if not options.quiet and distributed.ranks_from_env().is_main:
            for note in notes:
                click.echo(f"note: {note}", err=True)
    with option_errors():
        operation = build()
    from cli.runner import run_jobs

    with pipes.stdout_for_data_only(any(job.to_stdout for job in jobs)):
        report = run_jobs(jobs, operation, options)
    click.get_current_context().exit(report.return_code)
