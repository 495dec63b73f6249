"""The fused Triton kernel of the direct method (CUDA only) and its fallback."""

import pytest
import torch

from diffconv_core import _triton_direct, convolve

needs_triton = pytest.mark.skipif(
    not torch.cuda.is_available() or _triton_direct.triton is None,
    reason="needs a CUDA device with Triton",
)


def _reference(x, taps, shift, n_out):
    # out[m] = sum_j taps[j] x[m + j - shift], x zero outside: float64 on the CPU
    x, taps = x.double().cpu(), taps.double().cpu()
    T, K = x.shape[-1], taps.shape[-1]
    out = torch.zeros(*torch.broadcast_shapes(x.shape[:-1], taps.shape[:-1]), n_out)
    out = out.double()
    for j in range(K):
        for m in range(n_out):
            i = m + j - shift
            if 0 <= i < T:
                out[..., m] += taps[..., j] * x[..., i]
    return out


def test_falls_back_off_cuda():
    x, taps = torch.randn(2, 50), torch.randn(5)
    assert _triton_direct.sliding_dot(x, taps, 2, 50) is None


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "x_shape,taps_shape,shift,n_out",
    [
        ((3, 40), (5,), 2, 40),
        ((2, 3, 17), (3, 4), 3, 20),
        ((30,), (2, 7), -4, 10),
        ((1, 5), (9,), 8, 13),
    ],
)
def test_matches_the_definition(dtype, x_shape, taps_shape, shift, n_out):
    x = torch.randn(*x_shape, dtype=dtype, device="cuda")
    taps = torch.randn(*taps_shape, dtype=dtype, device="cuda")
    got = _triton_direct.sliding_dot(x, taps, shift, n_out)
    assert got is not None, _triton_direct._disabled_reason
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(
        got.double().cpu(), _reference(x, taps, shift, n_out), rtol=tol, atol=tol
    )


@needs_triton
def test_direct_method_uses_it_and_agrees_with_fft():
    x = torch.randn(4, 100_000, device="cuda", dtype=torch.float64)
    w = torch.randn(31, device="cuda", dtype=torch.float64)
    assert _triton_direct.available(x)
    torch.testing.assert_close(convolve(x, w, method="direct"), convolve(x, w, method="fft"))
    assert _triton_direct._disabled_reason is None
