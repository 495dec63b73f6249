"""``diffconv grad INPUT... OUTDIR``: gradient maps of a filter, written per input file.

Thin: the math is :func:`diffconv_core.gradients.gradient_map` and
:func:`diffconv_core.gradients.jacobian`; files are read by :mod:`cli.audio_io`, planned by
:mod:`cli.jobs`, written atomically by :mod:`cli.writing`, and every outcome goes to a
:class:`cli.report.Report`. The figure is :mod:`cli.grad_figure`. Per input ``NAME`` it
writes into OUTDIR (mirroring directory inputs):

- ``NAME.grad_signal.npy``: d objective / d input, the input's shape;
- ``NAME.grad_kernel.npy``: d objective / d kernel, the kernel's shape;
- ``NAME.grad_params.json``: the window's parameters and their gradients (``--window``);
- ``NAME.jacobian.npy`` with ``--jacobian``: d output / d input of the excerpt, ``(L, T)``
  (one block per kernel: ``(C, L, T)`` for a kernel file with C channels);
- ``NAME.grad.png``: the figure.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from cli.options import (
    check_window_params,
    device_option,
    glob_option,
    grad_rate_option,
    method_option,
    mode_option,
    overwrite_files_option,
    padding_option,
    quiet_option,
    recursive_option,
    verbose_option,
    version_option,
    width_option,
    window_params_option,
)

OBJECTIVES = ["energy", "mse", "l1"]
WRT_CHOICES = ("signal", "kernel", "params")
#: What ``grad`` writes next to each other; also how its outputs are recognised (and
#: skipped) when OUTDIR lies inside a directory input.
SUFFIXES = {
    "grad_signal": ".grad_signal.npy",
    "grad_kernel": ".grad_kernel.npy",
    "grad_params": ".grad_params.json",
    "jacobian": ".jacobian.npy",
    "figure": ".grad.png",
}


@click.command(name="grad")
@click.option("--window", default=None, help="Window name (see diffconv windows) [default: hann].")
@click.option("--length", type=int, default=None, help="Window taps [default: 31].")
@window_params_option(
    help="Window parameter NAME=VALUE, e.g. std=5 (repeatable); its gradient is reported."
)
@width_option
@click.option(
    "--kernel",
    "kernel_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Kernel file instead of a window: .npy (K,) or (C, K), .txt/.csv, or an audio IR.",
)
@click.option(
    "--normalize",
    type=click.Choice(["none", "sum", "peak", "energy"]),
    default=None,
    help="Scale the kernel [default: sum for a window, none for a kernel file].",
)
@mode_option
@padding_option()
@click.option(
    "--objective",
    type=click.Choice(OBJECTIVES),
    default="energy",
    show_default=True,
    help="energy: sum of squared output; mse/l1: mean squared/absolute error to --target.",
)
@click.option(
    "--target",
    "target_path",
    type=click.Path(exists=True),
    default=None,
    help="Desired output for mse/l1: a file of the output's shape, or a directory holding "
    "one per input at the same relative path.",
)
@click.option(
    "--wrt",
    default=None,
    metavar="LIST",
    help="Comma-separated: signal, kernel, params [default: all that apply].",
)
@click.option(
    "--jacobian",
    "want_jacobian",
    is_flag=True,
    help=(
        "Also write the exact Jacobian d output / d input of the excerpt (short excerpts: "
        "at most 16,777,216 entries, about 4,096 samples squared; crop with --start and "
        "--duration)."
    ),
)
@click.option(
    "--start",
    "--from",
    "start",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    # Under torchrun, whose parser reads every argument, --start is ambiguous (--start-method,
    # --start_method) and stops the launch; --from is not.
    help="Start of the excerpt drawn and used for the Jacobian (--from under torchrun).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Length of that excerpt [default: to the end].",
)
@click.option(
    "--format",
    "out_format",
    type=click.Choice(["npy", "png", "both"]),
    default="both",
    show_default=True,
    help="npy: arrays (and the parameters' JSON); png: the figure; both.",
)
@click.argument("paths", nargs=-1, required=True, metavar="INPUT... OUTDIR")
@method_option
@device_option
@glob_option
@recursive_option
@grad_rate_option
@overwrite_files_option
@quiet_option
@verbose_option
@version_option
def grad(paths, **opts) -> None:
    """Write gradient maps: how an objective on the filtered output depends on every input
    sample, every kernel tap and every window parameter.

    For each INPUT file (or each file in an INPUT directory) writes NAME.grad_signal.npy,
    NAME.grad_kernel.npy, NAME.grad_params.json (windows), NAME.jacobian.npy (--jacobian)
    and the figure NAME.grad.png into OUTDIR. Gradients cover the whole file; the figure
    and the Jacobian show the --start/--duration excerpt (seconds; .npy inputs need --rate).
    """
    from cli.jobs import plan_jobs
    from cli.options import split_paths

    inputs, outdir = split_paths(paths)
    if "-" in (*inputs, outdir):
        raise click.UsageError(
            "grad reads files and writes a directory: - (stdin/stdout) is neither; "
            "a file or directory named - is ./-"
        )
    # OUTDIR is always a directory, even for one input.
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise click.UsageError(
            f"OUTDIR {outdir} is a file; grad writes its outputs (several per input) into a "
            "directory"
        )
    jobs = plan_jobs(
        inputs, os.path.join(outdir, ""), glob=opts["glob"], recursive=opts["recursive"]
    )
    jobs = [j for j in jobs if not j.source.name.endswith(tuple(SUFFIXES.values()))]
    if not jobs:
        raise click.UsageError("no input files left once grad's own outputs are skipped")
    _check_stems(jobs)
    setup = _setup(jobs, opts)
    report = _run(jobs, setup, opts, Path(outdir))
    click.get_current_context().exit(report.return_code)


def _check_stems(jobs) -> None:
    """Outputs are named from the input's stem, so ``a.wav`` and ``a.npy`` in one folder
    would write the same ``a.grad_*`` files: the second silently replaced the first's with
    --overwrite (or failed as "output exists" without it). A usage error up front instead."""
    seen: dict[str, Path] = {}
    for job in jobs:
        key = os.path.normpath(os.path.abspath(job.dest.parent / job.dest.stem))
        if key in seen:
            raise click.UsageError(
                f"{seen[key]} and {job.source} would both write {key}.grad_* "
                "(outputs are named after the stem); process them separately"
            )
        seen[key] = job.source


@dataclass
class _Setup:
    """Everything decided once, before any file is read."""

    kernel: Any  # numpy (K,)/(C, K) array, or a ParametricKernel
    kernel_info: dict
    objective: str
    target: Any  # numpy array, a directory Path, or None
    wrt: tuple[str, ...]
    convolve: dict
    jacobian: bool
    start: float
    duration: float | None
    rate: float | None
    write_npy: bool
    write_png: bool
    overwrite: bool
    verbose: bool


def _setup(jobs, opts) -> _Setup:
    """Validate every option; each problem is a usage error (exit code 2)."""
    from cli.batch import option_errors

    uses_window = any(opts[k] is not None for k in ("window", "length", "width")) or opts["params"]
    if opts["kernel_path"] and uses_window:
        raise click.UsageError("give either --kernel FILE or --window/--length/--param/--width")
    objective = opts["objective"]
    if objective in ("mse", "l1") and not opts["target_path"]:
        raise click.UsageError(f"--objective {objective} needs --target FILE")
    if objective == "energy" and opts["target_path"]:
        raise click.UsageError("--target is only used by --objective mse or l1")
    for name in ("start", "duration"):
        # click's float ranges let NaN through, and inf passes a lower bound: they failed
        # each file with Python's "cannot convert float NaN to integer".
        if opts[name] is not None and not math.isfinite(opts[name]):
            raise click.BadParameter(
                f"must be a finite number of seconds; got {opts[name]}", param_hint=f"'--{name}'"
            )
    if opts["rate"] is None and (opts["start"] or opts["duration"] is not None):
        for job in jobs:
            if job.source.suffix.lower() == ".npy":
                raise click.UsageError(
                    f"{job.source}: --start/--duration are in seconds; .npy input needs --rate"
                )
    if opts["kernel_path"]:
        kernel, kernel_info = _file_kernel(opts["kernel_path"], opts["normalize"] or "none")
    else:
        try:
            with option_errors():
                kernel, kernel_info = _window_kernel(opts)
        except click.BadParameter as err:
            _name_window_option(err)
            raise
    wrt = _parse_wrt(opts["wrt"], parametric=not opts["kernel_path"])
    convolve = {"mode": opts["mode"], "padding": opts["padding"], "method": opts["method"]}
    try:
        with option_errors():
            _trial(kernel, convolve)
    except click.BadParameter as err:
        _name_window_option(err, otherwise=None)
        raise
    return _Setup(
        kernel=kernel,
        kernel_info=kernel_info,
        objective=objective,
        target=_load_target(opts["target_path"]),
        wrt=wrt,
        convolve=convolve,
        jacobian=opts["want_jacobian"],
        start=opts["start"],
        duration=opts["duration"],
        rate=opts["rate"],
        write_npy=opts["out_format"] in ("npy", "both"),
        write_png=opts["out_format"] in ("png", "both"),
        overwrite=opts["overwrite"],
        verbose=opts["verbose"],
    )


def _file_kernel(path: str, normalize: str):
    from cli.kernels import kernel_from_option

    kernel, _ = kernel_from_option(path, normalize)
    return kernel, {"file": str(path), "normalize": normalize, "taps": int(kernel.shape[-1])}


def _name_window_option(err: click.BadParameter, otherwise: str | None = "'--window'") -> None:
    # The window is built (when described, and on the first trial): name the option its
    # message is about.
    if err.param_hint is None:
        for name in ("width", "length"):
            if err.message.startswith(name):
                err.param_hint = f"'--{name}'"
                return
        err.param_hint = otherwise


def _window_kernel(opts):
    from cli.batch import check_kernel_memory
    from diffconv_core.gradients import window_kernel

    name = opts["window"] or "hann"
    check_window_params(name, opts["params"])
    length = 31 if opts["length"] is None else opts["length"]
    check_kernel_memory(length, "'--length'")
    normalize = opts["normalize"] or "sum"
    spec = window_kernel(
        name,
        length,
        normalize=None if normalize == "none" else normalize,
        width=opts["width"],
        **dict(opts["params"]),
    )
    info = {
        "window": name,
        "length": length,
        "normalize": normalize,
        "settings": {k: v for k, v in spec.fixed.items()},
    }
    return spec, info


def _parse_wrt(text: str | None, *, parametric: bool) -> tuple[str, ...]:
    if text is None:
        return WRT_CHOICES if parametric else ("signal", "kernel")
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in items if t not in WRT_CHOICES]
    if bad or not items:
        raise click.BadParameter(
            f"{text!r}: give a comma-separated list of signal, kernel, params",
            param_hint="'--wrt'",
        )
    if "params" in items and not parametric:
        raise click.BadParameter(
            "params needs a --window kernel (a kernel file has no parameters)",
            param_hint="'--wrt'",
        )
    return items


def _trial(kernel, convolve: dict) -> None:
    """Run the whole computation on a small signal so the core validates every option."""
    import torch

    from diffconv_core.gradients import gradient_map

    x = torch.zeros(1, 64, dtype=torch.float64)
    gradient_map(x, _kernel_tensor(kernel, x), **convolve)


def _kernel_tensor(kernel, like):
    import numpy as np
    import torch

    if isinstance(kernel, np.ndarray):
        return torch.as_tensor(kernel, dtype=like.dtype, device=like.device)
    return kernel


def _load_target(path: str | None):
    if path is None:
        return None
    if os.path.isdir(path):
        return Path(path)
    from cli.audio_io import probe, read_signal
    from cli.errors import FileProblem

    try:
        return read_signal(probe(path))
    except FileProblem as err:
        raise click.BadParameter(f"{err.path}: {err.reason}", param_hint="'--target'") from err


def _run(jobs, setup: _Setup, opts, outdir: Path):
    """Process this rank's share of the jobs; one bad file never stops the others."""
    from cli.devices import resolve_device
    from cli.errors import FileProblem
    from cli.runner import run_sharded

    def work(mine, report, ranks) -> None:
        device = resolve_device(opts["device"], ranks.local_rank)
        for job in mine:
            try:
                base = _grad_one(job, setup, device, outdir, report)
            except FileProblem as err:
                _failed(report, setup, err.path, err.reason, err.exit_code)
            except (ValueError, TypeError) as err:
                _failed(report, setup, str(job.source), str(err))
            except Exception as err:  # one bad file never stops the batch
                _failed(report, setup, str(job.source), f"{type(err).__name__}: {err}")
            else:
                report.done(job.source, base)

    return run_sharded(jobs, work, quiet=opts["quiet"], verbose=opts["verbose"])


def _failed(report, setup: _Setup, path: str, reason: str, exit_code: int = 1) -> None:
    if setup.verbose:
        traceback.print_exc(file=sys.stderr)
    report.failed(path, reason, exit_code)


def output_paths(dest: Path, setup: _Setup, parametric: bool) -> dict[str, Path]:
    """The files written for one input whose planned destination is ``dest``."""
    stem = dest.parent / dest.stem
    names = []
    if setup.write_npy:
        if "signal" in setup.wrt:
            names.append("grad_signal")
        if "kernel" in setup.wrt:
            names.append("grad_kernel")
        if parametric and "params" in setup.wrt:
            names.append("grad_params")
        if setup.jacobian:
            names.append("jacobian")
    if setup.write_png:
        names.append("figure")
    return {n: Path(str(stem) + SUFFIXES[n]) for n in names}


def _grad_one(job, setup: _Setup, device, outdir: Path, report) -> str:
    import numpy as np
    import torch

    from cli.audio_io import probe, read_signal
    from cli.errors import EXIT_USAGE, FileProblem
    from diffconv_core.gradients import ParametricKernel, gradient_map

    parametric = isinstance(setup.kernel, ParametricKernel)
    paths = output_paths(job.dest, setup, parametric)
    if not setup.overwrite:
        for path in paths.values():
            if path.exists():
                raise FileProblem(path, "output exists; use --overwrite to replace it")
    info = probe(job.source)
    kernel = setup.kernel
    if isinstance(kernel, np.ndarray) and kernel.ndim == 2 and kernel.shape[0] != info.channels:
        raise ValueError(
            f"the kernel has {kernel.shape[0]} channels but the signal has {info.channels}"
        )
    rate = info.rate or setup.rate
    if rate is None and (setup.start or setup.duration is not None):
        # A .npy behind a pipe (<(cmd), a FIFO), known as one only now that it is read: the
        # up-front check (_setup) catches .npy paths. A usage error all the same.
        raise FileProblem(
            job.source, "--start/--duration are in seconds; .npy input needs --rate", EXIT_USAGE
        )
    first, last = _excerpt(info.frames, rate, setup.start, setup.duration)
    signal = read_signal(info)
    x = torch.from_numpy(signal).to(device)
    w = _kernel_tensor(kernel, x)

    jac = None
    if setup.jacobian:
        # First: a Jacobian too large to build fails the file before any other work.
        taps = setup.kernel_info.get("taps", setup.kernel_info.get("length"))
        jac = _excerpt_jacobian(x, w, taps, first, last, setup.convolve)
    target = None
    if setup.target is not None:
        target = torch.from_numpy(_target_for(job, setup, outdir)).to(device=device, dtype=x.dtype)
    try:
        result = gradient_map(x, w, setup.objective, target=target, wrt=setup.wrt, **setup.convolve)
    except ValueError as err:
        if target is not None and "target shape" in str(err):
            raise ValueError(f"--target: {err}") from err
        raise

    if not bool(result.value.isfinite()):
        # The core marks outputs whose window covers a NaN/Inf as non-finite; autograd gives
        # those outputs no gradient, so the maps show the finite part only. Say so.
        report.warn(
            str(job.source),
            f"the {setup.objective} is {result.value.item()} (the input holds NaN/Inf); "
            "the gradients leave out the non-finite outputs",
        )
    squeeze = info.kind == "npy" and len(info.original_shape or ()) == 1
    arrays = {
        "grad_signal": result.grad_signal,
        "grad_kernel": result.grad_kernel,
        "jacobian": jac,
    }
    # Every output is made before any is written: one that fails to render (the figure)
    # must not leave the others behind as an incomplete set.
    outputs = []
    for name, value in arrays.items():
        if name in paths and value is not None:
            data = value.cpu().numpy()
            if name == "grad_signal" and squeeze:
                data = data.reshape(info.original_shape)
            if name == "jacobian":
                # d output / d input depends only on the kernel: one (L, T) block per
                # kernel, shared by the channels (and .npy rows) that use it.
                data = data.reshape(-1, *result.kernel.shape[:-1], *data.shape[-2:])[0]
            outputs.append((_write_npy, paths[name], data))
    if "grad_params" in paths:
        outputs.append((_write_bytes, paths["grad_params"], _params_json(job, setup, result)))
    if "figure" in paths:
        png = _figure(job, signal[..., first:last], setup, result, jac, rate, first, last)
        outputs.append((_write_bytes, paths["figure"], png))
    _write_set(outputs, setup.overwrite)
    # What was written, in the shell's brace notation: out/a.{grad_signal.npy,grad.png}
    names = [path.name[len(job.dest.stem) + 1 :] for _, path, _ in outputs]
    return f"{job.dest.parent / job.dest.stem}.{{{','.join(names)}}}"


def _write_set(outputs: list, overwrite: bool) -> None:
    """Write one input's outputs as a set: what can be seen to fail (a directory in an
    output's place) fails before any is written, and the files this set created are removed
    again if a later one fails (files it replaced cannot be brought back)."""
    from cli.errors import FileProblem

    for _, path, _ in outputs:
        if path.is_dir():
            raise FileProblem(path, "output is a directory")
    created = []
    try:
        for write, path, payload in outputs:
            existed = os.path.lexists(path)
            write(path, payload, overwrite)
            if not existed:
                created.append(path)
    except BaseException:
        for path in created:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def _excerpt(frames: int, rate, start: float, duration) -> tuple[int, int]:
    """Sample range [first, last) of the --start/--duration excerpt."""
    scale = rate or 1.0
    # (Products past every length stand for the end: 1e308 s at 8 kHz is no integer.)
    first = int(round(min(start * scale, frames)))
    if first >= frames:
        unit = "s" if rate else "samples"
        raise ValueError(
            f"--start {start:g} is past the end of the signal ({frames / scale:g} {unit})"
        )
    if duration is None:
        return first, frames
    return first, min(frames, first + max(1, int(round(min(duration * scale, frames)))))


def _excerpt_jacobian(x, w, taps: int, first: int, last: int, convolve_options: dict):
    """d output / d input of the samples [first, last): the excerpt's block of the whole
    file's Jacobian.

    The file's padding rule applies at the file's ends only: an excerpt cut from the middle
    has real samples beyond its edges, not reflected or wrapped ones (taking the excerpt's
    Jacobian alone had wrapped its end onto its start under circular padding). So the
    Jacobian is built over the excerpt plus ``K`` samples each side where the file has them,
    wider than any pad, and its middle block is kept. Zero padding needs no margin.
    """
    from diffconv_core.gradients import jacobian

    if convolve_options.get("padding", "zeros") == "zeros":
        return jacobian(x[..., first:last], w, "signal", **convolve_options)
    begin, end = max(0, first - taps), min(x.shape[-1], last + taps)
    wide = jacobian(x[..., begin:end], w, "signal", **convolve_options)
    # Every mode's outputs line up with the inputs at one fixed offset, the same for the
    # excerpt and the wider piece: the excerpt's outputs start first - begin rows in.
    rows = wide.shape[-2] - (end - begin) + (last - first)
    offset = first - begin
    return wide[..., offset : offset + rows, offset : offset + last - first]


def _target_for(job, setup: _Setup, outdir: Path):
    from cli.audio_io import probe, read_signal

    if isinstance(setup.target, Path):
        # The input's path relative to its directory INPUT, as OUTDIR mirrors it.
        path = setup.target / job.dest.relative_to(outdir)
        if not path.exists():
            raise ValueError(f"--target: no target {path} for this input")
        return read_signal(probe(path))
    return setup.target


def _shortest_single(value):
    if isinstance(value, list):
        return [_shortest_single(v) for v in value]
    import numpy as np

    return float(str(np.float32(value)))


def _nan_to_none(value):
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if value != value else value


def _params_json(job, setup: _Setup, result) -> bytes:
    import torch

    def plain(t):
        # Strict JSON has no NaN/Infinity: a non-finite number is written as null.
        value = t.detach().cpu().double()
        value = torch.where(value.isfinite(), value, torch.nan)
        listed = value.item() if value.numel() == 1 else value.tolist()
        if t.dtype in (torch.float16, torch.bfloat16, torch.float32):
            # The shortest decimals of the same float32: --param std=3.3 of a WAV, computed
            # in float32, was written 3.299999952316284.
            listed = _shortest_single(listed)
        return _nan_to_none(listed)

    doc = {
        "input": str(job.source),
        "objective": setup.objective,
        "objective_value": plain(result.value),
        "kernel": setup.kernel_info,
        "params": {k: plain(v) for k, v in result.params.items()},
        "grad_params": {k: plain(v) for k, v in result.grad_params.items()},
    }
    return (json.dumps(doc, indent=2, default=str, allow_nan=False) + "\n").encode()


def _figure(job, x, setup: _Setup, result, jac, rate, first: int, last: int) -> bytes:
    from cli.grad_figure import write_grad_figure

    def rows(t):
        if t is None:
            return None
        a = t.cpu().numpy()
        return a.reshape(-1, a.shape[-1])

    out = rows(result.output)
    taps = result.kernel.shape[-1]
    mode = setup.convolve["mode"]
    if mode == "same":
        out = out[:, first:last]
    elif mode == "full":
        out = out[:, first : last + taps - 1]
    elif out.shape[-1] > 1 and last - first >= taps:
        out = out[:, first : max(first + 1, last - taps + 1)]
    grad_x = rows(result.grad_signal)
    grad_x = grad_x[:, first:last] if grad_x is not None else None
    grad_w = rows(result.grad_kernel)
    jac0 = None
    if jac is not None:
        j = jac.cpu().numpy()
        jac0 = j.reshape(-1, *j.shape[-2:])[0]
    buffer = io.BytesIO()
    write_grad_figure(
        buffer,
        signal=x.reshape(-1, x.shape[-1]),
        output=out,
        grad_signal=grad_x,
        grad_kernel=grad_w if grad_w is None or grad_w.shape[0] > 1 else grad_w[0],
        jacobian=jac0,
        rate=rate,
        start=first / rate if rate else first,
        title=f"{job.source.name}: {setup.objective} = {result.value.item():.6g}",
        objective=setup.objective,
    )
    return buffer.getvalue()


def _write_npy(path: Path, data, overwrite: bool) -> None:
    from cli.writing import OutputSpec, write_signal

    write_signal(path, data, OutputSpec(kind="npy", dtype=data.dtype), overwrite=overwrite)


def _write_bytes(path: Path, data: bytes, overwrite: bool) -> None:
    """Write a small file through a temporary file and an atomic rename."""
    from cli.errors import FileProblem
    from cli.writing import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FileProblem(path, f"cannot create output ({err.strerror or err})") from err
    atomic_write(path, lambda f: f.write(data), overwrite=overwrite)
