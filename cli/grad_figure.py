"""The figure of ``diffconv grad``: waveforms, gradients and the Jacobian on one page.

Pure plotting (numpy arrays in, a PNG out). matplotlib is imported inside the functions, with
the non-interactive Agg backend, so importing this module costs nothing and no display is
needed.
"""

from __future__ import annotations

import os

import numpy as np

#: Width of the figure and height of one panel, in inches, at :data:`DPI`.
FIG_WIDTH = 12.0
PANEL_HEIGHT = 2.8
DPI = 100
#: Inputs longer than this (samples) also get a time-frequency heat map of the gradient,
#: and their curves are drawn as min/max envelopes so the plot stays readable.
LONG_INPUT = 8192
#: Channels drawn at most (the .npy maps hold them all): a curve and a legend entry each,
#: 3,000 channels took 103 s to draw and the legend could not be laid out.
DRAWN_CHANNELS = 8
_ENVELOPE_BINS = 2000


def panel_count(n_samples: int, has_kernel_grad: bool, has_jacobian: bool) -> int:
    """How many panels :func:`write_grad_figure` draws (it fixes the image height)."""
    return 2 + (n_samples > LONG_INPUT) + has_kernel_grad + has_jacobian


def figure_pixels(n_panels: int) -> tuple[int, int]:
    """(width, height) in pixels of a figure with ``n_panels`` panels."""
    return round(FIG_WIDTH * DPI), round(PANEL_HEIGHT * n_panels * DPI)


def _time_axis(n: int, rate: float | None, start: float) -> tuple[np.ndarray, str]:
    if rate:
        return start + np.arange(n) / rate, "time (s)"
    return start + np.arange(n), "time (samples)"


def _plot_curve(ax, t: np.ndarray, y: np.ndarray, label: str, color) -> None:
    # Long curves as a min/max envelope per bin: a million points overdraw to a solid block.
    if len(y) > LONG_INPUT:
        per = -(-len(y) // _ENVELOPE_BINS)  # samples per bin (the last bin is padded)
        padded = np.full(per * _ENVELOPE_BINS, np.nan)
        padded[: len(y)] = y
        blocks = padded.reshape(_ENVELOPE_BINS, per)
        keep = ~np.isnan(blocks).all(axis=1)  # NaN gaps stay gaps
        with np.errstate(all="ignore"):
            lo = np.nanmin(np.where(keep[:, None], blocks, 0.0), axis=1)
            hi = np.nanmax(np.where(keep[:, None], blocks, 0.0), axis=1)
        tb = t[0] + (t[1] - t[0]) * per * np.arange(_ENVELOPE_BINS)
        lo, hi = np.where(keep, lo, np.nan), np.where(keep, hi, np.nan)
        ax.fill_between(tb, lo, hi, color=color, alpha=0.6, linewidth=0, label=label)
    else:
        ax.plot(t, y, color=color, linewidth=0.9, label=label)


def _spectrogram(g: np.ndarray, rate: float, frames: int = 1200, nfft: int = 512):
    """Power of Hann-windowed frames: at most ``frames`` of them, evenly spread over ``g``,
    so the cost and the image size stay bounded whatever the input's length.

    Returns:
        frame centre times (s, from the first sample), frequencies (Hz), power
        ``(n_freqs, n_frames)``.
    """
    nfft = min(nfft, len(g))
    count = min(frames, max(1, (len(g) - nfft) // (nfft // 4) + 1))
    starts = np.linspace(0, len(g) - nfft, count).round().astype(np.int64)
    segments = g[starts[:, None] + np.arange(nfft)] * np.hanning(nfft)
    power = np.abs(np.fft.rfft(segments, axis=-1)) ** 2 / (rate * nfft)
    return (starts + nfft / 2) / rate, np.fft.rfftfreq(nfft, 1 / rate), power.T


def write_grad_figure(
    path: str | os.PathLike,
    *,
    signal: np.ndarray,
    output: np.ndarray,
    grad_signal: np.ndarray | None,
    grad_kernel: np.ndarray | None,
    jacobian: np.ndarray | None = None,
    rate: float | None = None,
    start: float = 0.0,
    title: str = "",
    objective: str = "energy",
) -> tuple[int, int]:
    """Draw the gradient map of one input and save it as a PNG; return its pixel size.

    Shape:
        - signal, grad_signal: ``(C, T)``; output: ``(C, L)``
        - grad_kernel: ``(K,)`` or ``(C, K)``
        - jacobian: ``(L, T)`` (one channel) or ``None``

    ``start`` is the time of the first sample (seconds with ``rate``, else samples), so an
    excerpt is drawn on the input's time axis.
    """
    from cli.agg import pyplot

    plt = pyplot()

    signal = np.atleast_2d(signal)
    n_ch, n = signal.shape
    if n_ch > DRAWN_CHANNELS:
        drawn = f"channels 0-{DRAWN_CHANNELS - 1} of {n_ch} drawn"
        title = f"{title} ({drawn})" if title else drawn
    signal = signal[:DRAWN_CHANNELS]
    output = np.atleast_2d(output)[:DRAWN_CHANNELS]
    if grad_signal is not None:
        grad_signal = np.atleast_2d(grad_signal)[:DRAWN_CHANNELS]
    if grad_kernel is not None:
        grad_kernel = np.atleast_2d(grad_kernel)[:DRAWN_CHANNELS]
    n_ch = signal.shape[0]
    unit = "s" if rate else "samples"
    # The signal gradient is drawn even when not computed (as a note), so it always has a row.
    n_panels = panel_count(n, grad_kernel is not None, jacobian is not None)
    width, height = figure_pixels(n_panels)
    # constrained layout keeps titles, labels and colour bars from overlapping.
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    try:
        grid = fig.add_gridspec(n_panels, 3)
        # Every panel spans the page, except the Jacobian's row, which shares it with a zoom.
        axes = [fig.add_subplot(grid[i, :]) for i in range(n_panels - (jacobian is not None))]
        if jacobian is not None:
            axes.append(fig.add_subplot(grid[n_panels - 1, :2]))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        t, t_label = _time_axis(n, rate, start)
        row = iter(axes)

        ax = next(row)
        for c in range(n_ch):
            _plot_curve(ax, t, signal[c], f"input ch{c}", colors[(2 * c) % len(colors)])
        # In "full"/"valid" modes the output is longer/shorter: centre it on the input.
        shift = (output.shape[1] - n) / 2
        t_out, _ = _time_axis(output.shape[1], rate, start - (shift / rate if rate else shift))
        for c in range(output.shape[0]):
            _plot_curve(ax, t_out, output[c], f"output ch{c}", colors[(2 * c + 1) % len(colors)])
        ax.set(title="Input and filtered output", xlabel=t_label, ylabel="amplitude")
        ax.legend(loc="upper right", fontsize="small", ncol=2)

        ax = next(row)
        if grad_signal is not None:
            grad_signal = np.atleast_2d(grad_signal)
            for c in range(grad_signal.shape[0]):
                _plot_curve(ax, t, grad_signal[c], f"ch{c}", colors[c % len(colors)])
            ax.axhline(0.0, color="0.6", linewidth=0.6)
            ax.legend(loc="upper right", fontsize="small")
        else:
            ax.text(
                0.5,
                0.5,
                "signal gradient not requested",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set(
            title=f"Signal gradient d {objective} / d input",
            xlabel=t_label,
            ylabel=f"d {objective} / d x",
        )

        if n > LONG_INPUT and grad_signal is None:
            ax = next(row)  # said, as in the panel above, rather than a spectrogram of zeros
            ax.text(0.5, 0.5, "signal gradient not requested", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
            ax.set(title="Signal gradient, time-frequency (channel 0)")
        elif n > LONG_INPUT:
            ax = next(row)
            times, freqs, power = _spectrogram(np.nan_to_num(grad_signal[0]), rate or 1.0)
            db = 10 * np.log10(power + np.finfo(float).tiny)
            finite_max = float(db.max())
            mesh = ax.pcolormesh(
                start + times,
                freqs,
                db,
                shading="auto",
                cmap="magma",
                vmin=finite_max - 80,
                vmax=finite_max,
            )
            fig.colorbar(mesh, ax=ax, label="power (dB)", pad=0.01)
            ax.set(
                title="Signal gradient, time-frequency (channel 0)",
                xlabel=t_label,
                ylabel="frequency (Hz)" if rate else "frequency (cycles/sample)",
            )

        if grad_kernel is not None:
            ax = next(row)
            gk = np.atleast_2d(grad_kernel)
            taps = np.arange(gk.shape[1])
            for c in range(gk.shape[0]):
                stem = ax.stem(
                    taps, gk[c], basefmt=" ", label=f"kernel {c}" if gk.shape[0] > 1 else "kernel"
                )
                plt.setp(stem.markerline, color=colors[c % len(colors)], markersize=3)
                plt.setp(stem.stemlines, color=colors[c % len(colors)], linewidth=0.8)
            ax.axhline(0.0, color="0.6", linewidth=0.6)
            ax.set(
                title=f"Kernel gradient d {objective} / d tap",
                xlabel="tap (index)",
                ylabel=f"d {objective} / d w",
            )

        if jacobian is not None:
            ax = next(row)
            vmax = float(np.abs(jacobian).max()) or 1.0
            length = jacobian.shape[0]
            step = 1 / rate if rate else 1
            t0_out = t_out[0] if length == output.shape[1] else start
            im = ax.imshow(
                jacobian,
                aspect="auto",
                origin="upper",
                cmap="RdBu_r",
                vmin=-vmax,
                vmax=vmax,
                extent=(t[0], t[-1] + step, t0_out + length * step, t0_out),
                interpolation="antialiased",
            )
            ax.set(
                title="Jacobian d output / d input (channel 0)",
                xlabel=f"input {t_label}",
                ylabel=f"output time ({unit})",
            )
            # Zoom on the first rows: the band and how the padding folds in at the edge.
            zoom = fig.add_subplot(grid[n_panels - 1, 2])
            taps = np.atleast_2d(grad_kernel).shape[1] if grad_kernel is not None else 16
            m = int(min(length, n, max(3 * taps, 12)))
            zoom.imshow(
                jacobian[:m, :m],
                aspect="auto",
                origin="upper",
                cmap="RdBu_r",
                vmin=-vmax,
                vmax=vmax,
                extent=(-0.5, m - 0.5, m - 0.5, -0.5),
                interpolation="nearest",
            )
            zoom.set(
                title=f"first {m} x {m} (edge rows: padding)",
                xlabel="input sample (in excerpt)",
                ylabel="output sample",
            )
            fig.colorbar(im, ax=[ax, zoom], label="d output / d input", pad=0.01)

        if title:
            fig.suptitle(title)
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return width, height
