"""``diffconv info FILE...``: what each file holds (frames, rate, channels, format, duration).

One line per file on stdout (it is the command's data); problems on stderr. Exit code 1 if a
file cannot be read, after the others have been described.
"""

from __future__ import annotations

import click


@click.command(name="info")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def info(files: tuple[str, ...]) -> None:
    """Describe audio and .npy FILES: frames, rate, channels, format/subtype, duration
    (shape and dtype for .npy)."""
    from cli.audio_io import probe
    from cli.errors import FileProblem
    from cli.report import Report

    report = Report(quiet=True)
    for path in files:
        try:
            click.echo(probe(path).describe())
        except FileProblem as err:
            report.failed(err.path, err.reason)
    click.get_current_context().exit(report.return_code)
