"""Turning ``diffconv fit``'s options into a checked setup and a learnable kernel.

Everything here runs before any sample is read, so every problem is a usage error (exit 2):
contradictory options, outputs that exist, a window that does not exist or lacks a starting
value, an out-of-range parameter (checked by building the kernel once).
"""

from __future__ import annotations

import math
import os

import click

from cli.batch import available_memory, check_kernel_memory, option_errors
from cli.options import check_window_params

#: The largest --seed whose per-step seeds stay 64-bit integers.
MAX_SEED = (2**63 - 1) // 1_000_004

#: A training step's memory per sample of its crops, in samples: the input and target crops,
#: the prediction, the loss's work arrays and the gradients. Measured on CPU (peak resident
#: memory of one step, 200-200,000 crops of 1-10,000 samples with 31 taps): 7 float64
#: samples, 3.2-5 float32 ones (their convolution in float32, the loss's sums in float64).
STEP_SAMPLE_COPIES = 8

#: A step's crop plan, drawn whole on every rank: bytes per crop (Python tuples and ints).
PLAN_BYTES_PER_CROP = 256


def _given(name: str) -> bool:
    """Whether the option ``name`` was given (on the command line), not left at its default."""
    ctx = click.get_current_context(silent=True)
    source = None if ctx is None else ctx.get_parameter_source(name)
    return source not in (None, click.core.ParameterSource.DEFAULT)


def check_options(o: dict) -> None:
    """Options that contradict each other (``o`` is the command's parsed options)."""
    if o["window"] is None:
        if o["width"] is not None:
            raise click.UsageError("--width needs --window")
        for name in ("learn", "normalize"):  # given without a window, they did nothing
            if _given(name):
                raise click.UsageError(f"--{name} needs --window")
        if o["params"] and (o["init"] or "delta") in ("delta", "zeros"):
            raise click.UsageError(
                "--param sets window parameters: give --window, or a window as --init"
            )
    else:
        if o["init"] is not None:
            raise click.UsageError("--init sets starting FIR taps; with --window use --param")
        if o["optimizer"] == "lbfgs":
            raise click.BadParameter(
                "lbfgs is for plain FIR taps; use adam with --window", param_hint="'--optimizer'"
            )
    window = o["window"] or (o["init"] if o["init"] not in (None, "delta", "zeros") else None)
    if window is not None:
        check_window_params(window, o["params"])
    check_kernel_memory(o["taps"], "'--taps'")
    if o["plot"] is not None and not o["plot"].lower().endswith(".png"):
        raise click.BadParameter(f"{o['plot']!r} is not a .png file", param_hint="'--plot'")
    # click's float ranges let NaN through, and inf passes a lower bound.
    for name in ("crop", "val_split", "lr"):
        value = o.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            raise click.BadParameter(
                f"must be a finite number; got {value}", param_hint=f"'--{name.replace('_', '-')}'"
            )
    if abs(o["seed"]) > MAX_SEED:
        # Each step's seed is derived as seed * 1_000_003 + step, a 64-bit integer: past
        # this the run failed at its first step ("Overflow when unpacking long long").
        raise click.BadParameter(
            f"must be between -{MAX_SEED} and {MAX_SEED}; got {o['seed']}", param_hint="'--seed'"
        )


def check_step_memory(
    batch_size: int,
    crop: int | None,
    taps: int,
    pairs,
    itemsize: int,
    world_size: int,
    on_cpu: bool,
) -> None:
    """Refuse a ``--batch-size`` whose training step needs more memory than is available (a
    usage error, exit 2), before anything is read. Linux grants such an allocation and kills
    the process with no message once its pages are touched; a larger one failed at the first
    step with the allocator's traceback (``--batch-size 10**12``: 8 TB for the plan alone).
    On a GPU only the plan, on the host, is counted: the device's memory is another matter.

    Example:
        >>> from types import SimpleNamespace
        >>> pair = SimpleNamespace(frames=16_000, rows=2)
        >>> check_step_memory(8, 16_000, 31, [pair], 4, 1, True)
        >>> check_step_memory(10**12, 16_000, 31, [pair], 4, 1, True)
        Traceback (most recent call last):
        click.exceptions.BadParameter: 1,000,000,000,000 crops of up to 32,060 samples a step...
    """
    if crop is None:  # whole pairs, one full batch: no crops drawn
        return
    # Each crop's input is extended by taps - 1 samples, in every channel.
    samples = max((min(crop, p.frames) + taps - 1) * p.rows for p in pairs)
    need = batch_size * PLAN_BYTES_PER_CROP
    if on_cpu:  # each rank evaluates its share of the crops
        need += batch_size * samples * itemsize * STEP_SAMPLE_COPIES // world_size
    available = available_memory()
    if available is not None and need > available:
        raise click.BadParameter(
            f"{batch_size:,} crops of up to {samples:,} samples a step need about "
            f"{need / 2**30:,.1f} GiB; {available / 2**30:,.1f} GiB of memory available",
            param_hint="'--batch-size'",
        )


def check_destinations(paths: dict, o: dict, checkpoint) -> None:
    """Outputs must not exist (without ``--overwrite``) and their directories must.

    An existing checkpoint is only reused through ``--resume``: starting over by accident
    would throw away an interrupted fit.
    """
    wanted = list(paths.values()) + ([o["plot"]] if o["plot"] else [])
    same = [os.fspath(p) for p in wanted if os.path.abspath(p) == os.path.abspath(checkpoint)]
    if same:  # the kernel would overwrite the checkpoint, or a checkpoint the kernel
        raise click.BadParameter(
            f"{same[0]} is also an output of the fit; name another checkpoint",
            param_hint="'--checkpoint'",
        )
    if not o["overwrite"]:
        existing = [os.fspath(p) for p in wanted if os.path.exists(p)]
        if existing:
            raise click.UsageError(
                f"{', '.join(existing)} already exist(s); use --overwrite to replace"
            )
        resuming_here = o["resume"] and os.path.abspath(o["resume"]) == os.path.abspath(checkpoint)
        if os.path.exists(checkpoint) and not resuming_here:
            raise click.UsageError(
                f"checkpoint {os.fspath(checkpoint)} already exists: continue that fit with "
                f"--resume {os.fspath(checkpoint)}, or start over with --overwrite"
            )
    for p in [*wanted, checkpoint]:
        parent = os.path.dirname(os.path.abspath(p))
        if not os.path.isdir(parent):
            raise click.UsageError(f"directory {parent} (for {os.fspath(p)}) does not exist")
        if os.path.isdir(p):  # found after the whole training run otherwise
            raise click.UsageError(f"{os.fspath(p)} is a directory, not a file to write")


def check_outputs_apart(paths: dict, o: dict, checkpoint, pairs) -> None:
    """No output of the fit may be one of its training files: with ``--overwrite`` the
    kernel or checkpoint replaced the input or target it was learned from (``--out x.npy``
    for an input x.npy), and a rerun then failed on "lengths differ"."""
    outputs = [*paths.values(), checkpoint] + ([o["plot"]] if o["plot"] else [])
    data = {}
    for pair in pairs:
        for side, info in (("input", pair.input), ("target", pair.target)):
            data.setdefault(os.path.realpath(info.path), f"{pair.name}'s {side} {info.path}")
    for p in outputs:
        used = data.get(os.path.realpath(p))
        if used is not None:
            raise click.UsageError(
                f"{os.fspath(p)} is a training file ({used}): the fit's outputs never replace "
                "its data; name another --out, --checkpoint or --plot"
            )


def window_setup(o: dict) -> dict:
    """Which window parameters are learned or fixed, with their starting values."""
    from diffconv_core._window_registry import is_continuous, is_learnable
    from diffconv_core.windows import list_windows

    name = o["window"].lower()
    entry = next((w for w in list_windows() if name == w["name"] or name in w["aliases"]), None)
    if entry is None:
        names = ", ".join(w["name"] for w in list_windows())
        raise click.BadParameter(
            f"unknown window {o['window']!r}; one of {names}", param_hint="'--window'"
        )
    given = dict(o["params"])
    unknown = sorted(set(given) - set(entry["params"]))
    if unknown:
        raise click.BadParameter(
            f"{entry['name']} has no parameter {', '.join(unknown)}; it takes "
            f"{', '.join(entry['params']) or 'none'}",
            param_hint="'--param'",
        )
    params = {k: v for k, v in {**entry["params"], **given}.items() if v is not None}
    missing = [k for k in entry["required"] if k not in params]
    if missing:
        first = missing[0]
        # A sequence (general_cosine's a) is a fixed setting, given as comma-separated numbers.
        sequence = not is_learnable(entry["name"], first) and is_continuous(entry["name"], first)
        raise click.BadParameter(
            f"{entry['name']} needs {'a value' if sequence else 'a starting value'} for "
            f"{', '.join(missing)} (e.g. --param {first}={'0.54,0.46' if sequence else '4'})",
            param_hint="'--param'",
        )
    for key, value in params.items():
        # Settings such as dpss's norm=subsample are words; get_window checks them below.
        # Sequences (general_cosine's a=0.5,0.5) arrive as lists of numbers.
        number = isinstance(value, (int, float)) or (
            isinstance(value, list) and not is_learnable(entry["name"], key)
        )
        if is_continuous(entry["name"], key) and not number:
            raise click.BadParameter(f"{key}={value!r} is not a number", param_hint="'--param'")
    if o["learn"] == "params" and not any(is_learnable(entry["name"], k) for k in params):
        # Settings (taylor's nbar) and sequences (general_cosine's a) are given, not learned.
        fixed = f" ({', '.join(sorted(params))}: given, not learned)" if params else ""
        raise click.BadParameter(
            f"{entry['name']} has no parameters to learn{fixed}; use --learn width",
            param_hint="'--learn'",
        )
    # Continuous parameters are stored as floats; integer and boolean settings (taylor's
    # nbar and norm) as given.
    params = {
        k: float(v) if is_continuous(entry["name"], k) and not isinstance(v, list) else v
        for k, v in params.items()
    }
    return {"window": entry["name"], "params": params}


def build_model(o: dict, setup: dict, dtype, device):
    """The learnable kernel of :func:`fit_setup`'s setup, on ``device``.

    Shape:
        ``model()`` is the kernel ``(taps,)``.
    """
    import torch

    from diffconv_core.fitting import FIRKernel, WindowKernel

    taps = o["taps"]
    if setup["kind"] == "window":
        try:
            model = WindowKernel(
                setup["window"],
                taps,
                learn=setup["learn"],
                params=setup["params"],
                width=setup["width"],
                normalize=setup["normalize"],
                dtype=dtype,
            )
            model().detach()  # out-of-range starting values fail here, before any work
        except (ValueError, TypeError) as err:
            # One constructor checks the window's settings and its width (no window setting
            # has "width" in its name): name the option the message is about.
            hint = "'--width'" if "width" in str(err) else "'--param'"
            raise click.BadParameter(str(err), param_hint=hint) from err
        return model.to(device)
    init = setup["init"]
    if init == "zeros":
        start = torch.zeros(taps, dtype=dtype)
    elif init == "delta":
        start = torch.zeros(taps, dtype=dtype)
        start[(taps - 1) // 2] = 1.0  # the centre tap of scipy's "same" alignment
    else:
        from diffconv_core.windows import get_window

        with option_errors("'--init'"):
            start = get_window(init, taps, normalize="sum", dtype=dtype, **setup["params"])
    return FIRKernel(start).to(device)


def fit_setup(o: dict, pairs) -> dict:
    """What is learned, from what start, on which pairs: plain data, stored in checkpoints.

    A checkpoint resumes only a run with an equal setup (the optimiser settings are compared
    separately by :meth:`diffconv_core.fitting.Trainer.load_state_dict`).
    """
    setup = {
        "taps": o["taps"],
        "padding": o["padding"],
        "pairs": [p.name for p in pairs],
        "frames": [p.frames for p in pairs],
        # Which part of each pair validates: changed on --resume, the history mixed two.
        "val_split": o["val_split"],
    }
    if o["window"] is None:
        setup.update(kind="fir", init=o["init"] or "delta", params=dict(o["params"]))
    else:
        setup.update(kind="window", learn=o["learn"], **window_setup(o))
        setup["width"] = float(o["width"]) if o["width"] is not None else float(o["taps"])
        setup["normalize"] = None if o["normalize"] == "none" else o["normalize"]
    return setup
