"""Shared references, tolerances and checks for the convolution-core tests.

Every numeric check here is against an independent float64 reference built from scipy and
numpy, never against diffconv itself:

* mode "zeros": ``scipy.signal.convolve`` / ``scipy.signal.correlate`` (method="direct").
* other paddings: ``numpy.pad`` with the matching numpy mode, then scipy's "valid" convolution
  of the padded signal. The pad widths follow scipy's centring: "same" pads ``K // 2`` on the
  left and ``(K - 1) // 2`` on the right, "full" pads ``K - 1`` on both sides.

numpy.pad extends pads longer than the signal by repeating its reflection/wrap, which equals
the "periodic index" definition of DESIGN.md; ``periodic_index`` states that definition
explicitly and ``test_numpy_pad_matches_periodic_index_definition`` checks the two agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

import diffconv_core._nonfinite

MODES = ("full", "same", "valid")
PADDINGS = ("zeros", "reflect", "symmetric", "replicate", "circular")
METHODS = ("direct", "fft", "overlap", "auto")
EXPLICIT_METHODS = ("direct", "fft", "overlap")
# (mode, padding) pairs that are allowed: "valid" only takes zeros.
MODE_PADDINGS = [(m, p) for m in ("full", "same") for p in PADDINGS] + [("valid", "zeros")]

# diffconv padding name -> numpy.pad mode.
NUMPY_PAD_MODE = {
    "reflect": "reflect",
    "symmetric": "symmetric",
    "replicate": "edge",
    "circular": "wrap",
}

# Max error relative to the output's max, against a float64 reference computed from the very
# same (already rounded) input values. float32/float64 come from the issue; half types are
# looser: their output rounding alone is 2**-11 (float16) and 2**-8 (bfloat16) of a value.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 2e-2,
}


@pytest.fixture(params=["scan first", "read ahead", "check after"])
def nonfinite_order(request, monkeypatch) -> str:
    """The three ways of keeping NaN/Inf local: a scan of the operands before the method
    (the CPU with a graph to record), CUDA's method queued before the scan is read
    (``reads_ahead``) and the CPU's check of the method's output, the scan only where that
    is not all finite (``checks_after``, without a graph), each here on the CPU."""
    nonfinite = diffconv_core._nonfinite
    if request.param == "read ahead":
        monkeypatch.setattr(nonfinite, "reads_ahead", lambda x: True)
    elif request.param == "scan first":
        monkeypatch.setattr(nonfinite, "checks_after", lambda x, w: False)
    return request.param


# (signal shape without T, kernel shape without K, name): the broadcasting patterns.
BROADCAST_PATTERNS = [
    ((), (), "signal (T,), kernel (K,)"),
    ((2, 3), (), "signal (B,C,T), shared kernel (K,)"),
    ((2, 3), (3,), "signal (B,C,T), kernel per channel (C,K)"),
    ((2, 3), (2, 1), "signal (B,C,T), kernel per signal (B,1,K)"),
    ((), (4,), "signal (T,), kernel bank (N,K)"),
    ((2, 1), (3,), "signal (B,1,T), kernel (C,K) -> (B,C,L)"),
    ((3,), (3,), "signal (B,T), kernel per signal (B,K)"),
    ((1, 2), (3, 1), "signal (1,C,T), kernel (B,1,K) -> (B,C,L)"),
]


def mode_pads(mode: str, K: int) -> tuple[int, int]:
    """Pad widths (left, right) that turn ``mode`` into a "valid" convolution."""
    if mode == "full":
        return K - 1, K - 1
    if mode == "same":
        return K // 2, (K - 1) // 2
    return 0, 0


def periodic_index(T: int, left: int, right: int, padding: str) -> np.ndarray:
    """Source index of every sample of the padded signal (the DESIGN.md definition)."""
    i = np.arange(-left, T + right)
    if padding == "replicate":
        return np.clip(i, 0, T - 1)
    if padding == "circular":
        return np.mod(i, T)
    if padding == "reflect":
        if T == 1:  # period 2 * (T - 1) = 0: the only sample repeats
            return np.zeros_like(i)
        period = 2 * (T - 1)
        m = np.mod(i, period)
        return np.where(m < T, m, period - m)
    if padding == "symmetric":
        period = 2 * T
        m = np.mod(i, period)
        return np.where(m < T, m, period - 1 - m)
    raise ValueError(padding)


def to_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def numpy_pad(x: np.ndarray, left: int, right: int, padding: str) -> np.ndarray:
    """Pad the last axis of ``x`` with numpy.pad (any width)."""
    widths = [(0, 0)] * (x.ndim - 1) + [(left, right)]
    if padding == "zeros":
        return np.pad(x, widths, mode="constant")
    return np.pad(x, widths, mode=NUMPY_PAD_MODE[padding])


def reference(
    signal,
    kernel,
    mode: str = "same",
    padding: str = "zeros",
    correlate: bool = False,
) -> np.ndarray:
    """float64 reference for ``convolve``/``correlate``, broadcasting the leading dims."""
    x = to_numpy(signal)
    w = to_numpy(kernel)
    T, K = x.shape[-1], w.shape[-1]
    lead = np.broadcast_shapes(x.shape[:-1], w.shape[:-1])
    xs = np.broadcast_to(x, lead + (T,)).reshape(-1, T)
    ws = np.broadcast_to(w, lead + (K,)).reshape(-1, K)
    rows = []
    for xr, wr in zip(xs, ws, strict=True):
        if padding == "zeros":
            func = scipy.signal.correlate if correlate else scipy.signal.convolve
            rows.append(func(xr, wr, mode=mode, method="direct"))
        else:
            left, right = mode_pads(mode, K)
            padded = numpy_pad(xr, left, right, padding)
            taps = wr[::-1] if correlate else wr
            rows.append(scipy.signal.convolve(padded, taps, mode="valid", method="direct"))
    length = rows[0].shape[-1] if rows else 0
    return np.stack(rows).reshape(lead + (length,))


def coverage(T: int, K: int, positions, mode: str, padding: str = "zeros") -> np.ndarray:
    """Boolean mask of the outputs whose window covers one of ``positions`` (1-D signal)."""
    indicator = np.zeros(T)
    indicator[list(positions)] = 1.0
    return reference(indicator, np.ones(K), mode, padding) > 0.5


def same_mode_gradients(x, w, g):
    """float64 gradients of ``sum(g * convolve(x, w, "same"))`` (zeros): the output is
    ``full[lo:lo + T]`` with ``lo = (K - 1) // 2``, so ``x`` gets ``g`` placed back in the full
    range correlated with ``w``, and ``w`` gets it correlated with ``x``, summed over rows."""
    x, w, g = (t.detach().double().numpy() for t in (x, w, g))
    T, K = x.shape[-1], w.shape[-1]
    lo = (K - 1) // 2
    g_full = np.zeros((x.shape[0], T + K - 1))
    g_full[:, lo : lo + T] = g
    grad_x = np.stack([np.correlate(row, w, "valid") for row in g_full])
    grad_w = sum(np.correlate(gr, xr, "valid") for gr, xr in zip(g_full, x, strict=True))
    return grad_x, grad_w


def relative_error(out, ref, scale: float | None = None) -> float:
    out, ref = to_numpy(out), np.asarray(ref, dtype=np.float64)
    if scale is None:
        scale = np.abs(ref).max() if ref.size else 0.0
    err = np.abs(out - ref).max() if ref.size else 0.0
    return float(err / scale) if scale > 0 else float(err)


def assert_matches(
    out: torch.Tensor,
    ref: np.ndarray,
    dtype: torch.dtype,
    config: str,
    scale: float | None = None,
) -> None:
    """Shape, dtype and max error relative to ``scale`` (default: the output's max), naming
    the configuration."""
    assert isinstance(out, torch.Tensor), f"{config}: got {type(out).__name__}, not a Tensor"
    assert tuple(out.shape) == ref.shape, f"{config}: shape {tuple(out.shape)} != {ref.shape}"
    assert out.dtype == dtype, f"{config}: dtype {out.dtype} != {dtype}"
    err = relative_error(out, ref, scale)
    tol = TOLERANCE[dtype]
    assert err <= tol, f"{config}: relative error {err:.3g} > {tol:g}"


def make_pair(
    lead_x: tuple[int, ...],
    lead_w: tuple[int, ...],
    T: int,
    K: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random signal (lead_x..., T) and kernel (lead_w..., K), drawn in float64 then cast."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead_x, T, generator=gen, dtype=torch.float64)
    w = torch.randn(*lead_w, K, generator=gen, dtype=torch.float64)
    return x.to(device, dtype), w.to(device, dtype)


def check_parity(
    signal: torch.Tensor,
    kernel: torch.Tensor,
    mode: str,
    padding: str,
    method: str,
    correlate: bool,
    extra: str = "",
) -> None:
    """Run diffconv and compare with the scipy/numpy reference, naming the configuration."""
    import diffconv_core

    func = diffconv_core.correlate if correlate else diffconv_core.convolve
    config = (
        f"{'correlate' if correlate else 'convolve'}(signal{tuple(signal.shape)}, "
        f"kernel{tuple(kernel.shape)}, mode={mode!r}, padding={padding!r}, method={method!r}) "
        f"dtype={signal.dtype} device={signal.device} {extra}"
    )
    out = func(signal, kernel, mode, padding=padding, method=method)
    assert out.device == signal.device, f"{config}: output on {out.device}"
    ref = reference(signal, kernel, mode, padding, correlate)
    scale = None
    if method != "direct" and ref.size:
        # A transform mixes every tap into every output, so its round-off is relative to the
        # whole kernel's size: max|x| * ||w||, a random signal's output size at its peak. For
        # such data that is the output's max; it differs where few taps meet the signal:
        # one output of a 1-sample signal is x * w[k], and with a small w[k] (hypothesis drew
        # 0.005 of a 38-tap kernel of norm 5.1) the FFT's error was 1.01e-5 of it in float32
        # and 1e-8 of max|x| * ||w||. The direct sums keep the output's max as scale.
        x_peak = signal.detach().abs().max().item() if signal.numel() else 0.0
        w_norm = torch.linalg.vector_norm(kernel.detach().double(), dim=-1).max().item()
        scale = max(float(np.abs(ref).max()), x_peak * w_norm)
    assert_matches(out, ref, torch.promote_types(signal.dtype, kernel.dtype), config, scale)


def check_locality(x, w, positions, mode, padding, method, corr, device="cpu"):
    """``x`` is (B, T) with non-finite values at ``positions`` (row, index) pairs."""
    import diffconv_core

    func = diffconv_core.correlate if corr else diffconv_core.convolve
    config = (
        f"{func.__name__}(signal{tuple(x.shape)}, kernel{tuple(w.shape)}, mode={mode!r}, "
        f"padding={padding!r}, method={method!r}) non-finite at {positions} "
        f"values {[x[r, i].item() for r, i in positions]} device={device}"
    )
    out = func(x.to(device), w.to(device), mode, padding=padding, method=method)
    out = out.detach().cpu().to(torch.float64).numpy()
    T, K = x.shape[-1], w.shape[-1]
    x_np = x.detach().cpu().to(torch.float64).numpy()
    finite_x = np.where(np.isfinite(x_np), x_np, 0.0)
    expected = reference(finite_x, w, mode, padding, correlate=corr)
    assert out.shape == expected.shape, f"{config}: shape {out.shape} != {expected.shape}"
    for row in range(x.shape[0]):
        bad = [i for r, i in positions if r == row]
        covered = coverage(T, K, bad, mode, padding) if bad else np.zeros(out.shape[-1], bool)
        nonfinite = ~np.isfinite(out[row])
        wrong = np.flatnonzero(nonfinite != covered)
        assert wrong.size == 0, (
            f"{config}: row {row}: outputs {wrong.tolist()} are "
            f"{'non-finite' if nonfinite[wrong[0]] else 'finite'}, expected the opposite; "
            f"non-finite outputs {np.flatnonzero(nonfinite).tolist()}, "
            f"expected {np.flatnonzero(covered).tolist()}"
        )
        # A window that covers NaNs only (no Inf) is NaN, never a spurious Inf.
        nan_only = [i for i in bad if np.isnan(x_np[row, i])]
        if nan_only and len(nan_only) == len(bad):
            assert np.isnan(out[row][covered]).all(), f"{config}: row {row}: NaN became Inf"
        # The outputs it does not cover are exactly the finite signal's.
        err = relative_error(out[row][~covered], expected[row][~covered])
        assert err <= 1e-10, f"{config}: row {row}: finite outputs off by {err:.3g}"


#: Devices the device-parametrised tests run on.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def saved_by_functions(out: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor the custom autograd Functions in ``out``'s graph keep for backward."""
    saved, seen, stack = [], set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        saved.extend(t for t in getattr(node, "saved_tensors", ()) if t is not None)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return saved
