"""torch.export records the convolution (and the nn modules) as graph operations.

Exported graphs are checked against scipy (float64) and against eager mode on inputs other
than the ones traced: other batch sizes and lengths (dynamic shapes), NaN/Inf anywhere, values
near the dtype's limit, and gradients through ``ExportedProgram.module()``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from torch.export import Dim

from diffconv_core import convolve, correlate
from diffconv_core.filters import firwin
from diffconv_core.nn import FIRFilter, WindowConv
from diffconv_core.smooth import smooth
from diffconv_core.windows import get_window

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo's notes on lru_cache


class Convolution(torch.nn.Module):
    def __init__(self, kernel: torch.Tensor, mode="same", padding="zeros", method="auto"):
        super().__init__()
        self.kernel = torch.nn.Parameter(kernel)
        self.mode, self.padding, self.method = mode, padding, method

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return convolve(signal, self.kernel, self.mode, padding=self.padding, method=self.method)


class _TwoInputs(torch.nn.Module):
    def __init__(self, mode="same", method="auto", padding="zeros"):
        super().__init__()
        self.options = (mode, method, padding)

    def forward(self, signal, kernels):
        mode, method, padding = self.options
        return convolve(signal, kernels, mode, method=method, padding=padding)


def _export(module, example, *, strict=False, dynamic=True):
    shapes = None
    if dynamic:
        shapes = ({0: Dim("batch", max=64), 1: Dim("time", min=64, max=100_000)},)
    return torch.export.export(module, (example,), dynamic_shapes=shapes, strict=strict)


def _hann(K, dtype=torch.float64):
    return torch.hann_window(K + 2, periodic=False, dtype=dtype)[1:-1]


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
@pytest.mark.parametrize(
    "mode, method",
    [("same", "auto"), ("full", "fft"), ("valid", "auto"), ("same", "direct"), ("full", "direct")],
)
def test_exported_convolution_matches_scipy_on_other_shapes(strict, mode, method):
    kernel = _hann(31) * torch.linspace(-1, 2, 31, dtype=torch.float64)
    program = _export(
        Convolution(kernel, mode, method=method), torch.randn(2, 1000).double(), strict=strict
    )
    generator = torch.Generator().manual_seed(0)
    for batch, length in [(3, 500), (1, 4097), (5, 64), (2, 1000)]:
        x = torch.randn(batch, length, dtype=torch.float64, generator=generator)
        got = program.module()(x).detach().numpy()
        expected = scipy.signal.convolve(x.numpy(), kernel.detach().numpy()[None], mode=mode)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("padding", ["reflect", "circular", "replicate"])
def test_exported_paddings_match_eager(padding):
    kernel = _hann(15, torch.float32)
    module = Convolution(kernel, "same", padding=padding)
    program = _export(module, torch.randn(2, 300))
    for shape in [(4, 200), (1, 777)]:
        x = torch.randn(*shape)
        torch.testing.assert_close(program.module()(x), module(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["auto", "direct"])
def test_exported_kernel_per_signal_matches_scipy(method):
    kernels = torch.stack([_hann(9), -_hann(9), _hann(9) ** 2])  # (3, 9): one per row
    x = torch.randn(3, 200, dtype=torch.float64)
    x2 = torch.randn(3, 333, dtype=torch.float64)
    program = torch.export.export(
        _TwoInputs("full", method), (x, kernels), dynamic_shapes=({1: Dim("time", min=16)}, None)
    )
    got = program.module()(x2, kernels).numpy()
    for row in range(3):
        expected = scipy.signal.convolve(x2[row].numpy(), kernels[row].numpy())
        np.testing.assert_allclose(got[row], expected, rtol=1e-10, atol=1e-10)


def _same_nonfinite(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert torch.equal(torch.isnan(got), torch.isnan(expected))
    assert torch.equal(got == torch.inf, expected == torch.inf)
    assert torch.equal(got == -torch.inf, expected == -torch.inf)
    finite = torch.isfinite(expected)
    torch.testing.assert_close(got[finite], expected[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["auto", "direct"])
def test_exported_graph_keeps_nan_and_inf_local_as_eager_does(method):
    # A kernel with zero and negative taps: Inf * 0 is NaN, Inf terms of both signs cancel
    # to NaN, the rest are Infs of the sign the taps give them.
    kernel = torch.tensor([0.5, -1.0, 0.0, 2.0, 1.0, 0.0, -0.25])
    module = Convolution(kernel, "same", method=method)
    program = _export(module, torch.randn(2, 500))
    x = torch.randn(3, 600)
    x[0, 10], x[0, 300] = torch.nan, torch.inf
    x[1, 50], x[1, 53] = torch.inf, -torch.inf
    x[2, 599] = -torch.inf
    expected = module(x).detach()
    assert torch.isnan(expected).any() and torch.isinf(expected).any()
    _same_nonfinite(program.module()(x).detach(), expected)
    # what deployment tools take: the graph in core ATen operations, cond kept
    _same_nonfinite(program.run_decompositions().module()(x).detach(), expected)
    # where nothing is non-finite the graph takes its plain branch: the same values
    x_finite = torch.randn(3, 600)
    torch.testing.assert_close(program.module()(x_finite), module(x_finite), rtol=1e-5, atol=1e-5)


def test_exported_graph_handles_a_nonfinite_kernel():
    kernel = torch.tensor([1.0, torch.inf, 0.5, -2.0, torch.nan])

    class Fixed(torch.nn.Module):
        def forward(self, signal, taps):
            return correlate(signal, taps, "full")

    x = torch.randn(2, 40)
    x[0, 7] = 0.0  # an Inf tap times a zero sample: NaN
    program = torch.export.export(Fixed(), (torch.randn(2, 40), kernel))
    _same_nonfinite(program.module()(x, kernel), correlate(x, kernel, "full"))


def test_exported_graph_scales_values_near_the_float32_limit():
    # float32 samples near 1e36: an FFT's sums overflow unscaled, the result (~1e37) does not.
    module = Convolution(_hann(63, torch.float32))
    program = _export(module, torch.randn(2, 1000))
    x = torch.randn(2, 1500) * 1e36
    expected = torch.from_numpy(
        scipy.signal.convolve(
            x.double().numpy(), module.kernel.detach().double().numpy()[None], "same"
        )
    )
    got = program.module()(x).detach()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e31)
    torch.testing.assert_close(got, module(x).detach(), rtol=1e-5, atol=1e31)


def test_exported_float32_result_past_the_dtypes_range_keeps_its_small_outputs_finite():
    # 1e30 samples under 1e20 taps, zeros after the first quarter: outputs near 1e50 (Inf in
    # float32) and exact zeros. In float32 the FFT's round-off of 1e50 made most zeros Inf; the
    # careful branch computes float32 transforms in float64, as eager mode does here.
    module = Convolution(_hann(255, torch.float32) * 1e20, method="fft")
    program = _export(module, torch.randn(2, 1000), dynamic=False)
    x = torch.zeros(2, 1000)
    x[:, :250] = torch.randn(2, 250) * 1e30
    expected = scipy.signal.convolve(
        x.double().numpy(), module.kernel.detach().double().numpy()[None], "same", "direct"
    )
    got = program.module()(x).detach()
    largest = float(torch.finfo(torch.float32).max)
    small, huge = np.abs(expected) < largest / 2, np.abs(expected) > 2 * largest
    assert small.sum() > 1000 and huge.sum() > 300
    assert torch.isfinite(got[small]).all()
    assert np.abs(got.double().numpy() - expected)[small].max() < 1e-12 * np.abs(expected).max()
    assert torch.equal(got[huge], torch.from_numpy(expected[huge]).float())


def test_exported_float32_gradients_near_the_dtypes_limit_match_eager():
    # float32 samples near 3e36 under a unit-sum kernel: the signal's gradient is the kernel's
    # sum, yet the scaled careful branch's recorded products gave Inf there (eager mode
    # rescales its gradient); in float64 that branch needs no scaling. The kernel's gradient,
    # a sum of 4,000 such samples, truly overflows in both.
    module = Convolution(_hann(63, torch.float32) / _hann(63).sum().item(), method="fft")
    exported = _export(module, torch.randn(2, 1000)).module()
    x = torch.rand(2, 2000, generator=torch.Generator().manual_seed(5)) * 3e36
    grads = []
    for model in (exported, module):
        model.zero_grad()
        signal = x.clone().requires_grad_()
        model(signal).backward(torch.ones(2, 2000))
        grads.append((signal.grad, next(p for n, p in model.named_parameters()).grad))
    (gx, gw), (ex, ew) = grads
    assert torch.isfinite(gx).all()
    torch.testing.assert_close(gx, ex, rtol=1e-5, atol=1e-6)
    assert torch.equal(torch.isfinite(gw), torch.isfinite(ew))


def test_gradients_through_the_exported_graph_match_eager():
    kernel = _hann(31)
    module = Convolution(kernel.clone())
    program = _export(module, torch.randn(2, 700, dtype=torch.float64))
    exported = program.module()
    for nan_at in (None, 100):
        x = torch.randn(3, 900, dtype=torch.float64)
        if nan_at is not None:
            x[1, nan_at] = torch.nan
        grads = []
        for model in (exported, module):
            model.zero_grad()
            signal = x.clone().requires_grad_()
            y = model(signal)
            keep = torch.isfinite(y.detach())
            (y[keep] * torch.linspace(-1, 1, int(keep.sum()), dtype=y.dtype)).pow(
                2
            ).sum().backward()
            kernel_grad = next(p for n, p in model.named_parameters() if "kernel" in n).grad
            grads.append((signal.grad, kernel_grad))
        (gx, gw), (ex, ew) = grads
        assert torch.isfinite(gx).all() and torch.isfinite(gw).all()
        torch.testing.assert_close(gx, ex, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(gw, ew, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "make",
    [
        lambda: WindowConv("gaussian", 31, learn="params", std=3.0),
        lambda: WindowConv("hann", 31, learn="width", width=20.0),
        lambda: WindowConv(("kaiser", 8.0), 33, learn="taps", mode="full", padding="symmetric"),
        lambda: FIRFilter(
            "bandpass",
            (500.0, 2000.0),
            numtaps=63,
            fs=16000.0,
            learn_window=True,
            window=("kaiser", 6.0),
        ),
    ],
    ids=["gaussian-params", "hann-width", "kaiser-taps", "fir-bandpass"],
)
def test_nn_modules_export(make):
    module = make()
    program = _export(module, torch.randn(2, 1000))
    for shape in [(2, 1000), (4, 1500)]:
        x = torch.randn(*shape)
        torch.testing.assert_close(program.module()(x), module(x), rtol=1e-5, atol=1e-5)


def test_half_precision_exports_and_computes_in_float32():
    module = Convolution(_hann(15, torch.float16))
    program = torch.export.export(module, (torch.randn(2, 256, dtype=torch.float16),))
    x = torch.randn(2, 256, dtype=torch.float16)
    got = program.module()(x)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, module(x), rtol=2e-3, atol=2e-3)


def test_jit_trace_is_refused_with_a_pointer_to_export():
    with pytest.raises(RuntimeError, match="torch.export.export"):
        torch.jit.trace(Convolution(_hann(15, torch.float32)), (torch.randn(2, 100),))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"edges": "renormalize"},
        {"nan_policy": "omit"},
        {"nan_policy": "omit", "edges": "zeros"},
    ],
    ids=["reflect", "renormalize", "omit", "omit-zeros"],
)
def test_smooth_exports_and_matches_eager_with_nan_gaps(options):
    class Smooth(torch.nn.Module):
        def forward(self, signal):
            return smooth(signal, "gaussian", 21, std=4.0, **options)

    program = _export(Smooth(), torch.randn(2, 1000))
    x = torch.randn(3, 1500)
    x[0, 100:110] = torch.nan
    x[2, 0] = torch.nan
    _same_nonfinite(program.module()(x), Smooth()(x))


def test_smooth_refuses_nan_policy_raise_in_an_exported_graph():
    class Smooth(torch.nn.Module):
        def forward(self, signal):
            return smooth(signal, nan_policy="raise")

    with pytest.raises(ValueError, match="nan_policy='omit' or 'propagate'"):
        torch.export.export(Smooth(), (torch.randn(2, 100),))


def test_exported_graph_avoids_operators_the_onnx_exporter_lacks():
    # torch.onnx.export(dynamo=True) had no conversion for frexp, nor for amax without dims
    # (checked by hand with onnx 1.23 / onnxscript 0.7 / onnxruntime 1.32, opset 18).
    program = _export(Convolution(_hann(31, torch.float32)), torch.randn(2, 1000))
    calls = [
        node
        for module in program.graph_module.modules()
        if isinstance(module, torch.fx.GraphModule)
        for node in module.graph.nodes
        if node.op == "call_function"
    ]
    names = {str(node.target) for node in calls}
    assert any("cond" in name for name in names)  # the subgraphs were searched too
    assert not any("frexp" in name for name in names)
    for node in calls:
        if "amax" in str(node.target):
            assert len(node.args) > 1 and node.args[1], f"amax over unnamed dims: {node}"


def _matches_scipy_rows(got: torch.Tensor, x: torch.Tensor, kernels: torch.Tensor, mode: str):
    # every row of a broadcast batch against scipy, float64
    x_b, k_b = torch.broadcast_tensors(x[..., :1], kernels[..., :1])
    rows_x = x.expand(*x_b.shape[:-1], x.shape[-1]).reshape(-1, x.shape[-1])
    rows_k = kernels.expand(*k_b.shape[:-1], kernels.shape[-1]).reshape(-1, kernels.shape[-1])
    flat = got.reshape(rows_x.shape[0], -1)
    for row in range(rows_x.shape[0]):
        expected = scipy.signal.convolve(rows_x[row].numpy(), rows_k[row].numpy(), mode=mode)
        np.testing.assert_allclose(flat[row].numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "x_shape, k_shape, method, strict",
    [
        ((3, 3, 100), (3, 3, 5), "direct", False),  # equal batch sizes: one symbol in cond
        ((2, 2, 100), (5,), "direct", False),
        ((2, 1, 100), (2, 2, 5), "direct", False),  # both operands broadcast
        ((1, 100), (3, 7), "auto", True),  # strict: the general broadcast rule
        ((2, 3, 100), (3, 7), "fft", True),
    ],
)
def test_exported_batches_of_several_dims_and_broadcasts(x_shape, k_shape, method, strict):
    # Failed before: sizes (s**2)//s cond could not match (direct), dynamo's max() of a
    # generator (strict).
    x = torch.randn(*x_shape, dtype=torch.float64)
    kernels = torch.randn(*k_shape, dtype=torch.float64)
    module = _TwoInputs("same", method)
    program = torch.export.export(module, (x, kernels), strict=strict)
    _matches_scipy_rows(program.module()(x, kernels), x, kernels, "same")


@pytest.mark.parametrize("padding", ["circular", "reflect"])
def test_exported_padding_of_two_batch_dims_with_a_dynamic_length(padding):
    # Failed before: a padded signal of two batch dims flattened to rows asked a guard
    # (min(4 + T, 16 + 4T) == 4 + T) that symbolic shapes could not prove.
    module = Convolution(_hann(5), "same", padding=padding, method="direct")
    example = torch.randn(4, 4, 300, dtype=torch.float64)
    time = Dim("time", min=8, max=5000)
    program = torch.export.export(module, (example,), dynamic_shapes=({2: time},))
    x = torch.randn(4, 4, 777, dtype=torch.float64)
    torch.testing.assert_close(program.module()(x), module(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["same", "valid"])
def test_exported_kernel_per_signal_with_a_dynamic_batch(mode):
    # Failed before: a SymBool kept for the branches broke cond's guards.
    batch, time = Dim("batch", min=2, max=64), Dim("time", min=64, max=5000)
    x, kernels = torch.randn(3, 188, dtype=torch.float64), torch.randn(3, 32, dtype=torch.float64)
    program = torch.export.export(
        _TwoInputs(mode, "direct"),
        (x, kernels),
        dynamic_shapes=({0: batch, 1: time}, {0: batch}),
    )
    x2, k2 = torch.randn(5, 300, dtype=torch.float64), torch.randn(5, 32, dtype=torch.float64)
    _matches_scipy_rows(program.module()(x2, k2), x2, k2, mode)


@pytest.fixture
def graph_compile_mode():
    from diffconv_core import set_compile_mode

    set_compile_mode("graph")
    torch._dynamo.reset()
    yield
    set_compile_mode("eager")
    torch._dynamo.reset()


def test_fullgraph_compile_needs_the_graph_mode():
    def smooth_twice(x):
        return convolve(convolve(x, _hann(9, torch.float32)), _hann(5, torch.float32))

    # The refusal names the way out (it said "Attempted to call function marked as
    # skipped ... Please file an issue to PyTorch"), for the convolution, windows and designs.
    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"set_compile_mode\('graph'\)"):
        torch.compile(smooth_twice, fullgraph=True, backend="eager")(torch.randn(2, 300))
    for design in (lambda: get_window("hann", 9), lambda: firwin(9, 0.3)):
        torch._dynamo.reset()
        with pytest.raises(Exception, match=r"set_compile_mode\('graph'\)"):
            torch.compile(lambda x, d=design: x * d(), fullgraph=True, backend="eager")(
                torch.ones(9)
            )


def test_graph_compile_mode_records_the_convolution_whole(graph_compile_mode):
    module = Convolution(_hann(31))

    def loss(signal):
        y = module(signal)
        keep = torch.isfinite(y.detach())
        return y[keep].pow(2).sum(), y

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    x = torch.randn(3, 900, dtype=torch.float64)
    x[1, 100] = torch.nan
    x[2, 7] = torch.inf
    results = []
    for fn in (compiled, loss):
        module.zero_grad()
        signal = x.clone().requires_grad_()
        value, y = fn(signal)
        value.backward()
        results.append((y.detach(), signal.grad, module.kernel.grad.clone()))
    (y_c, gx_c, gw_c), (y_e, gx_e, gw_e) = results
    _same_nonfinite(y_c, y_e)
    torch.testing.assert_close(gx_c, gx_e, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gw_c, gw_e, rtol=1e-9, atol=1e-9)


def test_graph_compile_mode_takes_windows_and_filters(graph_compile_mode):
    module = FIRFilter("lowpass", 1000.0, numtaps=63, fs=16000.0)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    x = torch.randn(2, 1000)
    torch.testing.assert_close(compiled(x), module(x), rtol=1e-5, atol=1e-5)


def test_compile_mode_names_its_choices():
    from diffconv_core import set_compile_mode

    with pytest.raises(ValueError, match="'eager' or 'graph'"):
        set_compile_mode("fast")
