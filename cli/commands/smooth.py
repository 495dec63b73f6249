"""``diffconv smooth INPUT... OUTPUT``: smooth files with a unit-sum window.

Thin: the math is :func:`diffconv_core.smooth.smooth`; long files stream through
:mod:`diffconv_core.streaming`; files, batches and devices are :mod:`cli.batch`'s job.
"""

from __future__ import annotations

import click

from cli.options import batch_options, check_window_params, width_option, window_params_option


@click.command(name="smooth")
@click.option(
    "--window", default="hann", show_default=True, help="Window name (see diffconv windows)."
)
@click.option("--length", type=int, default=31, show_default=True, help="Window taps.")
@window_params_option(help="Window parameter NAME=VALUE, e.g. std=5 for gaussian (repeatable).")
@width_option
@click.option(
    "--edges",
    default="reflect",
    show_default=True,
    help="reflect, symmetric, replicate, circular, zeros, or renormalize (average only the "
    "samples inside the signal).",
)
@click.option(
    "--nan-policy",
    type=click.Choice(["propagate", "omit"]),
    default="propagate",
    show_default=True,
    help="omit: average around NaN gaps instead of spreading them.",
)
@batch_options
def smooth(paths, window, length, params, width, edges, nan_policy, **shared) -> None:
    """Smooth INPUT files (or directories) with a unit-sum window, writing OUTPUT.

    Several INPUTs or a directory need an OUTPUT directory, which mirrors the inputs'
    relative paths.

    Files longer than DIFFCONV_STREAM_SAMPLES samples (frames x channels, default
    8388608) stream in blocks of DIFFCONV_BLOCK_FRAMES frames (default 262144), in bounded
    memory. Under torchrun the files are split across the ranks.
    """
    from cli.batch import check_kernel_memory, execute
    from cli.runner import RunOptions

    options = RunOptions.from_shared(shared)
    window_params = dict(params)
    if width is not None:
        window_params["width"] = width

    def build():
        check_window_params(window, params)
        check_kernel_memory(length, "'--length'")
        return smooth_operation(
            window,
            length,
            edges=edges,
            nan_policy=nan_policy,
            method=shared["method"],
            **window_params,
        )

    execute(paths, options, build, glob=shared["glob"], recursive=shared["recursive"])


def smooth_operation(
    window="hann",
    length=31,
    *,
    edges="reflect",
    nan_policy="propagate",
    method="auto",
    **window_params,
):
    """The :class:`~cli.runner.Operation` smoothing every file with
    :func:`diffconv_core.smooth.smooth`; long files stream through
    :class:`diffconv_core.streaming.StreamingSmoother` (every edge rule and NaN policy).

    The options are tried on a small signal first, so that anything the core rejects
    (unknown window, a length it refuses, a bad parameter) is a usage error.

    Shape:
        files ``(C, T)`` -> ``(C, T)``.

    Example:
        >>> import torch
        >>> op = smooth_operation("boxcar", 3, edges="zeros")
        >>> op.apply(torch.tensor([[[0.0, 3.0, 0.0, 0.0]]]), None)
        tensor([[[1., 1., 1., 0.]]])
    """
    import torch

    from cli.audio_io import read_tail
    from cli.runner import Operation
    from diffconv_core.smooth import smooth as core_smooth
    from diffconv_core.streaming import StreamingSmoother

    options = dict(edges=edges, nan_policy=nan_policy, method=method, **window_params)

    def apply(batch, info):
        return core_smooth(batch, window, length, **options)

    # A trial run long enough for any pad, so that only option problems can fail it.
    trial = 2 * min(length, 4096) + 8 if isinstance(length, int) and length > 0 else 8
    apply(torch.zeros(1, trial, dtype=torch.float64), None)

    def streamer(info, device):
        dtype = torch.float64 if info.dtype.itemsize == 8 else torch.float32
        tail = None
        if edges == "circular":
            # The start's pad is the file's end: read it first so the output can stream
            # (else the smoother keeps the whole signal until the end).
            tail = torch.as_tensor(read_tail(info, length), device=device)
        made = StreamingSmoother(
            window, length, dtype=dtype, device=device, circular_tail=tail, **options
        )
        return made, info.frames

    return Operation(apply=apply, streamer=streamer)
