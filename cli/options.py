"""Options shared by the batch commands, defined once as decorators (as rasterio's ``rio``).

Nothing here imports torch or numpy: ``diffconv CMD --help`` and usage errors stay fast.
"""

from __future__ import annotations

import math
import re

import click

from cli.extensions import INPUT_EXTENSIONS
from cli.raw import ENDIANS, MAX_CHANNELS, SAMPLE_BYTES


class DeviceType(click.ParamType):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (availability is checked when running)."""

    name = "device"

    def convert(self, value, param, ctx):
        text = str(value).strip().lower()
        if re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
            return text
        self.fail(f"{value!r} is not one of auto, cpu, cuda, cuda:N", param, ctx)


class NameValueType(click.ParamType):
    """``NAME=VALUE``; VALUE becomes an int or float when it reads as one, a bool for
    true/false and None for none (any case), and a list of numbers when it is several numbers
    separated by commas (general_cosine's ``a=0.5,0.5``; one number and a comma for a
    one-item list).

    Example:
        >>> NameValueType().convert("beta=8.6", None, None)
        ('beta', 8.6)
        >>> NameValueType().convert("a=0.5, 0.5", None, None)
        ('a', [0.5, 0.5])
        >>> NameValueType().convert("a=1,", None, None)
        ('a', [1])
        >>> NameValueType().convert("norm=None", None, None)
        ('norm', None)
    """

    name = "NAME=VALUE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        name, sep, raw = str(value).partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            self.fail(f"{value!r} is not NAME=VALUE (e.g. std=7 or beta=8.6)", param, ctx)
        return name, _number(raw.strip())


def window_params_option(help: str):
    """``--param NAME=VALUE`` (repeatable), for every command that builds a window; a NAME
    given twice is a usage error (the last had silently won)."""

    def distinct(ctx: click.Context, param: click.Parameter, value):
        seen = set()
        for name, _ in value:
            if name in seen:
                raise click.BadParameter(f"{name} is given twice; give each parameter once")
            seen.add(name)
        return value

    return click.option(
        "--param", "params", type=NameValueType(), multiple=True, callback=distinct, help=help
    )


def check_window_params(window: str, params) -> None:
    """Every ``--param`` NAME must be a parameter of ``window`` (as ``diffconv windows``
    lists them), and a list VALUE (``a=0.5,0.5``) only for a sequence parameter
    (general_cosine's ``a``): for any other the core would build one window per channel.

    A name the design function also takes (``width`` makes firwin a Kaiser design, ``scale``
    or ``normalize`` change the gain) would otherwise reach it silently, and a name the
    command passes itself (``fs``, ``edges``) ended in a Python "multiple values" error.

    Raises:
        click.BadParameter: a name ``window`` does not take, or a list for a parameter that
            takes one value.
    """
    from diffconv_core._window_registry import lookup

    try:
        spec, _ = lookup(window)
    except (ValueError, TypeError):
        return  # an unknown window: the core names it, with the known ones
    accepted = {p.name for p in spec.params}
    vectors = {p.name for p in spec.params if p.vector}
    for name, value in params:
        if name not in accepted:
            known = (
                f"its parameters: {', '.join(sorted(accepted))}" if accepted else "it takes none"
            )
            raise click.BadParameter(
                f"{spec.name} has no parameter {name!r} ({known}){_option_hint(name)}",
                param_hint="'--param'",
            )
        if isinstance(value, list) and name not in vectors:
            raise click.BadParameter(
                f"{name}={','.join(map(str, value))}: {spec.name}'s {name} takes one value",
                param_hint="'--param'",
            )


def _option_hint(name: str) -> str:
    """Where a --param NAME is really an option of the running command, say so."""
    if name == "sym":
        return "; for a periodic window add _periodic to its name (e.g. --window hann_periodic)"
    context = click.get_current_context(silent=True)
    flag = "--" + name.replace("_", "-")
    if context is not None and any(flag in p.opts for p in context.command.params):
        return f"; use {flag}"
    return ""


def _number(text: str):
    # Boolean window settings (taylor's norm) as the registry lists them: True or False.
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    # And the optional ones' None (dpss's norm): listed as a choice, refused as the text
    # 'None' ("must be one of None, 2, ...; got 'None'").
    if text.lower() == "none":
        return None
    if "," in text:
        # Sequence parameters (general_cosine's a): every item a number, else left as text;
        # a trailing comma makes a one-item sequence (a=1,), as in Python.
        items = [_scalar(item.strip()) for item in text.strip("[]()").split(",")]
        if items and items[-1] == "":
            items.pop()
        if items and all(isinstance(i, (int, float)) for i in items):
            return items
        return text
    return _scalar(text)


def _scalar(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# The core's choices, listed here too because importing the core would import torch.
MODES = ["same", "full", "valid"]
PADDINGS = ["zeros", "reflect", "symmetric", "replicate", "circular"]


def mode_option(f):
    return click.option("--mode", type=click.Choice(MODES), default="same", show_default=True)(f)


def padding_option(help: str = "How the signal continues past its ends (same/full modes)."):
    def decorate(f):
        return click.option(
            "--padding", type=click.Choice(PADDINGS), default="zeros", show_default=True, help=help
        )(f)

    return decorate


def width_option(f):
    return click.option(
        "--width", type=float, default=None, help="Fractional window width (0 < W <= length)."
    )(f)


def method_option(f):
    return click.option(
        "--method",
        type=click.Choice(["auto", "direct", "fft", "overlap"]),
        default="auto",
        show_default=True,
        help="Convolution algorithm; auto picks the fastest for the sizes and device.",
    )(f)


def device_option(f):
    return click.option(
        "--device",
        type=DeviceType(),
        default="auto",
        show_default=True,
        help="auto (the GPU when present), cpu, cuda or cuda:N.",
    )(f)


def _overwrite_option(help: str):
    def decorate(f):
        return click.option("--overwrite", is_flag=True, help=help)(f)

    return decorate


#: ``--overwrite`` of the commands writing OUTPUT from INPUT (smooth, convolve, filter).
overwrite_option = _overwrite_option("Replace existing outputs (also OUTPUT equal to INPUT).")
#: ``--overwrite`` of the commands writing files of their own (grad's maps, fit's kernel).
overwrite_files_option = _overwrite_option("Replace existing output files.")


def _not_both_quiet_and_verbose(ctx: click.Context, param: click.Parameter, value: bool):
    # Each flag's callback checks the other: click runs them in command-line order, so the
    # second one given sees the first.
    other = "verbose" if param.name == "quiet" else "quiet"
    if value and ctx.params.get(other):
        raise click.UsageError("-q/--quiet and -v/--verbose contradict each other; give one")
    return value


def quiet_option(f):
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        callback=_not_both_quiet_and_verbose,
        help="Print errors only: no progress, warnings, summary.",
    )(f)


def verbose_option(f):
    return click.option(
        "-v",
        "--verbose",
        is_flag=True,
        callback=_not_both_quiet_and_verbose,
        help="One line per file; tracebacks for failures.",
    )(f)


def glob_option(f):
    return click.option(
        "--glob",
        "glob",
        metavar="PATTERN",
        default=None,
        help="Files to take from directory inputs (hidden ones only by a pattern starting "
        "with '.') [default: the extensions "
        + ", ".join(sorted(INPUT_EXTENSIONS))
        + "; .raw/.pcm with --raw-subtype].",
    )(f)


def recursive_option(f):
    return click.option(
        "-r", "--recursive", is_flag=True, help="Search directory inputs recursively."
    )(f)


def _finite_rate(ctx: click.Context, param: click.Parameter, value: float | None):
    # FloatRange lets nan and inf through (nan > 0 is False, but so is nan <= 0).
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a sample rate in Hz")
    return value


def _rate_option(help: str):
    def decorate(f):
        return click.option(
            "--rate",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            callback=_finite_rate,
            metavar="HZ",
            help=help,
        )(f)

    return decorate


_NPY_RATE = "Sample rate of .npy inputs (needed to filter them or write them as audio)"

#: ``--rate`` of ``grad``, which reads .npy but no headerless inputs.
grad_rate_option = _rate_option(
    "Sample rate of .npy inputs (needed for --start/--duration, which are in seconds)."
)
#: ``--rate`` of ``fit``.
fit_rate_option = _rate_option(
    "Sample rate of .npy inputs and targets (needed to crop them in seconds, and to pair "
    "them with audio files)."
)


def raw_input_options(
    rate_help: str = f"{_NPY_RATE}, and of headerless .raw/.pcm inputs (needed to read them).",
):
    """``--rate``, ``--raw-subtype``, ``--channels`` and ``--endian``: how to read headerless
    inputs (see :mod:`cli.raw`), as sox's ``-r``, ``-e``/``-b``, ``-c`` and ``-L``/``-B``.
    ``--rate`` keeps its meaning for .npy inputs; ``rate_help`` says what it is for here."""

    def decorate(f):
        for decorator in reversed(
            [
                _rate_option(rate_help),
                click.option(
                    "--raw-subtype",
                    type=click.Choice(list(SAMPLE_BYTES), case_sensitive=False),
                    default=None,
                    metavar="NAME",
                    help="Sample format of headerless inputs (*.raw, *.pcm files; stdin - "
                    f"too, once this is given): {', '.join(SAMPLE_BYTES)}. Needs --rate.",
                ),
                click.option(
                    "--channels",
                    type=click.IntRange(min=1, max=MAX_CHANNELS),
                    default=None,
                    metavar="N",
                    help="Interleaved channels of headerless inputs [default: 1].",
                ),
                click.option(
                    "--endian",
                    type=click.Choice(ENDIANS, case_sensitive=False),
                    default=None,
                    help="Byte order of headerless inputs [default: little].",
                ),
            ]
        ):
            f = decorator(f)
        return f

    return decorate


def _named_subtype(ctx, param, value):
    # An empty name read as "not given" where outputs are checked, then failed every file.
    if value is not None and not value.strip():
        raise click.BadParameter(f"give a sample format such as PCM_16 or FLOAT; got {value!r}")
    return value


def subtype_option(f):
    return click.option(
        "--subtype",
        default=None,
        metavar="NAME",
        callback=_named_subtype,
        help=(
            "Output sample format, e.g. PCM_16, PCM_24, FLOAT [default: the input's; for a "
            ".npy input FLOAT, or the nearest the output format has]."
        ),
    )(f)


class OutputTypeType(click.ParamType):
    """An output extension without its dot (``wav``, ``flac``, ``npy``); a leading dot and
    capitals are accepted. Whether a format has it is checked when the command runs (that
    needs soundfile).

    Example:
        >>> OutputTypeType().convert(".FLAC", None, None)
        'flac'
    """

    name = "EXT"

    def convert(self, value, param, ctx):
        text = str(value).strip().lower().removeprefix(".")
        if not text or not text.isalnum():
            self.fail(f"{value!r} is not a file extension (e.g. wav, flac, npy)", param, ctx)
        return text


def type_option(f):
    return click.option(
        "-t",
        "--type",
        "type",
        type=OutputTypeType(),
        default=None,
        help="Format of OUTPUT - (stdout), as an extension: wav, flac, npy, raw... "
        "[default: the input's]. INPUT - reads stdin (audio with a header, or .npy; "
        "headerless samples with --raw-subtype).",
    )(f)


def version_option(f):
    """``--version`` on every command as well as on the group."""
    from cli import __version__

    return click.version_option(__version__, "--version", prog_name="diffconv")(f)


def inputs_output_arguments(f):
    """``INPUT... OUTPUT``: click collects all paths; the last is the output."""
    return click.argument("paths", nargs=-1, required=True, metavar="INPUT... OUTPUT")(f)


def batch_options(f):
    """Every option a file-processing command shares, plus ``INPUT... OUTPUT``."""
    for decorator in reversed(
        [
            inputs_output_arguments,
            method_option,
            device_option,
            glob_option,
            recursive_option,
            raw_input_options(),
            subtype_option,
            type_option,
            overwrite_option,
            quiet_option,
            verbose_option,
            version_option,
        ]
    ):
        f = decorator(f)
    return f


def split_paths(paths: tuple[str, ...]) -> tuple[list[str], str]:
    """``INPUT... OUTPUT`` -> (inputs, output); a usage error unless both are there."""
    if len(paths) < 2:
        raise click.UsageError("give at least one INPUT and an OUTPUT")
    return list(paths[:-1]), paths[-1]
