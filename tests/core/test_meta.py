"""The meta device: shapes, dtypes and autograd graphs without values.

Models are built there (``with torch.device("meta")``) and materialised later
(``to_empty`` then ``load_state_dict``), and shape inference runs there. Every result is
checked against the same call on the CPU: same shape, same dtype, and after
materialising, the same numbers.
"""

from __future__ import annotations

import pytest
import torch

from diffconv_core import convolve, correlate, filters, smooth, windows
from diffconv_core.nn import FIRFilter, WindowConv

from .conftest import MODE_PADDINGS
from .test_windows import CASES as WINDOW_CASES

META = torch.device("meta")


def _twin(cpu: torch.Tensor, requires_grad: bool = False) -> torch.Tensor:
    return torch.empty_like(cpu, device=META).requires_grad_(requires_grad)


@pytest.mark.parametrize("mode,padding", MODE_PADDINGS)
@pytest.mark.parametrize("method", ["auto", "direct", "fft", "overlap"])
@pytest.mark.parametrize("fn", [convolve, correlate])
def test_convolution_on_meta_has_the_cpu_shape_dtype_and_gradients(fn, method, mode, padding):
    x, w = torch.randn(2, 3, 40, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    expected = fn(x, w, mode, padding=padding, method=method)
    mx, mw = _twin(x, True), _twin(w, True)
    y = fn(mx, mw, mode, padding=padding, method=method)
    assert (y.device, y.shape, y.dtype) == (META, expected.shape, expected.dtype)
    y.sum().backward()
    assert (mx.grad.device, mx.grad.shape) == (META, mx.shape)
    assert (mw.grad.device, mw.grad.shape) == (META, mw.shape)


@pytest.mark.parametrize(
    "signal_dtype,kernel_dtype",
    [
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float64),
    ],
)
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_meta_keeps_the_result_dtype_and_kernel_longer_than_signal(
    signal_dtype, kernel_dtype, mode
):
    x, w = torch.randn(4, 9).to(signal_dtype), torch.randn(20).to(kernel_dtype)
    expected = convolve(x, w, mode)
    y = convolve(_twin(x), _twin(w), mode)
    assert (y.device, y.shape, y.dtype) == (META, expected.shape, expected.dtype)


def test_meta_with_a_cpu_operand_is_refused_as_on_other_devices():
    with pytest.raises(ValueError, match="same device"):
        convolve(torch.empty(3, 10, device=META), torch.ones(3))


@pytest.mark.parametrize("name,params", WINDOW_CASES)
def test_windows_follow_the_default_device(name, params):
    expected = windows.get_window(name, 16, **params)
    with torch.device(META):
        w = windows.get_window(name, 16, **params)
    assert (w.device, w.shape, w.dtype) == (META, expected.shape, expected.dtype)
    assert windows.get_window(name, 16, **params).device.type == "cpu"  # outside the block


def test_learnable_window_parameters_and_width_on_meta():
    with torch.device(META):
        std = torch.tensor(3.0, requires_grad=True)
        width = torch.tensor(11.5, requires_grad=True)
        w = windows.get_window("gaussian", 17, std=std, width=width, normalize="sum")
        w.sum().backward()
    assert w.device == META and std.grad.device == META and width.grad.device == META


@pytest.mark.parametrize(
    "design,args",
    [
        (filters.lowpass, (31, 0.3)),
        (filters.highpass, (31, 0.3)),
        (filters.bandpass, (31, [0.2, 0.4])),
        (filters.bandstop, (31, [0.2, 0.4])),
    ],
)
def test_filter_designs_on_meta(design, args):
    expected = design(*args)
    with torch.device(META):
        h = design(*args)
    assert (h.device, h.shape, h.dtype) == (META, expected.shape, expected.dtype)


@pytest.mark.parametrize("edges", smooth.EDGES)
@pytest.mark.parametrize("nan_policy", ["propagate", "omit", "raise"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_smooth_on_meta(edges, nan_policy, dtype):
    x = torch.randn(2, 50).to(dtype)
    expected = smooth.smooth(x, "hann", 11, edges=edges, nan_policy=nan_policy)
    with torch.device(META):
        y = smooth.smooth(_twin(x), "hann", 11, edges=edges, nan_policy=nan_policy)
    assert (y.device, y.shape, y.dtype) == (META, expected.shape, expected.dtype)


MODULES = [
    (WindowConv, ("hann", 31), {}),
    (WindowConv, ("hann", 31), {"learn": "taps"}),
    (WindowConv, ("hann", 31), {"learn": "width", "width": 20.0}),
    (WindowConv, ("gaussian", 31), {"learn": "params", "std": 3.0}),
    (WindowConv, ("kaiser", 30), {"learn": "params", "beta": 6.0, "sym": False}),
    (FIRFilter, ("lowpass", 1000.0, 63), {"fs": 16000.0}),
    (
        FIRFilter,
        ("bandpass", [300.0, 3400.0], 63),
        {"fs": 16000.0, "window": "kaiser", "beta": 8.0, "learn_window": True},
    ),
    (FIRFilter, ("bandstop", [0.2, 0.4], 31), {"learnable": False}),
]


@pytest.mark.parametrize("cls,args,kwargs", MODULES)
def test_modules_built_on_meta_then_materialised_match_the_cpu_ones(cls, args, kwargs):
    torch.manual_seed(0)
    reference = cls(*args, **kwargs)
    with torch.no_grad():  # trained values, not the constructor's, must come through
        for p in reference.parameters():
            p.mul_(0.9)
    with torch.device(META):
        module = cls(*args, **kwargs)
    tensors = [*module.parameters(), *module.buffers()]
    assert tensors and all(t.device == META for t in tensors)
    y = module(torch.empty(2, 200, device=META))
    assert (y.shape, y.dtype) == ((2, 200), torch.float32)
    if any(p.requires_grad for p in module.parameters()):
        y.sum().backward()
        assert all(p.grad.device == META for p in module.parameters())
    repr(module)  # must not read values

    module.to_empty(device="cpu")
    module.load_state_dict(reference.state_dict())
    x = torch.randn(2, 200)
    torch.testing.assert_close(module(x), reference(x), rtol=0, atol=0)
