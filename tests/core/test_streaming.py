"""StreamingConvolver: any block sizes give the whole-signal result.

References: ``diffconv_core.convolve``/``correlate`` on the whole signal (the contract), and an
independent float64 scipy reference (``scipy.signal.convolve`` for zeros; ``numpy.pad`` then
scipy's "valid" convolution for the other paddings).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import diffconv_core
from diffconv_core.smooth import smooth
from diffconv_core.streaming import (
    StreamingConvolver,
    StreamingSmoother,
    mode_pads,
    stream_convolve,
)

PADDINGS = ("zeros", "reflect", "symmetric", "replicate", "circular")
NUMPY_PAD = {
    "reflect": "reflect",
    "symmetric": "symmetric",
    "replicate": "edge",
    "circular": "wrap",
}


def scipy_reference(x: np.ndarray, k: np.ndarray, mode: str, padding: str, corr: bool):
    """Row-by-row float64 reference; ``k`` is (K,) or one row per row of ``x``."""
    x2 = x.reshape(-1, x.shape[-1])
    k2 = (
        np.broadcast_to(k, (x2.shape[0], k.shape[-1]))
        if k.ndim == 1
        else k.reshape(-1, k.shape[-1])
    )
    rows = []
    for xr, kr in zip(x2, k2, strict=True):
        taps = kr[::-1] if corr else kr
        if padding == "zeros":
            rows.append(scipy.signal.convolve(xr, taps, mode=mode, method="direct"))
        else:
            left, right = mode_pads(mode, kr.shape[-1])
            padded = np.pad(xr, (left, right), mode=NUMPY_PAD[padding])
            rows.append(scipy.signal.convolve(padded, taps, mode="valid", method="direct"))
    return np.stack(rows).reshape(x.shape[:-1] + (rows[0].shape[-1],))


def run_stream(conv: StreamingConvolver, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    pieces, start = [], 0
    for size in sizes:
        out = conv.push(x[..., start : start + size])
        assert out.shape[:-1] == pieces[0].shape[:-1] if pieces else True
        pieces.append(out)
        start += size
    assert start >= x.shape[-1]
    pieces.append(conv.flush())
    return torch.cat(pieces, dim=-1)


@st.composite
def stream_cases(draw):
    T = draw(st.integers(1, 48))
    K = draw(st.integers(1, 40))  # odd, even, and often K > T
    mode = draw(st.sampled_from(["full", "same", "valid"]))
    padding = "zeros" if mode == "valid" else draw(st.sampled_from(PADDINGS))
    corr = draw(st.booleans())
    method = draw(st.sampled_from(["auto", "direct", "fft", "overlap"]))
    per_channel = draw(st.booleans())
    kind = draw(st.sampled_from(["ones", "irregular", "fixed", "bigger"]))
    if kind == "ones":
        sizes = [1] * T
    elif kind == "bigger":
        sizes = [T + draw(st.integers(0, 50))]
    elif kind == "fixed":
        size = draw(st.integers(1, T))
        sizes = [size] * -(-T // size)
    else:  # irregular, empty blocks included
        sizes, total = [], 0
        while total < T:
            # Empty blocks too, but a bounded number: the loop must end.
            size = draw(st.integers(0, 9)) or int(sizes.count(0) >= 3)
            sizes.append(size)
            total += size
    seed = draw(st.integers(0, 2**16))
    return T, K, mode, padding, corr, method, per_channel, sizes, seed


@settings(max_examples=50, deadline=None)
@given(stream_cases())
def test_any_blocks_equal_whole_signal(case):
    T, K, mode, padding, corr, method, per_channel, sizes, seed = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, T, generator=gen, dtype=torch.float64)
    k = torch.randn(2 if per_channel else 1, K, generator=gen, dtype=torch.float64)
    k = k if per_channel else k[0]
    config = f"T={T} K={K} {mode} {padding} correlate={corr} {method} kernel{tuple(k.shape)}"
    func = diffconv_core.correlate if corr else diffconv_core.convolve
    whole = func(x, k, mode, padding=padding, method=method)
    streamed = run_stream(StreamingConvolver(k, mode, padding, corr, method), x, sizes)
    assert streamed.shape == whole.shape, f"{config} sizes={sizes}"
    torch.testing.assert_close(streamed, whole, rtol=1e-9, atol=1e-9, msg=config)
    ref = scipy_reference(x.numpy(), k.numpy(), mode, padding, corr)
    np.testing.assert_allclose(streamed.numpy(), ref, rtol=1e-9, atol=1e-9, err_msg=config)


@settings(max_examples=25, deadline=None)
@given(
    T=st.integers(1, 60),
    K=st.integers(1, 25),
    mode=st.sampled_from(["full", "same", "valid"]),
    block=st.integers(1, 70),
)
def test_zeros_float32_against_scipy(T, K, mode, block):
    rng = np.random.default_rng(T * 100 + K)
    x = rng.standard_normal((3, T)).astype(np.float32)
    k = rng.standard_normal(K).astype(np.float32)
    conv = StreamingConvolver(torch.from_numpy(k), mode)
    out = run_stream(conv, torch.from_numpy(x), [block] * -(-T // block))
    assert out.dtype == torch.float32
    ref = np.stack(
        [scipy.signal.convolve(r.astype(np.float64), k.astype(np.float64), mode) for r in x]
    )
    scale = max(np.abs(ref).max(), 1.0)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5 * scale, err_msg=f"T={T} K={K} {mode}")


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", ["full", "same"])
def test_signal_shorter_than_the_pad(mode, padding):
    # T < pad width: reflect/symmetric/circular wrap several times; the core handles it.
    x = torch.randn(2, 3, dtype=torch.float64)
    k = torch.randn(11, dtype=torch.float64)
    for sizes in ([1, 1, 1], [3], [0, 2, 0, 1]):
        out = run_stream(StreamingConvolver(k, mode, padding), x, sizes)
        ref = scipy_reference(x.numpy(), k.numpy(), mode, padding, False)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-10, err_msg=str(sizes))


def test_valid_with_kernel_longer_than_signal_matches_core():
    # The core (like scipy) swaps the operands: K - T + 1 samples.
    x, k = torch.randn(4, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    out = run_stream(StreamingConvolver(k, "valid"), x, [1, 2, 1])
    assert out.shape == (6,)
    np.testing.assert_allclose(out.numpy(), scipy.signal.convolve(x.numpy(), k.numpy(), "valid"))


def test_batched_leading_dims_and_kernel_per_channel():
    x = torch.randn(2, 3, 200, dtype=torch.float64)
    k = torch.randn(3, 16, dtype=torch.float64)
    out = run_stream(StreamingConvolver(k, "same", "reflect"), x, [37] * 6)
    assert out.shape == (2, 3, 200)
    ref = scipy_reference(
        x.numpy(), np.broadcast_to(k.numpy(), (2, 3, 16)), "same", "reflect", False
    )
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["full", "same"])
def test_circular_tail_lets_outputs_stream(mode):
    x = torch.randn(2, 300, dtype=torch.float64)
    k = torch.randn(21, dtype=torch.float64)
    left, _ = mode_pads(mode, 21)
    conv = StreamingConvolver(k, mode, "circular", circular_tail=x[..., -left:])
    pieces = [conv.push(b) for b in x.split(25, dim=-1)]
    assert sum(p.shape[-1] for p in pieces) > 200  # emitted before the end
    assert conv.buffered_samples <= 3 * 21 + 1  # stream K-1, end K+1, start R
    out = torch.cat(pieces + [conv.flush()], dim=-1)
    ref = scipy_reference(x.numpy(), k.numpy(), mode, "circular", False)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-10)


def test_circular_without_tail_waits_for_flush_and_a_wrong_tail_is_refused():
    x = torch.randn(100, dtype=torch.float64)
    k = torch.randn(5, dtype=torch.float64)
    conv = StreamingConvolver(k, "same", "circular")
    assert all(conv.push(b).shape[-1] == 0 for b in x.split(10))
    assert conv.buffered_samples >= 100  # documented: the whole signal is kept
    torch.testing.assert_close(conv.flush(), diffconv_core.convolve(x, k, padding="circular"))

    wrong = StreamingConvolver(k, "same", "circular", circular_tail=torch.zeros(2, dtype=x.dtype))
    for b in x.split(10):
        wrong.push(b)
    with pytest.raises(ValueError, match="circular_tail does not match"):
        wrong.flush()


def test_circular_tail_too_short_or_misshapen_is_a_value_error():
    # Both used to fail inside torch.expand with a RuntimeError about tensor sizes.
    x = torch.randn(2, 40, dtype=torch.float64)
    k = torch.randn(7, dtype=torch.float64)
    short = StreamingConvolver(k, "same", "circular", circular_tail=x[..., -2:])
    with pytest.raises(ValueError, match=r"circular_tail must hold the signal's last 3 samples"):
        run_stream(short, x, [5] * 8)
    rows = StreamingConvolver(k, "same", "circular", circular_tail=torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"circular_tail of shape \(3, 3\) does not broadcast"):
        run_stream(rows, x, [5] * 8)
    with pytest.raises(TypeError, match="circular_tail must be a torch.Tensor"):
        StreamingConvolver(k, "same", "circular", circular_tail=x[..., -3:].numpy())
    # A signal shorter than the pad comes with a tail as short as itself: still accepted.
    tiny = x[..., :2]
    out = run_stream(StreamingConvolver(k, "same", "circular", circular_tail=tiny), tiny, [1, 1])
    torch.testing.assert_close(out, diffconv_core.convolve(tiny, k, padding="circular"))


def test_circular_tail_with_nan_at_the_end_is_accepted():
    # The right tail of a signal whose last samples are NaN: NaN != NaN, but the tail is
    # still the signal's end, so the stream must equal the whole-signal result, not refuse.
    x = torch.randn(2, 60, dtype=torch.float64)
    x[0, -1] = torch.nan
    x[1, -3] = torch.inf
    k = torch.randn(7, dtype=torch.float64)
    conv = StreamingConvolver(k, "same", "circular", circular_tail=x[..., -3:].clone())
    out = torch.cat([conv.push(b) for b in x.split(8, dim=-1)] + [conv.flush()], dim=-1)
    ref = diffconv_core.convolve(x, k, "same", padding="circular")
    torch.testing.assert_close(out, ref, equal_nan=True)


@pytest.mark.parametrize("padding", PADDINGS)
def test_memory_stays_bounded(padding):
    K, block = 17, 40
    left, _ = mode_pads("same", K)
    tail = torch.zeros(left) if padding == "circular" else None
    conv = StreamingConvolver(torch.ones(K), "same", padding, circular_tail=tail)
    emitted = 0
    for _ in range(60):
        emitted += conv.push(torch.randn(block)).shape[-1]
        assert conv.buffered_samples <= 3 * K + 1
    assert emitted >= 60 * block - K


@pytest.mark.parametrize("T", [3, 100])
@pytest.mark.parametrize("padding", ["zeros", "reflect", "circular"])
def test_sample_counts_match_what_was_returned(T, padding):
    # flush() counted the outputs of its last drain twice: samples_out read 102 of 100.
    conv = StreamingConvolver(torch.ones(5), "full", padding)
    x = torch.randn(T)
    returned = sum(conv.push(b).shape[-1] for b in x.split(7)) + conv.flush().shape[-1]
    assert (conv.samples_in, conv.samples_out, returned) == (T, T + 4, T + 4)


def test_reset_reuses_the_kernel():
    k = torch.randn(8, dtype=torch.float64)
    conv = StreamingConvolver(k, "full", "symmetric")
    for seed in (1, 2):
        x = torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        out = run_stream(conv, x, [7] * 6)
        torch.testing.assert_close(out, diffconv_core.convolve(x, k, "full", padding="symmetric"))
        conv.reset()


def test_stream_convolve_generator():
    x = torch.randn(2, 90, dtype=torch.float64)
    k = torch.randn(6, dtype=torch.float64)
    out = torch.cat(list(stream_convolve(x.split(11, dim=-1), k, "same", padding="replicate")), -1)
    torch.testing.assert_close(out, diffconv_core.convolve(x, k, padding="replicate"))


def test_gradient_flows_like_whole_signal():
    x = torch.randn(60, dtype=torch.float64, requires_grad=True)
    k = torch.randn(7, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(60, dtype=torch.float64)
    streamed = run_stream(StreamingConvolver(k, "same", "reflect"), x, [9] * 7)
    gx, gk = torch.autograd.grad((streamed * weights).sum(), (x, k))
    whole = diffconv_core.convolve(x, k, "same", padding="reflect")
    rx, rk = torch.autograd.grad((whole * weights).sum(), (x, k))
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gk, rk)


def test_errors_name_the_problem():
    k = torch.ones(3)
    with pytest.raises(ValueError, match="'sme'"):
        StreamingConvolver(k, "sme")
    with pytest.raises(ValueError, match="'reflect'"):
        StreamingConvolver(k, "valid", "reflect")
    with pytest.raises(TypeError, match="kernel must be a torch.Tensor"):
        StreamingConvolver([1.0, 2.0])
    with pytest.raises(ValueError, match="circular_tail"):
        StreamingConvolver(k, circular_tail=torch.ones(3))
    for n in (1, 50):  # before any output, and through the core: the block as given
        with pytest.raises(
            ValueError, match=rf"block \(2, {n}\) and kernel \(3, 4\) must broadcast"
        ):
            StreamingConvolver(torch.ones(3, 4)).push(torch.ones(2, n))
    with pytest.raises(TypeError, match="kernel must be a floating-point tensor.*int64"):
        StreamingConvolver(torch.arange(3))
    with pytest.raises(TypeError, match="correlate must be True or False; got 'yes'"):
        StreamingConvolver(k, correlate="yes")  # truthy, it correlated
    conv = StreamingConvolver(k)
    with pytest.raises(ValueError, match="no signal samples"):
        conv.flush()
    conv = StreamingConvolver(k)
    conv.push(torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"leading shape of the first, \(2,\)"):
        conv.push(torch.ones(3, 5))
    conv.flush()
    with pytest.raises(RuntimeError, match="reset"):
        conv.push(torch.ones(2, 5))


@pytest.mark.parametrize("make", [lambda: StreamingConvolver(torch.ones(3)), StreamingSmoother])
def test_later_blocks_keep_the_first_ones_device_and_a_float_dtype(make):
    # Checked for every block: another device failed inside the join with torch's message,
    # and an integer block after a float one was promoted by it.
    stream = make()
    stream.push(torch.ones(2, 20))
    with pytest.raises(ValueError, match="first block's device, cpu; got a block on meta"):
        stream.push(torch.ones(2, 20, device="meta"))
    with pytest.raises(TypeError, match="real floating-point tensor; got dtype torch.int64"):
        stream.push(torch.ones(2, 20, dtype=torch.int64))
    if isinstance(stream, StreamingSmoother):  # a new signal may come from anywhere
        stream.reset()
        assert stream.push(torch.ones(2, 40, device="meta")).device.type == "meta"


def test_mode_pads_checks_the_kernel_length():
    assert mode_pads("same", 1) == (0, 0)
    for bad, error in ((0, ValueError), (-3, ValueError), (2.5, TypeError), ("3", TypeError)):
        with pytest.raises(error, match="kernel_length must be"):
            mode_pads("same", bad)


# ---------------------------------------------------------------- StreamingSmoother


def smooth_stream(smoother: StreamingSmoother, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    pieces, start = [], 0
    for size in sizes:
        pieces.append(smoother.push(x[..., start : start + size]))
        start += size
    pieces.append(smoother.flush())
    return torch.cat(pieces, dim=-1)


@st.composite
def smooth_cases(draw):
    T = draw(st.integers(1, 80))
    length = draw(st.integers(1, 24))
    edges = draw(st.sampled_from(PADDINGS + ("renormalize",)))
    nan_policy = draw(st.sampled_from(["propagate", "omit"]))
    window = draw(st.sampled_from([("hamming", {}), ("boxcar", {}), ("gaussian", {"std": 2.5})]))
    sizes, total = [], 0
    big = draw(st.integers(1, 90))
    while total < T:
        size = draw(st.sampled_from([big, 1, 2, 5, 13, 0])) or int(sizes.count(0) >= 3)
        sizes.append(size)
        total += size
    gaps = draw(st.lists(st.tuples(st.integers(0, 79), st.integers(1, 30)), max_size=3))
    return T, length, edges, nan_policy, window, sizes, gaps


@settings(max_examples=50, deadline=None)
@given(smooth_cases())
def test_streamed_smooth_equals_smooth(case):
    from diffconv_core.smooth import smooth

    T, length, edges, nan_policy, (window, params), sizes, gaps = case
    x = torch.randn(2, T, dtype=torch.float64, generator=torch.Generator().manual_seed(T))
    for start, width in gaps:  # NaN gaps, some longer than the window
        x[0, start : start + width] = float("nan")
    config = f"T={T} {window}{params} length={length} edges={edges} {nan_policy} sizes={sizes}"
    whole = smooth(x, window, length, edges=edges, nan_policy=nan_policy, **params)
    sm = StreamingSmoother(window, length, edges=edges, nan_policy=nan_policy, **params)
    streamed = smooth_stream(sm, x, sizes)
    torch.testing.assert_close(streamed, whole, rtol=1e-9, atol=1e-9, equal_nan=True, msg=config)


@pytest.mark.parametrize("edges", ["reflect", "circular"])
def test_smoother_pieces_before_the_first_output_have_the_outputs_shape(edges):
    # A window per row (std of shape (2, 1, 1)) adds a leading dim: the empty pieces before
    # the first output were shaped as the block, so the pieces did not concatenate.
    from diffconv_core.smooth import smooth

    x = torch.randn(2, 3, 100, dtype=torch.float64)
    std = torch.tensor([[[1.5]], [[4.0]]], dtype=torch.float64)
    sm = StreamingSmoother("gaussian", 41, edges=edges, nan_policy="omit", std=std)
    pieces = [sm.push(x[..., :10]), sm.push(x[..., 10:]), sm.flush()]
    assert pieces[0].shape == (2, 2, 3, 0)
    whole = smooth(x, "gaussian", 41, edges=edges, nan_policy="omit", std=std)
    torch.testing.assert_close(torch.cat(pieces, dim=-1), whole)


@pytest.mark.parametrize("edges", ["reflect", "renormalize", "zeros"])
def test_smoother_memory_bounded_and_converts_blocks(edges):
    from diffconv_core.smooth import smooth

    x = torch.randn(2, 3000, dtype=torch.float32)
    x[1, 500:700] = float("nan")
    sm = StreamingSmoother("hann", 31, edges=edges, nan_policy="omit", dtype=torch.float64)
    pieces = []
    for block in x.split(100, dim=-1):
        pieces.append(sm.push(block))
        assert sm.buffered_samples <= 2 * 31 + 2 + 100
    out = torch.cat(pieces + [sm.flush()], dim=-1)
    assert out.dtype == torch.float64
    whole = smooth(x.double(), "hann", 31, edges=edges, nan_policy="omit")
    torch.testing.assert_close(out, whole, equal_nan=True)


def test_smoother_circular_keeps_the_signal_until_flush():
    from diffconv_core.smooth import smooth

    x = torch.randn(200, dtype=torch.float64)
    sm = StreamingSmoother("hamming", 9, edges="circular")
    assert all(sm.push(b).shape[-1] == 0 for b in x.split(50))
    torch.testing.assert_close(sm.flush(), smooth(x, "hamming", 9, edges="circular"))


@settings(max_examples=50, deadline=None)
@given(smooth_cases(), st.integers(0, 7))
def test_streamed_circular_smooth_with_the_tail_given_equals_smooth(case, extra):
    # Given the signal's end up front (as a file's is), circular edges stream too; before,
    # the whole signal was kept until flush (smooth --edges circular held a long file).
    from diffconv_core.smooth import smooth

    T, length, _, nan_policy, (window, params), sizes, gaps = case
    x = torch.randn(2, T, dtype=torch.float64, generator=torch.Generator().manual_seed(T))
    for start, width in gaps:
        x[0, start : start + width] = float("nan")
    tail = x[..., -(length + extra) :]  # any longer tail; all of a shorter signal
    config = f"T={T} {window}{params} length={length} {nan_policy} sizes={sizes} tail={extra}"
    whole = smooth(x, window, length, edges="circular", nan_policy=nan_policy, **params)
    sm = StreamingSmoother(
        window, length, edges="circular", nan_policy=nan_policy, circular_tail=tail, **params
    )
    streamed = smooth_stream(sm, x, sizes)
    torch.testing.assert_close(streamed, whole, rtol=1e-9, atol=1e-9, equal_nan=True, msg=config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_smoother_circular_with_its_tail_streams_in_bounded_memory(dtype):
    from diffconv_core.smooth import smooth

    x = torch.randn(3, 3000, dtype=dtype)
    x[1, 2990:] = float("nan")  # a NaN in the tail matches itself
    sm = StreamingSmoother(
        "hann", 31, edges="circular", nan_policy="omit", circular_tail=x[..., -40:]
    )
    pieces = []
    for block in x.split(100, dim=-1):
        pieces.append(sm.push(block))
        assert sm.buffered_samples <= 2 * 31 + 2 + 100
    assert sum(p.shape[-1] for p in pieces) > 2800  # emitted as it went
    out = torch.cat(pieces + [sm.flush()], dim=-1)
    whole = smooth(x, "hann", 31, edges="circular", nan_policy="omit")
    torch.testing.assert_close(out, whole, equal_nan=True)


def test_smoother_circular_tail_errors():
    x = torch.randn(2, 300, dtype=torch.float64)
    with pytest.raises(ValueError, match="circular_tail applies only to edges='circular'"):
        StreamingSmoother("hann", 9, edges="reflect", circular_tail=x[..., -9:])
    with pytest.raises(TypeError, match="circular_tail must be a torch.Tensor"):
        StreamingSmoother("hann", 9, edges="circular", circular_tail=[1.0] * 9)
    sm = StreamingSmoother("hann", 9, edges="circular", circular_tail=x[..., -5:])
    with pytest.raises(ValueError, match="must hold the signal's last 9 samples"):
        sm.push(x)
    wrong = x[..., -9:].clone()
    wrong[1, 4] += 1
    sm = StreamingSmoother("hann", 9, edges="circular", circular_tail=wrong)
    sm.push(x)
    with pytest.raises(ValueError, match="does not match the signal's last 9 samples"):
        sm.flush()
    sm = StreamingSmoother("hann", 9, edges="circular", circular_tail=torch.zeros(3, 9))
    with pytest.raises(ValueError, match="does not broadcast to the blocks' leading dims"):
        sm.push(x)


def test_smoother_errors():
    with pytest.raises(ValueError, match="length must be a positive integer; got 0"):
        StreamingSmoother("hann", 0)
    # Checked when built, not at the first push (the options' check promised so).
    with pytest.raises(ValueError, match="gaussian window requires parameter 'std'"):
        StreamingSmoother("gaussian", 5)
    with pytest.raises(ValueError, match="hann window of length 2 has a sum of zero"):
        StreamingSmoother("hann", 2)
    sm = StreamingSmoother("hann", 5)
    with pytest.raises(ValueError, match="no signal samples"):
        sm.flush()
    sm = StreamingSmoother("hann", 5)
    sm.push(torch.ones(3, 10))
    with pytest.raises(ValueError, match="leading shape"):
        sm.push(torch.ones(10))
    # dtype and device are checked when built (they failed at the first push, in torch).
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype; got 'float32'"):
        StreamingSmoother("hann", 5, dtype="float32")
    with pytest.raises(ValueError, match="device must name a torch device"):
        StreamingSmoother("hann", 5, device="nope")
    # With a dtype asked for, an integer block is converted, as it always was.
    converted = StreamingSmoother("hann", 5, dtype=torch.float64)
    assert converted.push(torch.ones(1, 30, dtype=torch.int64)).dtype == torch.float64


def test_smoother_builds_its_window_once_per_stream(monkeypatch):
    import diffconv_core.windows
    from diffconv_core.smooth import smooth

    calls = []
    real = diffconv_core.windows.get_window
    monkeypatch.setattr(
        diffconv_core.windows, "get_window", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    x = torch.randn(2, 2000, dtype=torch.float64)
    sm = StreamingSmoother("kaiser", 21, edges="reflect", beta=6.0, sym=False, method="fft")
    out = torch.cat([sm.push(b) for b in x.split(150, dim=-1)] + [sm.flush()], dim=-1)
    assert len(calls) == 1
    whole = smooth(x, "kaiser", 21, edges="reflect", beta=6.0, sym=False)
    torch.testing.assert_close(out, whole)


def test_smoother_with_learnable_window_parameters_keeps_gradients():
    from diffconv_core.smooth import smooth

    x = torch.randn(600, dtype=torch.float64)
    std = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    sm = StreamingSmoother("gaussian", 15, edges="zeros", std=std)
    streamed = torch.cat([sm.push(b) for b in x.split(100)] + [sm.flush()])
    (grad_streamed,) = torch.autograd.grad(streamed.square().sum(), std)
    whole = smooth(x, "gaussian", 15, edges="zeros", std=std)
    (grad_whole,) = torch.autograd.grad(whole.square().sum(), std)
    torch.testing.assert_close(grad_streamed, grad_whole)


def test_smoother_outputs_survive_later_pushes_even_if_smoothing_returned_a_view(monkeypatch):
    # The joined chunk lives in storage reused by the next push: an output that is a view of
    # it must be copied out, or later pushes would overwrite what the caller holds.
    x = torch.arange(1000, dtype=torch.float64)
    sm = StreamingSmoother("boxcar", 5, edges="zeros")
    monkeypatch.setattr(sm, "_smooth", lambda chunk: chunk)  # identity: a view of the chunk
    held = [sm.push(b) for b in x.split(100)]
    taken = torch.cat([h for h in held if h.shape[-1]])
    torch.testing.assert_close(taken, x[: taken.shape[-1]])


def test_smoother_blocks_of_mixed_precision_promote_as_cat_does():
    x = torch.randn(400, dtype=torch.float64)
    sm = StreamingSmoother("hann", 9, edges="zeros")
    first = sm.push(x[:200].float())
    second = sm.push(x[200:])  # float64 after float32: the joined chunk is float64
    assert second.dtype == torch.float64
    out = torch.cat([first.double(), second, sm.flush()])
    assert out.shape == (400,)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(edges="bogus"), ValueError, "edges must be one of"),
        (dict(nan_policy="skip"), ValueError, "nan_policy must be one of"),
        (dict(window="nope"), ValueError, "unknown window 'nope'"),
        (dict(window="hann", beta=2.0), TypeError, "unexpected parameter.*beta"),
    ],
)
def test_smoother_options_are_checked_at_construction(kwargs, exc, match):
    # They were taken, then refused once 2 * length + 2 samples had arrived, or at flush().
    with pytest.raises(exc, match=match):
        StreamingSmoother(length=5, **kwargs)
    # get_window's own keywords and smooth's method are not the window's parameters.
    StreamingSmoother("gaussian", 9, std=2.0, sym=False, width=7.5, method="fft")


def _pushed_through_one_buffer(stream, x: torch.Tensor, size: int) -> torch.Tensor:
    # Every block read into the same buffer, as a reader refilling one array does.
    buffer = torch.empty((*x.shape[:-1], size), dtype=x.dtype)
    outs = []
    for block in x.split(size, dim=-1):
        view = buffer[..., : block.shape[-1]]
        view.copy_(block)
        outs.append(stream.push(view))
    return torch.cat([*outs, stream.flush()], dim=-1)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", ["same", "full"])
def test_a_block_buffer_refilled_between_pushes_streams_the_signal(mode, padding):
    # Blocks held until the stream could start (reflect, symmetric and circular padding
    # wait for their left pad) were the caller's tensors themselves: a caller refilling one
    # buffer for every push had its earlier blocks computed from later samples (errors ~6).
    x = torch.randn(2, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = torch.randn(21, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tails = [None, x[..., -20:]] if padding == "circular" else [None]
    whole = diffconv_core.convolve(x, w, mode, padding=padding)
    for tail in tails:
        for size in (1, 3, 16):
            stream = StreamingConvolver(w, mode, padding, circular_tail=tail)
            streamed = _pushed_through_one_buffer(stream, x, size)
            torch.testing.assert_close(streamed, whole, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("edges", ["reflect", "zeros", "renormalize", "circular", "replicate"])
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_a_block_buffer_refilled_between_pushes_smooths_the_signal(edges, nan_policy):
    # The smoother kept the caller's blocks until 2 * margin + 2 samples had arrived (and its
    # circular tail's head as a view of the first block): refilled, they were wrong (~1).
    from diffconv_core.smooth import smooth

    x = torch.randn(2, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x[1, 40:47] = float("nan")
    whole = smooth(x, "hann", 15, edges=edges, nan_policy=nan_policy)
    tails = [None, x[..., -20:]] if edges == "circular" else [None]
    for tail in tails:
        for size in (1, 4, 15):
            sm = StreamingSmoother(
                "hann", 15, edges=edges, nan_policy=nan_policy, circular_tail=tail
            )
            streamed = _pushed_through_one_buffer(sm, x, size)
            torch.testing.assert_close(streamed, whole, rtol=1e-10, atol=1e-10, equal_nan=True)


@pytest.mark.parametrize("window", [("kaiser", 8.0), ("gaussian", 2.5), 6.0])
def test_smoother_takes_the_windows_smooth_takes(window):
    # A (name, *params) tuple failed when built: its values were moved among the keyword
    # parameters and given again with the tuple ("beta given twice").
    from diffconv_core.smooth import smooth

    x = torch.randn(2, 500, dtype=torch.float64)
    stream = StreamingSmoother(window, 15)
    got = torch.cat([stream.push(x[:, :200]), stream.push(x[:, 200:]), stream.flush()], -1)
    torch.testing.assert_close(got, smooth(x, window, 15))
    with pytest.raises(TypeError, match="given twice"):
        StreamingSmoother(("kaiser", 8.0), 15, beta=3.0)


def test_a_refused_first_block_leaves_no_trace():
    # A first block that cannot meet the kernels (or windows) fixed the stream's leading
    # shape all the same: every right block after it was refused.
    kernels = torch.randn(3, 7, dtype=torch.float64)
    signal = torch.randn(3, 10, dtype=torch.float64)
    convolver = StreamingConvolver(kernels, "same")
    with pytest.raises(ValueError):
        convolver.push(torch.randn(2, 10, dtype=torch.float64))
    got = torch.cat([convolver.push(signal), convolver.flush()], -1)
    torch.testing.assert_close(got, diffconv_core.convolve(signal, kernels, "same"))
    std = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    smoother = StreamingSmoother("gaussian", 9, std=std)
    with pytest.raises(ValueError, match="block shape \\(2, 10\\) and window shape \\(3, 9\\)"):
        smoother.push(torch.randn(2, 10, dtype=torch.float64))
    assert smoother.buffered_samples == 0
    got = torch.cat([smoother.push(signal), smoother.flush()], -1)
    torch.testing.assert_close(got, smooth(signal, "gaussian", 9, std=std))


def test_a_smoother_used_under_inference_mode_serves_ordinary_calls_after():
    # Its kept chunk buffer and trial window were inference tensors: the next ordinary
    # stream wrote into the buffer in place ("Inplace update to inference tensor"), and a
    # recorded one could not save the window for backward.
    signal = torch.randn(2, 4000, dtype=torch.float64)
    with torch.inference_mode():
        smoother = StreamingSmoother("hann", 301)
        for block in signal.split(700, -1):
            smoother.push(block)
        smoother.flush()
    smoother.reset()
    got = torch.cat([smoother.push(b) for b in signal.split(700, -1)] + [smoother.flush()], -1)
    torch.testing.assert_close(got, smooth(signal, "hann", 301))
    smoother.reset()
    leaf = signal.clone().requires_grad_()
    out = torch.cat([smoother.push(b) for b in leaf.split(700, -1)] + [smoother.flush()], -1)
    (grad,) = torch.autograd.grad(out.square().sum(), leaf)
    want = smooth(leaf, "hann", 301)
    torch.testing.assert_close(grad, torch.autograd.grad(want.square().sum(), leaf)[0])


def test_a_smoother_converting_blocks_still_refuses_complex_ones():
    # With dtype= the block was converted first: a complex block lost its imaginary part
    # with only torch's warning (integer blocks are converted, by design).
    smoother = StreamingSmoother("hann", 9, dtype=torch.float64)
    with pytest.raises(TypeError, match="real tensor"):
        smoother.push(torch.ones(10, dtype=torch.complex128))
