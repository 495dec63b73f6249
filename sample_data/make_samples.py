"""Regenerate the files in ``sample_data/`` (deterministic: fixed seeds, fixed formats).

Run from anywhere: ``python sample_data/make_samples.py``. Everything is synthetic, so the
files carry no licence questions, and small, so the folder stays well under 1 MB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent


def speech_like(rate: int = 16000, seconds: float = 2.0, seed: int = 1) -> np.ndarray:
    """Formant-filtered glottal pulses with a wandering pitch, syllable envelope and noise.

    Shape:
        returns ``(rate * seconds,)`` float64 in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    # Pitch glides between 110 and 160 Hz like an intonation contour.
    f0 = 135 + 25 * np.sin(2 * np.pi * 0.7 * t)
    phase = np.cumsum(f0) / rate
    pulses = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(float)
    source = pulses + 0.02 * rng.standard_normal(n)
    out = np.zeros(n)
    # Three vowel formants (resonators as damped sinusoid impulse responses).
    for freq, bw, gain in [(700, 110, 1.0), (1220, 120, 0.6), (2600, 160, 0.3)]:
        k = np.arange(int(0.03 * rate)) / rate
        ir = np.exp(-np.pi * bw * k) * np.sin(2 * np.pi * freq * k)
        out += gain * np.convolve(source, ir)[:n]
    # Syllables: ~4 per second, with short silences between them.
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t) ** 2 * 1.4 - 0.2, 0, 1)
    out = out * envelope + 0.01 * rng.standard_normal(n)
    return 0.8 * out / np.abs(out).max()


def music_like(rate: int = 48000, seconds: float = 2.0, seed: int = 2) -> np.ndarray:
    """Two detuned chords with decaying notes, panned differently per channel.

    Shape:
        returns ``(rate * seconds, 2)`` float64.
    """
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    left = np.zeros(n)
    right = np.zeros(n)
    notes = [220.0, 277.18, 329.63, 440.0, 554.37]
    for i, f in enumerate(notes):
        onset = 0.3 * i
        env = np.where(t >= onset, np.exp(-(t - onset) * 2.5), 0.0)
        tone = env * (np.sin(2 * np.pi * f * t) + 0.3 * np.sin(2 * np.pi * 2 * f * t))
        pan = i / (len(notes) - 1)
        left += (1 - pan) * tone
        right += pan * tone
    stereo = np.stack([left, right], axis=1) + 0.003 * rng.standard_normal((n, 2))
    return 0.7 * stereo / np.abs(stereo).max()


def multichannel(rate: int = 8000, seconds: float = 1.0, channels: int = 5, seed: int = 3):
    """Sensor-array-like channels: one shared tone with per-channel delay and noise.

    Shape:
        returns ``(rate * seconds, channels)`` float32.
    """
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    cols = [
        0.5 * np.sin(2 * np.pi * 300 * (t - 0.0005 * c)) + 0.05 * rng.standard_normal(n)
        for c in range(channels)
    ]
    return np.stack(cols, axis=1).astype(np.float32)


def sensor_with_gaps(n: int = 4000, seed: int = 4) -> np.ndarray:
    """A slow drift plus oscillation plus noise, with three NaN gaps (dropouts).

    Shape:
        returns ``(n,)`` float64.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    trace = 20 + 0.002 * t + np.sin(2 * np.pi * t / 400) + 0.3 * rng.standard_normal(n)
    for start, length in [(500, 40), (1800, 5), (3100, 120)]:
        trace[start : start + length] = np.nan
    return trace


def room_impulse_response(rate: int = 16000, seconds: float = 0.12, seed: int = 5):
    """A direct path, a few early reflections and an exponentially decaying noise tail.

    Shape:
        returns ``(rate * seconds,)`` float64 with peak 1.
    """
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    ir = np.zeros(n)
    ir[0] = 1.0
    for delay_ms, gain in [(3.1, 0.6), (5.7, -0.4), (9.2, 0.3), (13.0, 0.2)]:
        ir[int(delay_ms * rate / 1000)] += gain
    tail = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.03 * rate)) * 0.15
    ir[int(0.015 * rate) :] += tail[int(0.015 * rate) :]
    return ir / np.abs(ir).max()


def clear_peak_timestamp(path: Path) -> None:
    """Zero the write time libsndfile records in a float WAV's PEAK chunk, the one part of
    these files that changed from run to run."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PEAK", 12)  # after the RIFF header: chunk id, size, version, time
    if at >= 0:
        data[at + 12 : at + 16] = bytes(4)
        path.write_bytes(bytes(data))


def main(folder: Path = HERE) -> None:
    sf.write(folder / "speech_mono16.wav", speech_like(), 16000, subtype="PCM_16")
    sf.write(folder / "music_stereo24.wav", music_like(), 48000, subtype="PCM_24")
    sf.write(folder / "multichannel_float.wav", multichannel(), 8000, subtype="FLOAT")
    clear_peak_timestamp(folder / "multichannel_float.wav")
    np.save(folder / "sensor_gaps.npy", sensor_with_gaps())
    sf.write(folder / "impulse_response.wav", room_impulse_response(), 16000, subtype="PCM_16")


if __name__ == "__main__":
    main()
