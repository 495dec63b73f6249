"""Turn ``INPUT... OUTPUT`` into a list of (input file, output file) jobs, before any work.

The rules (every violation is a usage error, exit code 2, raised before a file is touched):

- one input file and an OUTPUT that is not a directory: one job, written to OUTPUT;
- several inputs, a directory input, an existing OUTPUT directory or an OUTPUT ending in a
  path separator: OUTPUT is a directory (created if missing). Files from a directory INPUT
  keep their path relative to it (``--glob`` picks them, ``--recursive`` descends; hidden
  files and folders are skipped, hidden files not when the pattern starts with a dot;
  headerless ``*.raw``/``*.pcm`` files only with ``raw``); single files keep their name;
- every input must exist, an OUTPUT that must be a directory must not be a file, and no two
  inputs may map to one output.

With ``stdio=True`` (the file commands), ``-`` as the INPUT reads stdin and ``-`` as the
OUTPUT writes stdout (see :mod:`cli.pipes`): one job, ``-`` the only INPUT, stdout fed by one
INPUT file, stdin written to one OUTPUT file; neither under torchrun.

The order is deterministic (sorted), so every rank of a distributed run plans the same list.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from cli import distributed, pipes
from cli.errors import FileProblem
from cli.extensions import INPUT_EXTENSIONS
from cli.raw import is_raw_path


@dataclass(frozen=True)
class Job:
    """One file to process: where it comes from and where its result goes.

    ``stdin``: the bytes read from stdin when the INPUT was ``-``; ``to_stdout``: the OUTPUT
    was ``-`` (see :mod:`cli.pipes`). ``source``/``dest`` then only name the stream in
    messages (``<stdin>``, ``<stdout>``).
    """

    source: Path
    dest: Path
    stdin: bytes | None = field(default=None, repr=False, compare=False)
    to_stdout: bool = False
    #: why this entry of a directory INPUT fails, known while listing it (a folder that
    #: cannot be read, a dangling symlink); the run reports it as a failed file.
    problem: str | None = None
    #: the output's name was made from the input's (OUTPUT is a directory), not given: a
    #: name that cannot be written is then this file's failure, not the command line's.
    mirrored: bool = False

    @property
    def from_stdin(self) -> bool:
        return self.stdin is not None


def plan_jobs(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    glob: str | None = None,
    recursive: bool = False,
    stdio: bool = False,
    raw: bool = False,
    notes: list[str] | None = None,
    writes: bool = True,
) -> list[Job]:
    """Expand the command line's INPUT... OUTPUT into jobs (see the module docstring).

    Args:
        inputs: files and/or directories.
        output: a file (one input file) or a directory.
        glob: pattern for files inside directory inputs (default: every file with an audio
            or .npy extension).
        recursive: search directory inputs recursively.
        stdio: ``-`` means stdin as an INPUT and stdout as the OUTPUT (stdin is read here,
            whole).
        raw: directory inputs also give their headerless ``*.raw``/``*.pcm`` files (the
            command line says how to read them); without it they are left out.
        notes: gets a line for each directory whose headerless files were left out.
        writes: whether the jobs' outputs are to be written (``fit`` only pairs the files of
            two trees): no two jobs may then write one file.

    Raises:
        click.UsageError: a missing input, an OUTPUT that is a file where a directory is
            needed, no matching files, or two inputs with the same output (``writes``).

    Example:
        >>> [(str(j.source), str(j.dest)) for j in plan_jobs(["sample_data/speech_mono16.wav"],
        ...                                                  "out.wav")]
        [('sample_data/speech_mono16.wav', 'out.wav')]
    """
    with refused_paths():
        return _plan_jobs(inputs, output, glob, recursive, stdio, raw, notes, writes)


@contextlib.contextmanager
def refused_paths() -> Iterator[None]:
    """A path the system refuses outright (a name over 255 bytes, a loop of links), met while
    the command line's paths are looked at, as a usage error naming it: nothing can be read
    or written there, whatever the files hold. (Its ``OSError`` reached the command group as
    "diffconv: error: File name too long", exit 1.)

    Example:
        >>> with refused_paths():
        ...     os.stat("x" * 300)
        Traceback (most recent call last):
        click.exceptions.UsageError: xxx...: file name too long
    """
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENAMETOOLONG, errno.ELOOP):
            raise
        reason = (err.strerror or str(err)).lower()
        raise click.UsageError(f"{err.filename}: {reason}") from None


def _plan_jobs(inputs, output, glob, recursive, stdio, raw, notes, writes) -> list[Job]:
    if not inputs:
        raise click.UsageError("give at least one INPUT and an OUTPUT")
    if stdio and (pipes.DASH in inputs or os.fspath(output) == pipes.DASH):
        return [_plan_pipe([os.fspath(p) for p in inputs], os.fspath(output))]
    sources = [Path(p) for p in inputs]
    for src in sources:
        if not src.exists():
            raise click.BadParameter(f"{src}: {why_missing(src)}", param_hint="INPUT")
    out = Path(output)
    out_is_dir = (
        len(sources) > 1
        or any(s.is_dir() for s in sources)
        or out.is_dir()
        or os.fspath(output).endswith((os.sep, "/"))
    )
    if not out_is_dir:
        _check_parent(out)
        return [Job(sources[0], out)]
    if out.exists() and not out.is_dir():
        raise click.UsageError(
            f"OUTPUT {out} is a file, but must be a directory when the input is a directory "
            "or several files"
        )
    _check_parent(out)
    jobs: list[Job] = []
    for src in sources:
        if src.is_dir():
            found, problems, in_output = _find_files(src, glob, recursive, exclude=out)
            if in_output and notes is not None:
                # Outputs of an earlier run, usually; but inputs put there are left out too.
                files = "file" if in_output == 1 else "files"
                notes.append(
                    f"{src}: {in_output} {files} under the output directory {out} left out "
                    "(what lies in OUTPUT is never taken as input)"
                )
            headerless = 0
            if not (raw or glob):
                kept = [f for f in found if not is_raw_path(f)]
                headerless, found = len(found) - len(kept), kept
            if not found and not problems:
                how = f"matching {glob!r}" if glob else "with an audio or .npy extension"
                hint = (
                    f" ({headerless} headerless .raw/.pcm left out: their format was not given)"
                    if headerless
                    else ""
                )
                if not recursive and not hint and _has_visible_folder(src):
                    hint = " (its subfolders are searched with -r/--recursive)"
                raise click.UsageError(f"no input files {how} in {src}{hint}")
            if headerless and notes is not None:
                files = "file" if headerless == 1 else "files"
                notes.append(
                    f"{src}: {headerless} headerless .raw/.pcm {files} left out (read them "
                    "with --rate and --raw-subtype)"
                )
            entries = [Job(f, out / f.relative_to(src), mirrored=True) for f in found]
            entries += [
                Job(p, out / p.relative_to(src), problem=r, mirrored=True) for p, r in problems
            ]
            jobs.extend(sorted(entries, key=lambda job: job.source))
        else:
            jobs.append(Job(src, out / src.name, mirrored=True))
    if writes:
        _check_unique(jobs)
    return jobs


def _plan_pipe(inputs: list[str], output: str) -> Job:
    """The one job of a command line with ``-`` as INPUT or OUTPUT (stdin read here)."""
    dash = pipes.DASH
    if distributed.ranks_from_env().distributed:
        # Every rank would read the one stdin and the ranks share one stdout; a pipe is one
        # stream, for one process.
        raise click.UsageError("- (stdin or stdout) cannot be used under torchrun; use files")
    if dash in inputs and len(inputs) > 1:
        raise click.UsageError("- (stdin) must be the only INPUT")
    if output == dash:
        if len(inputs) > 1:
            raise click.UsageError("- (stdout) takes one result: give one INPUT")
        if pipes.stdout_is_closed():
            raise click.UsageError(
                "- (stdout) is closed; redirect it (> out.wav) or pipe it into a program"
            )
        if pipes.stdout_is_terminal():
            raise click.UsageError(
                "- (stdout) is a terminal; redirect it (> out.wav) or pipe it into a program"
            )
    if inputs[0] == dash:
        if pipes.stdin_is_terminal():
            raise click.UsageError(
                "no input on stdin; pipe (cat in.wav | ...) or redirect (< in.wav) a file"
            )
        try:
            source, data = Path(pipes.STDIN), pipes.read_stdin()
        except FileProblem as err:
            raise click.ClickException(str(err)) from err
    else:
        source, data = Path(inputs[0]), None
        if not source.exists():
            raise click.BadParameter(f"{source}: {why_missing(source)}", param_hint="INPUT")
        if source.is_dir():
            raise click.UsageError(
                f"- (stdout) takes one result, but INPUT {source} is a directory"
            )
    if output == dash:
        return Job(source, Path(pipes.STDOUT), stdin=data, to_stdout=True)
    dest = Path(output)
    if dest.is_dir() or output.endswith((os.sep, "/")):
        raise click.UsageError(
            f"- (stdin) has no file name to write into the directory {output}; give an OUTPUT "
            "file name (or -)"
        )
    _check_parent(dest)
    return Job(source, dest, stdin=data)


def why_missing(path: Path) -> str:
    """Why ``path``, which does not exist as far as ``Path.exists`` tells, cannot be read:
    a symbolic link that leads nowhere, or to itself, is there all the same.

    Example:
        >>> why_missing(Path("no/such/file.wav"))
        'no such file or directory'
    """
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as err:
            return f"a symbolic link that cannot be followed ({(err.strerror or str(err)).lower()})"
    return "no such file or directory"


def _check_parent(path: Path) -> None:
    # A file where a parent directory should be can never be written; say so up front.
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise click.UsageError(f"output directory {parent} is a file")
            return


def _unreadable_folders(folder: Path, recursive: bool) -> list[tuple[Path, str]]:
    """The folders under ``folder`` (itself included) that cannot be listed, with why:
    pathlib's glob skips them silently, and their files would be missing from the batch
    without a word (an unreadable INPUT folder said "no input files")."""
    problems: list[tuple[Path, str]] = []

    def failed(err: OSError) -> None:
        path = Path(err.filename) if err.filename else folder
        problems.append((path, f"cannot read the folder ({err.strerror or err})"))

    for _root, dirs, _files in os.walk(folder, onerror=failed):
        # Hidden folders are not searched (see _find_files), so not checked either.
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
    return problems


def _broken_link_reason(path: Path) -> str | None:
    """Why ``path``, a name in a listed folder that is not a file, fails as an input: a
    dangling symlink or a symlink loop (None: a folder or the like, not an input)."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except FileNotFoundError:
        return "a link to no file"
    except OSError as err:  # a loop: "Too many levels of symbolic links"
        return f"cannot read ({err.strerror or err})"
    return None


def _has_visible_folder(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(e.is_dir() and not e.name.startswith(".") for e in entries)
    except OSError:
        return False


def _find_files(
    folder: Path, glob: str | None, recursive: bool, exclude: Path
) -> tuple[list[Path], list[tuple[Path, str]], int]:
    """The input files in ``folder``, sorted, the entries that fail as inputs (folders that
    cannot be listed, broken symlinks with an input's name), with the reason, and how many
    files were left out for lying under ``exclude`` (the output directory)."""
    pattern = glob or "*"
    try:  # pathlib checks the pattern on the first step of the walk
        candidates = list(folder.rglob(pattern) if recursive else folder.glob(pattern))
    except NotImplementedError:  # an absolute pattern
        raise click.UsageError(
            f"--glob {pattern!r}: give a pattern relative to the directory, like '*.wav'"
        ) from None
    except ValueError as error:  # e.g. '**' inside a path component
        raise click.UsageError(f"--glob {pattern!r}: {error}") from None
    # Outputs written inside the input tree are not inputs on a rerun. Resolving every file
    # costs a system call per path component, so only when OUTPUT lies inside the folder.
    inside = exclude.resolve()
    skip_inside = inside != folder.resolve() and folder.resolve() in inside.parents
    files = []
    in_output = 0
    problems = _unreadable_folders(folder, recursive)
    # A pattern whose file part starts with a dot asks for hidden files by name.
    wants_hidden = pattern.rsplit("/", 1)[-1].startswith(".")
    for path in candidates:
        # Hidden files include our own temporary outputs (".name.xxx.part"); hidden folders
        # (.git, .ipynb_checkpoints, .Trash) hold copies and clutter, never a tree's inputs.
        *folders, name = path.relative_to(folder).parts
        if any(part.startswith(".") for part in folders) or name.endswith(".part"):
            continue
        if name.startswith(".") and not wants_hidden:
            continue
        if glob is None and not (path.suffix.lower() in INPUT_EXTENSIONS or is_raw_path(path)):
            continue
        if not path.is_file():
            reason = _broken_link_reason(path)
            if reason is not None:
                problems.append((path, reason))
            continue
        if skip_inside and inside in path.resolve().parents:
            in_output += 1
            continue
        files.append(path)
    return sorted(files), problems, in_output


def _check_unique(jobs: list[Job]) -> None:
    # Outputs are compared as the files they will write: symlinks are written through (see
    # cli.writing), so out/a.wav -> b.wav and out/b.wav are one file, and a result is lost.
    real_parents: dict[Path, str] = {}
    seen: dict[str, Path] = {}
    for job in jobs:
        parent = real_parents.get(job.dest.parent)
        if parent is None:  # a batch writes into few directories: resolve each once
            parent = real_parents[job.dest.parent] = os.path.realpath(job.dest.parent)
        key = os.path.join(parent, job.dest.name)
        if os.path.islink(key):
            key = os.path.realpath(key)
        if key in seen:
            raise click.UsageError(
                f"{seen[key]} and {job.source} would both be written to {job.dest}"
            )
        seen[key] = job.source
