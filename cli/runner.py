"""The batch runner every file-processing command shares.

A command describes *what* to do to a signal as an :class:`Operation`; :func:`run_jobs` does
the rest: probes each file, groups files of equal shape, dtype and rate and stacks them into
one device batch (sized to the device's memory; an out-of-memory error splits the batch and
retries), streams long files block by block, writes every result atomically (on a writer
thread, overlapped with the next batch's reading and computing), and
records every outcome in a :class:`~cli.report.Report` — one bad file never stops the batch.
Under torchrun the job list is split across ranks and the reports are merged.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from cli import distributed, interrupts, pipes, startup
from cli.audio_io import FLOAT64_SUBTYPES, SignalInfo, probe, probe_bytes, read_blocks, read_signal
from cli.devices import initial_batch_size, is_out_of_memory, release_cached_memory
from cli.errors import EXIT_RUNTIME, FileProblem, failure_of
from cli.jobs import Job
from cli.raw import RawFormat
from cli.report import Report
from cli.writing import AtomicWriter, OutputSpec, output_spec, write_signal

#: Files with more samples (frames x channels) than this are streamed block by block.
STREAM_SAMPLES_ENV = "DIFFCONV_STREAM_SAMPLES"
DEFAULT_STREAM_SAMPLES = 2**23
#: Frames read per block when streaming.
BLOCK_FRAMES_ENV = "DIFFCONV_BLOCK_FRAMES"
DEFAULT_BLOCK_FRAMES = 2**18


@dataclass
class Operation:
    """What a command does to signals; the runner handles files, devices and batches.

    Attributes:
        apply: ``apply(batch, info)`` -> result, for a batch ``(B, *info.shape)`` on the
            device (all files in a batch share ``info.shape``, dtype and rate). Raises
            ``ValueError``/``TypeError`` for a signal the operation cannot take.
        streamer: optional ``streamer(info, device)`` -> ``(convolver, out_frames)`` or
            None; the convolver has ``push(block) -> Tensor`` and ``flush() -> Tensor``
            (e.g. :class:`diffconv_core.streaming.StreamingConvolver`) and produces
            ``out_frames`` samples per channel in all. None: long files are processed whole.
        check: optional ``check(info)`` raising ``ValueError`` for a file the operation
            cannot take (e.g. a kernel with another channel count), before it is read.
        advise: optional ``advise(info)`` -> a warning for a file the operation takes but
            probably should not as it is (e.g. an impulse response at another sample rate),
            or None; said once per run for each message (:meth:`Report.warn_once`).

    Shape:
        ``apply``: ``(B, C, T)`` (or ``(B, N, C, T)``) -> ``(B, C, T')``.
    """

    apply: Callable[[Any, SignalInfo], Any]
    streamer: Callable[[SignalInfo, Any], tuple[Any, int] | None] | None = None
    check: Callable[[SignalInfo], None] | None = None
    advise: Callable[[SignalInfo], str | None] | None = None


@dataclass
class RunOptions:
    """The shared options of a batch command, as the runner needs them."""

    device: str = "auto"
    overwrite: bool = False
    quiet: bool = False
    verbose: bool = False
    subtype: str | None = None
    rate: float | None = None
    type: str | None = None  # the format of stdout (OUTPUT -), as an extension
    raw: RawFormat = field(default_factory=RawFormat)  # how headerless inputs are read

    @classmethod
    def from_shared(cls, shared: dict) -> RunOptions:
        """From the parameters :func:`cli.options.batch_options` gives a command."""
        keys = ("device", "overwrite", "quiet", "verbose", "subtype", "rate", "type")
        return cls(**{k: shared[k] for k in keys}, raw=RawFormat.from_options(shared))


@dataclass
class _Item:
    job: Job
    info: SignalInfo
    spec: OutputSpec


def stream_threshold() -> int:
    """Samples above which a file is streamed (env ``DIFFCONV_STREAM_SAMPLES``)."""
    return _env_count(STREAM_SAMPLES_ENV, DEFAULT_STREAM_SAMPLES, minimum=0)


def block_frames() -> int:
    """Frames per streamed block (env ``DIFFCONV_BLOCK_FRAMES``)."""
    return _env_count(BLOCK_FRAMES_ENV, DEFAULT_BLOCK_FRAMES, minimum=1)


def _env_count(name: str, default: int, *, minimum: int) -> int:
    """A whole number from the environment, or a usage error naming the variable (a bad
    value used to end in a bare traceback, or fail every streamed file without naming it).

    Example:
        >>> _env_count("DIFFCONV_NO_SUCH_VARIABLE", 7, minimum=1)
        7
    """
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)  # int() itself takes surrounding spaces and 1_000
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise click.UsageError(
            f"environment variable {name} must be a whole number >= {minimum}; got {text!r}"
        )
    return value


def run_jobs(jobs: Sequence[Job], operation: Operation, options: RunOptions) -> Report:
    """Process every job (this rank's share under torchrun) and return the merged report.

    Per-file problems are recorded, never raised; the merged report's ``return_code`` is 1
    if any file failed on any rank. Rank 0 prints the summary.

    Example:
        >>> import tempfile, os
        >>> from cli.jobs import plan_jobs
        >>> out = os.path.join(tempfile.mkdtemp(), "half.wav")
        >>> jobs = plan_jobs(["sample_data/speech_mono16.wav"], out)
        >>> op = Operation(apply=lambda batch, info: batch * 0.5)
        >>> run_jobs(jobs, op, RunOptions(device="cpu", quiet=True)).return_code
        0
    """
    from cli.devices import resolve_device

    stream_threshold(), block_frames()  # a bad setting is a usage error before any file

    def work(mine: list[Job], report: Report, ranks) -> None:
        device = resolve_device(options.device, ranks.local_rank)
        show = ranks.is_main and not options.quiet and sys.stderr.isatty()
        # Each job's place in the whole list (the ranks' shares interleave).
        orders = range(ranks.rank, len(jobs), ranks.world_size)
        _run_local(mine, orders, operation, options, device, report, show_progress=show)

    return run_sharded(jobs, work, quiet=options.quiet, verbose=options.verbose)


def run_sharded(
    jobs: Sequence[Job],
    work: Callable[[list[Job], Report, Any], None],
    *,
    quiet: bool,
    verbose: bool,
) -> Report:
    """Run ``work(my_jobs, report, ranks)`` on this rank's share of ``jobs`` (all of them
    outside torchrun), merge every rank's report and print the summary on rank 0.

    ``work`` records per-file failures in ``report`` and never raises for them; the merged
    report's ``return_code`` is 1 if a file failed on any rank.
    """
    startup.end()  # the imports are done (see cli.startup)
    ranks = distributed.ranks_from_env()
    distributed.start(ranks, wait_seconds=distributed.BATCH_WAIT_SECONDS)
    try:
        report = Report(quiet=quiet, verbose=verbose)
        work(ranks.shard(list(jobs)), report, ranks)
        merged = Report(quiet=quiet, verbose=verbose)
        for part in distributed.gather(ranks, report.as_dict()):
            merged.merge(part)
    finally:
        distributed.finish(ranks)
    if ranks.is_main:
        merged.print_summary()
    return merged


def _run_local(jobs, orders, operation, options, device, report, *, show_progress: bool) -> None:
    progress = _progress(len(jobs), "file", show_progress and len(jobs) > 1)
    items = []
    for job, order in zip(jobs, orders, strict=True):
        item = _prepare(job, order, operation, options, report)
        if item is None:
            progress.update(1)
        else:
            items.append(item)
    threshold = stream_threshold()
    batched: dict[tuple, list[_Item]] = {}
    with _Writes() as writes:
        for item in items:
            if item.info.samples > threshold and operation.streamer:
                _guard(
                    report,
                    item,
                    options,
                    lambda it=item: _stream_one(
                        it, operation, options, device, report, show_progress, writes
                    ),
                )
                progress.update(1)
                continue
            key = (item.info.shape, item.info.dtype.str, item.info.rate)
            batched.setdefault(key, []).append(item)
        for group in batched.values():
            _run_group(group, operation, options, device, report, progress, writes)
    progress.close()


def _prepare(job: Job, order: int, operation: Operation, options: RunOptions, report: Report):
    try:
        if job.problem is not None:  # found while listing a directory INPUT
            raise FileProblem(job.source, job.problem)
        if not job.to_stdout and _dest_exists(job.dest) and not options.overwrite:
            # Checked before reading so that a rerun over a finished batch costs nothing.
            raise FileProblem(job.dest, "output exists; use --overwrite to replace it")
        if job.from_stdin:
            raw = options.raw if options.raw.reads_stdin else None
            info = probe_bytes(job.stdin, str(job.source), raw)
        else:
            info = probe(job.source, options.raw)
        if job.to_stdout:
            spec = pipes.stdout_spec(
                info, type=options.type, subtype=options.subtype, rate=options.rate
            )
        else:
            spec = output_spec(job.dest, info, subtype=options.subtype, rate=options.rate)
        if spec.subtype in FLOAT64_SUBTYPES and info.dtype == np.float32:
            # A 16-bit input written as DOUBLE or 24/32-bit PCM: float32's rounding would
            # show in the wider output (about 300 steps at 32 bits).
            info = dataclasses.replace(info, dtype=np.dtype("float64"))
        if operation.check is not None:
            operation.check(info)
        advice = operation.advise(info) if operation.advise is not None else None
        if advice:
            report.warn_once(advice, order, str(job.source))
        if _looks_channels_last(info):
            channels, frames = info.original_shape
            report.warn(
                str(job.source),
                f"read as {channels} signals of {frames} samples each (.npy arrays are "
                "(channels, samples)); if it holds (samples, channels), as soundfile.read "
                "returns, save its transpose",
            )
    except click.ClickException:
        raise  # a usage error found while reading (a check's): the whole command's
    except Exception as err:  # one bad file never stops the batch, whatever its reader raised
        _failed(report, options, *failure_of(err, job.source), err)
        return None
    return _Item(job, info, spec)


#: A 2-D .npy with this many rows or more per column reads as very short signals, most likely
#: audio saved as (samples, channels).
_CHANNELS_LAST_RATIO = 64


def _looks_channels_last(info: SignalInfo) -> bool:
    """A (T, C) array of a few channels, read as T signals of C samples.

    Example:
        >>> _looks_channels_last(SignalInfo("a.npy", "npy", (96000, 2), np.dtype("float64"),
        ...                                 original_shape=(96000, 2)))
        True
    """
    shape = info.original_shape
    return (
        info.kind == "npy"
        and shape is not None
        and len(shape) == 2
        and shape[1] > 0
        and shape[0] >= _CHANNELS_LAST_RATIO * shape[1]
    )


def _dest_exists(dest: Path) -> bool:
    """Whether ``dest`` exists; a path that cannot even be checked (a folder without search
    permission, a name too long) fails this one file rather than the batch: Path.exists
    swallows only "not there" errors and raises the others."""
    try:
        return dest.exists()
    except OSError as err:
        raise FileProblem(dest, f"cannot write there ({err.strerror or err})") from err


def _guard(report: Report, item: _Item, options: RunOptions, work: Callable[[], None]) -> None:
    """Run one file's work; turn any failure into a report line (traceback with -v)."""
    try:
        work()
    except Exception as err:  # one bad file never stops the batch
        _failed(report, options, *failure_of(err, item.job.source), err)


def _failed(
    report: Report, options: RunOptions, path: str, reason: str, err: BaseException | None
) -> None:
    trace = "".join(traceback.format_exception(err)) if options.verbose and err else ""
    exit_code = err.exit_code if isinstance(err, FileProblem) else EXIT_RUNTIME
    _report_failure(report, path, reason, trace, exit_code)


def _report_failure(
    report: Report, path: str, reason: str, trace: str, exit_code: int = EXIT_RUNTIME
) -> None:
    if trace:
        # Best effort, as the report's own lines: an unwritable stderr must not stop the batch.
        with contextlib.suppress(OSError):
            sys.stderr.write(trace)
            sys.stderr.flush()
    report.failed(path, reason, exit_code)


class _Writes:
    """Writes results on one background thread while the next batch (or streamed block) is
    read and computed.

    Encoding and file I/O mostly run outside the GIL (numpy, libsndfile, system calls), so on
    a directory of small files this overlaps most of the writing with the work (2,000 clips:
    4.8 s to 4.1 s on 2 cores). At most one batch of results waits: :meth:`submit` first
    finishes the previous batch's writes, which bounds memory, and leaving the ``with``
    block finishes the last. Failures of single files are reported by the tasks themselves;
    anything else (Ctrl-C, a streamed block's write error) re-raises in the caller.
    """

    def __enter__(self) -> _Writes:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="diffconv-write"
        )
        self._pending: list = []
        return self

    def submit(self, tasks: list[Callable[[], None]]) -> None:
        self.wait()
        # A Ctrl-C between scheduling a write and listing it would leave a write that
        # _abandon does not wait for, running while its file is discarded ("write to closed
        # file" inside libsndfile): the signal is raised once every write is listed.
        with interrupts.deferred():
            for task in tasks:
                self._pending.append(self._pool.submit(task))

    def wait(self) -> None:
        """Finish the pending writes; re-raise the first exception one of them raised."""
        # A write leaves the list only once finished: a Ctrl-C while waiting for it must
        # leave it for _abandon to wait on, or its file is closed under the writer thread.
        while self._pending:
            self._pending[0].result()
            del self._pending[0]

    @contextlib.contextmanager
    def draining(self) -> Iterator[None]:
        """Finish the pending writes before leaving the block, also when it fails (their
        file is about to be closed or discarded); the block's own exception wins."""
        try:
            yield
        except BaseException:
            self._abandon()
            raise
        self.wait()

    def _abandon(self) -> None:
        """Drop the writes not yet started and let the running one finish (each is atomic):
        after Ctrl-C the run stops within one file's write, not one batch's."""
        for future in self._pending:
            future.cancel()
        concurrent.futures.wait(self._pending)
        self._pending = []

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
            else:
                self._abandon()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _run_group(group, operation, options, device, report, progress, writes) -> None:
    info = group[0].info
    size = initial_batch_size(info.samples * info.dtype.itemsize, device)
    start = 0
    while start < len(group):
        chunk = group[start : start + size]
        start += len(chunk)
        loaded = _load(chunk, options, report, progress)
        if loaded:
            size = _run_batch(loaded, operation, options, device, report, progress, size, writes)


def _load(chunk: list[_Item], options, report: Report, progress) -> list:
    loaded = []
    for item in chunk:
        try:
            loaded.append((item, read_signal(item.info)))
        except FileProblem as err:
            _failed(report, options, err.path, err.reason, err)
            progress.update(1)
    return loaded


def _run_batch(loaded, operation, options, device, report, progress, size: int, writes) -> int:
    """Apply the operation to a stacked batch; split it on out-of-memory; hand the results
    to ``writes``. Returns the batch size to use next (smaller after an out-of-memory error)."""
    failure = None
    try:
        results = _apply(np.stack([a for _, a in loaded]), loaded[0][0].info, operation, device)
    except Exception as exc:
        # Keep only a description: the exception's traceback holds the failed batch's device
        # tensors, which must be freed before a smaller retry can fit.
        failure = _describe(exc, loaded[0][0], options)
    if failure is None:
        tasks = [
            functools.partial(_write_one, item, result, options, report, progress)
            for (item, _), result in zip(loaded, results, strict=True)
        ]
        if any(item.job.to_stdout for item, _ in loaded):
            # Sent from this thread: a stalled reader then blocks the thread that SIGTERM or
            # Ctrl-C interrupts, not a writer thread this one would wait for forever.
            writes.wait()
            for task in tasks:
                task()
        else:
            writes.submit(tasks)
        return size
    out_of_memory, path, reason, trace = failure
    if out_of_memory:
        release_cached_memory(device)
        if len(loaded) > 1:
            half = len(loaded) // 2
            size = _run_batch(
                loaded[:half], operation, options, device, report, progress, max(1, half), writes
            )
            return _run_batch(
                loaded[half:], operation, options, device, report, progress, size, writes
            )
        _report_failure(report, str(loaded[0][0].job.source), "out of device memory", trace)
        progress.update(1)
        return 1
    if len(loaded) > 1:
        # Attribute the error to each file on its own (it may depend on the data).
        for one in loaded:
            _run_batch([one], operation, options, device, report, progress, 1, writes)
        return size
    _report_failure(report, path, reason, trace)
    progress.update(1)
    return size


def _describe(err: Exception, item: _Item, options: RunOptions) -> tuple[bool, str, str, str]:
    """(out of memory?, path, reason, traceback text if verbose) of a failed batch."""
    path, reason = failure_of(err, item.job.source)
    trace = "".join(traceback.format_exception(err)) if options.verbose else ""
    return is_out_of_memory(err), path, reason, trace


def _apply(stack: np.ndarray, info: SignalInfo, operation: Operation, device) -> np.ndarray:
    import torch

    batch = torch.from_numpy(stack).to(device)
    with torch.no_grad():
        out = operation.apply(batch, info)
    return out.cpu().numpy()


def _write_one(item: _Item, result: np.ndarray, options, report: Report, progress) -> None:
    _guard(report, item, options, lambda: _write(item, result, options, report))
    progress.update(1)


def _write(item: _Item, result: np.ndarray, options: RunOptions, report: Report) -> None:
    if item.job.to_stdout:
        writer = pipes.write_stdout(result, item.spec)
    else:
        writer = write_signal(item.job.dest, result, item.spec, overwrite=options.overwrite)
    _warn_clipping(writer, report)
    report.done(item.job.source, item.job.dest)


def _warn_clipping(writer: AtomicWriter, report: Report) -> None:
    if writer.clipped:
        count = writer.clipped
        report.warn(str(writer.dest), f"{count} sample{'s' * (count != 1)} clipped to [-1, 1]")
    if writer.nonfinite:
        count = writer.nonfinite
        said = f"{count} NaN/Inf sample{'s' * (count != 1)} written as 0"
        report.warn(str(writer.dest), said)


def _stream_one(item: _Item, operation, options, device, report, show_progress, writes) -> None:
    import torch

    made = operation.streamer(item.info, device)
    if made is None:
        # This operation cannot stream with these options: process the file whole.
        result = _apply(read_signal(item.info)[None], item.info, operation, device)[0]
        _write(item, result, options, report)
        return
    convolver, out_frames = made
    shape = (*item.info.shape[:-1], out_frames)
    bar = _progress(item.info.frames, "frame", show_progress)
    if item.job.to_stdout:
        writer = pipes.StdoutWriter(item.spec, shape)
    else:
        writer = AtomicWriter(item.job.dest, item.spec, shape, overwrite=options.overwrite)
    # Each block is encoded and written on the writer thread while the next one is read and
    # convolved; `draining` finishes those writes before the file is committed or discarded.
    with writer, torch.no_grad(), writes.draining(), _core_left_for_writing(device):
        for block in read_blocks(item.info, block_frames()):
            out = convolver.push(torch.from_numpy(block).to(device))
            if out.shape[-1]:
                writes.submit([functools.partial(writer.write, out.cpu().numpy())])
            bar.update(block.shape[-1])
        writes.submit([functools.partial(writer.write, convolver.flush().cpu().numpy())])
    bar.close()
    _warn_clipping(writer, report)
    report.done(item.job.source, item.job.dest, streamed=True)


@contextlib.contextmanager
def _core_left_for_writing(device) -> Iterator[None]:
    """While a file streams, torch computes on one core fewer than it has: the writer thread
    encodes and writes the previous block meanwhile, and a parallel op whose threads share
    cores with it waits for the slowest (2 cores, 10-minute stereo file, 4,095 taps: 1.84
    against 1.93 s, fastest of 4 runs; no change at 31 taps)."""
    import torch

    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2:
        yield
        return
    torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, unit: str, enabled: bool):
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
