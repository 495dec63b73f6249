"""``diffconv tune``: measure which convolution method is fastest on a device, and remember it."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import click

from cli import interrupts
from cli.options import device_option, quiet_option, version_option


@click.command(name="tune")
@device_option
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float64"]),
    default="float32",
    show_default=True,
    help="Data type to measure.",
)
@click.option("--quick", is_flag=True, help="Measure a quarter of the grid (about 15 s).")
@click.option(
    "--cache",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help=(
        "Cache file to write [default: $DIFFCONV_CACHE_DIR/methods.json, else "
        "$XDG_CACHE_HOME/diffconv/methods.json, else ~/.cache/diffconv/methods.json]."
    ),
)
@quiet_option
@version_option
def tune(device: str, dtype: str, quick: bool, cache: str | None, quiet: bool) -> None:
    """Time direct, FFT and overlap-save convolution on a grid of shapes on DEVICE and cache the
    fastest per shape; method "auto" consults the default cache from then on (nearest measured
    shape). A --cache file elsewhere is read only where DIFFCONV_CACHE_DIR names its folder
    and it is called methods.json.

    The full grid (84 shapes on CPU, 93 on CUDA) takes under a minute on 2 CPU cores (43 s
    measured), --quick about 15 s; a GPU is faster. Progress goes to stderr unless -q.
    """
    import torch

    from cli.devices import resolve_device
    from diffconv_core import tuning

    torch_device = resolve_device(device)
    torch_dtype = getattr(torch, dtype)
    if cache is not None:
        _check_not_foreign(Path(cache))
    _check_writable(Path(cache) if cache else tuning.cache_path(), given=cache is not None)

    def report(record: dict) -> None:
        if quiet:
            return
        cells = "  ".join(
            f"{name}={1e3 * s['total']:.2f}ms" for name, s in record["seconds"].items()
        )
        click.echo(
            f"B={record['batch']:<5} T={record['T']:<8} K={record['K']:<6} "
            f"-> {record['method']:<8} ({cells}, forward+backward)",
            err=True,
        )

    shapes = tuning.default_shapes(torch_device.type, quick=quick)
    if not quiet:
        click.echo(f"timing 3 methods on {len(shapes)} shapes, one line each", err=True)
    records = tuning.measure(torch_device, torch_dtype, shapes, progress=report)
    try:
        with interrupts.deferred():  # a Ctrl-C in mid-save would leave its temporary file
            path = tuning.save(records, torch_device, torch_dtype, cache)
    except OSError as error:
        where = cache or tuning.cache_path()
        raise click.ClickException(f"cannot write the cache {where}: {error}") from None
    if not quiet:
        click.echo(f"wrote {len(records)} measured shapes to {path}", err=True)


def _check_not_foreign(path: Path) -> None:
    """A --cache that names an existing file other than a method cache is refused: the
    measurements are merged into the file and anything that is not a JSON object was
    replaced by them (``--cache song.wav`` lost the recording, without --overwrite)."""
    import json
    import stat

    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            # A device, FIFO or socket: replaced by a rename (as root, --cache /dev/null
            # destroyed the device), or read forever (a FIFO).
            raise click.BadParameter(
                f"{path} exists and is not a regular file; it is never replaced: name a new file",
                param_hint="'--cache'",
            )
        if path.stat().st_size == 0:
            return
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):  # nothing there to lose
        return
    except (OSError, ValueError, RecursionError):
        data = None
    # A method cache maps device keys to lists of records; another JSON object (a
    # package.json) was merged into and rewritten.
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise click.BadParameter(
            f"{path} exists and is not a diffconv method cache (a JSON object of measured "
            "records); it is never replaced: name a new file or remove it",
            param_hint="'--cache'",
        )


def _check_writable(path: Path, *, given: bool) -> None:
    """Fail before the minutes of measuring, not after them, when the cache cannot be
    written: make its folder and a scratch file in it (as root, permission bits alone do not
    tell; a read-only file system or a file where a folder should be still refuses)."""
    try:
        if path.parent.exists() and not path.parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{path.parent} is not a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=".methods-", suffix=".probe")
        os.close(handle)
        os.unlink(scratch)
    except OSError as error:
        message = f"cannot write the cache {path}: {error.strerror or error}"
        if given:
            raise click.BadParameter(message, param_hint="'--cache'") from None
        raise click.ClickException(message) from None
