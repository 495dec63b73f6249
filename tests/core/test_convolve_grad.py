"""gradcheck and gradgradcheck in float64, w.r.t. signal and kernel, every method/mode/padding."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import diffconv_core
from diffconv_core import convolve, correlate
from diffconv_core.padding import pad

from .conftest import METHODS, MODE_PADDINGS, PADDINGS

pytestmark = pytest.mark.usefixtures("single_thread")


# (signal shape, kernel shape, what it covers). Tiny, so the numerical Jacobians stay cheap.
GRAD_SHAPES = [
    ((2, 6), (4,), "shared even kernel: kernel gradient summed over the batch"),
    ((3, 1, 5), (2, 3), "two-way broadcast: both gradients summed over a broadcast dim"),
    ((2, 3), (5,), "kernel longer than the signal: pads longer than the signal"),
]


def _inputs(signal_shape, kernel_shape, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*signal_shape, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*kernel_shape, generator=gen, dtype=torch.float64, requires_grad=True)
    return x, w


@pytest.mark.parametrize("corr", [False, True], ids=["convolve", "correlate"])
@pytest.mark.parametrize("mode,padding", MODE_PADDINGS)
@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_and_gradgradcheck(method, mode, padding, corr):
    func = diffconv_core.correlate if corr else diffconv_core.convolve

    def f(x, w):
        return func(x, w, mode, padding=padding, method=method)

    for seed, (xs, ws, what) in enumerate(GRAD_SHAPES):
        x, w = _inputs(xs, ws, seed)
        config = (
            f"{func.__name__}(signal{xs}, kernel{ws}, mode={mode!r}, padding={padding!r}, "
            f"method={method!r}) [{what}]"
        )
        # fast_mode compares u^T J v with its finite-difference estimate for random u, v:
        # an exact check for these bilinear maps, without one backward per output sample.
        kw = dict(eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)
        assert gradcheck(f, (x, w), **kw), config
        assert gradgradcheck(f, (x, w), **kw), config


@pytest.mark.parametrize("method", ["fft", "overlap", "auto"])
def test_gradcheck_long_signal(method):
    # Long enough that overlap-save runs several blocks (and auto may pick it); the kernel
    # gradient is checked numerically, the signal gradient against the adjoint identity.
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3000, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, generator=gen, dtype=torch.float64, requires_grad=True)
    for mode in ("same", "full", "valid"):
        assert gradcheck(
            lambda w_, m=mode: diffconv_core.convolve(x.detach(), w_, m, method=method),
            (w,),
            eps=1e-6,
            atol=1e-6,
            rtol=1e-5,
            fast_mode=True,
        ), (method, mode)
        # <conv(x, w), g> == <x, grad_x>: the signal gradient is the adjoint of the operator.
        out = diffconv_core.convolve(x, w, mode, method=method)
        g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        (grad_x,) = torch.autograd.grad(out, x, g)
        lhs = (out.detach() * g).sum()
        rhs = (x.detach() * grad_x).sum()
        assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-9), (method, mode, lhs, rhs)


@pytest.mark.parametrize("padding", PADDINGS)
def test_pad_gradcheck_any_width(padding):
    # The padding's adjoint (scatter-add at the edges) must be right also for pads longer
    # than the signal, where one sample feeds many padded positions.
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    for left, right in [(1, 2), (5, 0), (0, 7), (8, 9)]:
        assert gradcheck(lambda t, l=left, r=right: pad(t, l, r, padding), (x,)), (left, right)
        assert gradgradcheck(lambda t, l=left, r=right: pad(t, l, r, padding), (x,)), (
            left,
            right,
        )


@pytest.mark.parametrize("method", METHODS)
def test_gradients_only_for_inputs_that_require_them(method):
    x = torch.randn(2, 12, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64)
    diffconv_core.convolve(x, w, method=method).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert w.grad is None
    x2 = torch.randn(2, 12, dtype=torch.float64)
    w2 = torch.randn(5, dtype=torch.float64, requires_grad=True)
    diffconv_core.correlate(x2, w2, method=method).sum().backward()
    assert w2.grad is not None and w2.grad.shape == w2.shape


@pytest.mark.parametrize("method", ["fft", "overlap"])
def test_backward_uses_the_fft_family(method):
    # The backward pass uses the forward's method family (FFTs here), not autograd through a
    # direct convolution's weight gradient.
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(4, 3000, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 65, dtype=torch.float64, requires_grad=True)
    out = diffconv_core.convolve(x, w, "same", method=method)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out.backward(torch.ones_like(out))
    names = {event.key for event in prof.key_averages()}
    assert any("fft" in n for n in names), sorted(names)
    assert not any("convolution_backward" in n for n in names), sorted(names)


@pytest.mark.parametrize("method", ["fft", "overlap"])
def test_fft_backward_uses_real_transforms_only(method):
    # Autograd through rfft inverts it with a full complex transform (about twice the cost of a
    # real one); the FFT methods' own backward needs only real transforms: one forward
    # transform of the output gradient (all blocks at once) and one inverse per gradient.
    # Overlap-save on the CPU transforms the kernel and the signal's blocks again too, rather
    # than keep every block's spectrum from the forward pass.
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(4, 3000, dtype=torch.float64, requires_grad=True)
    w = torch.randn(65, dtype=torch.float64, requires_grad=True)
    out = diffconv_core.convolve(x, w, "same", method=method)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out.backward(torch.ones_like(out))
    counts = {event.key: event.count for event in prof.key_averages()}
    assert counts.get("aten::_fft_r2c") == {"fft": 1, "overlap": 3}[method], counts
    assert counts.get("aten::_fft_c2r") == 2, counts
    assert "aten::_fft_c2c" not in counts, counts


@pytest.mark.parametrize("method", ["direct", "fft", "overlap", "auto"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize(
    "x_shape, w_shape", [((3, 300), (41,)), ((2, 3, 200), (3, 7)), ((150,), (2, 150))]
)
@pytest.mark.parametrize("function", [convolve, correlate])
def test_the_output_can_be_modified_in_place_while_autograd_records(
    method, mode, x_shape, w_shape, function
):
    # Every method returned a view of a buffer made inside its autograd Function, which
    # autograd forbids modifying in place: relu_() or nn.ReLU(inplace=True) after a
    # convolution raised "Output 0 of _DirectRange is a view and is being modified inplace".
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(x_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(w_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    expected = torch.autograd.grad(function(x, w, mode, method=method).relu().sum(), (x, w))
    y = function(x, w, mode, method=method)
    y.relu_()
    assert all(y.untyped_storage().data_ptr() != t.untyped_storage().data_ptr() for t in (x, w))
    torch.testing.assert_close(torch.autograd.grad(y.sum(), (x, w)), expected)
    # Assigning into the output: those outputs no longer depend on anything.
    z = function(x, w, mode, method=method)
    z[..., :3] = 0.0
    keep = torch.ones_like(z)
    keep[..., :3] = 0.0
    reference = torch.autograd.grad((function(x, w, mode, method=method) * keep).sum(), (x, w))
    torch.testing.assert_close(torch.autograd.grad(z.sum(), (x, w)), reference)


def test_an_output_slice_does_not_keep_the_whole_transform_buffer():
    # A "valid" FFT output is a small slice of the inverse transform: returned as a view it
    # kept the whole buffer alive (3.2 MB for a 320 kB result).
    x = torch.randn(8, 100_000, requires_grad=True)
    w = torch.randn(90_001, requires_grad=True)
    for method in ("fft", "overlap"):
        y = convolve(x, w, "valid", method=method)
        assert y.untyped_storage().nbytes() <= 2 * y.numel() * y.element_size()


def test_in_place_activation_after_a_window_layer():
    from diffconv_core.nn import WindowConv

    layer = WindowConv("hann", 31, learn="taps")
    model = torch.nn.Sequential(layer, torch.nn.ReLU(inplace=True))
    x = torch.randn(2, 200, requires_grad=True)
    model(x).sum().backward()
    reference = torch.autograd.grad(torch.relu(layer(x)).sum(), x)[0]
    torch.testing.assert_close(x.grad, reference)


@pytest.mark.parametrize("method", ["direct", "fft", "overlap", "auto"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("kernel_learns", [True, False])
def test_forward_over_reverse_second_derivatives(method, mode, kernel_learns):
    # A tangent entering through the backward pass (forward-over-reverse Hessian-vector
    # products) reached the custom Functions, which have no jvp: "You must implement the jvp
    # function", or forward AD through an out= product on the direct path.
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 12, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, generator=gen, requires_grad=kernel_learns)
    if kernel_learns:
        inputs, function = (x, w), lambda a, b: convolve(a, b, mode, method=method)
    else:
        inputs, function = (x,), lambda a: convolve(a, w, mode, method=method)
    assert gradgradcheck(function, inputs, check_fwd_over_rev=True)


@pytest.fixture
def rows_in_chunks(monkeypatch):
    """The FFT method's batches and overlap-save's blocks in small chunks, as large inputs
    take them with the real sizes."""
    from diffconv_core import _fft, _overlap

    monkeypatch.setattr(_fft, "SHORT_CHUNK_SAMPLES", 1 << 8)
    monkeypatch.setattr(_fft, "BACKWARD_CHUNK_SAMPLES", 1 << 8)
    monkeypatch.setattr(_fft, "WHOLE_BATCH_POINTS", 0)
    monkeypatch.setattr(_overlap, "CHUNK_SAMPLES", 1 << 8)
    monkeypatch.setattr(_overlap, "MIN_CPU_BLOCKS", 1)


@pytest.mark.parametrize("method", ["fft", "overlap"])
def test_chunked_outputs_can_be_modified_in_place(rows_in_chunks, method):
    # The FFT method's chunked forward returned its loop's output as a view (a reshape):
    # relu_() after it raised "Output 0 of _FFTRange is a view and is being modified inplace".
    x = torch.randn(48, 40, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, dtype=torch.float64, requires_grad=True)
    got = convolve(x, w, method=method).relu_()
    want = convolve(x, w, method="direct").relu()
    torch.testing.assert_close(got, want)
    grad = torch.randn(got.shape, dtype=torch.float64)
    for g, e in zip(
        torch.autograd.grad(got, (x, w), grad), torch.autograd.grad(want, (x, w), grad), strict=True
    ):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("chunks", [False, True])
@pytest.mark.parametrize("method", ["fft", "overlap"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("kernel_grad, kernel_rows", [(False, 0), (True, 0), (False, 6)])
def test_batched_gradients_of_gradients(request, chunks, method, mode, kernel_grad, kernel_rows):
    # jacobian(vectorize=True, create_graph=True) gives the backward pass a vmap-batched
    # gradient and records it: the pieces it was built from wrote into slices of an output
    # (overlap-save's chunks, the FFT method's chunked batches) or sliced a whole axis (an
    # alias), neither of which vmap can batch. Values as the direct method's.
    if chunks:
        request.getfixturevalue("rows_in_chunks")
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(6, 30, dtype=torch.float64, generator=gen, requires_grad=True)
    w_shape = (kernel_rows, 5) if kernel_rows else (5,)
    w = torch.randn(w_shape, dtype=torch.float64, generator=gen, requires_grad=kernel_grad)
    inputs = (x, w) if kernel_grad else (x,)

    def jacobian(method):
        def run(*args):
            return convolve(args[0], args[1] if kernel_grad else w, mode, method=method)

        return torch.autograd.functional.jacobian(run, inputs, vectorize=True, create_graph=True)

    got, want = jacobian(method), jacobian("direct")
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e)
    if kernel_grad:  # the recorded Jacobian (the signal's depends on the kernel) again
        (second,) = torch.autograd.grad(got[0].square().sum(), w)
        (expected,) = torch.autograd.grad(want[0].square().sum(), w)
        torch.testing.assert_close(second, expected)
