"""Every error path of convolve/correlate: the exception type and what its message names."""

from __future__ import annotations

import re

import pytest
import torch

import diffconv_core

FUNCS = [diffconv_core.convolve, diffconv_core.correlate]
FUNC_IDS = ["convolve", "correlate"]
BAD_INPUT = (TypeError, ValueError)


def assert_raises(call, *fragments: str, exc=BAD_INPUT) -> str:
    """``call()`` raises ``exc`` and its message matches every regex in ``fragments``."""
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert re.search(fragment, message, re.IGNORECASE), (
            f"message {message!r} does not match {fragment!r}"
        )
    return message


def shape_pattern(*shape: int) -> str:
    """A shape written as a tuple (3, 0) or a list/torch.Size [3, 0]."""
    body = r",\s*".join(str(s) for s in shape)
    return rf"[\(\[]{body},?[\)\]]"


@pytest.fixture
def x():
    return torch.randn(5, 40)


@pytest.fixture
def w():
    return torch.randn(4)


@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
@pytest.mark.parametrize(
    "dtype,name",
    [
        (torch.int64, "int64"),
        (torch.int32, "int32"),
        (torch.uint8, "uint8"),
        (torch.bool, "bool"),
        (torch.complex64, "complex64"),
        (torch.complex128, "complex128"),
        (torch.float8_e4m3fn, "float8_e4m3fn"),  # floating point, but no FFT or GEMM takes it
        (torch.float8_e5m2, "float8_e5m2"),
    ],
)
def test_non_real_floating_dtypes(func, dtype, name, x, w):
    accepted = "float"  # the message says floating-point is what is accepted
    assert_raises(lambda: func(x.to(dtype), w), "signal", name, accepted)
    assert_raises(lambda: func(x, w.to(dtype)), "kernel", name, accepted)


@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
def test_empty_time_axis_of_signal_or_kernel(func, x, w):
    assert_raises(lambda: func(torch.ones(3, 0), w), "signal", shape_pattern(3, 0))
    assert_raises(lambda: func(torch.ones(0), w), "signal", shape_pattern(0))
    assert_raises(lambda: func(torch.ones(0, 0), w), "signal", shape_pattern(0, 0))
    assert_raises(lambda: func(x, torch.ones(0)), "kernel", shape_pattern(0))
    assert_raises(lambda: func(x, torch.ones(5, 0)), "kernel", shape_pattern(5, 0))


@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
@pytest.mark.parametrize("method", ["auto", "direct", "fft", "overlap"])
@pytest.mark.parametrize(
    "mode,padding",
    [("full", "zeros"), ("same", "reflect"), ("same", "circular"), ("valid", "zeros")],
)
@pytest.mark.parametrize(
    "signal_shape,kernel_shape",
    [((0, 10), (5,)), ((0, 3, 10), (3, 5)), ((10,), (0, 2, 5)), ((2, 0, 4), (12,))],
)
def test_an_empty_batch_gives_an_empty_result(
    func, method, mode, padding, signal_shape, kernel_shape
):
    # As conv1d and torch.func.vmap do: an empty batch is no error (a data loader's last
    # batch, filtered to nothing). Shape and dtype as for a batch of one; gradients too.
    signal = torch.zeros(signal_shape, dtype=torch.float64, requires_grad=True)
    kernel = torch.zeros(kernel_shape, dtype=torch.float32, requires_grad=True)
    expected = func(
        torch.zeros(signal_shape[-1], dtype=torch.float64),
        torch.zeros(kernel_shape[-1]),
        mode,
        padding=padding,
        method=method,
    )
    out = func(signal, kernel, mode, padding=padding, method=method)
    batch = torch.broadcast_shapes(signal_shape[:-1], kernel_shape[:-1])
    assert out.shape == (*batch, expected.shape[-1]) and out.dtype == torch.float64
    out.sum().backward()
    assert signal.grad.shape == signal.shape and kernel.grad.shape == kernel.shape
    assert kernel.grad.abs().sum() == 0  # an empty sum
    mapped = torch.func.vmap(lambda a: func(a, kernel.detach(), mode, padding=padding))
    if len(signal_shape) == 2 and len(kernel_shape) == 1:
        assert mapped(signal.detach()).shape == out.shape


@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
def test_zero_dimensional_tensors(func, x, w):
    zero_d = r"0-d|zero-dim|scalar|dimension"
    assert_raises(lambda: func(torch.tensor(1.0), w), "signal", zero_d)
    assert_raises(lambda: func(x, torch.tensor(2.0)), "kernel", zero_d)


@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
def test_shapes_that_do_not_broadcast(func):
    signal, kernel = torch.randn(5, 40), torch.randn(7, 4)
    assert_raises(
        lambda: func(signal, kernel), "broadcast", shape_pattern(5, 40), shape_pattern(7, 4)
    )
    signal, kernel = torch.randn(2, 3, 40), torch.randn(2, 4)
    assert_raises(
        lambda: func(signal, kernel), "broadcast", shape_pattern(2, 3, 40), shape_pattern(2, 4)
    )


@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
def test_unknown_mode(func, x, w):
    assert_raises(lambda: func(x, w, "sme"), "mode", "'sme'", "'full'", "'same'", "'valid'")
    assert_raises(lambda: func(x, w, "SAME"), "'SAME'", "'same'")
    assert_raises(lambda: func(x, w, 3), r"\b3\b", "'full'")


@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
def test_unknown_padding(func, x, w):
    names = ["'zeros'", "'reflect'", "'symmetric'", "'replicate'", "'circular'"]
    assert_raises(lambda: func(x, w, padding="mirror"), "padding", "'mirror'", *names)
    assert_raises(lambda: func(x, w, padding="constant"), "'constant'", *names)


@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
def test_unknown_method(func, x, w):
    names = ["'direct'", "'fft'", "'overlap'", "'auto'"]
    assert_raises(lambda: func(x, w, method="fast"), "method", "'fast'", *names)
    assert_raises(lambda: func(x, w, method="conv1d"), "'conv1d'", *names)


@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
@pytest.mark.parametrize("padding", ["reflect", "symmetric", "replicate", "circular"])
def test_padding_with_valid_mode(func, padding, x, w):
    assert_raises(lambda: func(x, w, "valid", padding=padding), f"'?{padding}'?", "valid", "zeros")
    # zeros with valid is fine.
    assert func(x, w, "valid", padding="zeros").shape == (5, 37)


@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
def test_kernel_on_another_device(func, x, w):
    # The meta device stands in for a second device: the check must come before any compute.
    assert_raises(lambda: func(x, w.to("meta")), "device", "cpu", "meta")
    assert_raises(lambda: func(x.to("meta"), w), "device", "cpu", "meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
def test_kernel_on_another_device_cuda(func, x, w):
    assert_raises(lambda: func(x.cuda(), w), "device", "cuda", "cpu")
    assert_raises(lambda: func(x, w.cuda()), "device", "cuda", "cpu")


@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
def test_not_a_tensor(func, x, w):
    assert_raises(lambda: func(x.numpy(), w), "signal", "Tensor", "ndarray")
    assert_raises(lambda: func(x, [1.0, 2.0]), "kernel", "Tensor", "list")


def test_package_lists_its_lazy_names_and_refuses_unknown_ones():
    # Functions and submodules load on first use: dir() (tab completion, help()) must still
    # list them, and not the helpers the package imports for itself.
    import diffconv_core

    names = dir(diffconv_core)
    assert set(diffconv_core.__all__) <= set(names) and "__version__" in names
    assert not {"importlib", "Any", "annotations"} & set(names)
    for name in diffconv_core.__all__:
        assert getattr(diffconv_core, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'convolve2d'"):
        diffconv_core.convolve2d  # noqa: B018


def test_lazy_functions_are_looked_up_once(monkeypatch):
    # After the first lookup a function is a plain attribute of the package: the hook that
    # imported it (an import_module call each time) is not asked again.
    import diffconv_core

    first = diffconv_core.correlate
    asked = []
    monkeypatch.setattr(diffconv_core.importlib, "import_module", asked.append)
    assert diffconv_core.correlate is first and "correlate" in vars(diffconv_core)
    assert not asked


@pytest.mark.parametrize("func", FUNCS, ids=FUNC_IDS)
def test_sparse_tensors_are_refused_by_name(func, x, w):
    assert_raises(lambda: func(x.to_sparse(), w), "signal", "dense", "sparse_coo", exc=TypeError)
    assert_raises(lambda: func(x, w.to_sparse()), "kernel", "dense", "sparse_coo", exc=TypeError)


def test_common_input_mistakes_name_the_fix():
    # A numpy array or an integer tensor is the usual first mistake; the message named the
    # problem but not the conversion that fixes it.
    import numpy as np

    from diffconv_core import convolve
    from diffconv_core.windows import get_window

    with pytest.raises(TypeError, match=r"got ndarray; convert it with torch\.from_numpy"):
        convolve(np.ones(10), torch.ones(3))
    with pytest.raises(TypeError, match=r"got dtype torch\.int64; convert it with \.float\(\)"):
        convolve(torch.arange(10), torch.ones(3))
    with pytest.raises(ValueError, match=r"unknown window 'hanm' \(did you mean 'hann'\?\)"):
        get_window("hanm", 5)
    with pytest.raises(ValueError, match=r"unknown window 'zzz'; known windows"):
        get_window("zzz", 5)  # nothing close: no guess
