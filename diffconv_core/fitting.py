"""Learning a kernel from input/target pairs: losses, the least-squares reference, a trainer.

Pure tensor logic (no files, no processes): the ``diffconv fit`` command reads the pairs,
shards them across ranks and writes the results; everything numeric happens here.

Losses live in ``_fit_losses`` and the learnable kernels (:class:`FIRKernel`,
:class:`WindowKernel`) in ``_fit_models``; both are re-exported here.

The model is ``prediction = convolve(input, kernel, mode="same", padding=padding)`` over whole
signals. Training looks at random crops, but a crop is cut from the *extended* input
(:func:`extend_input`) and convolved in "valid" mode, so every crop's prediction equals the
corresponding samples of the whole-signal prediction — crops are exact pieces of one objective,
not a different problem with edge effects of their own. That is why the least-squares solution
of the normal equations (:func:`least_squares_fir`) is the point a plain-FIR fit converges to.

Determinism and resuming: step ``s`` draws its crops from a generator seeded with
``(seed, s)`` alone, so a run stopped after any step and resumed from its checkpoint
(:meth:`Trainer.state_dict`) continues exactly as if never stopped. Distributed training draws
the same global plan on every rank; each rank evaluates only the crops of the pairs it holds,
and the gradient sums are all-reduced through the ``reduce`` callable, so the update equals the
single-process one up to the order of floating-point sums.
"""

from __future__ import annotations

import copy
import math
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from diffconv_core._fit_checkpoint import (
    check_history,
    check_optimizer_state,
    check_saved_tensors,
    group_settings,
)
from diffconv_core._fit_losses import LOSSES, compute_loss, spectral_loss
from diffconv_core._fit_models import FIRKernel, WindowKernel
from diffconv_core._nonfinite import _times_power_of_two
from diffconv_core._validation import PADDINGS, check_choice, check_count, check_tensor
from diffconv_core._window_build import check_length
from diffconv_core.convolution import convolve
from diffconv_core.padding import pad

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "FIRKernel",
    "FitConfig",
    "FitData",
    "Trainer",
    "WindowKernel",
    "compute_loss",
    "crop_plan",
    "design_matrix",
    "extend_input",
    "least_squares_fir",
    "make_data",
    "spectral_loss",
    "split_length",
]

OPTIMIZERS = ("adam", "lbfgs")
SCHEDULES = ("cosine", "constant")

# A crop: (pair index, first target sample, number of samples).
Crop = tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# The model's geometry and the least-squares reference


def extend_input(signal: torch.Tensor, taps: int, padding: str = "zeros") -> torch.Tensor:
    """Extend ``signal`` by the context a ``taps``-long "same" convolution reads past its ends.

    ``convolve(extend_input(x, K, p), h, "valid") == convolve(x, h, "same", padding=p)``, and a
    crop ``[s, s + L)`` of that output is ``convolve(extended[..., s:s + L + K - 1], h,
    "valid")`` — which is how the trainer cuts crops without edge effects.

    Shape:
        signal ``(..., T)`` -> ``(..., T + taps - 1)``.

    Example:
        >>> import torch
        >>> from diffconv_core import convolve
        >>> from diffconv_core.fitting import extend_input
        >>> x, h = torch.randn(100), torch.randn(8)
        >>> same = convolve(x, h, "same", padding="reflect")
        >>> bool(torch.allclose(convolve(extend_input(x, 8, "reflect"), h, "valid"), same))
        True
    """
    check_choice("padding", padding, PADDINGS)
    taps = check_length(taps, "taps")
    return pad(check_tensor("signal", signal), taps // 2, (taps - 1) // 2, padding)


def design_matrix(extended: torch.Tensor, taps: int) -> torch.Tensor:
    """Columns of the linear map ``kernel -> convolve(extended, kernel, "valid")``.

    Convolution is linear in the kernel, so column ``k`` is the prediction made by the unit
    kernel ``e_k``; building it with the core's own ``convolve`` keeps the reference and the
    trained model on exactly the same geometry.

    Shape:
        extended ``(..., T + taps - 1)`` -> ``(..., T, taps)``.

    Example:
        >>> import torch
        >>> from diffconv_core import convolve
        >>> from diffconv_core.fitting import design_matrix
        >>> x, h = torch.randn(50, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
        >>> A = design_matrix(x, 5)
        >>> bool(torch.allclose(A @ h, convolve(x, h, "valid")))
        True
    """
    taps = check_length(taps, "taps")
    check_tensor("extended", extended)
    eye = torch.eye(taps, dtype=extended.dtype, device=extended.device)
    return convolve(extended.unsqueeze(-2), eye, "valid").transpose(-1, -2)


def least_squares_fir(
    inputs: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    taps: int,
    *,
    padding: str = "zeros",
    ridge: float = 0.0,
) -> torch.Tensor:
    """The FIR kernel minimising the squared error over all pairs (the Wiener solution).

    Solves the normal equations ``(A^T A + ridge I) h = A^T y`` in float64, where ``A`` stacks
    the :func:`design_matrix` of every pair and channel and ``y`` the targets. The model is
    ``convolve(x, h, "same", padding=padding)`` on whole signals — what ``fit`` trains.
    Where the inputs do not determine every tap (a zero input, inputs shorter than the
    kernel, a constant input with circular padding) and ``ridge`` is 0, the answer is the
    minimum-norm least-squares kernel, as ``numpy.linalg.lstsq`` gives it (and as gradient
    descent from a zero kernel approaches it).

    Shape:
        inputs[i], targets[i]: ``(..., T_i)`` of equal shape per pair -> ``(taps,)`` float64.

    Example:
        >>> import torch
        >>> from diffconv_core import convolve
        >>> from diffconv_core.fitting import least_squares_fir
        >>> x = torch.randn(2, 400, dtype=torch.float64)
        >>> h = torch.tensor([0.5, 1.0, -0.25], dtype=torch.float64)
        >>> least_squares_fir([x], [convolve(x, h)], 3)
        tensor([ 0.5000,  1.0000, -0.2500], dtype=torch.float64)
    """
    _check_pairs(inputs, targets)
    taps = check_length(taps, "taps")
    if not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0; got {ridge!r}")
    for i, (x, y) in enumerate(zip(inputs, targets, strict=True)):
        if x.shape != y.shape:
            raise ValueError(
                f"input and target shapes differ: {tuple(x.shape)} and {tuple(y.shape)}"
            )
        for what, value in (("input", x), ("target", y)):
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"pair {i}: the {what} has NaN or Inf samples")
    # The normal equations square the samples: at 1e-160 they underflowed (NaN, or a zero
    # kernel at 1e-200) and at 1e160 they overflowed. Solved for inputs and targets scaled
    # near 1 by powers of two (exact), the kernel is then scaled back.
    x_exp, y_exp = _peak_exponent(inputs), _peak_exponent(targets)
    gram = torch.zeros(taps, taps, dtype=torch.float64)
    rhs = torch.zeros(taps, dtype=torch.float64)
    for x, y in zip(inputs, targets, strict=True):
        A = design_matrix(extend_input(_scaled(x, -x_exp), taps, padding), taps)
        A = A.reshape(-1, taps)
        gram += A.T @ A
        rhs += A.T @ _scaled(y, -y_exp).reshape(-1)
    if ridge:
        ridge_mantissa, ridge_exp = math.frexp(ridge)
        if ridge_exp - 2 * x_exp > 1000:
            # A ridge that dwarfs A^T A (it overflows once scaled): the solution is then
            # A^T y / ridge, in the exponents so that only the result's own range limits it.
            return _scaled(rhs / ridge_mantissa, y_exp + x_exp - ridge_exp)
        gram.diagonal().add_(math.ldexp(ridge_mantissa, max(ridge_exp - 2 * x_exp, -1074)))
    return _scaled(_solve_min_norm(gram, rhs, taps), y_exp - x_exp)


def _check_pairs(
    inputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], allow_none: bool = False
) -> None:
    """Inputs and targets as sequences of tensors, one per pair, as many of each (none, if
    ``allow_none``), every one a real floating tensor with samples."""
    for name, pairs in (("inputs", inputs), ("targets", targets)):
        if isinstance(pairs, torch.Tensor) or not isinstance(pairs, Sequence):
            # A tensor iterates over its first axis: rows would read as pairs.
            raise TypeError(
                f"{name} must be a list of tensors, one per pair; got {type(pairs).__name__}"
            )
    if len(inputs) != len(targets) or not (inputs or allow_none):
        raise ValueError(
            f"need the same, non-zero number of inputs and targets; got {len(inputs)} and "
            f"{len(targets)}"
        )
    for i, (x, y) in enumerate(zip(inputs, targets, strict=True)):
        check_tensor(f"pair {i}'s input", x)
        check_tensor(f"pair {i}'s target", y)


def _peak_exponent(signals: Sequence[torch.Tensor]) -> int:
    """``e`` with the largest magnitude in ``signals`` in ``[2**(e-1), 2**e)`` (0 for zeros)."""
    peak = max(float(s.detach().abs().max()) if s.numel() else 0.0 for s in signals)
    return math.frexp(peak)[1] if peak > 0 else 0


def _scaled(t: torch.Tensor, exponent: int) -> torch.Tensor:
    """``t`` (as float64 on the CPU) times ``2**exponent``, exactly and without overflowing
    on the way (a scale of 2**1024 does not exist as a float)."""
    return _times_power_of_two(t.detach().double().cpu(), exponent)


def _solve_min_norm(gram: torch.Tensor, rhs: torch.Tensor, taps: int) -> torch.Tensor:
    eigenvalues, vectors = torch.linalg.eigh(gram)
    # numpy's matrix_rank tolerance on the Gram matrix: directions below it are not
    # determined by the data (exactly, up to the rounding of A^T A).
    keep = eigenvalues > taps * torch.finfo(torch.float64).eps * eigenvalues.max()
    if bool(keep.all()):
        return torch.linalg.solve(gram, rhs)
    # Rank deficient: the minimum-norm solution, in the span of the determined directions.
    basis = vectors[:, keep]
    return basis @ ((basis.T @ rhs) / eigenvalues[keep])


# --------------------------------------------------------------------------------------------
# Crops


def crop_plan(
    step: int,
    seed: int,
    train_lengths: Sequence[int],
    crop: int | None,
    batch_size: int,
) -> list[Crop]:
    """The crops of one step, identical on every rank and after a resume.

    ``crop=None`` uses every pair's whole training region (full batch). Otherwise
    ``batch_size`` crops of ``min(crop, T_i)`` samples; a pair is drawn with probability
    proportional to its training length (every sample equally likely), then a uniform start.
    The generator is seeded with ``(seed, step)`` only.

    Shape:
        - no tensors: a list of ``(pair, start, samples)`` tuples, one per pair with
          training samples (``crop=None``) or ``batch_size`` of them

    Example:
        >>> from diffconv_core.fitting import crop_plan
        >>> crop_plan(0, 0, [100, 50], None, 4)
        [(0, 0, 100), (1, 0, 50)]
        >>> crop_plan(3, 1, [100, 50], 20, 2) == crop_plan(3, 1, [100, 50], 20, 2)
        True
    """
    if crop is None:
        return [(i, 0, n) for i, n in enumerate(train_lengths) if n > 0]
    crop = check_count(crop, "crop")
    batch_size = check_count(batch_size, "batch_size")
    if not any(n > 0 for n in train_lengths):
        raise ValueError(f"no pair has training samples to crop; got {list(train_lengths)}")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    weights = torch.tensor([float(n) for n in train_lengths], dtype=torch.float64)
    pairs = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
    plan = []
    for i in pairs.tolist():
        length = min(crop, train_lengths[i])
        start = int(torch.randint(0, train_lengths[i] - length + 1, (), generator=generator))
        plan.append((i, start, length))
    return plan


# --------------------------------------------------------------------------------------------
# Training


@dataclass
class FitConfig:
    """How to train. ``crop`` in samples (None: whole training regions, full batch).

    ``steps`` optimiser steps with learning rate ``lr`` (``schedule`` "cosine" decays it
    towards 0 over the steps for Adam; L-BFGS always uses ``lr``), ``batch_size`` crops per
    step when ``crop`` is set, ``loss`` one of :data:`LOSSES`, ``optimizer`` "adam" or
    "lbfgs", ``seed`` for the crop plan, and a validation every ``val_every`` steps. Invalid
    values raise ValueError when the config is made.

    Shape:
        - no tensors: plain settings

    Example:
        >>> from diffconv_core.fitting import FitConfig
        >>> config = FitConfig(steps=100, crop=256)
        >>> config.crop, config.batch_size, config.optimizer
        (256, 8, 'adam')
        >>> FitConfig(loss="huber")
        Traceback (most recent call last):
            ...
        ValueError: loss must be one of 'mse', 'l1', 'spectral'; got 'huber'
    """

    steps: int = 500
    lr: float = 1e-2
    batch_size: int = 8
    crop: int | None = None
    loss: str = "mse"
    optimizer: str = "adam"
    schedule: str = "cosine"
    seed: int = 0
    val_every: int = 10

    def __post_init__(self) -> None:
        check_choice("loss", self.loss, LOSSES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        # Whole numbers where they count: steps=2.5 ran 3 steps and then refused its own
        # checkpoint, crop=2.5 failed inside torch.randint, "3" compared as a TypeError.
        for name in ("steps", "batch_size", "val_every", "crop", "seed"):
            value = getattr(self, name)
            if value is None and name == "crop":
                continue
            try:
                value = operator.index(value)  # numpy's integers too
            except TypeError:
                value = None
            if value is None or isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a whole number; got {getattr(self, name)!r}")
            setattr(self, name, value)  # a plain int, as a checkpoint stores it
            if name != "seed" and value < 1:
                what = " sample or None" if name == "crop" else ""
                raise ValueError(f"{name} must be at least 1{what}; got {value}")
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 < lr < math.inf:
            raise ValueError(f"lr must be a positive finite number; got {lr!r}")
        self.lr = float(lr)

    def as_dict(self) -> dict[str, object]:
        """Every setting by field name, as plain values (what a checkpoint stores).

        Example:
            >>> from diffconv_core.fitting import FitConfig
            >>> FitConfig(steps=3).as_dict()["steps"]
            3
        """
        return asdict(self)


@dataclass
class FitData:
    """The pairs one process holds, plus what every process knows about all pairs.

    ``inputs[i]`` is pair ``i``'s input already passed through :func:`extend_input`
    (``(C_i, T_i + K - 1)``), ``targets[i]`` its target ``(C_i, T_i)``; a rank holds only its
    shard. ``train_lengths`` and ``channels`` list every pair (global), so each rank can draw
    the global crop plan and normalise by the global number of samples. The first
    ``train_lengths[i]`` samples of a pair train, the rest (if any) validate.
    ``lengths[i]`` is ``T_i`` and ``channels[i]`` is ``C_i``. :func:`make_data` builds it
    for all pairs in one process.

    Shape:
        - inputs[i]: ``(C_i, T_i + K - 1)`` for a kernel of ``K`` taps
        - targets[i]: ``(C_i, T_i)``

    Example:
        >>> import torch
        >>> from diffconv_core.fitting import FitData, extend_input
        >>> x, y = torch.randn(2, 100), torch.randn(2, 100)
        >>> data = FitData({0: extend_input(x, 5)}, {0: y}, [90], [100], [2])
        >>> tuple(data.inputs[0].shape), tuple(data.targets[0].shape)
        ((2, 104), (2, 100))
    """

    inputs: dict[int, torch.Tensor]
    targets: dict[int, torch.Tensor]
    train_lengths: list[int]
    lengths: list[int]
    channels: list[int]


def _plan_loss(
    kernel: torch.Tensor, data: FitData, plan: Sequence[Crop], loss: str
) -> torch.Tensor:
    """Sum over this rank's crops of (mean loss x samples), divided by the global samples."""
    total = kernel.sum() * 0.0  # keeps the graph connected when this rank holds no crop
    count = sum(data.channels[i] * n for i, _, n in plan)
    if count == 0:
        return total
    K = kernel.shape[-1]
    groups: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for i, start, n in plan:
        if i in data.inputs:
            x = data.inputs[i][..., start : start + n + K - 1]
            y = data.targets[i][..., start : start + n]
            groups.setdefault(n, []).append((x.reshape(-1, n + K - 1), y.reshape(-1, n)))
    for pieces in groups.values():
        # Equal-length crops go through one batched convolution.
        x = torch.cat([p[0] for p in pieces])
        y = torch.cat([p[1] for p in pieces])
        prediction = convolve(x, kernel, "valid")
        total = total + compute_loss(prediction, y, loss) * y.numel()
    return total / count


def _check_trainer_parts(model: object, data: object, config: object) -> None:
    """A module whose kernel fits the data's geometry, a FitData whose lists agree, and a
    FitConfig; a TypeError/ValueError naming what does not (the first step failed inside
    the convolution or an index otherwise)."""
    for name, value, kind in (
        ("model", model, nn.Module),
        ("data", data, FitData),
        ("config", config, FitConfig),
    ):
        if not isinstance(value, kind):
            raise TypeError(f"{name} must be a {kind.__name__}; got {type(value).__name__}")
    counts = {len(data.train_lengths), len(data.lengths), len(data.channels)}
    if len(counts) != 1:
        raise ValueError(
            "data's train_lengths, lengths and channels must list every pair once; got "
            f"{len(data.train_lengths)}, {len(data.lengths)} and {len(data.channels)} items"
        )
    with torch.no_grad():
        taps = model().shape[-1]
    for i, x in data.inputs.items():
        y = data.targets.get(i)
        if not 0 <= i < len(data.lengths) or y is None:
            raise ValueError(f"data pair {i} has no target or no entry in the pair lists")
        if x.shape[-1] - y.shape[-1] + 1 != taps:
            raise ValueError(
                f"the model's kernel has {taps} taps, but data pair {i} was extended for "
                f"{x.shape[-1] - y.shape[-1] + 1} (make_data(..., taps) and the model must agree)"
            )


class Trainer:
    """Adam (or L-BFGS) on random crops; checkpointable, resumable, distributable.

    ``reduce(tensor)`` must sum a tensor in place over all processes (identity when alone);
    every process must call :meth:`step` and :meth:`validate` in lockstep.

    Shape:
        - model: ``model()`` returns the kernel ``(K,)``
        - data: inputs ``(C_i, T_i + K - 1)`` and targets ``(C_i, T_i)`` (see :class:`FitData`)
        - :meth:`step` and :meth:`validate` return Python floats, the global mean loss
          (:meth:`validate` None when no pair has validation samples)

    Example:
        >>> import torch
        >>> from diffconv_core import convolve
        >>> from diffconv_core.fitting import FIRKernel, FitConfig, Trainer, make_data
        >>> x = torch.randn(1, 300)
        >>> y = convolve(x, torch.tensor([0.25, 0.5, 0.25]))
        >>> data = make_data([x], [y], 3)
        >>> config = FitConfig(steps=2, optimizer="lbfgs", lr=1.0)  # full batch: crop=None
        >>> trainer = Trainer(FIRKernel(torch.zeros(3)), data, config)
        >>> trainer.run()
        >>> [round(v, 2) for v in trainer.model().tolist()]
        [0.25, 0.5, 0.25]
    """

    def __init__(
        self,
        model: nn.Module,
        data: FitData,
        config: FitConfig,
        *,
        reduce: Callable[[torch.Tensor], object] | None = None,
    ) -> None:
        _check_trainer_parts(model, data, config)
        self.model, self.data, self.config = model, data, config
        self.reduce = reduce
        self.step_index = 0
        self.history: dict[str, list[float]] = {"train": [], "val_step": [], "val": []}
        params = list(model.parameters())
        if config.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=config.lr)
        else:
            self.optimizer = torch.optim.LBFGS(
                params, lr=config.lr, max_iter=20, line_search_fn="strong_wolfe"
            )

    @property
    def done(self) -> bool:
        return self.step_index >= self.config.steps

    def _lr(self) -> float:
        if self.config.schedule == "constant" or self.config.optimizer == "lbfgs":
            return self.config.lr
        return self.config.lr * 0.5 * (1 + math.cos(math.pi * self.step_index / self.config.steps))

    def _sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.reduce is not None:
            self.reduce(tensor)
        return tensor

    def _loss_and_grad(self, plan: Sequence[Crop]) -> torch.Tensor:
        self.optimizer.zero_grad()
        loss = _plan_loss(self.model(), self.data, plan, self.config.loss)
        loss.backward()
        for p in self.model.parameters():
            self._sum(p.grad)
        return self._sum(loss.detach().clone())

    def step(self) -> float:
        """One optimiser step on this step's crops; returns the global training loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        c = self.config
        plan = crop_plan(self.step_index, c.seed, self.data.train_lengths, c.crop, c.batch_size)
        if c.optimizer == "adam":
            loss = self._loss_and_grad(plan)
            self.optimizer.step()
        else:
            loss = self.optimizer.step(lambda: self._loss_and_grad(plan))
        self.step_index += 1
        value = float(loss)
        self.history["train"].append(value)
        return value

    @torch.no_grad()
    def validate(self) -> float | None:
        """Loss over every pair's validation region (whole, no crops); None without one."""
        d = self.data
        plan = [
            (i, t, n - t)
            for i, (t, n) in enumerate(zip(d.train_lengths, d.lengths, strict=True))
            if n > t
        ]
        if not plan:
            return None
        value = float(self._sum(_plan_loss(self.model(), d, plan, self.config.loss)))
        self.history["val_step"].append(float(self.step_index))
        self.history["val"].append(value)
        return value

    def run(
        self,
        *,
        max_steps: int | None = None,
        callback: Callable[[Trainer, float, float | None], object] | None = None,
    ) -> None:
        """Step until done (or ``max_steps`` more steps), validating every ``val_every``."""
        taken = 0
        while not self.done and (max_steps is None or taken < max_steps):
            train = self.step()
            taken += 1
            val = None
            if self.step_index % self.config.val_every == 0 or self.done:
                val = self.validate()
            if callback is not None:
                callback(self, train, val)

    def state_dict(self) -> dict[str, object]:
        """Plain tensors, numbers and strings: loadable with ``torch.load(weights_only=True)``."""
        return {
            "step": self.step_index,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": {k: list(v) for k, v in self.history.items()},
            "config": self.config.as_dict(),
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Continue from :meth:`state_dict`; the config must match the one saved."""
        _check_state_entries(state)
        saved = dict(state["config"])
        current = self.config.as_dict()
        changed = [
            f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in current.items() if saved.get(k) != v
        ]
        if changed:
            raise ValueError("checkpoint was made with other settings: " + "; ".join(changed))
        step = state["step"]
        if (
            isinstance(step, bool)
            or not isinstance(step, int)
            or not 0 <= step <= self.config.steps
        ):
            raise ValueError(
                f"checkpoint step must be an integer in [0, {self.config.steps}]; got {step!r}"
            )
        for name, value in state["model"].items():
            if isinstance(value, torch.Tensor) and not value.is_floating_point():
                raise ValueError(f"checkpoint {name} must hold real floats; got {value.dtype}")
            if isinstance(value, torch.Tensor) and not torch.isfinite(value).all():
                # (Resumed, the first loss was NaN: "training diverged ... try a lower --lr".)
                raise ValueError(f"checkpoint {name} holds NaN or Inf")
        history = {k: list(v) for k, v in state["history"].items()}
        if set(history) != set(self.history):
            raise ValueError(f"checkpoint history must map {sorted(self.history)} to lists")
        check_history(history, step)
        # The model's and optimizer's states are checked once loaded: a load that fails
        # puts back what was there, so a caller that goes on trains from where it was (not
        # from the checkpoint's taps with its NaN moments).
        saved_model = copy.deepcopy(self.model.state_dict())
        saved_optimizer = copy.deepcopy(self.optimizer.state_dict())
        settings = group_settings(self.optimizer)
        try:
            try:
                self.model.load_state_dict(state["model"])
            except RuntimeError as err:  # taps of another size: torch's "size mismatch"
                raise ValueError(f"checkpoint model does not fit this one: {err}") from None
            check_saved_tensors(state["optimizer"]["state"])
            self.optimizer.load_state_dict(state["optimizer"])
            check_optimizer_state(self.optimizer, step, settings)
        except BaseException:
            self.model.load_state_dict(saved_model)
            self.optimizer.load_state_dict(saved_optimizer)
            raise
        self.step_index = step
        self.history = history


def _check_state_entries(state: object) -> None:
    # The entries state_dict() writes, each of its kind: a missing or retyped one was a
    # KeyError or an AttributeError from inside the checks below.
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint must be a mapping; got {type(state).__name__}")
    missing = [k for k in ("step", "model", "optimizer", "history", "config") if k not in state]
    if missing:
        raise ValueError(f"checkpoint lacks {', '.join(missing)}")
    for key in ("model", "optimizer", "history", "config"):
        if not isinstance(state[key], Mapping):
            raise ValueError(f"checkpoint {key} must be a mapping; got {type(state[key]).__name__}")
    if "state" not in state["optimizer"]:
        raise ValueError("checkpoint optimizer lacks its state")


def make_data(
    inputs: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    taps: int,
    *,
    padding: str = "zeros",
    val_split: float = 0.0,
) -> FitData:
    """All pairs in one process: extend the inputs and split each pair's time axis.

    The last ``round(val_split * T)`` samples of each pair validate, the rest train.

    Shape:
        inputs[i], targets[i]: ``(C_i, T_i)`` (or ``(T_i,)``), equal per pair.

    Example:
        >>> import torch
        >>> from diffconv_core.fitting import make_data
        >>> d = make_data([torch.randn(2, 100)], [torch.randn(2, 100)], 5, val_split=0.1)
        >>> d.train_lengths, d.lengths, d.channels, tuple(d.inputs[0].shape)
        ([90], [100], [2], (2, 104))
    """
    _check_pairs(inputs, targets, allow_none=True)
    data = FitData({}, {}, [], [], [])
    for i, (x, y) in enumerate(zip(inputs, targets, strict=True)):
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        if x.shape != y.shape:
            raise ValueError(f"pair {i}: input shape {tuple(x.shape)} != target {tuple(y.shape)}")
        data.inputs[i] = extend_input(x, taps, padding)
        data.targets[i] = y
        data.lengths.append(y.shape[-1])
        data.train_lengths.append(split_length(y.shape[-1], val_split))
        data.channels.append(y.shape[0])
    return data


def split_length(length: int, val_split: float) -> int:
    """Training samples of a pair of ``length`` samples (at least 1).

    The last ``round(val_split * length)`` samples validate; ``val_split`` is in [0, 1).

    Shape:
        - no tensors: an int in, an int out

    Example:
        >>> from diffconv_core.fitting import split_length
        >>> split_length(1000, 0.1), split_length(5, 0.0)
        (900, 5)
    """
    if not 0 <= val_split < 1:
        raise ValueError(f"val_split must be in [0, 1); got {val_split}")
    return max(1, length - round(val_split * length))
