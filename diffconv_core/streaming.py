"""Stateful overlap-save convolution of a signal that arrives block by block.

A file too long to hold in memory is filtered as a stream: each :meth:`StreamingConvolver.push`
returns every output sample that the input seen so far determines, and
:meth:`StreamingConvolver.flush` returns the rest once the end is known. Concatenating all the
returned pieces equals ``convolve(whole, kernel, mode, padding=padding)`` (or ``correlate``)
for any block sizes.

How: the whole-signal result is a ``"valid"`` convolution of the padded signal
``[left pad, signal, right pad]``, whose widths follow from the mode (``full``: ``K-1`` and
``K-1``; ``same``: ``K//2`` and ``(K-1)//2``, scipy's centring; ``valid``: none). The
convolver keeps the last ``K-1`` samples of that padded stream between pushes and runs the
core's ``"valid"`` convolution on ``[kept samples, new block]``: the overlap-save step. The
math is all the core's; this module only buffers. The left pad is built (with
:func:`diffconv_core.padding.pad`) once enough of the signal's start has arrived, the right
pad at :meth:`~StreamingConvolver.flush` from the kept end (or, for ``circular``, the kept
start). A signal shorter than the pads is still wholly kept at that point, and then the core
simply runs on all of it.

Memory stays ``O(K + block)``, with one exception: ``circular`` padding extends the start
with the signal's *end*, so unless the caller hands that end over up front
(``circular_tail=``, e.g. read from a seekable file), no output can be emitted before
:meth:`~StreamingConvolver.flush` and the whole signal is kept.

:class:`StreamingSmoother` streams :func:`diffconv_core.smooth.smooth` with every option
(``edges="renormalize"``, ``nan_policy="omit"`` ...) by running ``smooth`` itself on
overlapping chunks and keeping the outputs that the chunk's artificial ends do not reach.
"""

from __future__ import annotations

import math
import operator

import torch

from diffconv_core._validation import (
    MODES,
    broadcast_shapes,
    check_choice,
    check_count,
    check_device,
    check_flag,
    check_tensor,
    needs_graph,
)

__all__ = ["StreamingConvolver", "StreamingSmoother", "stream_convolve", "mode_pads"]


def mode_pads(mode: str, kernel_length: int) -> tuple[int, int]:
    """Left and right pad widths that turn ``mode`` into a ``"valid"`` convolution.

    ``same`` centres as ``scipy.signal.convolve``/``correlate`` do, even lengths included.

    Shape:
        returns two ints.

    Example:
        >>> from diffconv_core.streaming import mode_pads
        >>> mode_pads("same", 4), mode_pads("full", 4), mode_pads("valid", 4)
        ((2, 1), (3, 3), (0, 0))
    """
    check_choice("mode", mode, MODES)
    kernel_length = check_count(kernel_length, "kernel_length")
    if mode == "full":
        return kernel_length - 1, kernel_length - 1
    if mode == "same":
        return kernel_length // 2, (kernel_length - 1) // 2
    return 0, 0


def _cat(first: torch.Tensor | None, second: torch.Tensor) -> torch.Tensor:
    return second if first is None else torch.cat([first, second], dim=-1)


def _made_in_inference_mode(t: torch.Tensor | None) -> bool:
    """Whether ``t``, kept from an earlier call, was made under ``torch.inference_mode``
    and cannot serve this one (written in place, or saved for a backward pass)."""
    return t is not None and t.is_inference() and not torch.is_inference_mode_enabled()


def _check_block(
    block: object, lead: torch.Size | None, device: torch.device | None, flushed: bool
) -> tuple[torch.Size, torch.device]:
    """Validate a pushed block against the first one's leading shape ``lead`` and
    ``device`` (None before the first); return those every block must keep."""
    if flushed:
        raise RuntimeError("push() after flush(); call reset() to start a new signal")
    if not isinstance(block, torch.Tensor):
        raise TypeError(f"block must be a torch.Tensor; got {type(block).__name__}")
    if block.dim() == 0:
        raise ValueError("block must have at least one dimension (time last); got a 0-d tensor")
    if block.is_complex() or not block.is_floating_point():
        # Every block, not only the first: a later integer block was promoted by the join.
        raise TypeError(f"block must be a real floating-point tensor; got dtype {block.dtype}")
    if lead is not None and block.shape[:-1] != lead:
        raise ValueError(
            f"every block must have the leading shape of the first, {tuple(lead)}; "
            f"got block shape {tuple(block.shape)}"
        )
    if device is not None and block.device != device:
        raise ValueError(
            f"every block must be on the first block's device, {device}; got a block on "
            f"{block.device}"
        )
    return block.shape[:-1], block.device


def _check_circular_tail_option(tail: object, option: str, value: str) -> None:
    """``circular_tail`` is given only with circular padding (``option``), as a tensor."""
    if tail is None:
        return
    if value != "circular":
        raise ValueError(f"circular_tail applies only to {option}='circular'; got {value!r}")
    if not (isinstance(tail, torch.Tensor) and tail.dim() > 0):
        raise TypeError(
            "circular_tail must be a torch.Tensor (..., n) of the signal's last samples; "
            f"got {tail!r}"
        )


def _check_flush(flushed: bool, n_in: int) -> None:
    """Refuse a second flush, and a flush of a signal that never had a sample."""
    if flushed:
        raise RuntimeError("flush() called twice; call reset() to start a new signal")
    if n_in == 0:
        raise ValueError("no signal samples were pushed; the signal must not be empty")


class StreamingConvolver:
    """Convolve (or correlate) a stream of blocks with one kernel, overlap-save style.

    Args:
        kernel: ``(K,)`` shared by every channel, or ``(..., K)`` broadcasting against the
            blocks' leading dims (e.g. ``(C, K)``: one kernel per channel).
        mode: "full", "same" or "valid", as in :func:`diffconv_core.convolve`.
        padding: "zeros", "reflect", "symmetric", "replicate" or "circular" (not with
            "valid"), as in :func:`diffconv_core.convolve`.
        correlate: correlate instead of convolve (the kernel is not flipped).
        method: passed to the core for every block ("auto", "direct", "fft", "overlap").
        circular_tail: only for ``padding="circular"``: the last samples of the whole signal
            (at least the left pad width, ``(..., n)``), so that outputs can stream; checked
            against the real end at :meth:`flush`. Without it, circular padding keeps the
            whole signal until :meth:`flush`.

    Shape:
        every pushed block ``(..., n)`` with the same leading dims (``n`` may differ and may be
        0); outputs ``(*broadcast(leading, kernel leading), m)``. All outputs concatenated along
        the last axis have the length of the whole-signal result.

    Example:
        >>> import torch
        >>> from diffconv_core import convolve
        >>> from diffconv_core.streaming import StreamingConvolver
        >>> x, k = torch.randn(2, 100, dtype=torch.float64), torch.rand(7, dtype=torch.float64)
        >>> conv = StreamingConvolver(k, mode="same", padding="reflect")
        >>> pieces = [conv.push(b) for b in x.split(13, dim=-1)] + [conv.flush()]
        >>> torch.allclose(torch.cat(pieces, dim=-1), convolve(x, k, "same", padding="reflect"))
        True
    """

    def __init__(
        self,
        kernel: torch.Tensor,
        mode: str = "same",
        padding: str = "zeros",
        correlate: bool = False,
        method: str = "auto",
        *,
        circular_tail: torch.Tensor | None = None,
    ) -> None:
        from diffconv_core.convolution import _check_options

        # The core's own checks, so that errors read the same as convolve()'s.
        _check_options(mode, padding, method)
        check_tensor("kernel", kernel)  # now rather than at the first push
        _check_circular_tail_option(circular_tail, "padding", padding)
        self.kernel = kernel
        self.mode = mode
        self.padding = padding
        self.correlate = check_flag(correlate, "correlate")
        self.method = method
        self.circular_tail = circular_tail
        k = kernel.shape[-1]
        self._left, self._right = mode_pads(mode, k)
        # Enough of the end for any right pad (reflect needs R + 1 <= K samples); a signal no
        # longer than this is wholly kept, which covers every short-signal special case.
        self._keep = k + 1
        self._start_need = self._samples_for_left_pad()
        self.reset()

    def _samples_for_left_pad(self) -> float:
        """How many signal samples the left pad needs before the stream can start."""
        left = self._left
        if left == 0 or self.padding == "zeros":
            return 0
        if self.padding == "replicate":
            return 1
        if self.padding == "symmetric":
            return left
        if self.padding == "reflect":
            return left + 1
        # circular: the left pad is the signal's end
        return left if self.circular_tail is not None else float("inf")

    def reset(self) -> None:
        """Forget the stream, ready for a new signal with the same kernel and options."""
        self._lead: torch.Size | None = None  # leading dims of the pushed blocks
        self._device: torch.device | None = None  # the pushed blocks' device
        self._collected: list[torch.Tensor] = []  # signal start, before the left pad is known
        self._n_collected = 0
        self._stream: torch.Tensor | None = None  # unconsumed part of the padded stream
        self._recent: torch.Tensor | None = None  # the signal's last `_keep` samples
        self._first: torch.Tensor | None = None  # the signal's first R samples (circular)
        self._n_in = 0
        self._n_out = 0
        self._flushed = False

    @property
    def samples_in(self) -> int:
        """Signal samples pushed so far."""
        return self._n_in

    @property
    def samples_out(self) -> int:
        """Output samples returned so far."""
        return self._n_out

    @property
    def buffered_samples(self) -> int:
        """Samples (per channel) held between pushes: ``O(K)``, or the whole signal for
        circular padding without ``circular_tail``."""
        held = self._n_collected
        for buf in (self._stream, self._recent, self._first):
            held += 0 if buf is None else buf.shape[-1]
        return held

    def _run(self, signal: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
        import diffconv_core

        fn = diffconv_core.correlate if self.correlate else diffconv_core.convolve
        return fn(signal, self.kernel, mode, padding=padding, method=self.method)

    def _empty(self, like: torch.Tensor) -> torch.Tensor:
        try:
            lead = broadcast_shapes(like.shape[:-1], self.kernel.shape[:-1])
        except ValueError:
            raise ValueError(
                f"the leading dimensions of block {tuple(like.shape)} and kernel "
                f"{tuple(self.kernel.shape)} must broadcast (time is the last axis; a kernel "
                "(K,) is shared by every signal)"
            ) from None
        dtype = torch.promote_types(like.dtype, self.kernel.dtype)
        return like.new_zeros((*lead, 0), dtype=dtype)

    def _left_pad(self, start: torch.Tensor) -> torch.Tensor:
        from diffconv_core.padding import pad

        left = self._left
        if self.padding == "circular":
            return self._tail_pad(start)
        # `start` holds enough samples that its left extension equals the whole signal's
        return pad(start, left, 0, self.padding)[..., :left]

    def _tail_pad(self, start: torch.Tensor) -> torch.Tensor:
        """The circular left pad: the tail's last ``left`` samples, one row per signal row.

        Checked here, once the signal is known to be at least ``left`` long (a shorter signal
        may come with a shorter tail): a short or misshapen tail failed inside torch.expand.
        """
        left, tail, lead = self._left, self.circular_tail, start.shape[:-1]
        if tail.shape[-1] < left:
            raise ValueError(
                f"circular_tail must hold the signal's last {left} samples (the left pad of "
                f"mode {self.mode!r} with {self.kernel.shape[-1]} taps); got shape "
                f"{tuple(tail.shape)}"
            )
        try:
            return tail[..., -left:].to(start).expand(*lead, left)
        except RuntimeError:
            raise ValueError(
                f"circular_tail of shape {tuple(tail.shape)} does not broadcast to the blocks' "
                f"leading shape {tuple(lead)}"
            ) from None

    def _drain(self) -> torch.Tensor:
        """Every output the kept stream determines; keep its last K-1 samples."""
        k = self.kernel.shape[-1]
        stream = self._stream
        if stream.shape[-1] < k:
            return self._empty(stream)
        out = self._run(stream, "valid", "zeros")
        self._stream = stream[..., out.shape[-1] :]
        self._n_out += out.shape[-1]
        return out

    def push(self, block: torch.Tensor) -> torch.Tensor:
        """Feed the next ``block`` of the signal; return the outputs it completes.

        Shape:
            ``(..., n)`` -> ``(..., m)``, ``m`` >= 0.
        """
        lead, device = _check_block(block, self._lead, self._device, self._flushed)
        if self._lead is None:  # the blocks against the kernel, named as the caller gave them
            self._empty(block)
        # Only a block accepted sets the stream's shape: a refused first block had fixed it,
        # and every right block after it was refused too.
        self._lead, self._device = lead, device
        self._n_in += block.shape[-1]
        # Slices of views would pin each caller's whole block; cloning keeps memory O(K).
        self._recent = _cat(self._recent, block)[..., -self._keep :].clone()
        if self.padding == "circular" and self._right > 0:
            self._first = _cat(self._first, block)[..., : self._right].clone()
        if self._stream is None:
            # A list, so that circular padding without a tail does not copy O(T^2); of
            # copies, since a caller may refill its block's buffer for the next push.
            self._collected.append(block.clone())
            self._n_collected += block.shape[-1]
            if self._n_collected < self._start_need or self._n_collected == 0:
                return self._empty(block)
            start = torch.cat(self._collected, dim=-1)
            self._collected = []
            self._n_collected = 0
            self._stream = (
                torch.cat([self._left_pad(start), start], dim=-1) if self._left else start
            )
        else:
            self._stream = torch.cat([self._stream, block], dim=-1)
        return self._drain()

    def flush(self) -> torch.Tensor:
        """Signal the end; return the remaining outputs (the mode's end padding applied).

        Shape:
            ``(..., m)``, ``m`` >= 0.
        """
        _check_flush(self._flushed, self._n_in)
        self._flushed = True
        whole = None
        if self._stream is None:  # the stream never started: everything is still collected
            whole = torch.cat(self._collected, dim=-1)
        elif self._n_in <= self._keep:
            whole = self._recent
        if self.circular_tail is not None and self._n_in >= self._left:
            self._check_circular_tail()
        if whole is not None:
            # Short signal (or circular without a tail): the core runs on all of it.
            out = self._run(whole, self.mode, self.padding)[..., self._n_out :]
            self._n_out += out.shape[-1]
        else:
            right = self._right
            if right:
                self._stream = torch.cat([self._stream, self._right_pad(right)], dim=-1)
            out = self._drain()  # counts its outputs itself
        self._collected = []
        self._n_collected = 0
        self._stream = self._recent = self._first = None
        return out

    def _right_pad(self, right: int) -> torch.Tensor:
        from diffconv_core.padding import pad

        recent = self._recent  # longer than `right`, so its extension is the whole signal's
        if self.padding == "circular":
            return self._first
        if self.padding == "zeros":
            return recent.new_zeros((*recent.shape[:-1], right))
        return pad(recent, 0, right, self.padding)[..., -right:]

    def _check_circular_tail(self) -> None:
        left = self._left
        if left == 0:
            return
        given = self.circular_tail[..., -left:].to(self._recent)
        actual = self._recent[..., -left:]
        # NaN != NaN, yet a NaN in the tail matches one in the signal.
        if given.shape[-1] < left or not bool(
            ((given.expand_as(actual) == actual) | given.isnan() & actual.isnan()).all()
        ):
            raise ValueError(
                "circular_tail does not match the signal's last "
                f"{left} samples; the outputs at the start are wrong"
            )


def stream_convolve(
    blocks,
    kernel: torch.Tensor,
    mode: str = "same",
    *,
    padding: str = "zeros",
    correlate: bool = False,
    method: str = "auto",
):
    """Yield the convolution of a stream of blocks, piece by piece (a generator).

    Shape:
        blocks ``(..., n_i)`` -> pieces ``(..., m_j)``; concatenated, the whole-signal result.

    Example:
        >>> import torch
        >>> from diffconv_core.streaming import stream_convolve
        >>> x = torch.arange(10.0)
        >>> pieces = stream_convolve(x.split(3), torch.ones(3), "full")
        >>> torch.cat(list(pieces)).round().tolist()
        [0.0, 1.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0, 17.0, 9.0]
    """
    conv = StreamingConvolver(kernel, mode, padding, correlate, method)
    for block in blocks:
        out = conv.push(block)
        if out.shape[-1]:
            yield out
    yield conv.flush()


class StreamingSmoother:
    """Stream :func:`diffconv_core.smooth.smooth` block by block, with any of its options.

    ``smooth`` is local: an output depends on the input within one window length of it, plus,
    near the ends, on the edge rule (a pad built from the first or last samples, the in-signal
    window mass for ``edges="renormalize"``, the valid neighbours for ``nan_policy="omit"``).
    So the convolver keeps a margin of ``length`` samples on each side of the outputs it has
    not emitted, runs ``smooth`` itself on ``[margin, new samples]``, and keeps only outputs
    whose window touches neither of that chunk's artificial ends. The true start and end are
    the chunk's real ends, so the edge rule applies exactly there; no smoothing math is
    repeated here, and the result is ``smooth(whole, ...)`` to float tolerance.

    ``edges="circular"`` wraps the end around to the start, which is not local: given the
    signal's end up front (``circular_tail=``, e.g. read from a seekable file), the stream
    starts from it and keeps the first ``length`` samples for the end; without it, the whole
    signal is kept and smoothed at :meth:`flush`.

    Args:
        window, length, edges, nan_policy, **window_params: as :func:`diffconv_core.smooth.smooth`.
        circular_tail: only for ``edges="circular"``: the whole signal's last samples
            ``(..., n)`` (at least ``length``, or all of a shorter signal), checked at
            :meth:`flush`.
        dtype, device: if given, every pushed block is first moved to them (e.g. a file's
            float32 blocks to float64 on a GPU; integer blocks are converted, complex ones
            refused).

    Shape:
        blocks ``(..., n)`` with the same leading dims -> pieces ``(..., m)``; concatenated,
        ``(..., T)`` like ``smooth``.

    Example:
        >>> import torch
        >>> from diffconv_core.smooth import smooth
        >>> from diffconv_core.streaming import StreamingSmoother
        >>> x = torch.randn(2, 300, dtype=torch.float64)
        >>> x[0, 100:120] = float("nan")
        >>> sm = StreamingSmoother("hann", 15, edges="renormalize", nan_policy="omit")
        >>> y = torch.cat([sm.push(b) for b in x.split(40, dim=-1)] + [sm.flush()], dim=-1)
        >>> ref = smooth(x, "hann", 15, edges="renormalize", nan_policy="omit")
        >>> torch.allclose(y, ref, equal_nan=True)
        True
    """

    def __init__(
        self,
        window: str = "hann",
        length: int = 31,
        *,
        edges: str = "reflect",
        nan_policy: str = "propagate",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        circular_tail: torch.Tensor | None = None,
        **window_params,
    ) -> None:
        try:
            valid_length = not isinstance(length, bool) and operator.index(length) >= 1
        except TypeError:
            valid_length = False
        if not valid_length:
            raise ValueError(f"length must be a positive integer; got {length!r}")
        length = operator.index(length)
        # Checked now, as StreamingConvolver checks its options, rather than once a block
        # has filled or at flush().
        from diffconv_core._window_build import check_param_names, result_dtype
        from diffconv_core.smooth import EDGES, NAN_POLICIES
        from diffconv_core.windows import _resolve_name

        check_choice("edges", edges, EDGES)
        check_choice("nan_policy", nan_policy, NAN_POLICIES)
        _check_circular_tail_option(circular_tail, "edges", edges)
        # get_window's own keywords (sym, width) and smooth's method are not the window's.
        params = {k: v for k, v in window_params.items() if k not in ("method", "sym", "width")}
        # Resolved on a copy: a (name, *params) tuple's values join it, and passed again
        # with the tuple to get_window they were "given twice".
        resolved = dict(params)
        spec, _ = _resolve_name(window, resolved)
        check_param_names(spec, resolved)
        trial = None
        if not any(isinstance(v, torch.Tensor) for v in window_params.values()):
            # A missing parameter or a window that sums to zero (hann of length 2) fails
            # here rather than at the first push; tensor parameters are checked there.
            from diffconv_core.windows import get_window

            shape_options = {k: window_params[k] for k in ("sym", "width") if k in window_params}
            trial = get_window(
                window, length, normalize="sum", dtype=torch.float64, **params, **shape_options
            )
        self.window = window
        self.length = length
        self.edges = edges
        self.nan_policy = nan_policy
        self.window_params = window_params
        # Checked now: a bad one failed at the first push with torch's own message.
        self.dtype = None if dtype is None else result_dtype(dtype, [])
        self.device = None if device is None else check_device(device)
        # Reach of one output in each direction, generously rounded up so that any centring
        # convention of even lengths is covered.
        self._margin = length
        self.circular_tail = circular_tail
        self._local = edges != "circular" or circular_tail is not None
        self._window: torch.Tensor | None = trial  # kept for float64 blocks where it was built
        self._window_for: tuple | None = None if trial is None else (trial.dtype, trial.device)
        self._store: torch.Tensor | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the stream, ready for a new signal with the same options."""
        self._lead: torch.Size | None = None
        self._device: torch.device | None = None
        self._pieces: list[torch.Tensor] = []  # unconsumed signal: x[start:]
        self._start = 0  # signal index of the first kept sample
        self._n_in = 0
        self._n_out = 0
        self._flushed = False
        self._head: torch.Tensor | None = None  # the first samples: the end's circular pad
        self._wrapped = False  # the signal's end was put before its start (circular_tail)

    @property
    def buffered_samples(self) -> int:
        """Samples (per channel) held between pushes: ``O(length + block)``."""
        return self._n_in - self._start

    def _window_like(self, chunk: torch.Tensor) -> torch.Tensor:
        from diffconv_core.windows import get_window

        params = dict(self.window_params)
        params.pop("method", None)
        key = (chunk.dtype, chunk.device)
        # Built once per stream, not once per block (a 4,095-tap window cost 1 ms a block),
        # unless its parameters are learnable: then each chunk gets a fresh graph.
        learnable = self._learnable_window()
        if learnable or self._window_for != key or _made_in_inference_mode(self._window):
            self._window = get_window(
                self.window,
                self.length,
                normalize="sum",
                dtype=chunk.dtype,
                device=chunk.device,
                **params,
            )
            self._window_for = None if learnable else key
        return self._window

    def _smooth(self, chunk: torch.Tensor) -> torch.Tensor:
        from diffconv_core.smooth import smooth_with_window

        method = self.window_params.get("method", "auto")
        window = self._window_like(chunk)
        return smooth_with_window(
            chunk, window, edges=self.edges, nan_policy=self.nan_policy, method=method
        )

    def _nothing_yet(self, block: torch.Tensor) -> torch.Tensor:
        # No output yet, shaped as the outputs will be: window parameters with leading dims
        # (one window per row) broadcast against the signal's.
        window = self._window_like(block)
        try:
            lead = broadcast_shapes(block.shape[:-1], window.shape[:-1])
        except ValueError:
            raise ValueError(
                "the leading dimensions of a block and of the window must broadcast; got "
                f"block shape {tuple(block.shape)} and window shape {tuple(window.shape)} "
                "(time is the last axis)"
            ) from None
        return block.new_zeros((*lead, 0))

    def push(self, block: torch.Tensor) -> torch.Tensor:
        """Feed the next ``block``; return the smoothed samples it completes.

        Shape:
            ``(..., n)`` -> ``(..., m)``, ``m`` >= 0.
        """
        if isinstance(block, torch.Tensor) and (self.dtype is not None or self.device is not None):
            if block.is_complex():  # the conversion would drop the imaginary part
                raise TypeError(
                    f"block must be a real tensor (integer or floating); got dtype {block.dtype}"
                )
            block = block.to(device=self.device, dtype=self.dtype)
        lead, device = _check_block(block, self._lead, self._device, self._flushed)
        if self._lead is None:  # against the window's leading dims, before anything is kept
            self._nothing_yet(block)
        if self.nan_policy == "raise":
            self._refuse_nan(block)
        self._lead, self._device = lead, device
        self._pieces.append(block)
        self._n_in += block.shape[-1]
        margin = self._margin
        if self.circular_tail is not None and (self._head is None or self._head_short()):
            self._head = block if self._head is None else torch.cat([self._head, block], -1)
            self._head = self._head[..., :margin].clone()  # not a view of the caller's block
        # Until 2 * margin + 2 samples have arrived the signal may still turn out shorter than
        # its edge pads (which then wrap around), so nothing is final yet.
        if not self._local or self._n_in < 2 * margin + 2:
            # Kept for a later push: a copy, as the caller may refill its block meanwhile.
            self._pieces[-1] = self._pieces[-1].clone()
            return self._nothing_yet(block)
        if self.circular_tail is not None and not self._wrapped:
            # The first outputs: their left context is the signal's end, wrapped around. The
            # chunk's own (circular) edges then lie beyond every output kept, as elsewhere.
            self._pieces.insert(0, self._tail_like(block)[..., -margin:])
            self._start, self._wrapped = -margin, True
        chunk = self._joined()
        end = self._n_in - margin  # outputs before `end` do not reach the chunk's fake end
        out = self._smooth(chunk)[..., self._n_out - self._start : end - self._start]
        if self._store is not None and _same_storage(out, self._store):
            out = out.clone()  # the storage is refilled by the next push
        self._n_out = end
        # Keep `margin` samples before the next output: its left context.
        self._start = end - margin
        self._pieces = [chunk[..., self._start - (self._n_in - chunk.shape[-1]) :].clone()]
        return out

    def _learnable_window(self) -> bool:
        return any(
            isinstance(v, torch.Tensor) and v.requires_grad for v in self.window_params.values()
        )

    def _joined(self) -> torch.Tensor:
        """The kept margin and the new samples as one contiguous tensor, in storage reused
        from push to push when nothing is recorded for autograd (fresh megabytes each block
        cost more in page faults than the copy itself). A recorded smoothing may keep the
        chunk for its backward pass, so then every chunk is new: a learnable window too."""
        pieces = self._pieces
        first = pieces[0]
        if (
            needs_graph(*pieces)
            or self._learnable_window()
            or any(p.dtype != first.dtype or p.device != first.device for p in pieces)
        ):
            return torch.cat(pieces, dim=-1)  # recorded, or types to promote: as it comes
        shape = (*first.shape[:-1], sum(p.shape[-1] for p in pieces))
        size = math.prod(shape)
        store = self._store
        if (
            store is None
            or store.numel() < size
            or store.dtype != first.dtype
            or store.device != first.device
            or _made_in_inference_mode(store)
        ):
            store = self._store = first.new_empty(size)
        return torch.cat(pieces, dim=-1, out=store[:size].view(shape))

    def _refuse_nan(self, block: torch.Tensor) -> None:
        # smooth() would only see one chunk: name the index in the whole signal instead.
        missing = torch.isnan(block)
        if bool(missing.any()):
            first = missing.reshape(-1, block.shape[-1]).any(0).nonzero()[0].item()
            raise ValueError(
                f"signal contains NaN sample(s) (first at time index {self._n_in + first}); "
                "use nan_policy='omit' to skip them or 'propagate' to keep them"
            )

    def flush(self) -> torch.Tensor:
        """Signal the end; return the remaining smoothed samples.

        Shape:
            ``(..., m)``, ``m`` >= 0.
        """
        _check_flush(self._flushed, self._n_in)
        self._flushed = True
        chunk = torch.cat(self._pieces, dim=-1)
        self._pieces = []
        if not self._wrapped:  # the chunk's ends are the signal's
            return self._smooth(chunk)[..., self._n_out - self._start :]
        self._check_circular_tail(chunk)
        # The end's right context is the signal's start, wrapped around.
        chunk = torch.cat([chunk, self._head.to(chunk).expand(*chunk.shape[:-1], -1)], dim=-1)
        return self._smooth(chunk)[..., self._n_out - self._start : self._n_in - self._start]

    def _head_short(self) -> bool:
        return self._head.shape[-1] < self._margin

    def _tail_like(self, block: torch.Tensor) -> torch.Tensor:
        tail = self.circular_tail.to(block)
        if tail.shape[-1] < self._margin:
            raise ValueError(
                f"circular_tail must hold the signal's last {self._margin} samples (the "
                f"window's reach); got {tail.shape[-1]}"
            )
        try:
            return tail.expand(*block.shape[:-1], tail.shape[-1])
        except RuntimeError:
            raise ValueError(
                f"circular_tail of shape {tuple(tail.shape)} does not broadcast to the blocks' "
                f"leading dims {tuple(block.shape[:-1])}"
            ) from None

    def _check_circular_tail(self, chunk: torch.Tensor) -> None:
        given = self._tail_like(chunk)[..., -self._margin :]
        actual = chunk[..., -self._margin :]
        # NaN != NaN, yet a NaN in the tail matches one in the signal.
        if not bool(((given == actual) | given.isnan() & actual.isnan()).all()):
            raise ValueError(
                f"circular_tail does not match the signal's last {self._margin} samples; "
                "the outputs at the start are wrong"
            )


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
