"""Per-file outcome bookkeeping for batch commands (in the manner of black's ``Report``).

Every file ends as *done* or *failed*; warnings (clipping, NaN written as zero) are attached
to a done file. Messages go to stderr as they happen; :meth:`Report.summary` gives the closing
line and :attr:`Report.return_code` the exit code (1 if anything failed, 2 if a failure was a
usage error found only once the file was read, e.g. a .npy behind a pipe without --rate).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import click

from cli.errors import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, discard_further_output


@dataclass
class Report:
    """Counts and messages for one run of a batch command.

    Args:
        quiet: print only errors (no warnings, no summary).
        verbose: also print one line per finished file.

    Example:
        >>> r = Report(quiet=True)
        >>> r.done("a.wav", "a_out.wav")
        >>> r.failed("b.wav", "file is empty")
        >>> r.summary(), r.return_code
        ('1 file processed, 1 file failed.', 1)
    """

    quiet: bool = False
    verbose: bool = False
    done_count: int = 0
    failure_count: int = 0
    warning_count: int = 0
    #: (input path, output path) of every finished file, in completion order.
    done_paths: list[tuple[str, str]] = field(default_factory=list)
    #: (path, reason) of every failure.
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: whether a failure was a usage error (exit code 2 rather than 1).
    usage_failed: bool = False
    #: warnings said once per run (:meth:`warn_once`): message -> (job order, path).
    once: dict[str, tuple[int, str]] = field(default_factory=dict)

    def done(self, source: str, dest: str, *, streamed: bool = False) -> None:
        """Record a file written successfully."""
        self.done_count += 1
        self.done_paths.append((str(source), str(dest)))
        if self.verbose:
            how = " (streamed)" if streamed else ""
            _say(f"done: {shown(source)} -> {shown(dest)}{how}")

    def failed(self, path: str, reason: str, exit_code: int = EXIT_RUNTIME) -> None:
        """Record a failure; printed even with ``--quiet`` (an error must never be silent).
        ``exit_code`` 2: the options did not suit this file (a usage error)."""
        self.failure_count += 1
        self.usage_failed = self.usage_failed or exit_code == EXIT_USAGE
        self.failures.append((str(path), reason))
        _say(f"error: {shown(path)}: {reason}", fg="red")

    def warn(self, path: str, message: str) -> None:
        """A problem that did not stop the file (e.g. samples clipped on writing)."""
        self.warning_count += 1
        if not self.quiet:
            _say(f"warning: {shown(path)}: {message}", fg="yellow")

    def warn_once(self, message: str, order: int, path: str) -> None:
        """A warning said once per run whatever the files that meet it (an impulse
        response at another rate than a batch's files), with the first such file in the
        run's order (``order``: the file's place in the whole job list): so under torchrun,
        where each rank meets its own files, it reads as in one process. Said at the end,
        with the summary (:meth:`print_summary`)."""
        if message not in self.once or order < self.once[message][0]:
            self.once[message] = (order, str(path))

    @property
    def return_code(self) -> int:
        if self.usage_failed:
            return EXIT_USAGE
        return EXIT_RUNTIME if self.failure_count else EXIT_OK

    def merge(self, other: dict) -> None:
        """Add another rank's counts (from :meth:`as_dict`) without re-printing its messages."""
        self.done_count += other["done_count"]
        self.failure_count += other["failure_count"]
        self.warning_count += other["warning_count"]
        self.done_paths.extend(tuple(p) for p in other["done_paths"])
        self.failures.extend(tuple(f) for f in other["failures"])
        self.usage_failed = self.usage_failed or other["usage_failed"]
        for message, (order, path) in other["once"].items():
            self.warn_once(message, order, path)

    def as_dict(self) -> dict:
        """Plain data, picklable for ``torch.distributed.all_gather_object``."""
        return {
            "done_count": self.done_count,
            "failure_count": self.failure_count,
            "warning_count": self.warning_count,
            "done_paths": list(self.done_paths),
            "failures": list(self.failures),
            "usage_failed": self.usage_failed,
            "once": dict(self.once),
        }

    def summary(self) -> str:
        parts = [_plural(self.done_count, "file") + " processed"]
        if self.failure_count:
            parts.append(_plural(self.failure_count, "file") + " failed")
        warnings = self.warning_count + len(self.once)
        if warnings:
            parts.append(_plural(warnings, "warning"))
        return ", ".join(parts) + "."

    def print_summary(self) -> None:
        """The run-wide warnings, in the order of their first files, then the summary."""
        if not self.quiet:
            for message, (_, path) in sorted(self.once.items(), key=lambda item: item[1]):
                _say(f"warning: {shown(path)}: {message}", fg="yellow")
            _say(self.summary())


def shown(path: object) -> str:
    """``path`` for a message line: control characters escaped (a name holding a newline
    broke the one line per file that scripts read), as are bytes of a name that is not
    UTF-8 (``\\xff``); everything else, spaces and accents included, as it is.

    Example:
        >>> print(shown("take" + chr(10) + "2.wav"), shown("café 1.wav"))
        take\\n2.wav café 1.wav
        >>> print(shown("bad" + chr(0xDCFF) + ".wav"))  # os.fsdecode(b"bad\\xff.wav")
        bad\\xff.wav
    """
    text = str(path)
    if text.isprintable():
        return text
    return "".join(_escaped(c) for c in text)


def _escaped(c: str) -> str:
    if c.isprintable():
        return c
    if "\udc80" <= c <= "\udcff":  # a byte that is not UTF-8, as os.fsdecode keeps it
        return f"\\x{ord(c) - 0xDC00:02x}"
    return repr(c)[1:-1]


def _say(message: str, fg: str | None = None) -> None:
    """Print one line to stderr, best effort: a stderr that cannot be written (``2>/dev/full``,
    a closed pipe) must not stop the batch at its first message; the exit code still says
    whether anything failed."""
    try:
        click.secho(message, err=True, fg=fg)
    except OSError:
        # Python flushes stderr once more at exit and would fail there again.
        discard_further_output(sys.stderr)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
