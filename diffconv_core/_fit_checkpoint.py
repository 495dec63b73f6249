"""Checks of a training checkpoint's contents before a resumed fit trusts them.

A checkpoint is plain tensors, numbers and lists (``torch.load(weights_only=True)``), so
nothing in it runs; but one damaged or edited inside still loads into the optimizer, whose
first step then failed deep in torch ("output with shape [5] doesn't match the broadcast
shape [1, 5]", a ``KeyError``, an ``IndexError``), or trained on silently from a state no run
makes (a complex moment, a fractional step count, other optimizer settings). These checks
hold each piece to what :class:`~diffconv_core.fitting.Trainer` itself writes, so a resumed
run is the uninterrupted one or a clear ``ValueError``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch


def check_history(history: Mapping[str, list], step: int) -> None:
    """The loss history of a run stopped after ``step`` steps: a training loss per step,
    then the validation losses with the (whole, non-decreasing, at most ``step``) steps they
    were taken at.

    Example:
        >>> check_history({"train": [1.0, 0.5], "val_step": [2.0], "val": [0.6]}, 2)
        >>> check_history({"train": [], "val_step": [], "val": []}, 2)
        Traceback (most recent call last):
            ...
        ValueError: checkpoint history holds 0 training losses for 2 steps
    """
    for values in history.values():
        for value in values:
            if not _is_number(value):
                raise ValueError(f"checkpoint history holds {value!r}, not a number")
    if len(history["train"]) != step:
        raise ValueError(
            f"checkpoint history holds {len(history['train'])} training losses for {step} steps"
        )
    steps, losses = history["val_step"], history["val"]
    if len(steps) != len(losses):
        raise ValueError(
            f"checkpoint history holds {len(losses)} validation losses for {len(steps)} steps"
        )
    previous = 0.0
    for at in steps:
        if not (math.isfinite(at) and at == int(at) and previous <= at <= step):
            raise ValueError(f"checkpoint history has a validation at step {at!r} of {step}")
        previous = at


def check_optimizer_state(
    optimizer: torch.optim.Optimizer, step: int, settings: list[dict[str, object]]
) -> None:
    """The optimizer's state as loaded from a checkpoint of ``step`` steps, against the
    optimizer settings this run made (``settings``: its param groups before the load, as
    :func:`group_settings` gives them). The learning rate is not compared: every step sets it.

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(3))
        >>> adam = torch.optim.Adam([p])
        >>> settings = group_settings(adam)
        >>> p.grad = torch.ones(3)
        >>> adam.step()
        >>> check_optimizer_state(adam, 1, settings)
        >>> check_optimizer_state(adam, 2, settings)
        Traceback (most recent call last):
            ...
        ValueError: checkpoint optimizer step is 1.0; its run took 2
    """
    loaded = group_settings(optimizer)
    if len(loaded) != len(settings):
        raise ValueError("checkpoint optimizer has other parameter groups than this fit")
    for mine, theirs in zip(settings, loaded, strict=True):
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                raise ValueError(
                    f"checkpoint optimizer setting {key!r} is {theirs.get(key)!r}; "
                    f"this fit uses {mine.get(key)!r}"
                )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if isinstance(optimizer, torch.optim.Adam):
        for param in params:
            _check_adam(optimizer.state.get(param, {}), param, step)
    elif isinstance(optimizer, torch.optim.LBFGS):
        for param in params[1:]:  # L-BFGS keeps its state on the first parameter alone
            if optimizer.state.get(param):
                raise ValueError("checkpoint L-BFGS state is on another parameter")
        _check_lbfgs(optimizer.state.get(params[0], {}), params, step)
    else:
        raise TypeError(f"no checkpoint checks for {type(optimizer).__name__}")


def check_saved_tensors(saved_state: object) -> None:
    """Every tensor of a saved optimizer state is real floating point.

    Checked before the load, which would cast a complex moment to real (dropping its
    imaginary part with a warning) or integers to floats, hiding the damage from
    :func:`check_optimizer_state`.

    Example:
        >>> check_saved_tensors({0: {"exp_avg": torch.zeros(3, dtype=torch.complex64)}})
        Traceback (most recent call last):
            ...
        ValueError: checkpoint optimizer state 'exp_avg' must hold real floats; got torch.complex64
    """
    pending: list[tuple[object, object]] = [(None, saved_state)]
    while pending:
        key, value = pending.pop()
        if isinstance(value, torch.Tensor):
            if not value.is_floating_point():
                raise ValueError(
                    f"checkpoint optimizer state {key!r} must hold real floats; got {value.dtype}"
                )
        elif isinstance(value, Mapping):
            pending.extend(value.items())
        elif isinstance(value, (list, tuple)):
            pending.extend((key, item) for item in value)


def group_settings(optimizer: torch.optim.Optimizer) -> list[dict[str, object]]:
    """Each param group's settings but its parameters and learning rate, sequences as
    tuples (a saved ``betas`` tuple may come back a list).

    Example:
        >>> group_settings(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]))[0]["betas"]
        (0.9, 0.999)
    """
    return [
        {
            key: tuple(value) if isinstance(value, (list, tuple)) else value
            for key, value in group.items()
            if key not in ("params", "lr")
        }
        for group in optimizer.param_groups
    ]


def _check_adam(state: Mapping[str, object], param: torch.Tensor, step: int) -> None:
    if not state:
        if step:  # a fresh Adam state would restart its moments' bias correction
            raise ValueError(f"checkpoint optimizer holds no Adam state after {step} steps")
        return
    if set(state) != {"step", "exp_avg", "exp_avg_sq"}:
        raise ValueError(f"checkpoint Adam state holds {sorted(state)}")
    count = state["step"]
    if not isinstance(count, torch.Tensor) or count.numel() != 1 or not count.is_floating_point():
        raise ValueError(f"checkpoint optimizer step must be one real number; got {count!r}")
    # (Past 2**24 steps a float32 count stops counting: 2**24 + 1 rounds back down.)
    if float(count) != step and step < 2**24:
        raise ValueError(f"checkpoint optimizer step is {float(count)}; its run took {step}")
    for key in ("exp_avg", "exp_avg_sq"):
        _check_like(key, state[key], param.shape, param.dtype)
    if (state["exp_avg_sq"] < 0).any():
        raise ValueError("checkpoint optimizer state 'exp_avg_sq' holds negative values")


_LBFGS_STEPPED = {"d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss"}


def _check_lbfgs(state: Mapping[str, object], params: list[torch.Tensor], step: int) -> None:
    if not state:
        if step:
            raise ValueError(f"checkpoint optimizer holds no L-BFGS state after {step} steps")
        return
    keys, counts = set(state), {"func_evals", "n_iter"}
    # A step that starts at a minimum returns before its first direction: the counts alone.
    # "al" is made on a step's second iteration.
    if keys not in (counts, counts | _LBFGS_STEPPED, counts | _LBFGS_STEPPED | {"al"}):
        raise ValueError(f"checkpoint L-BFGS state holds {sorted(keys)}")
    for key in ("func_evals", "n_iter"):
        value = state[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"checkpoint L-BFGS {key!r} must be a count; got {value!r}")
    if keys == counts:
        return
    flat = (sum(p.numel() for p in params),)
    dtype = params[0].dtype
    for key in ("d", "prev_flat_grad"):
        _check_like(key, state[key], flat, dtype)
    for key in ("t", "prev_loss", "H_diag"):
        _check_scalar(key, state[key])
    directions, steps, ro = state["old_dirs"], state["old_stps"], state["ro"]
    if not all(isinstance(v, list) for v in (directions, steps, ro)) or not (
        len(directions) == len(steps) == len(ro)
    ):
        raise ValueError("checkpoint L-BFGS history lists must be three lists of one length")
    for i in range(len(ro)):
        _check_like("old_dirs", directions[i], flat, dtype)
        _check_like("old_stps", steps[i], flat, dtype)
        _check_scalar("ro", ro[i])
    if "al" in state:
        al = state["al"]
        if not isinstance(al, list) or len(al) < len(ro):
            raise ValueError("checkpoint L-BFGS 'al' must be a list as long as its history")
        for value in al:
            if value is not None:
                _check_scalar("al", value)


def _check_like(key: str, value: object, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    if not isinstance(value, torch.Tensor) or value.shape != shape or value.dtype != dtype:
        got = (
            f"{value.dtype} of shape {tuple(value.shape)}"
            if isinstance(value, torch.Tensor)
            else type(value).__name__
        )
        raise ValueError(
            f"checkpoint optimizer state {key!r} must be {dtype} of shape {tuple(shape)}; got {got}"
        )
    if not torch.isfinite(value).all():
        raise ValueError(f"checkpoint optimizer state {key!r} is not finite")


def _check_scalar(key: str, value: object) -> None:
    if isinstance(value, torch.Tensor):
        ok = value.numel() == 1 and value.is_floating_point() and bool(value.isfinite().all())
    else:
        ok = _is_number(value) and math.isfinite(value)
    if not ok:
        raise ValueError(f"checkpoint optimizer state {key!r} must be one finite real number")


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
