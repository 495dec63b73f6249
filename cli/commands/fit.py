"""``diffconv fit``: learn an FIR kernel or a window's parameters from input/target pairs.

The numbers live in :mod:`diffconv_core.fitting` (losses, crops, the trainer); this module
reads the pairs (:mod:`cli.fit_data`), runs the trainer on a device, under torchrun on every
rank with the gradients all-reduced, and writes the results (:mod:`cli.fit_outputs`) from
rank 0 only. Exit codes: 0 done (or stopped by ``--stop-after`` with a checkpoint), 1 a file
could not be read or written, holds NaN or Inf samples, or training diverged (a NaN or Inf
loss: no kernel is written), 2 a usage problem — bad options, or input/target pairs that do
not fit together (all offending pairs are listed in one message) — and 130 on Ctrl-C (after
a checkpoint is written).
"""

from __future__ import annotations

import sys

import click

from cli import interrupts
from cli.options import (
    device_option,
    fit_rate_option,
    glob_option,
    overwrite_files_option,
    padding_option,
    quiet_option,
    recursive_option,
    verbose_option,
    version_option,
    window_params_option,
)


@click.command(
    "fit",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  diffconv fit noisy.wav clean.wav --out denoise.npy --taps 63
  diffconv fit noisy/ clean/ --out k.npy --loss spectral --plot loss.png
  diffconv fit in.wav out.wav --out g.npy --window gaussian --param std=4 --learn params
  torchrun --nproc_per_node=4 --no-python diffconv fit noisy/ clean/ --out k.npy
  (torchrun: see docs/distributed.md)

\b
Writes KERNEL.npy (float64), KERNEL.txt (one coefficient per line, as sox's fir effect
reads it) and KERNEL.json (learned parameters, final losses, settings); a checkpoint
KERNEL.ckpt.pt as it goes. Use the kernel with: diffconv convolve IN OUT --kernel KERNEL.npy
""",
)
@click.argument("inputs", metavar="INPUTS")
@click.argument("targets", metavar="TARGETS")
@click.option("--out", required=True, metavar="KERNEL.npy", help="Where the kernel goes.")
@click.option(
    "--taps",
    type=click.IntRange(min=1),
    default=31,
    show_default=True,
    help="Kernel length in samples.",
)
@click.option(
    "--window",
    default=None,
    metavar="NAME",
    help="Learn this window's parameters or width instead of free taps.",
)
@click.option(
    "--learn",
    type=click.Choice(["params", "width"]),
    default="params",
    show_default=True,
    help="With --window: what is learned.",
)
@window_params_option(
    help="Window parameter NAME=VALUE: the starting value of a learned one, or the "
    "fixed value (repeatable). Without --window: parameters of the --init window.",
)
@click.option(
    "--width",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --window: starting (or fixed) width in samples [default: --taps].",
)
@click.option(
    "--normalize",
    type=click.Choice(["sum", "peak", "energy", "none"]),
    default="sum",
    show_default=True,
    help="With --window: window scaling.",
)
@click.option(
    "--init",
    default=None,
    metavar="NAME",
    help="Starting FIR taps: delta (pass-through), zeros or a window name "
    "(scaled to sum 1)  [default: delta].",
)
@padding_option("How signals continue past their ends.")
@click.option(
    "--loss", type=click.Choice(["mse", "l1", "spectral"]), default="mse", show_default=True
)
@click.option(
    "--optimizer",
    type=click.Choice(["adam", "lbfgs"]),
    default="adam",
    show_default=True,
    help="lbfgs only for plain FIR taps.",
)
@click.option("--steps", type=click.IntRange(min=1), default=500, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Learning rate  [default: 0.01 adam, 1 lbfgs].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Random crops per step (global, over all ranks).",
)
@click.option(
    "--crop",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Crop length; 0 trains on whole signals (full batch).",
)
@click.option(
    "--val-split",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Fraction at the end of every pair kept for validation.",
)
@click.option(
    "--val-every",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Validate every N steps (and at the end).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--plot", default=None, metavar="LOSS.png", help="Write a loss-curve PNG.")
@click.option(
    "--checkpoint", default=None, metavar="CKPT", help="Checkpoint file  [default: KERNEL.ckpt.pt]."
)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--resume",
    default=None,
    metavar="CKPT",
    help="Continue an interrupted fit (same settings) from its checkpoint.",
)
@click.option(
    "--stop-after",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Stop after N steps of this run, checkpoint, and exit 0 (--resume later).",
)
@device_option
@glob_option
@recursive_option
@fit_rate_option
@overwrite_files_option
@quiet_option
@verbose_option
@version_option
def fit(**options) -> None:
    """Learn an FIR kernel (or window parameters) mapping INPUTS to TARGETS.

    INPUTS and TARGETS are two files or two directories matched by relative path.
    """
    from cli import distributed
    from cli.distributed import ranks_from_env

    ranks = ranks_from_env()
    try:
        _fit(ranks, options)
    except click.ClickException as err:
        if not ranks.is_main and not distributed.said_by_every_rank(err):
            distributed.leave_after_main(err.exit_code, err)  # rank 0 says why
        raise


def _fit(ranks, o: dict) -> None:
    from cli.errors import FileProblem
    from cli.fit_data import discover_pairs, pairs_rate
    from cli.fit_outputs import default_checkpoint, output_paths
    from cli.fit_setup import check_destinations, check_options, check_outputs_apart

    # Everything decidable from the command line and the headers comes first (exit 2).
    try:
        paths = output_paths(o["out"])
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--out'") from err
    checkpoint = default_checkpoint(o["out"]) if o["checkpoint"] is None else o["checkpoint"]
    check_options(o)
    check_destinations(paths, o, checkpoint)
    pairs = discover_pairs(
        o["inputs"], o["targets"], glob=o["glob"], recursive=o["recursive"], rate=o["rate"]
    )
    check_outputs_apart(paths, o, checkpoint, pairs)
    rate = pairs_rate(pairs, o["rate"])
    if o["crop"] > 0 and rate is None:
        raise click.UsageError(
            ".npy pairs carry no sample rate: give --rate to crop in seconds, or --crop 0"
        )
    # A crop longer than every pair is the whole pair; 1e308 s times the rate overflowed round.
    crop = None if o["crop"] == 0 else max(1, round(min(o["crop"] * rate, 2.0**62)))
    try:
        state = None
        if o["resume"]:
            from cli.fit_outputs import load_checkpoint

            state = load_checkpoint(o["resume"])
        _train(ranks, o, pairs, rate, crop, paths, checkpoint, state)
    except FileProblem as err:
        raise _click_error(err) from err


def _click_error(err) -> click.ClickException:
    exc = click.ClickException(str(err))
    exc.exit_code = err.exit_code
    return exc


def _train(ranks, o, pairs, rate, crop, paths, checkpoint, state) -> None:
    import torch

    from cli import distributed
    from cli.batch import option_errors
    from cli.devices import resolve_device
    from cli.errors import FileProblem
    from cli.fit_data import (
        common_dtype,
        nonfinite_problems,
        pair_problem,
        read_pair,
        shard_indices,
    )
    from cli.fit_outputs import save_checkpoint
    from cli.fit_setup import build_model, check_step_memory, fit_setup
    from diffconv_core.fitting import FitConfig, FitData, Trainer, extend_input, split_length

    setup = fit_setup(o, pairs)
    if state is not None and state["setup"] != setup:
        changed = sorted(
            k for k in set(setup) | set(state["setup"]) if state["setup"].get(k) != setup.get(k)
        )
        raise click.BadParameter(
            f"the checkpoint was made with other settings or pairs ({', '.join(changed)})",
            param_hint="'--resume'",
        )
    lr = o["lr"] if o["lr"] is not None else (1.0 if o["optimizer"] == "lbfgs" else 0.01)
    with option_errors(None):
        config = FitConfig(
            steps=o["steps"],
            lr=lr,
            batch_size=o["batch_size"],
            crop=crop,
            loss=o["loss"],
            optimizer=o["optimizer"],
            seed=o["seed"],
            val_every=o["val_every"],
        )
    device = resolve_device(o["device"], ranks.local_rank)
    dtype = getattr(torch, common_dtype(pairs).name)
    check_step_memory(
        config.batch_size,
        crop,
        o["taps"],
        pairs,
        dtype.itemsize,
        ranks.world_size,
        device.type == "cpu",
    )
    model = build_model(o, setup, dtype, device)

    _start_process_group(ranks, device)
    try:
        # Each rank reads only its shard; a failure anywhere stops every rank together.
        data = FitData({}, {}, [], [], [])
        for p in pairs:
            data.lengths.append(p.frames)
            data.train_lengths.append(split_length(p.frames, o["val_split"]))
            data.channels.append(p.rows)
        problems = []
        for i in shard_indices(len(pairs), ranks.rank, ranks.world_size):
            try:
                x, y = read_pair(pairs[i])
            except FileProblem as err:
                problems.append(pair_problem(pairs[i].name, err))
                continue
            except Exception as err:  # memory: reported with the pair's name
                problems.append(f"{pairs[i].name}: {err}")
                continue
            # NaN or Inf samples give a NaN loss and a NaN kernel: refuse them up front.
            nonfinite = nonfinite_problems(pairs[i], x, y)
            if nonfinite:
                problems.extend(nonfinite)
                continue
            x = torch.from_numpy(x).to(device, dtype)
            data.inputs[i] = extend_input(x, o["taps"], o["padding"])
            data.targets[i] = torch.from_numpy(y).to(device, dtype)
        problems = sorted(sum(distributed.gather(ranks, problems), []))
        if problems:
            raise click.ClickException("cannot train on the pairs:\n  " + "\n  ".join(problems))

        reduce = _all_reduce_sum if ranks.distributed else None
        trainer = Trainer(model, data, config, reduce=reduce)
        if state is not None:
            try:
                trainer.load_state_dict(state["trainer"])
            except (
                KeyError,
                IndexError,
                AttributeError,
                RuntimeError,
                ValueError,
                TypeError,
            ) as err:
                # A checkpoint edited or damaged inside: say which file, not a traceback.
                raise click.BadParameter(
                    f"{o['resume']}: not a checkpoint this fit can resume ({err})",
                    param_hint="'--resume'",
                ) from None
            model.to(device)

        def save() -> None:
            if ranks.is_main:
                save_checkpoint(checkpoint, {"setup": setup, "trainer": trainer.state_dict()})

        _run(trainer, o, ranks, save)
        if not trainer.done:
            if ranks.is_main and not o["quiet"]:
                click.echo(
                    f"stopped after step {trainer.step_index} of {config.steps}; checkpoint "
                    f"{checkpoint}; continue with --resume {checkpoint}",
                    err=True,
                )
            return
        if ranks.is_main:
            _write_results(trainer, o, setup, pairs, rate, crop, paths, ranks)
    finally:
        distributed.finish(ranks)


def _start_process_group(ranks, device) -> None:
    from cli import distributed

    # gloo carries CPU tensors and Python objects; nccl the gradients of a CUDA run.
    if device.type == "cuda" and ranks.distributed:
        import torch

        torch.cuda.set_device(device)
    distributed.start(ranks, "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")


def _all_reduce_sum(tensor) -> None:
    import torch.distributed as dist

    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


class _Interrupted(Exception):
    """Raised between two steps after SIGINT/SIGTERM/SIGHUP, so the checkpoint is consistent."""


def _run(trainer, o, ranks, save) -> None:
    import signal
    import threading

    import torch
    from tqdm import tqdm

    from cli.devices import is_out_of_memory

    show = ranks.is_main and not o["quiet"] and sys.stderr.isatty()
    bar = tqdm(
        total=trainer.config.steps,
        initial=trainer.step_index,
        unit="step",
        file=sys.stderr,
        disable=not show,
        dynamic_ncols=True,
    )
    last_val = [trainer.history["val"][-1] if trainer.history["val"] else None]
    requested: list[int | None] = [None]  # the signal that asked to stop, if any
    device = next(trainer.model.parameters()).device

    def stop_requested() -> bool:
        if not ranks.distributed:
            return requested[0] is not None
        # Ranks may see the signal at different steps: agree, or one would wait forever.
        flag = torch.tensor([float(requested[0] is not None)], device=device)
        _all_reduce_sum(flag)
        return bool(flag.item() > 0)

    def callback(t, train: float, val: float | None) -> None:
        # Before any checkpoint: a NaN state is worth nothing, and the loss is global, so
        # every rank stops here together.
        _check_finite(t, train, val)
        if val is not None:
            last_val[0] = val
        postfix = {"train": f"{train:.4g}"}
        if last_val[0] is not None:
            postfix["val"] = f"{last_val[0]:.4g}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
        if o["verbose"] and ranks.is_main and val is not None:
            bar.write(f"step {t.step_index}: train {train:.6g}, val {val:.6g}", file=sys.stderr)
        if t.step_index % o["checkpoint_every"] == 0:
            save()
        if stop_requested():
            raise _Interrupted

    def on_signal(signum, frame) -> None:
        # The first signal finishes the current step; a second one stops at once, unless it
        # is the first's echo from torchrun (interrupts.ECHO_SECONDS), which the handler put
        # back (interrupts' own) then ignores.
        interrupts.note_stop_signal()
        requested[0] = signum
        signal.signal(signum, previous[signum] or signal.SIG_DFL)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # handlers only live there
        # A signal ignored at the start stays so: SIGHUP under nohup, SIGINT in a script's
        # background job.
        previous = {
            sig: signal.getsignal(sig)
            for sig in interrupts.STOP_SIGNALS
            if signal.getsignal(sig) is not signal.SIG_IGN
        }
    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        trainer.run(max_steps=o["stop_after"], callback=callback)
    except _Interrupted:
        bar.close()
        save()
        if ranks.is_main:
            click.echo(
                f"interrupted after step {trainer.step_index}; checkpoint written; continue "
                "with --resume",
                err=True,
            )
        # 128 + the signal, as a shell reports it (a rank that saw none: as for Ctrl-C).
        sys.exit(128 + requested[0] if requested[0] is not None else interrupts.EXIT_CTRL_C)
    except (RuntimeError, MemoryError) as err:
        if isinstance(err, MemoryError) or is_out_of_memory(err) or "allocate" in str(err):
            # A step larger than the device's memory (check_step_memory counts the host's):
            # the last checkpoint stands.
            raise click.ClickException(
                f"out of memory at step {trainer.step_index + 1} "
                f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                "try a smaller --batch-size or --crop"
            ) from err
        # torch refuses a step size beyond the parameters' dtype (Adam's first step is 10x
        # --lr) instead of making it Inf: the same divergence, caught one step earlier.
        if "overflow" not in str(err):
            raise
        _diverged(trainer, "the step size overflows the kernel's number type")
    except ValueError as err:
        # A learned window setting stepped out of its range (std 1e-300 became NaN): the
        # window refuses it on the next step, as a divergence; it ended in a traceback.
        if "parameter" not in str(err) and "width" not in str(err):
            raise
        _diverged(trainer, f"a learned setting left its range ({err})")
    finally:
        bar.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler or signal.SIG_DFL)
        interrupts.forget_stop_signal()  # a later command in this process starts afresh
    save()


def _check_finite(trainer, train: float, val: float | None) -> None:
    """Stop (exit 1, no kernel or checkpoint written) once the training or validation loss
    is NaN or Inf: the pairs were checked to be finite, so the step size blew the kernel up.
    """
    import math

    for what, value in (("training", train), ("validation", val)):
        if value is not None and not math.isfinite(value):
            _diverged(trainer, f"the {what} loss is {value}")


def _diverged(trainer, what: str) -> None:
    raise click.ClickException(
        f"training diverged: {what} at step {trainer.step_index} of {trainer.config.steps}; "
        f"no kernel written. Try a lower --lr (this run used {trainer.config.lr:g})"
    )


def _write_results(trainer, o, setup, pairs, rate, crop, paths, ranks) -> None:
    import os

    from cli.fit_outputs import write_kernel_files, write_loss_plot

    kernel = trainer.model().detach().to("cpu").double().numpy()
    history = trainer.history
    summary = {
        "kernel": os.fspath(paths["npy"]),
        "taps": len(kernel),
        "learned": trainer.model.learned(),
        "final_train_loss": history["train"][-1],
        "final_val_loss": history["val"][-1] if history["val"] else None,
        "steps": trainer.step_index,
        "loss": o["loss"],
        "optimizer": o["optimizer"],
        "lr": trainer.config.lr,
        "batch_size": o["batch_size"],
        "crop_seconds": o["crop"],
        "crop_samples": crop,
        "val_split": o["val_split"],
        "seed": o["seed"],
        "padding": o["padding"],
        "rate": rate,
        "pairs": [p.name for p in pairs],
        "world_size": ranks.world_size,
        "coefficients": kernel.tolist(),
    }
    if setup["kind"] == "fir":
        summary["learned"]["init"] = setup["init"]
    write_kernel_files(paths, kernel, summary)
    if o["plot"]:
        write_loss_plot(o["plot"], history, f"diffconv fit: {o['loss']} loss")
    if not o["quiet"]:
        val = summary["final_val_loss"]
        val_text = f", validation loss {val:.4g}" if val is not None else ""
        click.echo(
            f"fitted {len(kernel)} taps in {trainer.step_index} steps: train loss "
            f"{summary['final_train_loss']:.4g}{val_text} -> "
            + ", ".join(os.fspath(p) for p in paths.values()),
            err=True,
        )
