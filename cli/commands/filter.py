"""``diffconv filter INPUT... OUTPUT --lowpass HZ``: designed FIR filtering in Hz.

The taps come from :mod:`diffconv_core.filters` (window-method design, as
``scipy.signal.firwin``) at each file's sample rate, then the files are convolved exactly as
``diffconv convolve`` does (mode "same": the output keeps the input's length).
"""

from __future__ import annotations

import math

import click

from cli.options import batch_options, check_window_params, window_params_option

_BANDS = ("lowpass", "highpass", "bandpass", "bandstop")


@click.command(name="filter")
@click.option("--lowpass", type=float, metavar="HZ", help="Keep frequencies below HZ.")
@click.option("--highpass", type=float, metavar="HZ", help="Keep frequencies above HZ.")
@click.option("--bandpass", type=(float, float), metavar="LO HI", help="Keep LO..HI Hz.")
@click.option("--bandstop", type=(float, float), metavar="LO HI", help="Remove LO..HI Hz.")
@click.option("--taps", type=int, default=101, show_default=True, help="Filter length.")
@click.option(
    "--window", default="hamming", show_default=True, help="Design window (diffconv windows)."
)
@window_params_option(
    help="Design window parameter NAME=VALUE, e.g. beta=8.6 for kaiser (repeatable)."
)
@batch_options
def filter(paths, lowpass, highpass, bandpass, bandstop, taps, window, params, **shared) -> None:
    """Filter INPUT files (or directories) with a designed FIR filter, writing OUTPUT.

    Give exactly one of --lowpass, --highpass, --bandpass, --bandstop. Frequencies are in Hz
    at each file's sample rate (.npy inputs need --rate).

    Files longer than DIFFCONV_STREAM_SAMPLES samples (frames x channels, default
    8388608) stream in blocks of DIFFCONV_BLOCK_FRAMES frames (default 262144), in bounded
    memory. Under torchrun the files are split across the ranks.
    """
    from cli.batch import check_kernel_memory, execute
    from cli.runner import RunOptions

    given = {
        name: value
        for name, value in zip(_BANDS, (lowpass, highpass, bandpass, bandstop), strict=True)
        if value is not None
    }
    if len(given) != 1:
        raise click.UsageError(
            "give exactly one of --lowpass, --highpass, --bandpass, --bandstop"
            + (f" (got {', '.join('--' + n for n in given)})" if given else "")
        )
    ((band, cutoff),) = given.items()
    for value in cutoff if isinstance(cutoff, tuple) else (cutoff,):
        # nan/inf parse as floats; the design then blamed a sample rate nobody gave.
        if not math.isfinite(value):
            raise click.BadParameter(f"{value} is not a frequency in Hz", param_hint=f"'--{band}'")
    options = RunOptions.from_shared(shared)

    def build():
        check_window_params(window, params)
        check_kernel_memory(taps, "'--taps'")
        return filter_operation(
            band,
            cutoff,
            taps=taps,
            window=window,
            rate=options.rate,
            method=shared["method"],
            window_params=dict(params),
        )

    execute(
        paths,
        options,
        build,
        glob=shared["glob"],
        recursive=shared["recursive"],
        needs_rate="filtering in Hz",
    )


def design(band: str, cutoff, *, taps: int, window: str, rate: float, window_params=None):
    """The FIR taps for ``band`` at sample rate ``rate``, from :mod:`diffconv_core.filters`
    (``window_params``: the window's parameters, e.g. ``{"beta": 8.6}`` for kaiser).

    Shape:
        returns ``(taps,)`` float64 tensor.

    Example:
        >>> design("lowpass", 1000.0, taps=5, window="hamming", rate=8000).shape
        torch.Size([5])
    """
    import torch

    from diffconv_core import filters

    function = getattr(filters, band)
    params = window_params or {}
    return function(taps, cutoff, window=window, fs=rate, dtype=torch.float64, **params)


def filter_operation(
    band, cutoff, *, taps=101, window="hamming", rate=None, method="auto", window_params=None
):
    """The :class:`~cli.runner.Operation` filtering each file at its own sample rate.

    The design is validated up front at a rate where the cutoffs are legal, so that bad
    options are usage errors; a cutoff above a particular file's Nyquist frequency fails
    that file only. ``rate`` (``--rate``) is the rate of .npy inputs only: a run of audio
    files is not refused for it, and an .npy file it does not suit fails saying so.
    """
    from cli.commands.convolve import kernel_operation
    from cli.runner import Operation

    highest = max(cutoff) if isinstance(cutoff, tuple) else cutoff
    shape = {"taps": taps, "window": window, "window_params": window_params}
    design(band, cutoff, rate=4.0 * abs(highest) + 4.0, **shape)
    kernel_operation([1.0], method=method)  # validates --method with the core
    per_rate: dict = {}

    def operation_for(info):
        fs = info.rate or rate
        if fs is None:
            # A .npy behind a pipe (<(cmd), a FIFO): its kind was known only once read, after
            # the up-front check that a .npy path gets. A usage error all the same.
            from cli.errors import EXIT_USAGE, FileProblem

            raise FileProblem(info.path, ".npy input needs --rate for filtering in Hz", EXIT_USAGE)
        if fs not in per_rate:
            try:
                kernel = design(band, cutoff, rate=fs, **shape).numpy()
            except ValueError as err:
                # The options passed the check up front, so this file's rate is the reason.
                source = "this file's rate" if info.rate else f"--rate {fs:g}"
                raise ValueError(f"{err} ({source}: fs/2 = {fs / 2:g} Hz)") from err
            per_rate[fs] = kernel_operation(kernel, method=method)
        return per_rate[fs]

    return Operation(
        apply=lambda batch, info: operation_for(info).apply(batch, info),
        streamer=lambda info, device: operation_for(info).streamer(info, device),
        check=lambda info: operation_for(info).check(info),
    )
