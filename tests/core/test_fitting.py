"""diffconv_core.fitting: losses, the least-squares reference, crops and the trainer.

References: numpy/scipy in float64 (losses, the "same"-mode geometry, the least-squares
solution via numpy.linalg.lstsq on a design matrix built with numpy.convolve), gradcheck for
gradients, and the normal-equations solution for what training converges to.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.signal
import torch

from diffconv_core import convolve
from diffconv_core.fitting import (
    FIRKernel,
    FitConfig,
    FitData,
    Trainer,
    WindowKernel,
    compute_loss,
    crop_plan,
    design_matrix,
    extend_input,
    least_squares_fir,
    make_data,
    spectral_loss,
    split_length,
)
from tests.core.conftest import reference

# Thousands of tiny ops: on 2 shared cores intra-op threads only contend.
pytestmark = pytest.mark.usefixtures("single_thread")


TRUE_FIR = np.array([0.1, -0.3, 0.8, 0.45, -0.2, 0.05, 0.12], dtype=np.float64)


def synthetic_pairs(n_pairs=2, channels=1, T=400, noise=0.05, seed=0, taps=TRUE_FIR):
    """Inputs, and targets = scipy "same" convolution with a known FIR plus white noise."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n_pairs):
        x = rng.standard_normal((channels, T))
        y = np.stack([scipy.signal.convolve(row, taps, mode="same") for row in x])
        y = y + noise * rng.standard_normal(y.shape)
        xs.append(torch.from_numpy(x))
        ys.append(torch.from_numpy(y))
    return xs, ys


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --------------------------------------------------------------------------------------------
# Losses


def numpy_spectral(p: np.ndarray, t: np.ndarray, n_fft=256, eps=1e-7) -> float:
    n = min(n_fft, p.shape[-1])
    hop = max(1, n // 4)
    window = scipy.signal.get_window("hann", n, fftbins=True)
    starts = range(0, p.shape[-1] - n + 1, hop)

    def mag(x):
        frames = np.stack([x[..., s : s + n] * window for s in starts], axis=-2)
        spec = np.fft.rfft(frames, axis=-1)
        return np.sqrt(spec.real**2 + spec.imag**2 + eps**2)

    mp, mt = mag(p), mag(t)
    return float(np.abs(mp - mt).mean() + np.abs(np.log(mp) - np.log(mt)).mean())


@pytest.mark.parametrize("shape", [(300,), (2, 3, 257), (1, 64), (2, 40)])
def test_spectral_loss_matches_numpy(shape):
    rng = np.random.default_rng(1)
    p, t = rng.standard_normal(shape), rng.standard_normal(shape)
    out = spectral_loss(torch.from_numpy(p), torch.from_numpy(t))
    assert out.dtype == torch.float64 and out.shape == ()
    np.testing.assert_allclose(float(out), numpy_spectral(p, t), rtol=1e-10)
    out32 = spectral_loss(torch.from_numpy(p).float(), torch.from_numpy(t).float())
    np.testing.assert_allclose(float(out32), numpy_spectral(p, t), rtol=1e-4)


@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_pointwise_losses_match_numpy(loss):
    rng = np.random.default_rng(2)
    p, t = rng.standard_normal((3, 50)), rng.standard_normal((3, 50))
    ref = np.mean((p - t) ** 2) if loss == "mse" else np.mean(np.abs(p - t))
    out = compute_loss(torch.from_numpy(p), torch.from_numpy(t), loss)
    np.testing.assert_allclose(float(out), ref, rtol=1e-12)


@pytest.mark.parametrize("loss", ["mse", "l1", "spectral"])
def test_loss_gradcheck(loss):
    gen = torch.Generator().manual_seed(3)
    p = torch.randn(2, 40, dtype=torch.float64, generator=gen, requires_grad=True)
    t = torch.randn(2, 40, dtype=torch.float64, generator=gen)
    assert torch.autograd.gradcheck(lambda q: compute_loss(q, t, loss), (p,))


def test_spectral_loss_gradient_finite_at_silence():
    p = torch.zeros(1, 64, dtype=torch.float64, requires_grad=True)
    spectral_loss(p, torch.zeros(1, 64, dtype=torch.float64)).backward()
    assert torch.isfinite(p.grad).all()


def test_loss_errors_name_the_value():
    with pytest.raises(ValueError, match="'l3'"):
        compute_loss(torch.zeros(3), torch.zeros(3), "l3")
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\)"):
        spectral_loss(torch.zeros(3), torch.zeros(4))


# --------------------------------------------------------------------------------------------
# Geometry and least squares


@pytest.mark.parametrize("padding", ["zeros", "reflect", "symmetric", "replicate", "circular"])
@pytest.mark.parametrize("K", [1, 4, 7])
def test_extended_valid_equals_same_reference(padding, K):
    rng = np.random.default_rng(K)
    x, h = rng.standard_normal((2, 30)), rng.standard_normal(K)
    ext = extend_input(torch.from_numpy(x), K, padding)
    assert ext.shape == (2, 30 + K - 1)
    from diffconv_core import convolve

    out = convolve(ext, torch.from_numpy(h), "valid")
    np.testing.assert_allclose(out.numpy(), reference(x, h, "same", padding), atol=1e-12)
    # A crop of the extended input gives exactly that crop of the whole prediction.
    crop = convolve(ext[:, 5 : 5 + 10 + K - 1], torch.from_numpy(h), "valid")
    np.testing.assert_allclose(crop.numpy(), out.numpy()[:, 5:15], atol=1e-12)


def test_design_matrix_columns_are_shifted_inputs():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(20)
    A = design_matrix(extend_input(torch.from_numpy(x), 5), 5).numpy()
    for k in range(5):
        unit = np.zeros(5)
        unit[k] = 1.0
        np.testing.assert_allclose(A[:, k], scipy.signal.convolve(x, unit, "same"), atol=1e-14)


def numpy_least_squares(xs, ys, K):
    """lstsq on columns built by scipy's "same" convolution with unit kernels."""
    rows, rhs = [], []
    for x, y in zip(xs, ys, strict=True):
        for xr, yr in zip(x.numpy(), y.numpy(), strict=True):
            cols = [scipy.signal.convolve(xr, np.eye(K)[k], mode="same") for k in range(K)]
            rows.append(np.stack(cols, axis=1))
            rhs.append(yr)
    return np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0]


@pytest.mark.parametrize("K", [4, 7, 8])
def test_least_squares_matches_numpy_lstsq(K):
    xs, ys = synthetic_pairs(n_pairs=2, channels=2, T=120, noise=0.1)
    ours = least_squares_fir(xs, ys, K)
    assert ours.shape == (K,) and ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), numpy_least_squares(xs, ys, K), rtol=1e-9, atol=1e-12)


def test_least_squares_recovers_noiseless_fir():
    xs, ys = synthetic_pairs(noise=0.0)
    np.testing.assert_allclose(least_squares_fir(xs, ys, 7).numpy(), TRUE_FIR, atol=1e-10)


def _undetermined_cases():
    rng = np.random.default_rng(6)
    sine = np.sin(2 * np.pi * 5 * np.arange(64) / 64)
    return [
        ("zero input", np.zeros((1, 50)), 5, "zeros"),
        ("input shorter than the kernel", rng.standard_normal((2, 3)), 7, "zeros"),
        ("constant input, circular", np.ones((1, 50)), 5, "circular"),
        ("one tone, circular", sine[None], 7, "circular"),
    ]


@pytest.mark.parametrize("case", _undetermined_cases(), ids=lambda c: c[0])
def test_least_squares_undetermined_taps_give_the_minimum_norm_answer(case):
    # torch.linalg.solve raised "the input matrix is singular"; numpy.linalg.lstsq on the
    # explicit design matrix gives the minimum-norm solution.
    _, x, K, padding = case
    rng = np.random.default_rng(7)
    xs, ys = [torch.from_numpy(x)], [torch.from_numpy(rng.standard_normal(x.shape))]
    ours = least_squares_fir(xs, ys, K, padding=padding)
    A = design_matrix(extend_input(xs[0], K, padding), K).reshape(-1, K).numpy()
    expected = np.linalg.lstsq(A, ys[0].numpy().reshape(-1), rcond=None)[0]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-12)


def test_geometry_helpers_name_bad_taps():
    # extend_input's fractional taps failed as "pad widths must be integers; got left=1.0",
    # design_matrix's zero taps as an empty kernel.
    x = torch.randn(2, 40, dtype=torch.float64)
    with pytest.raises(TypeError, match="taps must be an integer; got 2.5"):
        extend_input(x, 2.5)
    with pytest.raises(ValueError, match="taps must be >= 1; got 0"):
        extend_input(x, 0)
    with pytest.raises(ValueError, match="taps must be >= 1; got 0"):
        design_matrix(x, 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(ridge=-1.0), ValueError, "ridge must be a finite number >= 0; got -1.0"),
        (dict(ridge=float("nan")), ValueError, "ridge must be a finite number >= 0; got nan"),
        (dict(taps=0), ValueError, "taps must be >= 1; got 0"),
        (dict(taps=5.0), TypeError, "taps must be an integer; got 5.0"),
        (dict(nan_input=True), ValueError, "pair 0: the input has NaN or Inf samples"),
    ],
)
def test_least_squares_errors_name_the_argument(kwargs, error, message):
    x, y = torch.randn(1, 40, dtype=torch.float64), torch.randn(1, 40, dtype=torch.float64)
    if kwargs.pop("nan_input", False):
        x[0, 3] = float("nan")
    options = {"taps": 5, **kwargs}
    taps = options.pop("taps")
    with pytest.raises(error, match=message):
        least_squares_fir([x], [y], taps, **options)


# --------------------------------------------------------------------------------------------
# Crops


def test_crop_plan_inside_regions_and_seeded():
    lengths = [100, 10, 300]
    plan = crop_plan(5, 7, lengths, 32, 200)
    assert len(plan) == 200
    for i, start, n in plan:
        assert n == min(32, lengths[i]) and 0 <= start and start + n <= lengths[i]
    assert plan == crop_plan(5, 7, lengths, 32, 200)
    assert plan != crop_plan(6, 7, lengths, 32, 200)
    assert plan != crop_plan(5, 8, lengths, 32, 200)
    # Pairs are drawn in proportion to their length: the 10-sample pair rarely.
    counts = np.bincount([i for i, _, _ in plan], minlength=3)
    assert counts[1] < counts[0] < counts[2]


def test_split_length():
    assert split_length(1000, 0.1) == 900
    assert split_length(3, 0.9) == 1
    with pytest.raises(ValueError, match="1.0"):
        split_length(10, 1.0)


# --------------------------------------------------------------------------------------------
# Training


def fit(xs, ys, K=7, init=None, **config):
    data = make_data(xs, ys, K, val_split=config.pop("val_split", 0.0))
    model = FIRKernel(torch.zeros(K, dtype=xs[0].dtype) if init is None else init)
    trainer = Trainer(model, data, FitConfig(**config))
    trainer.run()
    return trainer


def test_adam_full_batch_reaches_least_squares():
    xs, ys = synthetic_pairs(n_pairs=2, T=300, noise=0.1)
    ls = least_squares_fir(xs, ys, 7)
    trainer = fit(xs, ys, steps=400, lr=0.02)
    err = rel(trainer.model().detach(), ls)
    assert err < 1e-3, f"Adam full batch: relative error {err:.2e} to the normal equations"
    # The noise keeps LS away from the true FIR: the check is against LS, not the truth.
    assert rel(ls, TRUE_FIR) > 1e-3


def test_lbfgs_reaches_least_squares():
    xs, ys = synthetic_pairs(n_pairs=1, channels=2, T=300, noise=0.1)
    ls = least_squares_fir(xs, ys, 7)
    trainer = fit(xs, ys, steps=5, lr=1.0, optimizer="lbfgs")
    err = rel(trainer.model().detach(), ls)
    assert err < 1e-3, f"L-BFGS: relative error {err:.2e} to the normal equations"


def test_random_crops_approach_least_squares():
    xs, ys = synthetic_pairs(n_pairs=2, T=400, noise=0.1)
    ls = least_squares_fir(xs, ys, 7)
    trainer = fit(xs, ys, steps=300, lr=0.02, crop=64, batch_size=8)
    # Stochastic crops: close to LS, not exact (the decaying step shrinks the jitter).
    assert rel(trainer.model().detach(), ls) < 2e-2


def test_spectral_loss_fit_matches_the_magnitude_response():
    """Phase-blind, so only |H| is pinned down: it approaches the true FIR's."""
    xs, ys = synthetic_pairs(n_pairs=1, T=512, noise=0.0)
    init = torch.zeros(7, dtype=torch.float64)
    init[3] = 1.0
    trainer = fit(xs, ys, init=init, steps=300, lr=0.03, loss="spectral")
    response = np.abs(np.fft.rfft(trainer.model().detach().numpy(), 64))
    true = np.abs(np.fft.rfft(TRUE_FIR, 64))
    # Frames of a finite signal are not exactly |X||H|, so the optimum is near, not at, |H|.
    assert np.abs(response - true).max() / true.max() < 0.06
    assert trainer.history["train"][-1] < trainer.history["train"][0] / 5


@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_noiseless_pointwise_losses_recover_the_fir(loss):
    xs, ys = synthetic_pairs(n_pairs=1, T=300, noise=0.0)
    trainer = fit(xs, ys, steps=300, lr=0.02, loss=loss)
    np.testing.assert_allclose(trainer.model().detach().numpy(), TRUE_FIR, atol=1e-3)


def test_validation_loss_matches_numpy():
    xs, ys = synthetic_pairs(n_pairs=2, channels=2, T=200, noise=0.1)
    trainer = fit(xs, ys, steps=3, lr=0.05, val_split=0.25)
    h = trainer.model().detach().numpy()
    errors = []
    for x, y in zip(xs, ys, strict=True):
        pred = np.stack([scipy.signal.convolve(r, h, "same") for r in x.numpy()])
        errors.append((pred[:, 150:] - y.numpy()[:, 150:]).ravel())
    np.testing.assert_allclose(trainer.history["val"][-1], np.mean(np.concatenate(errors) ** 2))
    assert trainer.history["val_step"] == [3.0]
    assert len(trainer.history["train"]) == 3


def test_training_is_deterministic_for_a_seed():
    xs, ys = synthetic_pairs(T=200)
    kw = dict(steps=20, lr=0.05, crop=50, batch_size=4)
    a = fit(xs, ys, seed=3, **kw).model().detach()
    b = fit(xs, ys, seed=3, **kw).model().detach()
    c = fit(xs, ys, seed=4, **kw).model().detach()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_resume_from_checkpoint_equals_uninterrupted(optimizer):
    xs, ys = synthetic_pairs(T=200)
    config = dict(steps=12, lr=0.05 if optimizer == "adam" else 0.5, crop=60, batch_size=3)
    config.update(optimizer=optimizer, val_every=5)
    whole = fit(xs, ys, **config)

    data = make_data(xs, ys, 7)
    first = Trainer(FIRKernel(torch.zeros(7, dtype=torch.float64)), data, FitConfig(**config))
    first.run(max_steps=7)
    assert first.step_index == 7 and not first.done
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    second = Trainer(FIRKernel(torch.zeros(7, dtype=torch.float64)), data, FitConfig(**config))
    second.load_state_dict(state)
    second.run()
    assert second.done
    assert torch.equal(second.model().detach(), whole.model().detach())
    assert second.history == whole.history


def test_resume_refuses_other_settings():
    xs, ys = synthetic_pairs(T=100)
    data = make_data(xs, ys, 7)
    t = Trainer(FIRKernel(torch.zeros(7, dtype=torch.float64)), data, FitConfig(steps=4))
    t.run(max_steps=2)
    other = Trainer(FIRKernel(torch.zeros(7, dtype=torch.float64)), data, FitConfig(steps=4, lr=1))
    with pytest.raises(ValueError, match="lr: 0.01 -> 1"):
        other.load_state_dict(t.state_dict())


def test_sharded_ranks_sum_to_single_process_gradient():
    """Two shards with the gradients summed (what the all-reduce does) = one process."""
    xs, ys = synthetic_pairs(n_pairs=3, T=150)
    config = FitConfig(steps=1, lr=0.05, crop=40, batch_size=6, seed=2)
    whole = make_data(xs, ys, 7)
    single = Trainer(FIRKernel(torch.zeros(7, dtype=torch.float64)), whole, config)
    single.step()

    grads, losses = [], []
    for shard in ({0, 2}, {1}):
        data = make_data(xs, ys, 7)
        data.inputs = {i: v for i, v in data.inputs.items() if i in shard}
        data.targets = {i: v for i, v in data.targets.items() if i in shard}
        rank = Trainer(FIRKernel(torch.zeros(7, dtype=torch.float64)), data, config)
        losses.append(rank._loss_and_grad(crop_plan(0, 2, data.train_lengths, 40, 6)))
        grads.append(rank.model.taps.grad.clone())
    single_grad = Trainer(FIRKernel(torch.zeros(7, dtype=torch.float64)), whole, config)
    total = single_grad._loss_and_grad(crop_plan(0, 2, whole.train_lengths, 40, 6))
    torch.testing.assert_close(grads[0] + grads[1], single_grad.model.taps.grad)
    torch.testing.assert_close(losses[0] + losses[1], total)
    assert abs(float(total) - single.history["train"][0]) < 1e-12


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (dict(loss="l3"), "'l3'"),
        (dict(optimizer="sgd"), "'sgd'"),
        (dict(steps=0), "steps must be at least 1; got 0"),
        (dict(crop=0), "crop must be at least 1"),
        (dict(lr=-1.0), "lr must be a positive finite number; got -1.0"),
    ],
)
def test_config_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        FitConfig(**bad)


# --------------------------------------------------------------------------------------------
# Window parameters


def window_pairs(kernel: np.ndarray, T=600, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, T))
    y = np.stack([scipy.signal.convolve(r, kernel, "same") for r in x])
    y += 1e-3 * rng.standard_normal(y.shape)
    return [torch.from_numpy(x)], [torch.from_numpy(y)]


def test_gaussian_std_recovered():
    pytest.importorskip("diffconv_core.windows")
    K, true_std = 31, 3.7
    kernel = scipy.signal.windows.gaussian(K, true_std)
    xs, ys = window_pairs(kernel / kernel.sum())
    model = WindowKernel("gaussian", K, params={"std": 2.0}, dtype=torch.float64)
    trainer = Trainer(model, make_data(xs, ys, K), FitConfig(steps=150, lr=0.05))
    trainer.run()
    std = model.learned()["params"]["std"]
    assert abs(std - true_std) / true_std < 0.01, f"std {std} vs {true_std}"


def test_hann_width_recovered():
    windows = pytest.importorskip("diffconv_core.windows")
    K, true_width = 31, 21.3
    kernel = windows.get_window("hann", K, width=true_width, normalize="sum", dtype=torch.float64)
    xs, ys = window_pairs(kernel.numpy())
    model = WindowKernel("hann", K, learn="width", width=15.0, dtype=torch.float64)
    trainer = Trainer(model, make_data(xs, ys, K), FitConfig(steps=150, lr=0.05))
    trainer.run()
    width = model.learned()["width"]
    assert abs(width - true_width) / true_width < 0.01, f"width {width} vs {true_width}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_window_kernel_default_width_starts_at_the_length_with_a_gradient(dtype):
    # learn="width" without width= starts at width == length; exp(log(K)) rounds above K
    # for many K (K = 7 in float32, 9 in float64), which get_window refused.
    for taps in range(3, 40):
        model = WindowKernel("gaussian", taps, learn="width", params={"std": 2.0}, dtype=dtype)
        kernel = model()
        plain = scipy.signal.windows.gaussian(taps, 2.0)
        np.testing.assert_allclose(kernel.detach().numpy(), plain / plain.sum(), rtol=1e-5)
        assert model.learned()["width"] <= taps
        kernel[0].backward()  # an end tap grows with the width: the gradient is not clamped
        assert model.log_values.grad.abs().item() > 0, taps


def test_window_kernel_step_past_an_upper_bound_is_clamped():
    for model in (
        WindowKernel("tukey", 9, params={"alpha": 0.9}),
        WindowKernel("hann", 9, learn="width", width=8.5),
    ):
        with torch.no_grad():
            model.log_values += 0.5  # past alpha = 1 and width = 9
        torch.testing.assert_close(model(), WindowKernel("hann", 9, learn="width")())
        learned = model.learned()
        assert learned["width"] == 9.0 and learned["params"].get("alpha", 1.0) == 1.0


def test_window_kernel_dpss_nw_is_clamped_below_half_the_length():
    model = WindowKernel("dpss", 16, params={"NW": 2.5}, dtype=torch.float64)
    with torch.no_grad():
        model.log_values.fill_(float(np.log(9.0)))  # past 16 / 2
    assert torch.isfinite(model()).all()
    assert 7.99 < model.learned()["params"]["NW"] < 8.0
    with pytest.raises(ValueError, match="at most 8"):
        WindowKernel("dpss", 16, params={"NW": 8.5})


def test_window_kernel_past_an_upper_bound_still_learns_back():
    # The clamp at the upper bound had a zero gradient: a width stepped past the length
    # stayed there. The gradient now passes straight through and points back inside.
    model = WindowKernel("hann", 9, learn="width", width=8.5, dtype=torch.float64)
    with torch.no_grad():
        model.log_values += 0.5  # width 14 > 9 taps
    target = torch.as_tensor(scipy.signal.windows.hann(7), dtype=torch.float64)
    target = torch.nn.functional.pad(target / target.sum(), (1, 1))
    (model() - target).pow(2).sum().backward()
    assert model.log_values.grad.item() > 0  # descent lowers the width


def test_window_kernel_errors():
    with pytest.raises(ValueError, match="needs at least one parameter"):
        WindowKernel("hann", 9, learn="params")
    with pytest.raises(ValueError, match="'size'"):
        WindowKernel("hann", 9, learn="size")
    with pytest.raises(ValueError, match="std must start positive; got -1.0"):
        WindowKernel("gaussian", 9, params={"std": -1.0})
    # Starts past an upper bound were clamped silently (a width of 50 on 9 taps began at 9).
    with pytest.raises(ValueError, match=r"width must start at most 9 \(the length\); got 50.0"):
        WindowKernel("hann", 9, learn="width", width=50.0)
    with pytest.raises(ValueError, match="alpha must start at most 1; got 1.5"):
        WindowKernel("tukey", 9, params={"alpha": 1.5})


# --------------------------------------------------------------------------------------------
# Devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["fir", "gaussian"])
def test_cuda_training_equals_cpu(kind):
    xs, ys = synthetic_pairs(n_pairs=2, channels=2, T=300, noise=0.05)
    config = FitConfig(steps=30, lr=0.05, crop=64, batch_size=4, val_every=10)
    kernels = []
    for device in ("cpu", "cuda"):
        data = make_data([x.to(device) for x in xs], [y.to(device) for y in ys], 7, val_split=0.2)
        if kind == "fir":
            model = FIRKernel(torch.zeros(7, dtype=torch.float64))
        else:
            model = WindowKernel("gaussian", 7, params={"std": 1.0}, dtype=torch.float64)
        trainer = Trainer(model.to(device), data, config)
        trainer.run()
        assert trainer.model().device.type == device
        kernels.append(trainer.model().detach().cpu())
    torch.testing.assert_close(kernels[1], kernels[0], rtol=1e-9, atol=1e-12)


def test_window_kernel_learns_only_the_continuous_parameters():
    # nbar (an integer) stays as given; sll is learned, and both are in the learned summary.
    kernel = WindowKernel("taylor", 9, learn="params", params={"nbar": 4, "sll": 30.0})
    assert kernel.names == ["sll"]
    from diffconv_core.windows import get_window

    expected = get_window("taylor", 9, nbar=4, sll=30.0, normalize="sum", dtype=kernel().dtype)
    torch.testing.assert_close(kernel().detach(), expected)
    kernel().sum().backward()
    assert kernel.log_values.grad is not None and kernel.log_values.grad.shape == (1,)
    learned = kernel.learned()["params"]
    assert learned["nbar"] == 4 and learned["sll"] == pytest.approx(30.0)
    with pytest.raises(ValueError, match="needs at least one parameter.*stay fixed"):
        WindowKernel("taylor", 9, learn="params", params={"nbar": 4})


def test_window_kernel_width_stays_buildable_in_training():
    # A 2-tap box as the target pulls an 8-tap Hann's width down past 8/7, where the window
    # has no non-zero tap left; WindowConv stops just above, and so must the fitted kernel.
    torch.manual_seed(0)
    x = torch.randn(1, 500)
    y = convolve(x, torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0]))
    kernel = WindowKernel("hann", 8, learn="width", width=6.0)
    Trainer(kernel, make_data([x], [y], 8), FitConfig(steps=200, lr=0.2, schedule="constant")).run()
    assert kernel.learned()["width"] >= 8 / 7
    assert bool(torch.isfinite(kernel()).all())
    with pytest.raises(ValueError, match="width must start at least 1.14"):
        WindowKernel("hann", 8, learn="width", width=1.1)
    assert WindowKernel("hann", 9, learn="width", width=0.5)().shape == (9,)  # a centre tap


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-160, 1e160, 1e300])
def test_least_squares_fir_at_extreme_sample_scales(scale):
    # The normal equations square the samples: at 1e-160 the kernel came out NaN, at 1e-200
    # zero, and at 1e160 eigh failed to converge, where numpy's lstsq recovers it.
    from diffconv_core import convolve
    from diffconv_core.fitting import design_matrix, extend_input, least_squares_fir

    h = torch.tensor([0.5, 1.0, -0.25], dtype=torch.float64)
    x = scale * torch.randn(2, 400, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = convolve(x, h)
    got = least_squares_fir([x], [y], 3)
    A = design_matrix(extend_input(x / scale, 3, "zeros"), 3).reshape(-1, 3).numpy()
    expected = np.linalg.lstsq(A, (y / scale).reshape(-1).numpy(), rcond=None)[0]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(got.numpy(), h.numpy(), rtol=1e-12)


def test_least_squares_fir_ridge_scales_with_the_samples():
    from diffconv_core.fitting import least_squares_fir

    x = torch.randn(400, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y = convolve(x, torch.tensor([0.5, 1.0, -0.25], dtype=torch.float64))
    unit = least_squares_fir([x], [y], 3, ridge=10.0)
    for scale in (1e-100, 1e100):
        shrunk = least_squares_fir([scale * x], [scale * y], 3, ridge=10.0 * scale**2)
        np.testing.assert_allclose(shrunk.numpy(), unit.numpy(), rtol=1e-12)


def test_least_squares_fir_with_a_ridge_that_dwarfs_the_data_and_peaks_near_the_limit():
    # Scaled, the ridge overflowed and the kernel came back zero although the answer,
    # A^T y / ridge, is representable; peaks of 2**1023 and above made the scale itself
    # overflow (OverflowError: math range error).
    from diffconv_core.fitting import design_matrix, extend_input, least_squares_fir

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, dtype=torch.float64, generator=gen)
    y = torch.randn(200, dtype=torch.float64, generator=gen)
    A = design_matrix(extend_input(x, 5, "zeros"), 5).reshape(-1, 5)
    limit = (A.T @ y).numpy()
    got = least_squares_fir([x * 1e-200], [y * 1e200], 5, ridge=1e-80)
    np.testing.assert_allclose(got.numpy(), limit * 1e80, rtol=1e-9)
    ones = torch.ones(50, dtype=torch.float64)
    np.testing.assert_allclose(least_squares_fir([ones * 1e308], [ones], 1).numpy(), [1e-308])
    np.testing.assert_allclose(least_squares_fir([ones], [ones * 1.2e308], 1).numpy(), [1.2e308])


@pytest.mark.parametrize(
    "settings",
    [
        {"crop": 2.5},  # failed inside torch.randint at the first step
        {"steps": 2.5},  # ran 3 steps, then refused its own checkpoint
        {"steps": True},
        {"batch_size": 1.5},
        {"seed": None},
        {"seed": 1.5},
        {"steps": "3"},  # TypeError from a bare comparison
        {"val_every": None},
        {"lr": float("inf")},  # an Inf kernel after three steps
        {"lr": "0.1"},
    ],
)
def test_fit_config_refuses_what_no_run_can_use(settings):
    with pytest.raises(ValueError):
        FitConfig(**settings)


def test_fit_config_takes_numpy_numbers_as_plain_ones():
    config = FitConfig(steps=np.int64(3), lr=np.float32(0.5), crop=np.int32(64))
    assert config.as_dict()["steps"] == 3 and type(config.steps) is int
    assert type(config.lr) is float and type(config.crop) is int


@pytest.mark.parametrize("damage", ["moments", "taps"])
def test_a_refused_checkpoint_leaves_the_trainer_as_it_was(damage):
    # The model and optimizer states were loaded, then found bad: a caller that caught the
    # ValueError and trained on got the checkpoint's taps and NaN moments (a NaN kernel).
    import copy

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 300, generator=gen)
    y = convolve(x, torch.tensor([0.25, 0.5, 0.25]))
    config = FitConfig(steps=4)
    first = Trainer(FIRKernel(torch.zeros(3)), make_data([x], [y], 3), config)
    first.run(max_steps=2)
    state = copy.deepcopy(first.state_dict())
    if damage == "moments":
        for moments in state["optimizer"]["state"].values():
            moments["exp_avg"].fill_(float("nan"))
    else:
        state["model"] = {"taps": torch.zeros(5)}  # torch's RuntimeError, now a ValueError
    fresh = Trainer(FIRKernel(torch.zeros(3)), make_data([x], [y], 3), config)
    untouched = Trainer(FIRKernel(torch.zeros(3)), make_data([x], [y], 3), config)
    with pytest.raises(ValueError):
        fresh.load_state_dict(state)
    fresh.run()
    untouched.run()
    assert torch.equal(fresh.model(), untouched.model()) and torch.isfinite(fresh.model()).all()


def _drop(state: dict, key: str) -> None:
    del state[key]


#: Edits of a checkpoint's optimizer part that torch's load_state_dict takes: each failed at
#: the first resumed step (a traceback: shapes, a KeyError, an IndexError, a TypeError) or
#: trained on from a state no run makes (a cast complex moment, a fractional step count).
_ADAM_DAMAGE = {
    "moment reshaped": lambda s, g: s.update(exp_avg=s["exp_avg"].reshape(1, -1)),
    "second moment reshaped": lambda s, g: s.update(exp_avg_sq=s["exp_avg_sq"].reshape(-1, 1)),
    "moment missing": lambda s, g: _drop(s, "exp_avg"),
    "complex moment": lambda s, g: s.update(exp_avg=s["exp_avg"].to(torch.complex128)),
    "negative second moment": lambda s, g: s.update(exp_avg_sq=-s["exp_avg_sq"] - 1),
    "fractional step": lambda s, g: s.update(step=s["step"] + 0.5),
    "integer step": lambda s, g: s.update(step=s["step"].long()),
    "other step": lambda s, g: s.update(step=s["step"] + 1),
    "amsgrad": lambda s, g: g.update(amsgrad=True),
    "betas past 1": lambda s, g: g.update(betas=(2.0, 5.0)),
    "NaN weight decay": lambda s, g: g.update(weight_decay=float("nan")),
}
_LBFGS_DAMAGE = {
    "direction of another length": lambda s, g: s["old_dirs"].__setitem__(0, torch.zeros(3)),
    "history lists of other lengths": lambda s, g: s.update(ro=[]),
    "iteration count a string": lambda s, g: s.update(n_iter="x"),
    "direction 2-D": lambda s, g: s.update(d=s["d"].reshape(1, -1)),
    "NaN step length": lambda s, g: s.update(t=float("nan")),
    "NaN direction": lambda s, g: s["old_dirs"][0].fill_(float("nan")),
    "state missing": lambda s, g: _drop(s, "prev_flat_grad"),
    "other history size": lambda s, g: g.update(history_size=3),
}


@pytest.mark.parametrize(
    "optimizer, damage",
    [("adam", name) for name in _ADAM_DAMAGE] + [("lbfgs", name) for name in _LBFGS_DAMAGE],
)
def test_resume_refuses_a_damaged_optimizer_state(optimizer, damage):
    import copy

    xs, ys = synthetic_pairs(T=200)
    settings = dict(steps=6, optimizer=optimizer, crop=60, batch_size=3)
    settings["lr"] = 0.05 if optimizer == "adam" else 0.5
    data = make_data(xs, ys, 7)
    first = Trainer(FIRKernel(torch.zeros(7, dtype=torch.float64)), data, FitConfig(**settings))
    first.run(max_steps=3)
    state = copy.deepcopy(first.state_dict())
    edit = {**_ADAM_DAMAGE, **_LBFGS_DAMAGE}[damage]
    edit(state["optimizer"]["state"][0], state["optimizer"]["param_groups"][0])
    second = Trainer(FIRKernel(torch.zeros(7, dtype=torch.float64)), data, FitConfig(**settings))
    with pytest.raises(ValueError, match="checkpoint"):
        second.load_state_dict(state)
    assert second.step_index == 0 and not second.optimizer.state  # left as it was


@pytest.mark.parametrize(
    "history",
    [
        {"train": [], "val_step": [], "val": []},  # step 3 with no losses
        {"train": [1.0, 1.0, 1.0], "val_step": [3.0, 2.0], "val": [1.0]},  # lengths differ
        {"train": [1.0, 1.0, 1.0], "val_step": [4.0], "val": [1.0]},  # after the last step
        {"train": [1.0, 1.0, 1.0], "val_step": [2.5], "val": [1.0]},  # not a step
        {"train": [1.0, 1.0, 1.0], "val_step": [3.0, 2.0], "val": [1.0, 1.0]},  # backwards
    ],
)
def test_resume_refuses_a_history_that_disagrees_with_its_steps(history):
    xs, ys = synthetic_pairs(T=200)
    data = make_data(xs, ys, 7)
    config = FitConfig(steps=6, crop=60, batch_size=3)
    first = Trainer(FIRKernel(torch.zeros(7, dtype=torch.float64)), data, config)
    first.run(max_steps=3)
    state = {**first.state_dict(), "history": history}
    second = Trainer(FIRKernel(torch.zeros(7, dtype=torch.float64)), data, config)
    with pytest.raises(ValueError, match="checkpoint history"):
        second.load_state_dict(state)


def test_adams_float32_step_count_past_2_to_the_24_is_taken_as_it_stands():
    # Adam counts its steps in a float32 tensor, which stops counting at 2**24 (2**24 + 1
    # rounds back down): a run that long must still resume.
    from diffconv_core._fit_checkpoint import check_optimizer_state, group_settings

    p = torch.nn.Parameter(torch.zeros(3))
    adam = torch.optim.Adam([p])
    settings = group_settings(adam)
    p.grad = torch.ones(3)
    adam.step()
    adam.state[p]["step"] = torch.tensor(float(2**24))
    check_optimizer_state(adam, 2**24 + 3, settings)
    with pytest.raises(ValueError, match="step is 16777216.0; its run took 16777215"):
        check_optimizer_state(adam, 2**24 - 1, settings)


def _misuse_data():
    return make_data([torch.randn(1, 100)], [torch.randn(1, 100)], 3)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        # Each of these failed inside torch, an index or an attribute, naming nothing.
        (
            lambda: Trainer(FIRKernel(torch.zeros(5)), _misuse_data(), FitConfig(steps=1)),
            ValueError,
            "kernel has 5 taps, but data pair 0 was extended for 3",
        ),
        (
            lambda: Trainer(torch.zeros(3), _misuse_data(), FitConfig(steps=1)),
            TypeError,
            "model must be a Module; got Tensor",
        ),
        (
            lambda: Trainer(FIRKernel(torch.zeros(3)), _misuse_data(), {"steps": 1}),
            TypeError,
            "config must be a FitConfig; got dict",
        ),
        (
            lambda: Trainer(
                FIRKernel(torch.zeros(3)), FitData({}, {}, [1], [], []), FitConfig(steps=1)
            ),
            ValueError,
            "must list every pair once; got 1, 0 and 0 items",
        ),
        (
            lambda: least_squares_fir(torch.randn(2, 50), torch.randn(2, 50), 3),
            TypeError,
            "inputs must be a list of tensors, one per pair; got Tensor",
        ),
        (
            lambda: least_squares_fir([torch.randn(2, 0)], [torch.randn(2, 0)], 3),
            ValueError,
            "pair 0's input must not be empty along time",
        ),
        (
            lambda: make_data([torch.tensor(1.0)], [torch.tensor(1.0)], 3),
            ValueError,
            "pair 0's input must have at least one dimension",
        ),
        (
            lambda: make_data([torch.randn(50)] * 2, [torch.randn(50)], 3),
            ValueError,
            "same, non-zero number of inputs and targets; got 2 and 1",
        ),
        (lambda: FIRKernel(np.zeros(3)), TypeError, "init must be a torch.Tensor; got ndarray"),
        (lambda: FIRKernel(torch.zeros(2, 3)), ValueError, r"one kernel \(K,\); got shape"),
        (
            lambda: WindowKernel("gaussian", "5", params={"std": 1.0}),
            TypeError,
            "length must be an integer; got '5'",
        ),
        (lambda: design_matrix([1.0, 2.0, 3.0], 3), TypeError, "extended must be a torch.Tensor"),
        (lambda: crop_plan(0, 0, [], 10, 4), ValueError, "no pair has training samples"),
        (lambda: crop_plan(0, 0, [10], 10, 0), ValueError, "batch_size must be >= 1; got 0"),
    ],
)
def test_misuse_is_refused_naming_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: s.pop("model"), "checkpoint lacks model"),
        (lambda s: s.pop("step"), "checkpoint lacks step"),
        (lambda s: s.__setitem__("history", None), "checkpoint history must be a mapping"),
        (lambda s: s.__setitem__("model", None), "checkpoint model must be a mapping"),
        (lambda s: s["optimizer"].pop("state"), "checkpoint optimizer lacks its state"),
    ],
)
def test_a_checkpoint_without_its_entries_is_a_value_error(damage, message):
    # KeyError or AttributeError before, from wherever the entry was first read.
    import copy

    trainer = Trainer(FIRKernel(torch.zeros(3)), _misuse_data(), FitConfig(steps=2))
    state = copy.deepcopy(trainer.state_dict())
    damage(state)
    with pytest.raises(ValueError, match=message):
        trainer.load_state_dict(state)
