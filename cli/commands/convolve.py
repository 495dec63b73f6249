"""``diffconv convolve INPUT... OUTPUT --kernel FILE``: convolve files with any kernel.

Thin: the kernel comes from :mod:`cli.kernels`, the math from
:func:`diffconv_core.convolve`/:func:`diffconv_core.correlate`, long files stream through
:class:`diffconv_core.streaming.StreamingConvolver`, and files go through :mod:`cli.batch`.
"""

from __future__ import annotations

import click

from cli.options import batch_options, mode_option, padding_option


@click.command(name="convolve")
@click.option(
    "--kernel",
    "kernel_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Kernel: .npy (K,) or (C, K); .txt/.csv numbers (as sox fir takes them); or an "
    "audio impulse response (one kernel per channel).",
)
@mode_option
@padding_option()
@click.option("--correlate", is_flag=True, help="Correlate (do not flip the kernel).")
@click.option(
    "--normalize",
    type=click.Choice(["none", "sum", "peak", "energy"]),
    default="none",
    show_default=True,
    help="Scale the kernel to unit sum, unit peak or unit energy first.",
)
@batch_options
def convolve(paths, kernel_path, mode, padding, correlate, normalize, **shared) -> None:
    """Convolve INPUT files (or directories) with a kernel file, writing OUTPUT.

    Several INPUTs or a directory need an OUTPUT directory, which mirrors the inputs'
    relative paths.

    Files longer than DIFFCONV_STREAM_SAMPLES samples (frames x channels, default
    8388608) stream in blocks of DIFFCONV_BLOCK_FRAMES frames (default 262144), in bounded
    memory. Under torchrun the files are split across the ranks.
    """
    from cli.batch import execute
    from cli.kernels import kernel_from_option
    from cli.runner import RunOptions

    options = RunOptions.from_shared(shared)

    def build():
        kernel, rate = kernel_from_option(kernel_path, normalize)
        return kernel_operation(
            kernel,
            mode=mode,
            padding=padding,
            correlate=correlate,
            method=shared["method"],
            rate=rate,
            name=kernel_path,
        )

    execute(paths, options, build, glob=shared["glob"], recursive=shared["recursive"])


def kernel_operation(
    kernel,
    *,
    mode="same",
    padding="zeros",
    correlate=False,
    method="auto",
    rate=None,
    name="the kernel",
):
    """The :class:`~cli.runner.Operation` that convolves every file with ``kernel``.

    Also used by ``filter`` (and usable by other commands with a fixed kernel). Options the
    core rejects raise ValueError/TypeError here, before any file is read. A kernel recorded
    at a sample ``rate`` (an impulse response from an audio file, called ``name``) is applied
    sample for sample all the same; a file at another rate gets a warning, once per rate.

    Shape:
        kernel ``(K,)`` (every channel) or ``(C, K)`` (one per channel; files must have C
        channels); files ``(C, T)`` -> ``(C, T')`` with T' set by ``mode``.

    Example:
        >>> import numpy as np, torch
        >>> op = kernel_operation(np.array([0.25, 0.5, 0.25]))
        >>> op.apply(torch.ones(1, 1, 4), None)
        tensor([[[0.7500, 1.0000, 1.0000, 0.7500]]])
    """
    import numpy as np
    import torch

    from cli.audio_io import read_tail
    from cli.runner import Operation
    from diffconv_core import convolve as core_convolve
    from diffconv_core import correlate as core_correlate
    from diffconv_core.streaming import StreamingConvolver, mode_pads

    kernel = np.asarray(kernel, dtype=np.float64)
    function = core_correlate if correlate else core_convolve
    # Let the core validate mode/padding/method now, so a bad option is a usage error.
    function(
        torch.zeros(8, dtype=torch.float64),
        torch.ones(3, dtype=torch.float64),
        mode,
        padding=padding,
        method=method,
    )
    taps = kernel.shape[-1]
    cache: dict = {}

    def kernel_as(dtype, device):
        key = (dtype, str(device))
        if key not in cache:
            cache[key] = torch.as_tensor(kernel, dtype=dtype, device=device)
        return cache[key]

    def check(info) -> None:
        if kernel.ndim == 2 and kernel.shape[0] != info.channels:
            raise ValueError(
                f"the kernel has {kernel.shape[0]} channels but the signal has {info.channels}"
            )
        if mode == "valid" and taps > info.frames:
            raise ValueError(
                f"the kernel ({taps} taps) is longer than the signal ({info.frames} samples): "
                "mode 'valid' filters only where the kernel fits inside the signal (scipy "
                "would swap the two and filter the kernel by the signal); use mode 'same' "
                "or 'full'"
            )

    def apply(batch, info):
        return function(
            batch, kernel_as(batch.dtype, batch.device), mode, padding=padding, method=method
        )

    def streamer(info, device):
        dtype = torch.float64 if info.dtype.itemsize == 8 else torch.float32
        left, right = mode_pads(mode, taps)
        tail = None
        if padding == "circular" and left:
            # The start's pad is the file's end: read it first so the output can stream.
            tail = torch.as_tensor(read_tail(info, left), device=device)
        conv = StreamingConvolver(
            kernel_as(dtype, device), mode, padding, correlate, method, circular_tail=tail
        )
        return conv, info.frames + left + right - taps + 1

    def advise(info) -> str | None:
        # A 48 kHz room response on a 16 kHz file is a room three times the size: no error
        # (a kernel in samples is what convolve takes), but not what most people meant.
        # Said once per rate met (the report keeps one of each message).
        if rate is None or not info.rate or info.rate == rate:
            return None
        return (
            f"{name} is at {rate:g} Hz and this file at {info.rate:g} Hz: the kernel is "
            "applied sample for sample (resample one to the other's rate if that is not meant)"
        )

    return Operation(apply=apply, streamer=streamer, check=check, advise=advise)
