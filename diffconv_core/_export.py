"""Convolution recorded into a graph by ``torch.export``: no value read on the host.

Eagerly, the core reads values to decide how to compute (is every sample finite, could a
transform's sums overflow, which taps are zero) and runs custom autograd Functions. An
exported graph cannot hold either: its inputs have no values while it is traced, and it must
serve any input afterwards. Here the same decisions become part of the graph. One
``torch.cond`` on "every value finite and no overflow possible" runs either the method's
plain torch operations (``conv1d`` or one rFFT product, as under ``torch.func``) or the
careful branch: the operands' non-finite values zeroed, float32 transforms computed in
float64 (whose range holds all their sums) and float64 magnitudes scaled by powers of two
where a transform could overflow (exact: only exponents change), and every output whose
direct sum has a non-finite term set to that sum's IEEE value through indicator convolutions.
Values therefore match eager mode's; gradients flow through both branches, the scalings as
recorded products (as under ``torch.func``), so where a float64 scaling was needed the
backward pass meets the unscaled magnitudes and can overflow where eager mode rescales it:
float64 signals near 1e307 under a unit-sum kernel gave Inf signal gradients through the FFT.
(float32 signals near 3e36 did too while that branch scaled float32 as well.)

Limits: the kernel length is fixed when exporting (a dynamic one specialises or asks for
constraints), and a dynamic length in "valid" mode needs a minimum above the kernel's
length (an output of one sample asks a guard the exporter refuses).

Every choice the branches make is taken before the ``cond``, and every size they use comes
from their operands by arithmetic alone: ``torch.cond`` traces its branches with the sizes
made symbols, and a Python decision on them inside a branch (an FFT length's search over
2^a 3^b 5^c) was fixed at the traced values without a guard. A graph exported for 2 x 1,000
samples that way failed when run, on 2 x 1,000 samples too ("The size of tensor a (0) must
match the size of tensor b (1000)").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffconv_core._autocast import autocast_off
from diffconv_core._direct import conv1d_range
from diffconv_core._fft import range_fft_length
from diffconv_core._transforms import plain_range_function
from diffconv_core._validation import broadcast_shapes
from diffconv_core.methods import extended_range

#: Steps of a power-of-two scaling: 2**64 and 2**-64 are finite in every float dtype, and
#: four steps cover float64's exponents (to 2**±1024 each operand, 2**±2048 a product).
_STEPS = 4


def exported_convolution(
    method: str, x: torch.Tensor, w: torch.Tensor, mode: str, padding: str
) -> torch.Tensor:
    """``convolve(x, w, mode, padding=padding, method=method)`` as graph operations whose
    result does not depend on reading any value on the host (module docstring).

    Rows in, rows out: the batch is taken apart into rows before anything else (the padding
    included) and put back at the end, where the sizes' ranges are known. Inside a branch,
    reshapes to several batch dims left sizes such as ``(s**2) // s`` that cond could not
    match; a padded signal flattened to rows asked ``min(4 + T, 16 + 4 * T) == 4 + T``, which
    symbolic shapes could not prove.

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` -> ``(*broadcast(bx, bw), L)``, ``L`` as ``mode`` says.
    """
    T, K = x.shape[-1], w.shape[-1]
    batch = broadcast_shapes(x.shape[:-1], w.shape[:-1])
    x = _rows(x.expand(*batch, T))
    w = _rows(w) if math.prod(w.shape[:-1]) == 1 else _rows(w.expand(*batch, K))
    x, lo, hi = extended_range(x, K, mode, padding)
    return _exported_range(method, x, w, lo, hi).view(*batch, hi - lo)


def _exported_range(
    method: str, x: torch.Tensor, w: torch.Tensor, lo: int, hi: int
) -> torch.Tensor:
    """Samples ``lo <= n < hi`` of the rows' full linear convolutions: one ``torch.cond``.

    Shape:
        x ``(rows, T)``, w ``(1, K)`` or ``(rows, K)`` -> ``(rows, hi - lo)``.
    """
    T, K = x.shape[-1], w.shape[-1]
    plan = _Plan.of(method, x, w, lo, hi)
    finite = torch.isfinite(x).all() & torch.isfinite(w).all()
    plain = finite & ~plan.may_overflow(_largest(x), _largest(w), T, K)
    # The branches' output length travels as the size of an empty operand, decided here: a
    # length computed inside a branch (from sizes cond makes symbols of their own) is one it
    # cannot prove positive, so its contiguous strides ("Max(1, ...)") fail cond's check.
    # With symbolic sizes, a length T - K + 1 ("valid") fails it too: the branches then
    # return every sample from lo on (T of them there), cut to the range afterwards.
    tail = int(T + K - 1 - hi)  # a number even where T is a symbol: K - 1 - lo for "same"
    extended = plan.n_fft is None and tail not in (0, K - 1 - lo)
    length = T + K - 1 - lo if extended else hi - lo
    y = torch.cond(plain, plan.fresh_range, plan.careful_range, (x, w, x.new_empty(length, 0)))
    return y.narrow(-1, 0, hi - lo).contiguous() if extended else y


@dataclass(frozen=True)
class _Plan:
    """One recorded convolution's choices, fixed outside the ``cond``, with every size the
    branches need taken from the operands there: sizes that are symbols (dynamic shapes)
    then stay symbols, and no Python decision is made on them (module docstring).

    Shape:
        the branches' operands ``(rows, T)`` and ``(1, K)`` or ``(rows, K)`` (plus an empty
        ``(length, 0)`` giving the range's length) -> ``(rows, length)``, the full
        convolution's samples from ``lo``.
    """

    direct: bool  # conv1d's direct sums, else one rFFT product
    lo: int
    n_fft: int | None  # None where the sizes are symbols: the full length, T + K - 1
    # Complex transforms at symbolic lengths over a fixed batch of several rows: torch's
    # irfft then asks that (3 * (T // 2) + 15) % (T // 2 + 5) == 0, which its symbolic
    # shapes cannot prove ("Constraints violated"); fft/ifft ask nothing (twice the work).
    complex_rows: bool
    shared: bool  # one kernel for every signal

    @classmethod
    def of(cls, method: str, x: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> _Plan:
        T, K = x.shape[-1], w.shape[-1]
        # Symbolic sizes show as SymInts in a non-strict export; a strict one (dynamo) shows
        # them as ints, so there every size is taken as a possible symbol.
        symbols = any(isinstance(size, torch.SymInt) for size in (T, K, lo, hi))
        static = not symbols and not torch.compiler.is_dynamo_compiling()
        rows = x.shape[0]  # (rows, T) and (1 or rows, K) here
        return cls(
            # Plain bools, not SymBools: a SymBool kept for the branches failed cond's guards
            # ("Cannot create SymNode of type int with incompatible hint of type bool").
            complex_rows=bool(not static and not isinstance(rows, torch.SymInt) and rows > 1),
            direct=plain_range_function(method, x, w) is conv1d_range,
            lo=lo,
            n_fft=range_fft_length(T, K, lo, hi, x.device) if static else None,
            shared=bool(w.shape[0] == 1),
        )

    def fft(
        self, x: torch.Tensor, w: torch.Tensor, length: int, complex_rows: bool | None = None
    ) -> torch.Tensor:
        """``length`` samples from ``lo`` through one FFT product (any leading dims that
        broadcast): real transforms, or complex ones with ``complex_rows`` (the plan's by
        default)."""
        n = x.shape[-1] + w.shape[-1] - 1 if self.n_fft is None else self.n_fft
        if self.complex_rows if complex_rows is None else complex_rows:
            spectrum = torch.fft.fft(x, n) * torch.fft.fft(w, n)
            return torch.fft.ifft(spectrum, n).real.narrow(-1, self.lo, length)
        spectrum = torch.fft.rfft(x, n) * torch.fft.rfft(w, n)
        return torch.fft.irfft(spectrum, n).narrow(-1, self.lo, length)

    def conv1d(self, x: torch.Tensor, w: torch.Tensor, length: int) -> torch.Tensor:
        """``length`` samples from ``lo`` through ``F.conv1d``: a sliding dot product of the
        flipped taps over x delayed by K - 1 - lo samples.

        Shape:
            x ``(rows, T)``, w ``(1, K)`` or ``(rows, K)`` -> ``(rows, length)``.
        """
        K = w.shape[-1]
        source = F.pad(x, (K - 1 - self.lo, length + self.lo - x.shape[-1]))
        taps = w.flip(-1).unsqueeze(1)  # (kernels, 1, K)
        with autocast_off(x.device.type):
            if self.shared:  # every row a batch item of one channel
                return F.conv1d(source.unsqueeze(1), taps).squeeze(1)
            # a kernel per row: the rows as channels, one group each
            return F.conv1d(source.unsqueeze(0), taps, groups=taps.shape[0]).squeeze(0)

    def range(self, x: torch.Tensor, w: torch.Tensor, length: int) -> torch.Tensor:
        return self.conv1d(x, w, length) if self.direct else self.fft(x, w, length)

    def fresh_range(self, x: torch.Tensor, w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The range, ``like.shape[0]`` samples long, as a fresh tensor: cond's branches must
        agree in strides and storage offset, and the range is a slice."""
        y = self.range(x, w, like.shape[0])
        return y.clone(memory_format=torch.contiguous_format)

    def careful_range(self, x: torch.Tensor, w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Eager mode's careful path as graph operations: the finite parts convolved, scaled
        where a transform could overflow, then the outputs with non-finite terms set."""
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        x_part = torch.where(torch.isfinite(x), x, zero)
        w_part = torch.where(torch.isfinite(w), w, zero)
        length = like.shape[0]
        if not self.direct and x.dtype == torch.float32:
            # float32 through a transform: in float64, whose range holds every sum of float32
            # values (n * K * 3.4e38**2 for any n and K that fit in memory), so no scaling:
            # the gradients too meet no overflow, and a result past float32's range keeps its
            # small outputs finite, as eager mode's (_nonfinite._without_overflow).
            y = self.range(x_part.to(torch.float64), w_part.to(torch.float64), length)
        else:
            # Eager mode's rule (_nonfinite._without_overflow): both operands brought to a
            # largest value near 1 by their binary exponents, the result scaled back.
            x_max, w_max = _largest(x_part), _largest(w_part)
            overflow = self.may_overflow(x_max, w_max, x.shape[-1], w.shape[-1])
            x_exp = torch.where(overflow, _binary_exponent(x_max), 0)
            w_exp = torch.where(overflow, _binary_exponent(w_max), 0)
            y = self.range(
                _times_power_of_two(x_part, -x_exp), _times_power_of_two(w_part, -w_exp), length
            )
            y = _times_power_of_two(y, x_exp + w_exp)
        nan, plus, minus = self.nonfinite_terms(x.detach(), w.detach(), length)
        nan = nan | (plus & minus)  # inf - inf
        value = torch.where(nan, torch.nan, torch.where(plus, torch.inf, -torch.inf))
        y = torch.where(nan | plus | minus, value.to(y.dtype), y)
        return y.to(x.dtype, memory_format=torch.contiguous_format, copy=True)

    def may_overflow(
        self, x_max: torch.Tensor, w_max: torch.Tensor, T: int, K: int
    ) -> torch.Tensor:
        """``_nonfinite._may_overflow`` as a boolean tensor, for the largest finite
        magnitudes ``x_max`` and ``w_max`` (log2(0) = -inf: a zero operand's product bound is
        -inf, as the eager version's "every product is 0")."""
        if x_max.dtype not in (torch.float32, torch.float64):
            return torch.zeros((), dtype=torch.bool, device=x_max.device)
        log_limit = math.log2(torch.finfo(x_max.dtype).max) - 2
        unit = torch.ones((), dtype=torch.float64, device=x_max.device)
        log_n, log_k = torch.log2(unit * (T + K)), torch.log2(unit * K)
        x_log, w_log = torch.log2(x_max.to(torch.float64)), torch.log2(w_max.to(torch.float64))
        overflow = x_log + w_log + log_k + 2 * log_n >= log_limit
        if not self.direct:  # each operand's own spectrum, as in eager mode
            overflow = overflow | (torch.maximum(x_log, w_log) + log_n >= log_limit)
        return overflow

    def nonfinite_terms(
        self, x: torch.Tensor, w: torch.Tensor, length: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Which outputs' direct sums have a NaN term, a +Inf term, a -Inf term: a count of
        marked sample-tap pairs above 1/2, from one float64 indicator rFFT product of twelve
        groups, as eager mode decides its indicator counts (``_nonfinite._covered``), which
        looks only for the kinds the operands hold; a graph looks for all of them.

        Shape:
            x ``(rows, T)``, w ``(1, K)`` or ``(rows, K)`` -> three ``(rows, length)`` bool.
        """
        samples, taps = _kinds(x), _kinds(w)
        # (sample kind, tap kind) pairs whose products are NaN, +Inf, -Inf; an Inf also
        # counts as positive or negative (+Inf * +Inf is found by two pairs: counts only
        # need to pass 1/2).
        nan = [("nan", "all"), ("all", "nan"), ("inf", "zero"), ("zero", "inf")]
        plus = [("+inf", "+"), ("-inf", "-"), ("+", "+inf"), ("-", "-inf")]
        minus = [("+inf", "-"), ("-inf", "+"), ("+", "-inf"), ("-", "+inf")]
        pairs = nan + plus + minus
        a = torch.stack([samples[i] for i, _ in pairs]).to(torch.float64)
        b = torch.stack([taps[j] for _, j in pairs]).to(torch.float64)
        # (12, rows, T) against (12, 1 or rows, K): a fixed batch of several rows, so complex
        # transforms wherever the sizes are symbols (see complex_rows)
        covered = self.fft(a, b, length, complex_rows=self.n_fft is None) > 0.5
        four = len(nan)
        return covered[:four].any(0), covered[four : 2 * four].any(0), covered[2 * four :].any(0)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``(..., L)`` as ``(rows, L)`` (``(1, L)`` for one row), the leading sizes multiplied,
    never divided as ``reshape(-1, L)`` divides them."""
    return t.unsqueeze(0).flatten(0, -2)


def _kinds(t: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "nan": torch.isnan(t),
        "+inf": t == torch.inf,
        "-inf": t == -torch.inf,
        "inf": torch.isinf(t),
        "zero": t == 0,
        "+": t > 0,
        "-": t < 0,
        "all": torch.ones_like(t, dtype=torch.bool),
    }


def _largest(t: torch.Tensor) -> torch.Tensor:
    # The largest finite magnitude (0 for none): the overflow bound's operand.
    zero = torch.zeros((), dtype=t.dtype, device=t.device)
    # (over every dim named: ONNX's exporter has no amax over all dims unnamed)
    return torch.where(torch.isfinite(t), t, zero).abs().amax(dim=tuple(range(t.dim())))


def _binary_exponent(t: torch.Tensor) -> torch.Tensor:
    # frexp's exponent of a magnitude (t = m * 2**e, 0.5 <= m < 1; 0 for 0), from log2: ONNX
    # has no frexp. The log2 of a value just below a power of two can round up to it, giving
    # an exponent one above frexp's: the value is then scaled to about 1/2 instead of 1,
    # exactly all the same.
    positive = t > 0
    logs = torch.log2(torch.where(positive, t, torch.ones_like(t)).to(torch.float64))
    return torch.where(positive, torch.floor(logs).to(torch.int64) + 1, 0)


def _times_power_of_two(t: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    # t * 2**exponent for an integer tensor exponent, exactly (only the exponent changes,
    # unless a value leaves the normal range), in steps every dtype holds.
    step = torch.div(exponent, _STEPS, rounding_mode="trunc")
    last = exponent - (_STEPS - 1) * step
    for part in [step] * (_STEPS - 1) + [last]:
        t = t * torch.exp2(part.to(t.dtype))
    return t
