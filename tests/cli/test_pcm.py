"""Integer PCM converted in numpy (cli.pcm): reads give libsndfile's floats bit for bit,
writes round to the nearest step, clip and count."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from cli import pcm
from cli.audio_io import SignalInfo, probe, read_blocks, read_signal, read_tail
from cli.writing import AtomicWriter, output_spec, write_signal
from tests.cli.conftest import invoke

CASES = [
    ("WAV", "PCM_16"),
    ("WAV", "PCM_24"),
    ("WAV", "PCM_32"),
    ("FLAC", "PCM_16"),
    ("FLAC", "PCM_24"),
    ("AIFF", "PCM_16"),
    ("AIFF", "PCM_24"),
    # 8-bit: libsndfile floored these (half a step low on average) when left to convert them.
    ("WAV", "PCM_U8"),
    ("AU", "PCM_S8"),
    ("FLAC", "PCM_S8"),
]
EXTENSIONS = {"WAV": ".wav", "FLAC": ".flac", "AIFF": ".aiff", "AU": ".au"}


def _bits(subtype: str) -> int:
    return int(subtype.split("_")[1].lstrip("SU"))


def _wide(subtype: str) -> np.dtype:
    return np.dtype("float64" if subtype in ("PCM_24", "PCM_32") else "float32")


@pytest.mark.parametrize("fmt, subtype", CASES)
def test_read_equals_libsndfile_floats(tmp_path, fmt, subtype):
    rng = np.random.default_rng(0)
    path = tmp_path / f"in{EXTENSIONS[fmt]}"
    sf.write(path, rng.uniform(-1, 1, (3000, 3)), 8000, format=fmt, subtype=subtype)
    info = probe(path)
    ours = read_signal(info)
    theirs = sf.read(path, dtype=info.dtype.name, always_2d=True)[0].T
    assert ours.dtype == info.dtype == _wide(subtype)
    assert ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(np.concatenate(list(read_blocks(info, 700)), -1), theirs)
    np.testing.assert_array_equal(read_tail(info, 11), theirs[:, -11:])


@pytest.mark.parametrize("fmt, subtype", CASES)
def test_write_rounds_to_nearest_step(tmp_path, fmt, subtype):
    steps = 2.0 ** (_bits(subtype) - 1)
    codes = np.array([-steps, -3, -2, -1, 0, 1, 2, 3, steps - 1])
    # Just off a half step either way: correct rounding lands on the nearer code.
    offsets = np.array([0.0, -0.49, 0.49, -0.2, 0.3, -0.3, 0.49, -0.49, 0.0])
    x = ((codes + offsets) / steps)[None].astype(_wide(subtype))
    path = tmp_path / f"out{EXTENSIONS[fmt]}"
    info = probe_like(x, fmt, subtype)
    writer = write_signal(path, x, output_spec(path, info))
    back = sf.read(path, dtype="float64", always_2d=True)[0].T
    np.testing.assert_array_equal(back * steps, codes[None])
    assert writer.clipped == 0 and writer.nonfinite == 0


def probe_like(x: np.ndarray, fmt: str, subtype: str) -> SignalInfo:
    """What :func:`probe` would say of ``x`` stored as ``fmt``/``subtype`` at 8 kHz."""
    return SignalInfo("x", "audio", x.shape, x.dtype, 8000.0, fmt, subtype)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32"])
def test_encode_clips_and_counts(subtype):
    steps = 2.0 ** (_bits(subtype) - 1)
    x = np.array([[1.0, 1.5, -1.0, -7.0, np.nan, np.inf, -np.inf, 0.25, 1e300]])
    encoded = pcm.encode(x, subtype)
    shift = 2.0 ** (8 * encoded.codes.dtype.itemsize - _bits(subtype))
    values = encoded.codes[:, 0].astype(np.float64) / shift
    # +1.0 has no code (the scale is 2**(bits-1)): it becomes the largest, unclipped.
    assert values.tolist() == [steps - 1, steps - 1, -steps, -steps, 0, 0, 0, steps / 4, steps - 1]
    assert encoded.clipped == 3  # 1.5, -7 and 1e300; +-1.0 are in range
    assert encoded.nonfinite == 3


def test_encode_layout_is_frames_by_channels():
    x = np.array([[0.5, 0.25, 0.0], [-0.5, -0.25, 0.125]], dtype=np.float32)
    codes = pcm.encode(x, "PCM_16").codes
    assert codes.shape == (3, 2) and codes.flags.c_contiguous
    assert codes.tolist() == [[16384, -16384], [8192, -8192], [0, 4096]]


def test_float_and_companded_subtypes_are_left_to_libsndfile():
    for subtype in ["FLOAT", "DOUBLE", "ULAW", "ALAW", "VORBIS", None]:
        assert pcm.integer_dtype(subtype) is None


def test_streamed_writes_match_whole_writes(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.uniform(-1.2, 1.2, (2, 5000)).astype(np.float32)
    info = probe_like(x, "WAV", "PCM_24")
    whole, streamed = tmp_path / "whole.wav", tmp_path / "streamed.wav"
    w1 = write_signal(whole, x, output_spec(whole, info))
    with AtomicWriter(streamed, output_spec(streamed, info), x.shape) as w2:
        for start in range(0, 5000, 777):
            w2.write(x[:, start : start + 777])
    assert w1.clipped == w2.clipped == int(np.count_nonzero(np.abs(x) > 1))
    a = sf.read(whole, dtype="int32")[0]
    b = sf.read(streamed, dtype="int32")[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "ext, subtype", [(".wav", "PCM_U8"), (".raw", "PCM_S8"), (".au", "PCM_S8")]
)
def test_8_bit_output_has_no_dc_offset(tmp_path, ext, subtype):
    # libsndfile floors floats to 8-bit codes: a ramp came back 1/256 of full scale low on
    # average (half an 8-bit step) and up to a whole step off. Rounded: within half a step.
    x = np.linspace(-0.9, 0.9, 10001)
    src, out = tmp_path / "ramp.npy", tmp_path / f"out{ext}"
    np.save(src, x)
    np.savetxt(tmp_path / "delta.txt", [1.0])
    r = invoke(
        "convolve", src, out, "--kernel", tmp_path / "delta.txt", "--rate", "8000",
        "--subtype", subtype, "--device", "cpu",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    if ext == ".raw":
        back = np.fromfile(out, np.int8) / 128.0
    else:
        back = sf.read(out, dtype="float64")[0]
    error = back - x
    assert np.abs(error).max() <= 0.5 / 128 + 1e-12
    assert abs(error.mean()) < 1e-4
