"""Keep NaN and Inf local whatever the method.

An FFT mixes every sample into every output (a Toeplitz GEMM every sample of a frame), so one
NaN would poison far more than its window: 0 * NaN is NaN. When the signal or the kernel is
not all finite, its non-finite values are zeroed, the convolution runs, and the outputs whose
window covers one get exactly what the direct sum gives in IEEE arithmetic: NaN where a NaN,
an Inf times a zero or Inf terms of both signs (inf - inf) are covered, else an Inf of the
sign of its Inf terms (sample sign times tap sign; magnitudes don't matter).

Both operands are handled alike: convolution commutes, and ``convolve`` swaps them for
"valid" with a kernel longer than the signal, so the signal may arrive as ``w``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from diffconv_core._validation import batched_gradient, broadcast_shapes, needs_graph, owned

RangeFn = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def _magnitudes(*tensors: torch.Tensor) -> list[float]:
    """The largest absolute value of each tensor (NaN if it holds a NaN, Inf if an Inf; 0 if
    empty): one pass over each, one host sync for all."""
    return _magnitudes_later(*tensors)()


def _magnitudes_later(*tensors: torch.Tensor) -> Callable[[], list[float]]:
    """:func:`_magnitudes`, its reductions queued now and their values read when the returned
    function is called: on CUDA that read waits for the reductions alone, not for work queued
    after them (their values travel to pinned host memory, an event marks their arrival).

    Few operations: on CUDA each costs a launch (~10 us of host time), more than the
    reductions themselves for short signals.
    """
    extremes = [e for t in tensors if t.numel() for e in torch.aminmax(t.detach())]
    if not extremes:
        return lambda: [0.0] * len(tensors)
    if not extremes[0].is_cuda:
        # Nothing runs ahead on the CPU: each value is read as it is (stacked and read at
        # once, they took ~3 us more of a small training step's ~8 us scan).
        values = [e.item() for e in extremes]
        return lambda: _largest(iter(values), tensors)
    if len({e.dtype for e in extremes}) > 1:
        extremes = [e.to(torch.float64) for e in extremes]
    stacked = torch.stack(extremes)
    if stacked.is_cuda:
        # The copy runs on the tensors' device's current stream, which need not be the
        # current device's: the event marks that stream.
        stream = torch.cuda.current_stream(stacked.device)
        stacked = stacked.to("cpu", non_blocking=True)  # into pinned memory, asynchronously
        arrived = torch.cuda.Event()
        arrived.record(stream)
    else:
        arrived = None

    def read() -> list[float]:
        if arrived is not None:
            arrived.synchronize()
        return _largest(iter(stacked.tolist()), tensors)

    return read


def _largest(extremes: Iterator[float], tensors: tuple[torch.Tensor, ...]) -> list[float]:
    # Each non-empty tensor's (min, max) in turn -> its largest magnitude; aminmax propagates
    # NaN to both.
    return [max(-next(extremes), next(extremes)) if t.numel() else 0.0 for t in tensors]


def _finite_part(t: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(t), t, torch.zeros((), dtype=t.dtype, device=t.device))


def _without_overflow(
    range_fn: RangeFn,
    x: torch.Tensor,
    w: torch.Tensor,
    lo: int,
    hi: int,
    x_max: float,
    w_max: float,
) -> torch.Tensor:
    """``range_fn(x, w, lo, hi)`` for finite operands, scaled by powers of two (exactly) where
    the sums inside a transform could overflow although the result need not.

    An FFT's intermediate sums reach ``n * sum|x| * sum|w|`` in the worst case, far above
    the result's ``K * max|x| * max|w|``: float32 signals near 1e34 overflowed with the FFT
    methods where the direct sum was finite. Both operands are brought to a largest value
    near 1 instead, and the result scaled back (an Inf there is a true overflow). The
    gradients are computed the same way (:class:`_PowerOfTwoScaled`). Half types never get
    here with a transform (they are computed in float32), so they are left alone.

    Only the forward's operands decide: a backward pass whose own product overflows where
    the forward's did not (an output gradient near the dtype's limit, or a huge kernel over
    a tiny signal, whose gradient is the kernel's scale) is not scaled.
    """
    transforms = _transforms(range_fn)
    if not _may_overflow(x, w, x_max, w_max, transforms):
        return range_fn(x, w, lo, hi)
    if transforms and x.dtype == torch.float32 and _result_may_overflow(x, w, x_max, w_max):
        # A float32 result that may pass float32's largest value: the transform's round-off,
        # a fraction of the result's scale, then passes it too, and outputs whose exact value
        # is 0 or small came back Inf (1e30 samples under 1e20 taps: 2,680 of 2,800 exact
        # zeros with the FFT method). Computed in float64, that round-off stays finite and far
        # below the values that overflow when the result is rounded to float32.
        x64, w64 = x.to(torch.float64), w.to(torch.float64)
        return _without_overflow(range_fn, x64, w64, lo, hi, x_max, w_max).to(torch.float32)
    x_exponent, w_exponent = math.frexp(x_max)[1], math.frexp(w_max)[1]
    return _PowerOfTwoScaled.apply(x, w, range_fn, lo, hi, x_exponent, w_exponent)


def _transforms(range_fn: RangeFn) -> bool:
    # Whether the method transforms each operand on its own (an FFT, overlap-save's blocks),
    # whose spectra can overflow where the direct sums' products cannot.
    return getattr(range_fn, "__module__", "") != "diffconv_core._direct"


def _may_overflow(
    x: torch.Tensor, w: torch.Tensor, x_max: float, w_max: float, transforms: bool = True
) -> bool:
    # Whether a transform's intermediate sums could overflow for finite operands of these
    # largest magnitudes (half types are computed in float32: never scaled).
    if x.dtype not in (torch.float32, torch.float64) or max(x_max, w_max) == 0:
        return False
    n = x.shape[-1] + w.shape[-1]
    limit = math.log2(torch.finfo(x.dtype).max) - 2
    # Each operand's own spectrum too (its sums reach n times its largest value), whatever
    # the other's size: float32 samples near 1e36 under a 1e-9 kernel have a finite product
    # bound and a result near 1e28, but an Inf DC bin that turned every output into NaN. So
    # under a kernel of zeros, whose result is zeros (Inf times 0 is NaN).
    alone = math.log2(max(x_max, w_max)) + math.log2(n)
    if transforms and alone >= limit:
        return True
    if x_max == 0 or w_max == 0:
        return False  # every product is 0
    worst = math.log2(x_max) + math.log2(w_max) + math.log2(w.shape[-1]) + 2 * math.log2(n)
    return worst >= limit


def _result_may_overflow(x: torch.Tensor, w: torch.Tensor, x_max: float, w_max: float) -> bool:
    # Whether an output could pass the dtype's largest value: each is a sum of at most
    # min(T, K) products.
    if x_max == 0 or w_max == 0:
        return False
    terms = min(x.shape[-1], w.shape[-1])
    bound = math.log2(x_max) + math.log2(w_max) + math.log2(terms)
    return bound >= math.log2(torch.finfo(x.dtype).max)


def _scaled_range(
    range_fn: RangeFn, x: torch.Tensor, w: torch.Tensor, lo: int, hi: int, x_exp: int, w_exp: int
) -> torch.Tensor:
    xs, ws = _times_power_of_two(x, -x_exp), _times_power_of_two(w, -w_exp)
    return _times_power_of_two(range_fn(xs, ws, lo, hi), x_exp + w_exp)


class _PowerOfTwoScaled(torch.autograd.Function):
    """``range_fn(x, w, lo, hi)`` on operands divided by ``2**x_exp`` and ``2**w_exp``, the
    result multiplied back; the gradients likewise, on an incoming gradient scaled near 1.

    Recording the scalings as ordinary products would hand the method's own backward the
    incoming gradient times ``2**(x_exp + w_exp)``: the signal's gradient of float32 samples
    near 1e34 then overflowed inside the FFT although it is only the kernel's sum. The
    convolution is bilinear, so with ``g = 2**g_exp * gs`` the gradients are
    ``2**(w_exp + g_exp)`` and ``2**(x_exp + g_exp)`` times those of the scaled operands for
    ``gs``. The backward recomputes the scaled forward (this path is only taken for values
    near the dtype's limit) and stays differentiable for second derivatives, which are not
    scaled themselves.
    """

    @staticmethod
    def forward(ctx, x, w, range_fn, lo, hi, x_exp, w_exp):  # noqa: D102
        ctx.save_for_backward(x, w)
        ctx.settings = (range_fn, lo, hi, x_exp, w_exp)
        return owned(_scaled_range(range_fn, x, w, lo, hi, x_exp, w_exp), x, w)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, w = ctx.saved_tensors
        range_fn, lo, hi, x_exp, w_exp = ctx.settings
        need_x, need_w = ctx.needs_input_grad[:2]
        g_exp = _exponent_of(grad)
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not create_graph:  # leaves of their own: nothing recorded reaches x or w
                x = x.detach().requires_grad_(need_x)
                w = w.detach().requires_grad_(need_w)
            xs, ws = _times_power_of_two(x, -x_exp), _times_power_of_two(w, -w_exp)
            ys = range_fn(xs, ws, lo, hi)
            wanted = [t for t, need in ((xs, need_x), (ws, need_w)) if need]
            found = iter(
                torch.autograd.grad(
                    ys, wanted, _times_power_of_two(grad, -g_exp), create_graph=create_graph
                )
            )
        grad_x = _times_power_of_two(next(found), w_exp + g_exp) if need_x else None
        grad_w = _times_power_of_two(next(found), x_exp + g_exp) if need_w else None
        return grad_x, grad_w, None, None, None, None, None


def _exponent_of(grad: torch.Tensor) -> int:
    # The binary exponent of grad's largest magnitude (0 for none to read: a gradient batched
    # under vmap, whose values a backward pass cannot look at, or one all zeros or non-finite).
    if batched_gradient(grad):
        return 0
    (g_max,) = _magnitudes(grad)
    return math.frexp(g_max)[1] if math.isfinite(g_max) and g_max > 0 else 0


def _times_power_of_two(t: torch.Tensor, exponent: int) -> torch.Tensor:
    # In steps whose factors every float dtype represents (float32 has no 2**128).
    while exponent:
        step = max(-64, min(64, exponent))
        t = t * 2.0**step
        exponent -= step
    return t


def with_nonfinite_locality(
    range_fn: RangeFn, x: torch.Tensor, w: torch.Tensor, lo: int, hi: int
) -> torch.Tensor:
    """Run ``range_fn(x, w, lo, hi)`` so that non-finite values of ``x`` or ``w`` stay local
    and huge finite ones do not overflow inside the method.

    The operands' magnitudes decide which path computes it. On CUDA they are read ahead
    (:func:`reads_ahead`): the method is queued right behind their reductions, and its output
    kept when they show finite operands that need no scaling, which is what the path would
    compute anyway. On the CPU without a graph the method runs first and its output is kept
    when it is all finite (:func:`checks_after`); the operands are scanned only otherwise.
    """
    if reads_ahead(x):
        magnitudes = _magnitudes_later(x, w)
        y = range_fn(x, w, lo, hi)
        x_max, w_max = magnitudes()
        if _need_no_care(x, w, x_max, w_max, _transforms(range_fn)):
            return y
        del y  # computed for nothing: the operands need the path below
    elif checks_after(x, w):
        y = range_fn(x, w, lo, hi)
        if math.isfinite(float(y.sum())):
            return y
        del y  # a NaN, an Inf or an overflow somewhere: the operands decide the path below
        x_max, w_max = _magnitudes(x, w)
    else:
        x_max, w_max = _magnitudes(x, w)
    x_finite, w_finite = math.isfinite(x_max), math.isfinite(w_max)
    if x_finite and w_finite:
        return _without_overflow(range_fn, x, w, lo, hi, x_max, w_max)

    def on_finite_parts(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _without_overflow(range_fn, a, b, lo, hi, *_magnitudes(a, b))

    return with_direct_sum_nonfinite(range_fn, x, w, lo, hi, x_finite, w_finite, on_finite_parts)


def _need_no_care(
    x: torch.Tensor, w: torch.Tensor, x_max: float, w_max: float, transforms: bool
) -> bool:
    finite = math.isfinite(x_max) and math.isfinite(w_max)
    return finite and not _may_overflow(x, w, x_max, w_max, transforms)


def reads_ahead(x: torch.Tensor) -> bool:
    """Whether to queue the method before reading the operands' magnitudes (on CUDA), rather
    than read them first (on the CPU, where nothing runs ahead).

    Read first, the host sync would leave the GPU idle while the method's launches are
    queued after it; checked after the method, the sync would wait for the whole
    method, and the GPU would idle while the next call's launches are prepared. Read ahead,
    the sync waits only for work queued before the reductions, and the method keeps the GPU
    busy meanwhile; only operands holding NaN, Inf or values near the dtype's limit pay for a
    second run.
    """
    return x.device.type == "cuda"


def checks_after(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether to run the method on the operands as they are and look at its output instead
    of at the operands first (on the CPU, with no graph to record).

    An all-finite output is then what the scanned path returns. A NaN or an Inf can only
    spread as NaN or Inf through the methods' sums and products (no division, no
    comparison), so a non-finite sample that enters the sums of any output (as it does of
    every output whose window covers it) leaves that output non-finite, and one that enters
    none changes nothing. An overflow inside a transform gives Inf or NaN too; where none
    occurred, the scanned path's scaling by powers of two (near the dtype's limit) would
    change no bit but for values it pushed below the dtype's normal range, which the
    unscaled result keeps. The one sum over the output costs less than the scan of the
    signal (512 x 1,024 float32 samples: 13 against 45 us), and a short call saves most of
    the scan's four operations; operands holding NaN or Inf pay for the method twice. With
    a graph the scanned path keeps its scaled gradients for values near the limit.
    """
    return x.device.type == "cpu" and not needs_graph(x, w)


def with_direct_sum_nonfinite(
    range_fn: RangeFn,
    x: torch.Tensor,
    w: torch.Tensor,
    lo: int,
    hi: int,
    x_finite: bool,
    w_finite: bool,
    compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``compute`` on the operands with their non-finite values zeroed, then each output
    whose direct sum has a non-finite term set to that sum's IEEE value (a constant to
    autograd). ``x_finite``/``w_finite`` say which operands need no zeroing.

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` -> ``(*broadcast(bx, bw), hi - lo)``.
    """
    y = compute(x if x_finite else _finite_part(x), w if w_finite else _finite_part(w))
    with torch.no_grad():
        covered, value = _direct_sum_nonfinite(
            range_fn, x.detach(), w.detach(), lo, hi, x_finite, w_finite
        )
    return torch.where(covered, value.to(y.dtype), y)


def _direct_sum_nonfinite(
    range_fn: RangeFn,
    x: torch.Tensor,
    w: torch.Tensor,
    lo: int,
    hi: int,
    x_finite: bool,
    w_finite: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which outputs' direct sums have a term with a non-finite factor, and what IEEE
    arithmetic makes of those terms: NaN where a NaN, an Inf times a zero, or Inf terms of
    both signs are covered (inf - inf), else an Inf with the sign of its Inf terms.

    Every term's sign is sign(sample) * sign(tap), so finding the covered Inf terms of each
    sign takes indicator convolutions only: no weighted sum, no tolerance (see
    :func:`_covered`). Only the terms an operand flagged non-finite can produce are looked
    for, and of those only the ones both of whose indicators mark something; the indicators
    keep x and w in their places (never swapped: a long signal as the kernel would cost the
    direct method T^2).
    """
    inf = torch.inf
    # (group, indicator over this operand, indicator over the other, this operand is x):
    # covered products are NaN, +Inf or -Inf terms. Only the kinds an operand holds make
    # terms (a signal with NaN gaps and no Inf needs one), and the other operand's indicators
    # are built only for those.
    terms: list[tuple[str, torch.Tensor, torch.Tensor, bool]] = []
    for this, other, is_x, finite in ((x, w, True, x_finite), (w, x, False, w_finite)):
        if finite:
            continue
        nan, pos, neg = _nonfinite_kinds(this)
        if nan is not None:
            terms.append(("nan", nan, _everywhere(other), is_x))
        if pos is not None or neg is not None:
            zero, above, below = other == 0, other > 0, other < 0
            either = pos if neg is None else neg if pos is None else pos | neg
            terms.append(("nan", either, zero, is_x))
            for mask, same_sign, other_sign in ((pos, above, below), (neg, below, above)):
                if mask is not None:
                    terms += [("+", mask, same_sign, is_x), ("-", mask, other_sign, is_x)]
    terms = _other_side_marked(terms)
    shape = (*broadcast_shapes(x.shape[:-1], w.shape[:-1]), hi - lo)

    def covers(group: str) -> torch.Tensor:
        found = torch.zeros(shape, dtype=torch.bool, device=x.device)
        for name, mine, theirs, is_x in terms:
            if name == group:
                a, b = (mine, theirs) if is_x else (theirs, mine)
                found = found | _covered(range_fn, a, b, lo, hi)  # not in place: vmap batches it
        return found

    nan, plus, minus = covers("nan"), covers("+"), covers("-")
    nan = nan | (plus & minus)  # not in place: under vmap a group may be unbatched zeros
    value = torch.where(plus, inf, -inf)
    return nan | plus | minus, torch.where(nan, torch.nan, value)


def _nonfinite_kinds(t: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """Where ``t`` is NaN, +Inf and -Inf, each None if it holds none (one host sync; inside
    vmap, which cannot read values, all three are kept)."""
    masks = (torch.isnan(t), t == torch.inf, t == -torch.inf)
    if torch._C._are_functorch_transforms_active():
        return masks
    present = torch.stack([m.any() for m in masks]).tolist()
    return tuple(m if here else None for m, here in zip(masks, present, strict=True))


def _other_side_marked(terms: list[tuple]) -> list[tuple]:
    # A term whose indicator over the other operand marks nothing (a window without zero or
    # negative taps) covers nothing. One host sync for all; none possible inside vmap.
    if not terms or torch._C._are_functorch_transforms_active():
        return terms
    distinct = list({id(term[2]): term[2] for term in terms}.values())
    flags = torch.stack([t.any() for t in distinct]).tolist()
    marked = dict(zip(map(id, distinct), flags, strict=True))
    return [term for term in terms if marked[id(term[2])]]


def _everywhere(like: torch.Tensor) -> torch.Tensor:
    # An indicator marking every sample, without a tensor of that size.
    return torch.ones((), dtype=torch.bool, device=like.device).expand(like.shape)


def _covered(range_fn: RangeFn, a: torch.Tensor, b: torch.Tensor, lo: int, hi: int):
    """``sum_k b[k] a[n - k] > 0`` for ``lo <= n < hi`` (``a`` zero outside): which outputs
    cover a marked sample under a marked tap, exactly.

    One kernel for every row marks few taps (a NaN or Inf in the kernel, its zero taps) or
    one run of them (a window's positive taps): then shifted copies of ``a`` or a running
    count do it in a pass or a few. Otherwise an indicator convolution through the method in
    float64, where "a count >= 1" is decided without round-off.

    Shape:
        a ``(*ba, T)``, b ``(*bb, K)`` bool -> ``(*broadcast(ba, bb), hi - lo)`` bool.
    """
    K, T = b.shape[-1], a.shape[-1]
    taps = []
    if b.dim() == 1 and not torch._C._are_functorch_transforms_active():
        taps = b.nonzero().flatten().tolist()
    few, one_run = len(taps) <= 8, bool(taps) and taps[-1] - taps[0] + 1 == len(taps)
    if taps and (few or one_run):
        source = a.new_zeros(*a.shape[:-1], T + 2 * (K - 1))
        source[..., K - 1 : K - 1 + T] = a  # source[i + K - 1] = a[i], zero outside

        def at(k: int, n: int) -> int:  # where a[n - k] lies in source
            return n - k + K - 1

        if few:
            found = torch.zeros(*a.shape[:-1], hi - lo, dtype=torch.bool, device=a.device)
            for k in taps:
                found |= source[..., at(k, lo) : at(k, hi)]
            return found
        k0, k1 = taps[0], taps[-1]  # one run k0..k1: a running count
        count = F.pad(torch.cumsum(source, -1, dtype=torch.int32), (1, 0))
        ends = count[..., at(k0, lo) + 1 : at(k0, hi) + 1]
        return ends - count[..., at(k1, lo) : at(k1, hi)] > 0
    f64 = torch.float64
    return range_fn(a.to(f64), b.to(f64), lo, hi) > 0.5
