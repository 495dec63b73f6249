"""The fused Triton kernel of the direct method and its fallback.

On a CUDA device with Triton the kernel is compiled; everywhere Triton imports it also runs on
the CPU under Triton's interpreter (``TRITON_INTERPRET=1``), which executes the same kernel
source with numpy. So CI, which has no GPU, still checks the kernel's indexing, masks, grid and
dtypes, and the direct method's route through it, against float64 references.
"""

import functools
import importlib.util
import types
import warnings
from pathlib import Path

import pytest
import torch

import diffconv_core
from diffconv_core import _direct, _triton_direct, convolve

from .conftest import check_parity, make_pair


@pytest.fixture(autouse=True)
def no_small_calls(monkeypatch):
    # The fused kernels themselves, also for the small shapes that convolve would otherwise
    # hand to one native convolution (_direct.tiny_range, rows_range).
    monkeypatch.setattr(_direct, "TINY_COLUMN_BYTES", 0)
    monkeypatch.setattr(_direct, "rows_call", lambda *operands: None)


has_cuda_triton = torch.cuda.is_available() and importlib.util.find_spec("triton") is not None
needs_cuda_triton = pytest.mark.skipif(
    not has_cuda_triton, reason="needs a CUDA device with Triton"
)


@pytest.fixture
def interpreted(monkeypatch) -> types.ModuleType:
    """The kernel module loaded afresh under Triton's interpreter, runnable on CPU tensors.

    ``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates, so the module is loaded under
    its own name while the variable is set (a compiled copy may already be imported).
    """
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    # A failed interpreted launch turns the fused path off for the process; undone here so
    # that it cannot fail the compiled kernel's tests that follow.
    monkeypatch.setattr(_triton_direct, "_disabled_reason", None)
    path = Path(_triton_direct.__file__).with_name("_triton_kernels.py")
    spec = importlib.util.spec_from_file_location("_triton_kernels_interpreted", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def kernel_runs(interpreted, monkeypatch) -> list:
    """Route every tensor through the interpreted kernels; records each launch's grid (the
    kernel gradient's in the list's ``lags``) and every launch's keyword options
    (``options``)."""

    class Launches(list):
        lags: list
        options: list

    launches = Launches()
    launches.lags, launches.options = [], []  # the kernel gradient's launches apart

    class Recorded:
        def __init__(self, name: str, grids: list):
            self.name, self.grids = name, grids

        def __getitem__(self, grid):
            self.grids.append(grid)
            launch = getattr(interpreted, self.name)[grid]

            def run(*args, **options):
                launches.options.append(options)
                return launch(*args, **options)

            return run

    recorded = types.SimpleNamespace(
        sliding_dot_kernel=Recorded("sliding_dot_kernel", launches),
        lagged_dot_kernel=Recorded("lagged_dot_kernel", launches.lags),
    )
    # Small tiles: numpy runs the interpreted kernel a tile at a time, and gradcheck calls it
    # for every output.
    monkeypatch.setattr(_triton_direct, "_LAG_TILE", 256)
    monkeypatch.setattr(_triton_direct, "_kernels_for", lambda x: recorded)
    return launches


@pytest.fixture
def no_scan(monkeypatch) -> None:
    """Fail the test if the search for NaN/Inf (``_nonfinite._magnitudes``) runs."""

    def scan(*tensors):
        raise AssertionError("the non-finite scan ran")

    monkeypatch.setattr(diffconv_core._nonfinite, "_magnitudes", scan)


def _reference(x, taps, shift, n_out):
    # out[m] = sum_j taps[j] x[m + j - shift] over the terms inside the signal: float64, CPU
    x, taps = x.double().cpu(), taps.double().cpu()
    T, K = x.shape[-1], taps.shape[-1]
    batch = torch.broadcast_shapes(x.shape[:-1], taps.shape[:-1])
    out = torch.zeros(*batch, n_out, dtype=torch.float64)
    m = torch.arange(n_out)
    for j in range(K):
        i = m + j - shift
        inside = (i >= 0) & (i < T)
        out[..., inside] += taps[..., j : j + 1] * x[..., i[inside]]
    return out


CASES = [
    ((3, 40), (5,), 2, 40),  # one kernel for every row
    ((2, 3, 17), (3, 4), 3, 20),  # a kernel per channel, broadcast over the batch
    ((30,), (2, 7), -4, 10),  # one signal, a bank of kernels; negative shift crops
    ((1, 5), (9,), 8, 13),  # kernel longer than the signal
    ((2, 2500), (2, 6), 5, 2600),  # several blocks a row, a kernel per row
    ((4, 3), (3,), 50, 7),  # every tap outside the signal: zeros
    ((2, 10), (3,), 1, 0),  # no output at all
]


def _run_case(device, dtype, x_shape, taps_shape, shift, n_out):
    x = torch.randn(*x_shape, dtype=dtype, device=device)
    taps = torch.randn(*taps_shape, dtype=dtype, device=device)
    got = _triton_direct.sliding_dot(x, taps, shift, n_out)
    assert got is not None, _triton_direct._disabled_reason
    assert got.dtype == dtype and got.device == x.device
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(
        got.double().cpu(), _reference(x, taps, shift, n_out), rtol=tol, atol=tol
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("x_shape,taps_shape,shift,n_out", CASES)
def test_interpreted_kernel_matches_the_definition(
    kernel_runs, dtype, x_shape, taps_shape, shift, n_out
):
    _run_case("cpu", dtype, x_shape, taps_shape, shift, n_out)
    rows = torch.broadcast_shapes(x_shape[:-1], taps_shape[:-1]).numel()
    assert kernel_runs == ([] if n_out == 0 else [(-(-n_out // 1024) * rows,)])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's NaN
@pytest.mark.parametrize("reversed_taps", [False, True])
@pytest.mark.parametrize(
    "T,K,shift,n_out",
    [
        (200, 7, 3, 200),
        (200, 7, 6, 206),
        (64, 31, 15, 64),
        (50, 1, 0, 50),
        (30, 40, 39, 69),
        (100, 5, -3, 40),
        (96, 16, 0, 81),
        (33, 3, 0, 32),  # a block's last term 1 past the end
        (60, 20, 17, 50),  # a block's first 1 before the start
        (40, 3, 1, 31),  # a block 1 past the outputs' end
    ],
)
@pytest.mark.parametrize("long", [False, True], ids=["32-bit offsets", "64-bit offsets"])
def test_interpreted_kernel_interior_and_edge_blocks(
    interpreted, reversed_taps, T, K, shift, n_out, long
):
    # Blocks of 16 outputs: most blocks of a row take the mask-free interior loop, the first
    # and last the masked one (and a block that ends exactly at a row's end is interior). A
    # NaN and an Inf sample reach only the outputs whose window covers them. The last three
    # cases put a block one sample or output past what the interior loop may touch: the rows
    # lie inside larger buffers whose guard values must neither be read nor written.
    guard = 1e6
    x_buffer = torch.full((2 * T + 2,), guard, dtype=torch.float64)
    x = x_buffer[1 : 1 + 2 * T].view(2, T)
    x.copy_(torch.randn(2, T, dtype=torch.float64))
    x[0, T // 2], x[1, T // 3] = float("nan"), float("inf")
    taps = torch.randn(K, dtype=torch.float64)
    out_buffer = torch.full((2 * n_out + 2,), guard, dtype=torch.float64)
    out = out_buffer[1 : 1 + 2 * n_out].view(2, n_out)
    given = taps.flip(-1) if reversed_taps else taps
    interpreted.sliding_dot_kernel[(-(-n_out // 16) * 2,)](
        x, given, out, T, n_out, shift, T, 0, n_out, K,
        BLOCK=16, WIDE=True, REVERSED=reversed_taps, LONG=long,
    )  # fmt: skip
    torch.testing.assert_close(
        out, _reference(x, taps, shift, n_out), rtol=1e-12, atol=1e-12, equal_nan=True
    )
    assert out_buffer[0] == guard and out_buffer[-1] == guard, "wrote past the outputs"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("x_shape,taps_shape,shift,n_out", CASES)
def test_interpreted_kernel_reads_reversed_taps_in_place(
    kernel_runs, dtype, x_shape, taps_shape, shift, n_out
):
    x = torch.randn(*x_shape, dtype=dtype)
    kernel = torch.randn(*taps_shape, dtype=dtype)  # taps last to first, as convolve has them
    got = _triton_direct.sliding_dot(x, kernel, shift, n_out, taps_reversed=True)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    want = _reference(x, kernel.flip(-1), shift, n_out)
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_interpreted_kernels_with_64_bit_offsets(kernel_runs, monkeypatch, dtype):
    # Rows near 2**31 samples take 64-bit offsets; forced here on small ones, through both
    # kernels and every broadcast route.
    monkeypatch.setattr(_triton_direct, "_INT32_LIMIT", 0)
    for x_shape, taps_shape, shift, n_out in CASES:
        _run_case("cpu", dtype, x_shape, taps_shape, shift, n_out)
    for g_shape, x_shape, lo, K in LAG_CASES:
        g, x = torch.randn(*g_shape, dtype=dtype), torch.randn(*x_shape, dtype=dtype)
        tol = 1e-12 if dtype == torch.float64 else 1e-4
        want = _lagged_reference(g, x, lo, K)
        got = _triton_direct.lagged_dot(g, x, lo, K)
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
    assert kernel_runs and kernel_runs.lags
    assert all(options["LONG"] for options in kernel_runs.options)


def test_kernels_take_32_bit_offsets_below_the_limit(kernel_runs):
    x, taps = torch.randn(2, 300), torch.randn(5)
    _triton_direct.sliding_dot(x, taps, 2, 300)
    _triton_direct.lagged_dot(x, x, 2, 5)
    assert [options["LONG"] for options in kernel_runs.options] == [False, False]
    assert _triton_direct._needs_long_offsets(2**31 - 100, 50, 50)
    assert not _triton_direct._needs_long_offsets(2**31 - 101, 50, 50)


def test_interpreted_kernel_reads_a_strided_signal_in_place(kernel_runs):
    x = torch.randn(40, 3, dtype=torch.float64).T  # time is the non-contiguous axis
    taps = torch.randn(5, dtype=torch.float64)
    got = _triton_direct.sliding_dot(x, taps, 2, 40)
    torch.testing.assert_close(got, _reference(x, taps, 2, 40), rtol=1e-12, atol=1e-12)


def _with_nonfinite_values(dtype=torch.float64):
    # Inf taps at both ends (their terms fall past the signal's ends near its edges), a NaN
    # tap, and non-finite samples of each kind in the signal.
    x = torch.randn(2, 30, dtype=dtype)
    x[0, 3], x[0, 17], x[1, 25] = float("nan"), float("inf"), float("-inf")
    taps = torch.randn(15, dtype=dtype)
    taps[0], taps[7], taps[14] = float("inf"), float("nan"), float("-inf")
    return x, taps


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's NaN
def test_interpreted_kernel_leaves_out_terms_past_the_ends(kernel_runs):
    # The direct sum has no term for a sample past the ends: an Inf tap over that position
    # must not turn the output into NaN (0 * inf) as a zero-filled load would.
    x, taps = _with_nonfinite_values()
    taps[7], taps[14] = 1.0, 2.0  # left: the Inf tap 0, past the start for the first outputs
    got = _triton_direct.sliding_dot(x, taps, 14, 30)
    want = _reference(x, taps, 14, 30)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert torch.isfinite(want[1, :14]).all(), "the case must have finite outputs at the edge"


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_direct_method_through_the_kernel_skips_the_nonfinite_scan(kernel_runs, no_scan, mode):
    # Each output its own direct sum: no search for NaN/Inf first (a host sync on CUDA).
    x, w = _with_nonfinite_values()
    w[7] = 0.5
    K, T = w.shape[-1], x.shape[-1]
    lo, n_out = {"full": (0, T + K - 1), "same": ((K - 1) // 2, T), "valid": (K - 1, T - K + 1)}[
        mode
    ]
    got = convolve(x, w, mode, method="direct")
    want = _reference(x, w.flip(-1), K - 1 - lo, n_out)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert kernel_runs, "the direct method never reached the kernel"


@pytest.mark.parametrize("correlate", [False, True])
@pytest.mark.parametrize(
    "mode,padding", [("same", "zeros"), ("full", "zeros"), ("valid", "zeros"), ("same", "reflect")]
)
@pytest.mark.parametrize("K", [1, 4, 15])
def test_direct_method_routed_through_the_kernel_matches_scipy(
    kernel_runs, monkeypatch, mode, padding, correlate, K
):
    # On CUDA the direct method's forward is the fused kernel; on CPU it takes it only past the
    # Toeplitz limit. Lowering that limit sends CPU tensors down the CUDA route, kernel included.
    monkeypatch.setattr(_direct, "MAX_TOEPLITZ_TAPS", 0)
    for lead_x, lead_w in [((2, 3), ()), ((2, 3), (3,)), ((), (4,))]:
        x, w = make_pair(lead_x, lead_w, 37, K, dtype=torch.float32)
        check_parity(x, w, mode, padding, "direct", correlate, extra="(interpreted Triton)")
    assert kernel_runs, "the direct method never reached the kernel"


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_gradients_through_the_kernel_match_finite_differences(kernel_runs, monkeypatch, mode):
    monkeypatch.setattr(_direct, "MAX_TOEPLITZ_TAPS", 0)
    x, w = make_pair((2,), (), 11, 4)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: convolve(a, b, mode, method="direct"), (x, w))
    assert kernel_runs and kernel_runs.lags, "the forward or the kernel gradient missed the kernel"


@pytest.mark.parametrize(
    "x_shape,w_shape,mode",
    [((1, 11), (3, 4), "full"), ((2, 1, 9), (3, 3), "same"), ((3, 10), (1, 5), "valid")],
)
def test_signal_gradient_reads_the_taps_in_order_through_the_kernel(
    kernel_runs, monkeypatch, x_shape, w_shape, mode
):
    # The signal's gradient is a correlation with the kernel: one launch that reads the taps
    # in order (REVERSED off), summed back over the dims the signal was broadcast along.
    monkeypatch.setattr(_direct, "MAX_TOEPLITZ_TAPS", 0)
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(w_shape, dtype=torch.float64, requires_grad=True)
    run = functools.partial(convolve, mode=mode, method="direct")
    assert torch.autograd.gradcheck(run, (x, w), fast_mode=True)
    sliding = [options["REVERSED"] for options in kernel_runs.options if "REVERSED" in options]
    assert False in sliding
    kernel_runs.options.clear()
    convolve(x, w, "same", method="direct").backward(torch.ones(x_shape[:-1] + (1,)).expand(
        *torch.broadcast_shapes(x_shape[:-1], w_shape[:-1]), x_shape[-1]))  # fmt: skip
    sliding = [options["REVERSED"] for options in kernel_runs.options if "REVERSED" in options]
    assert sliding == [True, False]  # the forward, then the signal's gradient


def test_second_derivatives_through_the_kernel_match_finite_differences(kernel_runs, monkeypatch):
    # create_graph: the backward's pieces are differentiable (the signal gradient is the same
    # Function again, through the kernel); their own backward passes take the fused kernels.
    monkeypatch.setattr(_direct, "MAX_TOEPLITZ_TAPS", 0)
    x, w = make_pair((2,), (), 9, 3)
    x.requires_grad_(True)
    w.requires_grad_(True)
    same = lambda a, b: convolve(a, b, "same", method="direct")  # noqa: E731
    assert torch.autograd.gradgradcheck(same, (x, w), fast_mode=True)
    assert kernel_runs and kernel_runs.lags


def _lagged_reference(g, x, lo, K):
    # c[..., k] = sum_m g[..., m] x[..., m + lo - k] over the terms inside x: float64, CPU
    g, x = g.double(), x.double()
    L, T = g.shape[-1], x.shape[-1]
    x = x.expand(*g.shape[:-1], T)
    c = torch.zeros(*g.shape[:-1], K, dtype=torch.float64)
    m = torch.arange(L)
    for k in range(K):
        i = m + lo - k
        inside = (i >= 0) & (i < T)
        c[..., k] = (g[..., inside] * x[..., i[inside]]).sum(-1)
    return c


LAG_CASES = [
    ((3, 40), (40,), 2, 5),  # "same": one signal a row
    ((2, 3, 150), (3, 140), 7, 15),  # several spans a row, g longer than x ("full")
    ((4, 30), (30,), 29, 31),  # "valid"-like offset, more lags than the tile's 16 lanes
    ((2, 9), (2, 9), 0, 64),  # the most taps the kernel takes
    ((1, 5), (5,), 1, 1),  # one tap
]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's NaN
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("g_shape,x_shape,lo,K", LAG_CASES)
def test_interpreted_kernel_gradient_matches_the_definition(
    kernel_runs, monkeypatch, dtype, g_shape, x_shape, lo, K
):
    # Spans of 64 samples and tiles of 256 cells: several programs a row, several tile steps
    # a span, and a partial last one. A NaN in g and an Inf in x where only some lags reach.
    monkeypatch.setattr(_triton_direct, "_LAG_SPAN", 64)
    monkeypatch.setattr(_triton_direct, "_LAG_TILE", 256)
    g = torch.randn(*g_shape, dtype=dtype)
    x = torch.randn(*x_shape, dtype=dtype)
    if dtype == torch.float64 and g_shape[-1] > 100:
        g[0, 0, 120], x[1, 2] = float("nan"), float("inf")
    got = _triton_direct.lagged_dot(g, x, lo, K)
    assert got is not None, _triton_direct._disabled_reason
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    want = _lagged_reference(g, x, lo, K)
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol, equal_nan=True)


def test_kernel_gradient_declines_cpu_tensors():
    g, x = torch.randn(2, 100), torch.randn(2, 100)
    assert _triton_direct.lagged_dot(g, x, 3, 8) is None


def test_kernel_gradient_declines_kernels_longer_than_its_lanes(kernel_runs):
    g, x = torch.randn(2, 100), torch.randn(2, 100)
    K = _triton_direct.MAX_LAG_TAPS
    assert _triton_direct.lagged_dot(g, x, 3, K) is not None
    assert _triton_direct.lagged_dot(g, x, 3, K + 1) is None
    assert len(kernel_runs.lags) == 1


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's NaN
def test_interpreted_kernel_gradient_leaves_out_terms_past_the_ends(kernel_runs):
    # "full" mode's gradient g is K - 1 samples longer than x: its first sample meets x only
    # at lag 0, its last only at lag K - 1. An Inf and a NaN there must reach those lags
    # alone (a zero-filled load would make 0 * inf = NaN at every lag).
    T, K = 36, 5
    g = torch.randn(2, T + K - 1, dtype=torch.float64)
    x = torch.randn(2, T, dtype=torch.float64)
    g[:, 0], g[:, -1] = float("inf"), float("nan")
    got = _triton_direct.lagged_dot(g, x, 0, K)
    want = _lagged_reference(g, x, 0, K)
    assert torch.isfinite(want[:, 1 : K - 1]).all(), "the case must leave middle lags finite"
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_interpreted_kernel_gradient_at_the_shipped_span_and_tile(kernel_runs, monkeypatch):
    # The fixture's small tiles undone: 4,096-sample spans, a 4,096-cell tile (128 samples
    # by 32 lanes), two spans and a partial third a row.
    monkeypatch.setattr(_triton_direct, "_LAG_TILE", 4096)
    g = torch.randn(2, 9000, dtype=torch.float64)
    x = torch.randn(2, 8990, dtype=torch.float64)
    got = _triton_direct.lagged_dot(g, x, 7, 17)
    torch.testing.assert_close(got, _lagged_reference(g, x, 7, 17), rtol=1e-11, atol=1e-11)
    assert kernel_runs.lags == [(6,)]


def test_a_failed_kernel_gradient_launch_falls_back_to_ffts(monkeypatch):
    class Broken:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise RuntimeError("out of resources: shared memory")

            return launch

    monkeypatch.setattr(_triton_direct, "_disabled_reason", None)
    monkeypatch.setattr(
        _triton_direct, "_kernels_for", lambda x: types.SimpleNamespace(lagged_dot_kernel=Broken())
    )
    g, x = torch.randn(2, 50), torch.randn(2, 50)
    with pytest.warns(RuntimeWarning, match="out of resources"):
        assert _triton_direct.lagged_dot(g, x, 2, 5) is None
    assert _triton_direct._disabled_reason is not None


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's NaN
@pytest.mark.parametrize("nonfinite", [False, True])
def test_reading_ahead_through_the_fused_kernels_with_a_graph_matches_scanning_first(
    kernel_runs, monkeypatch, nonfinite
):
    # CUDA's order (the method queued before the scan is read) through the fused forward and
    # kernel gradient, recorded for autograd: the same outputs and gradients as the scan
    # first, with or without a NaN and an Inf in the signal.
    monkeypatch.setattr(_direct, "MAX_TOEPLITZ_TAPS", 0)
    x0, w0 = make_pair((2,), (), 40, 7)
    if nonfinite:
        x0[0, 5], x0[1, 30] = float("nan"), float("inf")
    g = torch.randn(2, 40, dtype=x0.dtype)
    results = []
    for ahead in (False, True):
        monkeypatch.setattr(diffconv_core._nonfinite, "reads_ahead", lambda x, a=ahead: a)
        x, w = x0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
        y = convolve(x, w, method="direct")
        # a loss that leaves out the non-finite outputs: finite gradients either way
        loss_grad = torch.where(torch.isfinite(y), g, 0.0)
        results.append((y.detach(), *torch.autograd.grad(y, (x, w), loss_grad)))
    for scanned, checked in zip(*results, strict=True):
        torch.testing.assert_close(checked, scanned, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert kernel_runs.lags


@pytest.mark.parametrize(
    "lead_x,lead_w", [((2, 3), (3,)), ((), (2,)), ((2, 1), (1, 2)), ((3,), ())]
)
def test_kernel_gradients_of_every_broadcast_pattern_match_finite_differences(
    kernel_runs, monkeypatch, lead_x, lead_w
):
    # A kernel per channel, a bank over one signal, both broadcast, one shared: the fused
    # kernel gradient sums its rows back to the kernel's shape.
    monkeypatch.setattr(_direct, "MAX_TOEPLITZ_TAPS", 0)
    x, w = make_pair(lead_x, lead_w, 9, 3)
    x.requires_grad_(True)
    w.requires_grad_(True)
    full = lambda a, b: convolve(a, b, "full", method="direct")  # noqa: E731
    assert torch.autograd.gradcheck(full, (x, w), fast_mode=True)
    assert kernel_runs.lags


def test_a_failed_launch_warns_once_and_falls_back_for_good(monkeypatch):
    class Broken:
        calls = 0

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                Broken.calls += 1
                raise RuntimeError("no kernel image for this device")

            return launch

    monkeypatch.setattr(
        _triton_direct, "_kernels", types.SimpleNamespace(sliding_dot_kernel=Broken())
    )
    monkeypatch.setattr(_triton_direct, "_disabled_reason", None)
    monkeypatch.setattr(_triton_direct, "_kernels_for", lambda x: _triton_direct._kernel_module())
    x, taps = torch.randn(2, 50), torch.randn(5)
    with pytest.warns(RuntimeWarning, match="no kernel image for this device"):
        assert _triton_direct.sliding_dot(x, taps, 2, 50) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _triton_direct.sliding_dot(x, taps, 2, 50) is None
    assert Broken.calls == 1
    assert _triton_direct._kernel_module() is None


def test_falls_back_off_cuda():
    x, taps = torch.randn(2, 50), torch.randn(5)
    assert not _triton_direct.available(x)
    assert _triton_direct.sliding_dot(x, taps, 2, 50) is None


@needs_cuda_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("x_shape,taps_shape,shift,n_out", CASES)
def test_compiled_kernel_matches_the_definition(dtype, x_shape, taps_shape, shift, n_out):
    _run_case("cuda", dtype, x_shape, taps_shape, shift, n_out)


@needs_cuda_triton
def test_direct_method_uses_it_and_agrees_with_fft():
    x = torch.randn(4, 100_000, device="cuda", dtype=torch.float64)
    w = torch.randn(31, device="cuda", dtype=torch.float64)
    assert _triton_direct.available(x)
    torch.testing.assert_close(
        diffconv_core.convolve(x, w, method="direct"), convolve(x, w, method="fft")
    )
    assert _triton_direct._disabled_reason is None


@needs_cuda_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_direct_method_keeps_nonfinite_values_local_without_a_scan(no_scan, dtype):
    x, w = _with_nonfinite_values(dtype)
    w[7] = 0.5
    K, T = w.shape[-1], x.shape[-1]
    got = convolve(x.cuda(), w.cuda(), "full", method="direct")
    want = _reference(x, w.flip(-1), K - 1, T + K - 1)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol, equal_nan=True)


@needs_cuda_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("g_shape,x_shape,lo,K", [*LAG_CASES, ((16, 48_000), (16, 48_000), 15, 31)])
def test_compiled_kernel_gradient_matches_the_definition(dtype, g_shape, x_shape, lo, K):
    g = torch.randn(*g_shape, dtype=dtype)
    x = torch.randn(*x_shape, dtype=dtype)
    got = _triton_direct.lagged_dot(g.cuda(), x.cuda(), lo, K)
    assert got is not None, _triton_direct._disabled_reason
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    want = _lagged_reference(g, x, lo, K)
    torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol * g_shape[-1] ** 0.5)


@needs_cuda_triton
def test_direct_training_on_cuda_takes_the_fused_kernel_gradient(monkeypatch):
    calls = []
    lagged = _triton_direct.lagged_dot
    monkeypatch.setattr(_direct, "lagged_dot", lambda *a: calls.append(1) or lagged(*a))
    x = torch.randn(4, 20_000, device="cuda", dtype=torch.float64, requires_grad=True)
    w = torch.randn(31, device="cuda", dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 20_000, device="cuda", dtype=torch.float64)
    grads = torch.autograd.grad(convolve(x, w, method="direct"), (x, w), g)
    want = torch.autograd.grad(convolve(x, w, method="fft"), (x, w), g)
    assert calls, "the direct method's kernel gradient did not take the fused kernel"
    for got, expected in zip(grads, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
