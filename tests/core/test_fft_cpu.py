"""The FFT method without autograd on the CPU: rows that make one chunk go through one
product of spectra, more rows a chunk at a time into the output. Both layouts must give
scipy's answer for every mode and broadcast pattern, and take the transforms they are meant
to (one per chunk, plus the kernel's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffconv_core import _fft, convolve
from diffconv_core.methods import output_range

from .conftest import assert_matches, reference, saved_by_functions


@pytest.fixture
def rfft_shapes(monkeypatch):
    """The shape of every input torch.fft.rfft gets, in order."""
    shapes = []
    real_rfft = torch.fft.rfft

    def counting_rfft(t, *args, **kwargs):
        shapes.append(tuple(t.shape))
        return real_rfft(t, *args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfft", counting_rfft)
    return shapes


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_chunk_and_chunks_match_scipy(monkeypatch, rows, mode, dtype):
    T, K = 300, 45
    n_fft = _fft.range_fft_length(T, K, *output_range(T, K, mode), torch.device("cpu"))
    # Chunks of 4 rows (at least the thread count, 2 here): 1-4 rows make one chunk.
    monkeypatch.setattr(_fft, "SHORT_CHUNK_SAMPLES", 4 * n_fft)
    monkeypatch.setattr(_fft, "WHOLE_BATCH_POINTS", 4 * n_fft)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, T))
    w = rng.standard_normal(K)
    xt, wt = torch.tensor(x, dtype=dtype), torch.tensor(w, dtype=dtype)
    got = convolve(xt, wt, mode, method="fft")
    assert_matches(got, reference(xt, wt, mode), dtype, f"{rows} rows, {mode}")


@pytest.mark.parametrize("rows, transforms", [(1, 2), (4, 2), (5, 3), (9, 4)])
def test_transforms_per_chunk(monkeypatch, rfft_shapes, rows, transforms):
    T, K = 300, 45
    n_fft = _fft.range_fft_length(T, K, *output_range(T, K, "same"), torch.device("cpu"))
    monkeypatch.setattr(_fft, "SHORT_CHUNK_SAMPLES", 4 * n_fft)
    monkeypatch.setattr(_fft, "WHOLE_BATCH_POINTS", 4 * n_fft)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    x, w = torch.randn(rows, T), torch.randn(K)
    y = _fft.fft_range(x, w, *output_range(T, K, "same"))
    # The kernel once, then the signals: all at once in one chunk, else 4 rows at a time.
    assert len(rfft_shapes) == transforms
    assert sorted(rfft_shapes).count((K,)) == 1
    assert_matches(y, reference(x, w, "same"), torch.float32, f"{rows} rows")


@pytest.mark.parametrize("rows, signal_transforms", [(512, 1), (1024, 1), (2048, 10)])
def test_whole_batch_at_once_up_to_its_points(monkeypatch, rfft_shapes, rows, signal_transforms):
    # 1,152-point transforms, 227 rows a chunk (2**18 points): a batch of at most
    # WHOLE_BATCH_POINTS goes at once (1,024 rows: 1.2 M points), a larger one in chunks.
    T, K = 1024, 255
    lo, hi = output_range(T, K, "same")
    assert _fft.range_fft_length(T, K, lo, hi, torch.device("cpu")) == 1152
    assert _fft.rows_per_chunk(1152) == 227
    x, w = torch.randn(rows, T, dtype=torch.float64), torch.randn(K, dtype=torch.float64)
    y = _fft.fft_range(x, w, lo, hi)
    assert rfft_shapes.count((K,)) == 1
    assert len(rfft_shapes) - 1 == signal_transforms
    np.testing.assert_allclose(y.numpy(), reference(x, w, "same"), atol=1e-9)


@pytest.mark.parametrize(
    "x_shape, w_shape", [((3, 1, 200), (2, 31)), ((200,), (2, 31)), ((2, 200), (1, 31))]
)
def test_batched_kernels_match_scipy(x_shape, w_shape):
    # A kernel per row or a batch of kernels: one product of broadcast spectra.
    rng = np.random.default_rng(len(x_shape) + len(w_shape))
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    got = convolve(torch.tensor(x), torch.tensor(w), "full", method="fft")
    assert_matches(got, reference(x, w, "full"), torch.float64, f"{x_shape} with {w_shape}")


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_batch_through_kept_arrays_matches_scipy_and_owns_its_output(monkeypatch, mode, dtype):
    # 300 rows of 1,000 samples (past one chunk, within WHOLE_BATCH_POINTS), glibc's default
    # policy: the work arrays are kept between calls, the results never: a second call
    # leaves the first's intact.
    monkeypatch.setattr(_fft, "retained_bytes", lambda: 0)
    T, K = 1000, 255
    lo, hi = output_range(T, K, mode)
    n_fft = _fft.range_fft_length(T, K, lo, hi, torch.device("cpu"))
    assert _fft.rows_per_chunk(n_fft) < 300 and 300 * n_fft <= _fft.WHOLE_BATCH_POINTS
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((3, 100, T))).to(dtype)
    w = torch.from_numpy(rng.standard_normal(K)).to(dtype)
    first = convolve(x, w, mode, method="fft")
    kept = first.clone()
    second = convolve(-x, w, mode, method="fft")
    assert torch.equal(first, kept) and first.data_ptr() != second.data_ptr()
    assert_matches(first, reference(x, w, mode), dtype, mode)
    assert_matches(second, -reference(x, w, mode), dtype, mode)


@pytest.mark.parametrize("rows", [64, 300])  # one chunk at once; through the kept arrays
def test_a_short_valid_result_does_not_hold_its_whole_transform(monkeypatch, rows):
    # "valid" with a long kernel keeps 97 of 4,096 points a row: returned as a view, the
    # result would pin 42x its own size; "same" keeps most of its transform and stays a view.
    monkeypatch.setattr(_fft, "retained_bytes", lambda: 0)
    x, w = torch.randn(rows, 4096, dtype=torch.float64), torch.randn(4000, dtype=torch.float64)
    short = convolve(x, w, "valid", method="fft")
    assert short.shape == (rows, 97)
    assert short.untyped_storage().nbytes() <= 2 * short.numel() * short.element_size()
    assert_matches(short, reference(x, w, "valid"), torch.float64, f"{rows} rows, valid")
    same = convolve(x[:, :1000], w[:255], "same", method="fft")
    assert same.untyped_storage().nbytes() < 2 * same.numel() * same.element_size()


def test_kept_arrays_are_reused_from_call_to_call(monkeypatch):
    from diffconv_core import _workspace

    asked = []
    real_scratch = _workspace.scratch

    def spying_scratch(name, *args):
        array = real_scratch(name, *args)
        asked.append((name, array.data_ptr()))
        return array

    monkeypatch.setattr(_fft, "scratch", spying_scratch)
    monkeypatch.setattr(_fft, "retained_bytes", lambda: 0)
    x, w = torch.randn(512, 1024), torch.randn(255)
    for _ in range(2):
        convolve(x, w, method="fft")
    assert [name for name, _ in asked] == ["fft rows", "fft spectrum"] * 2
    assert asked[:2] == asked[2:]
    # Within one chunk (and past WHOLE_BATCH_POINTS, in chunks) the arrays are allocated.
    asked.clear()
    convolve(torch.randn(64, 1024), w, method="fft")
    convolve(torch.randn(2048, 1024), w, method="fft")
    assert asked == []


def test_with_freed_memory_retained_the_batch_is_allocated_at_once(monkeypatch, rfft_shapes):
    # Where glibc keeps freed blocks this large (retain_freed_memory), allocating is faster
    # than the kept arrays' out= transforms: one rfft of every row, nothing kept.
    from diffconv_core import _workspace

    asked = []
    real_scratch = _workspace.scratch
    monkeypatch.setattr(
        _fft, "scratch", lambda name, *a: asked.append(name) or real_scratch(name, *a)
    )
    monkeypatch.setattr(_fft, "retained_bytes", lambda: 32 * 2**20)
    x, w = torch.randn(512, 1024, dtype=torch.float64), torch.randn(255, dtype=torch.float64)
    y = convolve(x, w, method="fft")
    assert asked == [] and sorted(rfft_shapes) == [(255,), (512, 1024)]
    np.testing.assert_allclose(y.numpy(), reference(x, w, "same"), atol=1e-9)
    # A batch whose arrays exceed what glibc keeps (512 x 1,152 float64: 4.5 MiB) still
    # takes the kept arrays.
    monkeypatch.setattr(_fft, "retained_bytes", lambda: 2**20)
    y = convolve(x, w, method="fft")
    assert asked == ["fft rows", "fft spectrum"]
    np.testing.assert_allclose(y.numpy(), reference(x, w, "same"), atol=1e-9)


def test_recorded_batches_go_a_few_rows_at_a_time(monkeypatch):
    # With autograd a large batch's spectra, product and inverse were alive together
    # (1,024 x 4,096 with 255 taps peaked at 10.5x the input forward+backward, 6.0x in
    # chunks). Values, both gradients, batched-gradient Jacobians and second derivatives
    # stay those of the direct sums; no transform spans more than a chunk of rows.
    monkeypatch.setattr(_fft, "SHORT_CHUNK_SAMPLES", 1 << 8)
    monkeypatch.setattr(_fft, "BACKWARD_CHUNK_SAMPLES", 1 << 8)
    monkeypatch.setattr(_fft, "WHOLE_BATCH_POINTS", 0)
    rows_transformed = []
    real_rfft = torch.fft.rfft

    def recorded(t, *args, **kwargs):
        rows_transformed.append(t.shape[0] if t.dim() > 1 else 1)
        return real_rfft(t, *args, **kwargs)

    gen = torch.Generator().manual_seed(5)
    w = torch.randn(15, generator=gen, dtype=torch.float64)
    for lead in ((48,), (6, 8)):
        for mode in ("full", "same", "valid"):
            x = torch.randn(*lead, 40, generator=gen, dtype=torch.float64, requires_grad=True)
            wr = w.clone().requires_grad_()
            rows_transformed.clear()
            monkeypatch.setattr(torch.fft, "rfft", recorded)
            got = convolve(x, wr, mode, method="fft")
            grad = torch.randn(got.shape, generator=gen, dtype=torch.float64)
            got_grads = torch.autograd.grad(got, (x, wr), grad)
            monkeypatch.setattr(torch.fft, "rfft", real_rfft)
            # (every transform here has at least 40 points: at most 256 // 40 rows a chunk)
            assert max(rows_transformed) <= _fft.rows_per_chunk(40) < 48, rows_transformed
            want = convolve(x, wr, mode, method="direct")
            torch.testing.assert_close(got, want)
            want_grads = torch.autograd.grad(want, (x, wr), grad)
            for g_got, g_want in zip(got_grads, want_grads, strict=True):
                torch.testing.assert_close(g_got, g_want)
    x = torch.randn(48, 40, generator=gen, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(
        lambda a: convolve(a, w, method="fft"), x, vectorize=True
    )
    ref = torch.autograd.functional.jacobian(
        lambda a: convolve(a, w, method="direct"), x, vectorize=True
    )
    torch.testing.assert_close(jac, ref)
    inputs = (x[:8].clone().requires_grad_(), w.clone().requires_grad_())
    assert torch.autograd.gradgradcheck(lambda a, b: convolve(a, b, method="fft"), inputs)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_recorded_batches_in_chunks_keep_no_spectra_of_the_signal(monkeypatch, mode):
    # The batch's spectra (n_fft / T of the input) were kept from the forward pass to the
    # backward; the backward pass transforms each chunk's rows again instead. Gradients as
    # the direct sums'.
    monkeypatch.setattr(_fft, "SHORT_CHUNK_SAMPLES", 1 << 10)
    monkeypatch.setattr(_fft, "WHOLE_BATCH_POINTS", 0)
    gen, x, w = _recorded_pair(seed=6, rows=64, T=120, K=15)
    out = convolve(x, w, mode, method="fft")
    kept = [t for t in saved_by_functions(out) if t.data_ptr() not in {x.data_ptr(), w.data_ptr()}]
    assert sum(t.numel() for t in kept) <= 120, [(t.shape, t.dtype) for t in kept]
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    _assert_direct_gradients(torch.autograd.grad(out, (x, w), grad), x, w, mode, grad)


def _recorded_pair(seed: int, rows: int, T: int, K: int):
    """A generator, then float64 signals ``(rows, T)`` and a kernel ``(K,)`` requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, T, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(K, generator=gen, dtype=torch.float64, requires_grad=True)
    return gen, x, w


def _assert_direct_gradients(got, x, w, mode, grad) -> None:
    """``got``, the gradients of (x, w) for the output gradient ``grad``, are the direct
    method's."""
    want = convolve(x, w, mode, method="direct")
    for g_got, g_want in zip(got, torch.autograd.grad(want, (x, w), grad), strict=True):
        torch.testing.assert_close(g_got, g_want)


def test_the_whole_batch_keeps_the_signal_spectra_only_for_the_kernel_gradient():
    # Only the kernel's gradient reads the signal's spectrum: a signal-only gradient keeps
    # the kernel's spectrum alone.
    x = torch.randn(4, 300, dtype=torch.float64, requires_grad=True)
    w = torch.randn(31, dtype=torch.float64)
    out = convolve(x, w, method="fft")
    kept = [t for t in saved_by_functions(out) if t.data_ptr() not in {x.data_ptr(), w.data_ptr()}]
    assert [t.shape[-1] for t in kept] == [
        _fft.range_fft_length(300, 31, 15, 315, x.device) // 2 + 1
    ]
    (grad_x,) = torch.autograd.grad(out, x, torch.ones_like(out))
    want = convolve(x, w, method="direct")
    torch.testing.assert_close(grad_x, torch.autograd.grad(want, x, torch.ones_like(want))[0])


def test_the_backward_pass_of_a_whole_batch_goes_a_few_rows_at_a_time(monkeypatch, rfft_shapes):
    # A batch transformed whole forward (its spectra kept) takes its backward pass a few rows
    # at a time past WHOLE_BATCH_POINTS: the whole batch's gradient spectrum, product and
    # inverse held 4-6x the input besides. The kept spectra serve each chunk: only the
    # gradient's rows are transformed.
    monkeypatch.setattr(_fft, "BACKWARD_CHUNK_SAMPLES", 1 << 10)
    monkeypatch.setattr(_fft, "WHOLE_BATCH_POINTS", 0)
    gen, x, w = _recorded_pair(seed=7, rows=40, T=100, K=21)
    for mode in ("full", "same", "valid"):
        out = convolve(x, w, mode, method="fft")
        assert rfft_shapes[-2:] == [(21,), (40, 100)]  # forward: the kernel, the whole batch
        rfft_shapes.clear()
        grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        got = torch.autograd.grad(out, (x, w), grad)
        n_fft = _fft.range_fft_length(100, 21, *output_range(100, 21, mode), x.device)
        per_chunk = max(torch.get_num_threads(), (1 << 10) // n_fft)
        assert rfft_shapes and all(s[0] <= per_chunk < 40 for s in rfft_shapes), rfft_shapes
        rfft_shapes.clear()
        _assert_direct_gradients(got, x, w, mode, grad)
