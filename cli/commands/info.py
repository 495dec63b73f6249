"""``diffconv info FILE...``: what each file holds (frames, rate, channels, format, duration).

One line per file on stdout (it is the command's data); problems on stderr, one per file,
naming it and the reason. Every readable file is described, whatever fails around it. Exit
code 1 if a file cannot be read (a directory, an empty, corrupt or non-audio file), 2 if a
FILE does not exist (a usage error, as for every command's inputs) — both only after the
other files have been described. FILE ``-`` reads stdin (named ``<stdin>``), as the file
commands' INPUT ``-`` does. Headerless ``*.raw``/``*.pcm`` FILEs (and ``-`` with
``--raw-subtype``) are read as ``--rate``, ``--raw-subtype``, ``--channels`` and ``--endian``
say (:mod:`cli.raw`); without ``--rate`` or ``--raw-subtype`` that is a usage error.
"""

from __future__ import annotations

import click

from cli.options import raw_input_options, version_option


@click.command(name="info")
# readable=False: click would refuse the whole command (exit 2, nothing described) for one
# unreadable FILE; the probe reports it as that file's failure instead.
@click.argument("files", nargs=-1, required=True, type=click.Path(readable=False))
@raw_input_options("Sample rate of headerless .raw/.pcm FILEs (needed to read them).")
@version_option
def info(files: tuple[str, ...], **raw_options) -> None:
    """Describe audio and .npy FILES: frames, rate, channels, format/subtype, duration
    (shape and dtype for .npy). FILE - reads stdin. Headerless .raw/.pcm FILEs need --rate
    and --raw-subtype."""
    import os

    from cli import pipes
    from cli.audio_io import probe, probe_bytes
    from cli.errors import EXIT_USAGE, failure_of
    from cli.raw import RawFormat, check_usage, is_raw_path
    from cli.report import Report

    if files.count(pipes.DASH) > 1:
        raise click.UsageError("- (stdin) can be given only once")
    if pipes.DASH in files:
        from cli.distributed import ranks_from_env

        if ranks_from_env().distributed:  # one stdin, read by one rank, empty for the others
            raise click.UsageError("- (stdin) cannot be used under torchrun; use files")
    if pipes.DASH in files and pipes.stdin_is_terminal():
        raise click.UsageError(
            "no input on stdin; pipe (cat in.wav | ...) or redirect (< in.wav) a file"
        )
    raw = RawFormat.from_options(raw_options)
    headerless = [
        pipes.STDIN if path == pipes.DASH else path
        for path in files
        if (raw.reads_stdin if path == pipes.DASH else is_raw_path(path))
    ]
    check_usage(raw, headerless, what="FILE", rate_is_raw_only=True)
    report = Report(quiet=True)
    missing = False
    for path in files:
        if path == pipes.DASH:
            try:
                stdin_raw = raw if raw.reads_stdin else None
                click.echo(probe_bytes(pipes.read_stdin(), pipes.STDIN, stdin_raw).describe())
            except Exception as err:  # noqa: BLE001 - one unreadable file never stops the list
                report.failed(*failure_of(err, pipes.STDIN))
            continue
        if not os.path.exists(path):  # a dangling link is missing too, as in every command
            dangling = os.path.islink(path)
            report.failed(path, "a link to no file" if dangling else "no such file or directory")
            missing = True
            continue
        try:
            click.echo(probe(path, raw).describe())
        except Exception as err:  # noqa: BLE001 - one unreadable file never stops the list
            report.failed(*failure_of(err, path))
    click.get_current_context().exit(EXIT_USAGE if missing else report.return_code)
