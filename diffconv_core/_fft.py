"""FFT convolution on a range of the full output.

The backward pass stays in the FFT family (:class:`_FFTRange`): the output gradient's spectrum
times the saved forward spectra gives both gradients, a kernel shared by a batch gets its
gradient summed in the frequency domain and inverted once, and a second derivative is built
from the same differentiable pieces.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from diffconv_core._half_fft import (
    half_fft_circular,
    half_irfft,
    half_rfft,
    kernel_factors,
    takes_half_fft,
)
from diffconv_core._validation import (
    carries_tangent,
    needs_graph,
    owned,
    small_view,
    under_vmap,
)
from diffconv_core._workspace import scratch
from diffconv_core.memory import retained_bytes

# Without autograd, rows of a batch go through the FFT in chunks of about this many samples:
# short transforms a cache-sized chunk at a time, long ones in large chunks that merely bound
# the memory (32 rows of 101,376 points: 12 ms in chunks of 2**22, 22 ms in 2**18).
CHUNK_SAMPLES = 1 << 22
SHORT_CHUNK_SAMPLES = 1 << 18
#: A batch of more rows than a chunk holds, but at most this many points (rows x FFT
#: length), goes through the FFT at once (:func:`_rows_in_kept_arrays`): chunks of it cost a
#: copy of every output and a call per chunk, and saved nothing at these sizes (2 cores,
#: interleaved with torch_fft and conv1d, glibc's default allocator / freed memory retained,
#: chunks of 2**18 against at once: 512 x 1,024 with 255 taps 1.21 / 1.09 ms against 0.78 /
#: 0.73; 768 x 1,024 with 255 1.48 / 1.47 against 1.13 / 1.03; 1,024 x 1,024 with 255
#: 1.67 / 1.90 against 1.33 / 1.68; 128 x 4,096 with 511 1.23 / 1.18 against 0.85 / 0.77;
#: 256 x 4,096 with 511 2.03 / 2.07 against 1.63 / 1.65). Larger batches were mixed (1,536
#: x 1,024 with 255 taps: 2.72 / 2.74 in chunks, 5.09 / 2.32 at once), so they keep the
#: chunks, whose arrays are allocated afresh: through kept arrays (out= transforms, which
#: copy their result) 2,048 x 1,024 with 255 taps took 3.6 against 2.9 ms, and those
#: chunks' arrays did not fault.
WHOLE_BATCH_POINTS = 3 << 19
SHORT_FFT = 1 << 13
HUGE_FFT = 1 << 20


@functools.lru_cache(maxsize=4096)
def next_fast_len(n: int, multiple_of: int = 1) -> int:
    """The smallest 5-smooth integer (2^a 3^b 5^c) that is at least ``n`` and a multiple of
    ``multiple_of`` (a power of two).

    Both pocketfft (CPU) and cuFFT are fastest on such sizes; unlike a blind power of two they
    waste at most a few percent.

    Example:
        >>> [next_fast_len(n) for n in (1, 7, 97, 1001, 4097)]
        [1, 8, 100, 1024, 4320]
        >>> [next_fast_len(n, multiple_of=8) for n in (97, 1100, 1201)]
        [120, 1152, 1280]
    """
    if n <= 1:
        return multiple_of
    best = max(multiple_of, 1 << (n - 1).bit_length())  # a power of two always qualifies
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            # smallest power-of-two multiple of power35 * multiple_of that reaches n
            candidate = power35 * multiple_of
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


#: CPU real FFTs want a few factors of two: on 2 cores a 512 x 1,125-point rfft+irfft took
#: 3.1 ms and 1,215 points 3.8 ms (odd sizes), against 0.9 ms for 1,152 and 1.1 ms for 1,280.
CPU_FFT_MULTIPLE = 8

#: On the CPU the next power of two replaces a smooth length up to this factor shorter: MKL's
#: power-of-two transforms are enough faster a point. The FFT method, "same" with a Hann
#: kernel, 2 cores, interleaved rounds, three seeds, the power of two's time over the
#: smooth length's: 16,200 -> 16,384 points 0.93-0.94 (1 row), 0.84-0.85 (128 rows); 1,000 ->
#: 1,024 0.82-0.83 (512 rows); 3,840 -> 4,096 0.92 (64 rows); 30,720 -> 32,768 0.95-0.96
#: (1 row); 61,440 -> 65,536 0.99-1.01 (4 rows); 122,880 -> 131,072 0.97-0.98; 486,000 ->
#: 524,288 0.91-0.93 (1 row); 243,000 -> 262,144 0.98-1.02 (16 rows); but 960,000 ->
#: 1,048,576 (9% longer) 1.02-1.05.
CPU_POWER_OF_TWO_MARGIN = 1.08


def fft_length(n: int, device: torch.device) -> int:
    """The FFT length to use for ``n`` samples on ``device``.

    cuFFT is markedly faster on powers of two (on an H200, a 480,000-point batch took twice as
    long as a 524,288-point one); on the CPU 3s and 5s cost little as long as a few factors of
    two remain (see ``CPU_FFT_MULTIPLE``), and a power of two a few percent longer is faster
    still (``CPU_POWER_OF_TWO_MARGIN``).

    Example:
        >>> import torch
        >>> cpu, meta = torch.device("cpu"), torch.device("meta")
        >>> fft_length(480_000, cpu), fft_length(16_127, cpu), fft_length(480_000, meta)
        (480000, 16384, 524288)
    """
    if device.type != "cpu":
        return 1 << max(0, n - 1).bit_length()
    smooth = next_fast_len(n, CPU_FFT_MULTIPLE) if n > CPU_FFT_MULTIPLE else next_fast_len(n)
    return cpu_fast_length(smooth)


def cpu_fast_length(smooth: int) -> int:
    """The power of two just above the smooth length ``smooth`` where it is at most
    ``CPU_POWER_OF_TWO_MARGIN`` longer, else ``smooth``: the CPU's choice between them, for
    the FFT method's transforms and overlap-save's blocks.

    Example:
        >>> cpu_fast_length(16_200), cpu_fast_length(1_152), cpu_fast_length(4_096)
        (16384, 1152, 4096)
    """
    power_of_two = 1 << max(0, smooth - 1).bit_length()
    return power_of_two if power_of_two <= CPU_POWER_OF_TWO_MARGIN * smooth else smooth


def range_fft_length(T: int, K: int, lo: int, hi: int, device: torch.device) -> int:
    """The FFT length :func:`fft_range` takes for samples ``lo <= n < hi`` of ``T`` samples
    convolved with ``K`` taps: circular aliasing may fall anywhere outside ``[lo, hi)``, so
    "valid" needs about T points, "same" about T + K/2 (the cost model prices this length too).

    Example:
        >>> import torch
        >>> cpu = torch.device("cpu")
        >>> [range_fft_length(8192, 8000, lo, hi, cpu) for lo, hi in ((7999, 8192), (0, 16191))]
        [8192, 16384]
    """
    return fft_length(max(hi, T + K - 1 - lo, T, K, 1), device)


def _sum_spectrum_to(spectrum: torch.Tensor, batch_shape: tuple[int, ...] | None) -> torch.Tensor:
    if batch_shape is None:
        return spectrum
    return spectrum.sum_to_size(*batch_shape, spectrum.shape[-1])


def rows_per_chunk(n_fft: int) -> int:
    """How many rows of ``n_fft`` points :func:`fft_range` transforms at a time without
    autograd on the CPU.

    Example:
        >>> rows_per_chunk(1152) >= 227, rows_per_chunk(1 << 21)
        (True, 2)
    """
    # The FFT spreads a batch's rows over threads: no fewer rows than threads per chunk,
    # except for huge transforms, which are faster and leaner one row at a time (2 cores,
    # 4 rows of 4M points: 417 ms one by one, 545 ms two by two; peak 2x the input, not 3x).
    chunk = SHORT_CHUNK_SAMPLES if n_fft <= SHORT_FFT else CHUNK_SAMPLES
    floor = 1 if n_fft > HUGE_FFT else torch.get_num_threads()
    return max(floor, chunk // n_fft)


def fft_range(
    x: torch.Tensor,
    w: torch.Tensor,
    lo: int,
    hi: int,
    reduce_to: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Samples ``lo <= n < hi`` of the full linear convolution of ``x`` and ``w``.

    The FFT is only as long as those samples need: circular aliasing is allowed wherever it
    falls outside ``[lo, hi)``, so "same" costs about T + K/2 and "valid" about T.
    ``reduce_to`` sums the product spectra to that batch shape before the single inverse FFT.

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` -> ``(*broadcast(bx, bw), hi - lo)`` (or ``reduce_to``);
        ``0 <= lo <= hi <= T + K - 1``.
    """
    T, K = x.shape[-1], w.shape[-1]
    n_fft = range_fft_length(T, K, lo, hi, x.device)
    graph = needs_graph(x, w)
    if graph and reduce_to is None:
        return _FFTRange.apply(x, w, lo, hi, n_fft)
    if graph or reduce_to is not None or w.dim() > 1:
        return _spectra_product_range(x, w, lo, hi, n_fft, reduce_to)
    rows = math.prod(x.shape[:-1])
    per_chunk = rows_per_chunk(n_fft)
    # One row or a few, long transforms: complex FFTs of half the length (_half_fft).
    half_length = takes_half_fft(x, w, n_fft, min(rows, per_chunk))
    # On a GPU memory is plentiful and every extra launch costs: no chunks there. Nor for
    # rows that make one chunk: the loop's output array and copy cost host time (2 x 1,024
    # with 255 taps: 33 us, 27 without; 64 x 1,024: 105 against 94).
    at_once = rows <= per_chunk or x.device.type != "cpu"
    if not at_once and not half_length and rows * n_fft <= WHOLE_BATCH_POINTS:
        # Past one chunk, up to WHOLE_BATCH_POINTS: the batch at once, through work arrays
        # kept between calls where glibc may hand freed ones back to the kernel.
        if rows * n_fft * x.element_size() > retained_bytes() and not under_vmap(x):
            flat = x.reshape(rows, T)
            return _rows_in_kept_arrays(flat, w, n_fft, lo, hi).view(*x.shape[:-1], hi - lo)
        at_once = True
    circular = circular_convolution(w, n_fft, half_length)
    if at_once:
        return _compact(circular(x)[..., lo:hi])
    # Many rows: a few at a time into the output, so the work arrays stay a fraction of the
    # input.
    flat = x.reshape(rows, T)
    out = torch.empty(rows, hi - lo, dtype=x.dtype, device=x.device)
    for first in range(0, rows, per_chunk):
        out[first : first + per_chunk] = circular(flat[first : first + per_chunk])[..., lo:hi]
    return out.reshape(*x.shape[:-1], hi - lo)


def _rows_in_kept_arrays(
    flat: torch.Tensor, w: torch.Tensor, n_fft: int, lo: int, hi: int
) -> torch.Tensor:
    """Samples ``lo <= n < hi`` of the rows' circular convolutions of ``n_fft`` points with
    the one kernel ``w``: the zero-extended rows and their spectra in two work arrays kept
    between calls (``_workspace``), the inverse transform a fresh array whose samples are
    returned as a view (as the one-chunk path returns them).

    Allocated afresh, a batch's spectra (megabytes) were handed back to the kernel on every
    call under glibc's default policy and faulted in again page by page: 1,121-3,426 page
    faults a call in a fresh process, 512 x 1,024 with 255 taps 1.1-2.6 ms, 128 x 4,096 with
    511 2.1-2.7, 1,024 x 1,024 with 255 3.5-5.5, against 0.64-0.74, 0.80-0.85 and 1.29-1.62
    here (and 0.83-0.91, 0.99-1.06 and 1.59-1.70 in chunks of 2**18 points; 2 cores). Once
    freed memory is retained no path faults, and allocating was faster (0.60 against 0.67 ms;
    512 x 1,024 with 1,023 taps 0.76 against 0.87): :func:`fft_range` allocates there
    (``memory.retained_bytes``).

    Batches within one chunk allocate as before. After other shapes in the same process
    their arrays did not fault, and the out= transforms' copies made them 10-25% slower here
    (64 x 2,048 with 255 taps, 16 x 4,096, 32 x 16,384 with 1,023). Repeated alone in a fresh
    process some did fault (32 x 8,000 with 255 taps: 1.14 ms, 0.39 here; 64 x 32,000 with
    511: 7.4-7.6, 3.9-4.3), but others then faulted on this path's output copy instead
    (32 x 16,000 with 255 taps: 0.72 ms allocating, 1.34 here).

    Shape:
        flat ``(rows, T)``, w ``(K,)`` -> ``(rows, hi - lo)``.
    """
    rows, T = flat.shape
    kernel_spectrum = torch.fft.rfft(w, n_fft)
    signal = scratch("fft rows", rows * n_fft, flat.dtype, flat.device).view(rows, n_fft)
    signal[:, :T] = flat
    signal[:, T:] = 0
    bins = n_fft // 2 + 1
    spectrum = scratch("fft spectrum", rows * bins, kernel_spectrum.dtype, flat.device)
    spectrum = torch.fft.rfft(signal, out=spectrum.view(rows, bins))
    spectrum *= kernel_spectrum
    # A fresh inverse, not out=signal and a copy of the samples: out= transforms copy their
    # result, and the fresh array did not fault (its free leaves less at the heap's top than
    # glibc trims). 512 x 1,024 with 255 taps, 2 cores: 0.63 against 0.68-0.72 ms repeated
    # in a fresh process; 1.13-1.21 against 1.23-1.25 among bench_core's peers.
    return _compact(torch.fft.irfft(spectrum, n_fft)[:, lo:hi])


def _compact(samples: torch.Tensor) -> torch.Tensor:
    # The samples kept of an inverse transform, as a view where they are most of it ("same",
    # "full"); copied where they are a small part ("valid" with a long kernel: 97 of 4,096
    # points a row), so that the result does not hold the whole transform's memory.
    return samples.clone() if small_view(samples) else samples


def circular_convolution(
    w: torch.Tensor, n_fft: int, half_length: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The circular convolution of ``n_fft`` points with the kernel ``w``, as a function of
    the rows to convolve, the kernel's part computed once: by complex transforms of half the
    length (``half_length``, :func:`~diffconv_core._half_fft.takes_half_fft`) or by
    rfft/irfft, a one-dimensional kernel's spectrum multiplying the rows' in place.

    Shape:
        w ``(K,)``, or dims that broadcast against the rows' leading ones, then ``K``;
        rows ``(*batch, T)`` with ``T <= n_fft`` -> ``(*broadcast, n_fft)``.

    Example:
        >>> import torch
        >>> circular = circular_convolution(torch.tensor([0.0, 1.0, 0.5]), 6, False)
        >>> circular(torch.tensor([1.0, 2.0, 3.0])).round(decimals=4)
        tensor([0.0000, 1.0000, 2.5000, 4.0000, 1.5000, 0.0000])
    """
    if half_length:
        factors = kernel_factors(w, n_fft)
        return lambda rows: half_fft_circular(rows, factors, n_fft)
    kernel_spectrum = torch.fft.rfft(w, n_fft)

    def circular(rows: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(rows, n_fft)
        if w.dim() == 1:
            spectrum *= kernel_spectrum
        else:  # kernels of their own: the product may be larger than the rows' spectrum
            spectrum = spectrum * kernel_spectrum
        return torch.fft.irfft(spectrum, n_fft)

    return circular


def plain_fft_range(
    x: torch.Tensor,
    w: torch.Tensor,
    lo: int,
    hi: int,
    reduce_to: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """:func:`fft_range` as plain differentiable torch operations, no custom backward and no
    chunks: what forward-mode AD and the ``torch.func`` transforms can see through.

    Shape:
        x ``(*bx, T)``, w ``(*bw, K)`` -> ``(*broadcast(bx, bw), hi - lo)`` (or ``reduce_to``).
    """
    n_fft = range_fft_length(x.shape[-1], w.shape[-1], lo, hi, x.device)
    return _spectra_product_range(x, w, lo, hi, n_fft, reduce_to)


def _spectra_product_range(
    x: torch.Tensor,
    w: torch.Tensor,
    lo: int,
    hi: int,
    n_fft: int,
    reduce_to: tuple[int, ...] | None,
) -> torch.Tensor:
    spectrum = torch.fft.rfft(x, n_fft) * torch.fft.rfft(w, n_fft)
    return _samples(torch.fft.irfft(_sum_spectrum_to(spectrum, reduce_to), n_fft), lo, hi)


class _FFTRange(torch.autograd.Function):
    """:func:`fft_range` with a backward pass of its own.

    Autograd through ``rfft -> multiply -> irfft`` inverts the signal's ``rfft`` with a full
    complex transform, about twice the cost of a real one. Here the output gradient goes
    through one real FFT, whose spectrum times the saved kernel and signal spectra gives both
    gradients with one inverse each (the kernel's summed over the batch first). For a second
    derivative (``create_graph``) the gradients are recomputed from differentiable pieces
    instead: this same Function for the signal, :func:`fft_lagged_products` for the kernel.
    """

    @staticmethod
    def forward(ctx, x, w, lo, hi, n_fft):  # noqa: D102
        rfft, irfft = _real_transforms(x, w, n_fft)
        kernel_spectrum = rfft(w, n_fft)
        ctx.range = (lo, hi, n_fft)
        ctx.transforms = (rfft, irfft)
        if _rows_in_chunks(x, w, n_fft):
            # A few rows at a time, as without autograd; the backward pass transforms each
            # chunk's rows again rather than keep the batch's spectra (n_fft / T of the
            # input) from the forward pass to the backward.
            ctx.save_for_backward(x, w, None, kernel_spectrum)
            # owned: the loop's output comes back as a view (a reshape), which autograd
            # would refuse to let be modified in place (relu_ after the convolution).
            return owned(fft_range(x, w, lo, hi))
        signal_spectrum = rfft(x, n_fft)
        # The signal's spectrum serves the kernel's gradient only.
        kept = signal_spectrum if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(x, w, kept, kernel_spectrum)
        return owned(_samples(irfft(signal_spectrum * kernel_spectrum, n_fft), lo, hi))

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, w, signal_spectrum, kernel_spectrum = ctx.saved_tensors
        lo, hi, n_fft = ctx.range
        T, K = x.shape[-1], w.shape[-1]
        need_x, need_w = ctx.needs_input_grad[:2]
        needed = (need_x, need_w)
        if carries_tangent(grad):  # forward-over-reverse: plain operations, with jvp rules
            pieces = gradients_from_pieces(plain_fft_range, grad, x, w, lo, needed)
            return *pieces, None, None, None
        if torch.is_grad_enabled():  # create_graph: every piece must be differentiable
            pieces_range = plain_fft_range if under_vmap(grad) else fft_range
            pieces = gradients_from_pieces(pieces_range, grad, x, w, lo, needed)
            return *pieces, None, None, None
        grad_x = grad_w = None
        rfft, irfft = ctx.transforms
        rows = _backward_rows(grad, w, n_fft)
        if rows:
            pieces = _chunked_gradients(
                grad, x, w, signal_spectrum, kernel_spectrum, ctx.range, rows, needed
            )
            return *pieces, None, None, None
        if need_w and signal_spectrum is None:  # a vmap-batched gradient after chunks
            signal_spectrum = rfft(x, n_fft)
        # The output is samples lo..hi of a circular convolution of length n_fft: its adjoint
        # puts the gradient back in place and correlates circularly with the other input.
        spectrum = rfft(F.pad(grad, (lo, n_fft - hi)), n_fft)
        if need_x:
            product = _sum_spectrum_to(spectrum * kernel_spectrum.conj(), x.shape[:-1])
            grad_x = _leading(irfft(product, n_fft), T)
        if need_w:
            product = _sum_spectrum_to(spectrum * signal_spectrum.conj(), w.shape[:-1])
            grad_w = _leading(irfft(product, n_fft), K)
        return grad_x, grad_w, None, None, None


def _rows_in_chunks(t: torch.Tensor, w: torch.Tensor, n_fft: int) -> int:
    """Rows per chunk of :class:`_FFTRange` for a batch ``t`` and a shared kernel ``w`` on
    the CPU, or 0 for the whole batch at once. With autograd a batch's spectra, product and
    inverse were alive together: 1,024 x 4,096 with 255 taps, forward+backward, peaked at
    10.5x the input (RSS) and took 22.6 ms, in chunks 6.0x and 15.6 ms (2 cores). Batches
    within WHOLE_BATCH_POINTS, or of few chunks, stay whole: 512 x 1,024 took 2.34 ms in
    chunks against 1.91, and 256 x 16,384 with 1,023 taps (two chunks, one of them nearly
    the whole batch) peaked higher forward, 4.9x against 3.2x. So does CUDA, where every
    chunk costs launches."""
    return _rows_a_chunk(t, w, n_fft, rows_per_chunk(n_fft), whole_up_to=4)


def _rows_a_chunk(
    t: torch.Tensor, w: torch.Tensor, n_fft: int, per_chunk: int, whole_up_to: int
) -> int:
    """``per_chunk``, or 0 where the batch ``t`` goes whole: on CUDA, for kernels of their
    own, under vmap (no writes into slices of an output), within WHOLE_BATCH_POINTS, and
    for batches of at most ``whole_up_to`` chunks."""
    rows = t.numel() // max(t.shape[-1], 1)
    whole = rows <= whole_up_to * per_chunk or rows * n_fft <= WHOLE_BATCH_POINTS
    if t.device.type != "cpu" or w.dim() != 1 or under_vmap(t) or whole:
        return 0
    return per_chunk


#: :class:`_FFTRange`'s backward pass goes through chunks of about this many points (rows x
#: FFT length) on the CPU past WHOLE_BATCH_POINTS, whether its forward pass went in chunks
#: or whole. Whole, the batch's gradient spectrum, product and inverse were alive together
#: besides the kept spectra: peak RSS forward+backward (input, output and gradient counted,
#: 2 cores) 512 x 8,192 with 1,023 taps 8.4x -> 3.0x, 256 x 16,384 7.4x -> 3.4x. Time, median
#: of 21 in three fresh processes each, whole / chunks: 512 x 8,192 24.7-27.2 / 20.4-27.4 ms,
#: 256 x 16,384 20.7-21.9 / 20.6-36.7 (page faults: 18.8-19.8 against 20.1-21.4 once freed
#: memory is retained), 1,024 x 4,096 with 255 taps 18.2-18.6 / 19.6-19.7.
BACKWARD_CHUNK_SAMPLES = 1 << 19


def _backward_rows(grad: torch.Tensor, w: torch.Tensor, n_fft: int) -> int:
    """Rows per chunk of :class:`_FFTRange`'s backward pass on the CPU, or 0 for the whole
    batch at once (on CUDA, for kernels of their own, under vmap, and for small batches)."""
    per_chunk = max(torch.get_num_threads(), BACKWARD_CHUNK_SAMPLES // n_fft)
    return _rows_a_chunk(grad, w, n_fft, per_chunk, whole_up_to=1)


def _chunked_gradients(
    grad: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    signal_spectrum: torch.Tensor | None,
    kernel_spectrum: torch.Tensor,
    span: tuple[int, int, int],
    rows: int,
    needed: tuple[bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:class:`_FFTRange`'s backward pass ``rows`` rows at a time (its forward pass went so):
    each chunk's output gradient through one real FFT, the signal's gradient written row by
    row; for the kernel's gradient the chunk's rows of ``x`` are transformed again, their
    products with the gradient's spectra summed over the chunks before the one inverse.

    Shape:
        grad ``(*batch, hi - lo)``, x ``(*batch, T)``, w ``(K,)`` -> grad_x ``x.shape``,
        grad_w ``(K,)`` (None where not ``needed``).
    """
    lo, hi, n_fft = span
    T, K = x.shape[-1], w.shape[-1]
    flat = grad.reshape(-1, hi - lo)
    signal = x.reshape(flat.shape[0], T)
    if signal_spectrum is not None:
        signal_spectrum = signal_spectrum.reshape(flat.shape[0], -1)
    grad_x = flat.new_empty(flat.shape[0], T) if needed[0] else None
    kernel_sum = None
    for first in range(0, flat.shape[0], rows):
        spectrum = torch.fft.rfft(F.pad(flat[first : first + rows], (lo, n_fft - hi)), n_fft)
        if grad_x is not None:
            grad_x[first : first + rows] = torch.fft.irfft(
                spectrum * kernel_spectrum.conj(), n_fft
            )[:, :T]
        if needed[1]:
            if signal_spectrum is None:
                chunk_spectrum = torch.fft.rfft(signal[first : first + rows], n_fft)
            else:
                chunk_spectrum = signal_spectrum[first : first + rows]
            chunk = (spectrum * chunk_spectrum.conj()).sum(0)
            del chunk_spectrum
            kernel_sum = chunk if kernel_sum is None else kernel_sum + chunk
        del spectrum  # before the next chunk's is made (rebinding kept both alive)
    grad_w = torch.fft.irfft(kernel_sum, n_fft)[:K] if needed[1] else None
    return (None if grad_x is None else grad_x.view(x.shape)), grad_w


def _real_transforms(x: torch.Tensor, w: torch.Tensor, n_fft: int) -> tuple[Callable, Callable]:
    # rfft and irfft for _FFTRange: of half the length for one row and one kernel past
    # _half_fft.MIN_POINTS on the CPU (2 cores, forward+backward of 1 x 48,000 with 4,095
    # taps: 0.80 ms, 1.57 by rfft/irfft; 1 x 480,000 with 16,383: 6.8 against 14.0); torch's
    # otherwise (2 rows of 480,000 gained 1.2x, 4 of 131,072 nothing).
    one_row = x.numel() == x.shape[-1] and w.numel() == w.shape[-1]
    if one_row and takes_half_fft(x, w.reshape(-1), n_fft, 1):
        return half_rfft, half_irfft
    return torch.fft.rfft, torch.fft.irfft


def _leading(t: torch.Tensor, n: int) -> torch.Tensor:
    # The first n samples; the whole tensor when that is all of them: a slice of a whole
    # axis is an alias, which vmap cannot batch (a backward pass with a batched gradient).
    return _samples(t, 0, n)


def _samples(t: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    # Samples lo..hi of the last axis, the tensor itself when they are all of it (as _leading).
    return t if lo == 0 and hi == t.shape[-1] else t[..., lo:hi]


def gradients_from_pieces(
    range_fn: Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor],
    grad: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    lo: int,
    needed: tuple[bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The gradients of ``range_fn(x, w, lo, lo + L)`` (samples of the full convolution) for
    an output gradient ``grad``, built from differentiable calls: the signal's is
    ``range_fn`` again with the kernel flipped (a correlation), the kernel's the lagged
    products :func:`fft_lagged_products`. The backward passes use it where a graph of the
    gradients is wanted (second derivatives); ``needed`` says which of the two to compute.

    Shape:
        grad ``(*batch, L)``, x ``(*bx, T)``, w ``(*bw, K)`` -> like ``x`` and like ``w``.
    """
    T, K = x.shape[-1], w.shape[-1]
    grad_x = grad_w = None
    if needed[0]:
        grad_x = range_fn(grad, w.flip(-1), K - 1 - lo, K - 1 - lo + T).sum_to_size(x.shape)
    if needed[1]:
        grad_w = fft_lagged_products(grad, x, lo, K, reduce_to=tuple(w.shape[:-1]))
        grad_w = grad_w.sum_to_size(w.shape)
    return grad_x, grad_w


def fft_lagged_products(
    g: torch.Tensor,
    x: torch.Tensor,
    lo: int,
    K: int,
    reduce_to: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """``c[k] = sum_m g[m] x[m + lo - k]`` for ``0 <= k < K``: the kernel gradient.

    If ``y = full(x * w)[lo : lo + L]`` and ``g`` is the gradient of the loss with respect to
    ``y``, then ``c`` is the gradient with respect to ``w``. Computed as one cross-correlation
    in the frequency domain, with no flipped copy of ``x``.

    Shape:
        g ``(*bg, L)``, x ``(*bx, T)`` -> ``(*broadcast(bg, bx), K)`` (or ``reduce_to``).
    """
    L, T = g.shape[-1], x.shape[-1]
    n_fft = fft_length(max(T - lo + K - 1, lo + L, T, L, 1), g.device)
    spectrum = torch.fft.rfft(g, n_fft).conj() * torch.fft.rfft(x, n_fft)
    lags = torch.fft.irfft(_sum_spectrum_to(spectrum, reduce_to), n_fft)
    index = (lo - torch.arange(K, device=g.device)).remainder(n_fft)
    return lags.index_select(-1, index)
