"""diffconv smooth: results against the core and scipy, options, usage errors, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from diffconv_core.smooth import smooth as core_smooth
from tests.cli.conftest import SAMPLES, invoke, listing, write_wav


def scipy_smooth(x: np.ndarray, window: np.ndarray, pad_mode: str) -> np.ndarray:
    """Reference: pad as numpy does, then scipy's valid convolution with the unit-sum window."""
    k = len(window)
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(k // 2, (k - 1) // 2)], mode=pad_mode)
    w = window / window.sum()
    return np.stack(
        [scipy.signal.convolve(row, w, "valid") for row in padded.reshape(-1, padded.shape[-1])]
    ).reshape(x.shape)


@pytest.mark.parametrize("length", [31, 8])
def test_default_smooth_equals_scipy_on_stereo_24bit(tmp_path, length):
    src = SAMPLES / "music_stereo24.wav"
    out = tmp_path / "out.npy"
    r = invoke("smooth", src, out, "--length", length)
    assert r.exit_code == 0, r.output
    x = sf.read(src, dtype="float64", always_2d=True)[0].T
    want = scipy_smooth(x, scipy.signal.windows.hann(length), "reflect")
    got = np.load(out)
    assert got.shape == x.shape and got.dtype == np.float64  # 24-bit input: computed in float64
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_speech_wav_written_equals_core(tmp_path):
    src = SAMPLES / "speech_mono16.wav"
    out = tmp_path / "speech_smoothed.wav"
    r = invoke(
        "smooth",
        src,
        out,
        "--window",
        "gaussian",
        "--param",
        "std=4",
        "--length",
        "25",
        "--edges",
        "zeros",
    )
    assert r.exit_code == 0, r.output
    info = sf.info(out)
    assert (info.subtype, info.samplerate, info.channels, info.frames) == (
        "PCM_16",
        16000,
        1,
        32000,
    )
    x = torch.from_numpy(sf.read(src, dtype="float32", always_2d=True)[0].T.copy())
    want = core_smooth(x, "gaussian", 25, edges="zeros", std=4).numpy()
    got = sf.read(out, dtype="float32", always_2d=True)[0].T
    np.testing.assert_allclose(got, want, atol=1.01 / 32768)
    w = scipy.signal.windows.gaussian(25, 4)
    np.testing.assert_allclose(
        got[0], scipy.signal.convolve(x[0].numpy(), w / w.sum(), "same"), atol=1.01 / 32768
    )


def test_nan_gaps_omit_and_width_equal_core(tmp_path):
    src = SAMPLES / "sensor_gaps.npy"
    out = tmp_path / "out.npy"
    r = invoke(
        "smooth",
        src,
        out,
        "--nan-policy",
        "omit",
        "--edges",
        "renormalize",
        "--width",
        "20.5",
        "--length",
        "41",
    )
    assert r.exit_code == 0, r.output
    x = torch.from_numpy(np.load(src))
    want = core_smooth(x, "hann", 41, edges="renormalize", nan_policy="omit", width=20.5)
    got = np.load(out)
    assert got.shape == (4000,) and got.dtype == np.float64
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12, equal_nan=True)
    # The 5-sample gap is bridged: no output near it is NaN any more.
    assert np.isnan(x[1800:1805].numpy()).all() and np.isfinite(got[1790:1815]).all()
    # propagate keeps the NaNs (and spreads them over the window).
    r = invoke("smooth", src, tmp_path / "p.npy")
    assert r.exit_code == 0 and np.isnan(np.load(tmp_path / "p.npy")[490:550]).all()


def test_multichannel_float_kept(tmp_path):
    src = SAMPLES / "multichannel_float.wav"
    out = tmp_path / "out.wav"
    r = invoke("smooth", src, out, "--window", "kaiser", "--param", "beta=8.6", "--length", "15")
    assert r.exit_code == 0, r.output
    info = sf.info(out)
    assert (info.subtype, info.channels, info.samplerate) == ("FLOAT", 5, 8000)
    x = sf.read(src, dtype="float64", always_2d=True)[0].T
    want = scipy_smooth(x, scipy.signal.windows.kaiser(15, 8.6), "reflect")
    np.testing.assert_allclose(sf.read(out, always_2d=True)[0].T, want, atol=1e-6)


def test_boolean_window_setting(tmp_path):
    # `diffconv windows` lists taylor's norm as "True or False"; --param norm=False reached
    # the core as the string 'False' and was refused.
    src = SAMPLES / "sensor_gaps.npy"
    r = invoke("smooth", src, tmp_path / "out.npy", "--window", "taylor", "--param", "norm=False")
    assert r.exit_code == 0, r.output
    x = torch.from_numpy(np.load(src))
    want = core_smooth(x, "taylor", 31, norm=False).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, equal_nan=True)


def test_sequence_window_parameter(tmp_path):
    # `diffconv windows` lists general_cosine's a as "a non-empty sequence of finite numbers",
    # but every --param value was one number or a word: the window could not be used at all.
    src = SAMPLES / "multichannel_float.wav"
    out = tmp_path / "out.npy"
    r = invoke("smooth", src, out, "--window", "general_cosine", "--param", "a=0.54,0.46")
    assert r.exit_code == 0, r.output
    x = sf.read(src, dtype="float64", always_2d=True)[0].T
    want = scipy_smooth(x, scipy.signal.windows.general_cosine(31, [0.54, 0.46]), "reflect")
    np.testing.assert_allclose(np.load(out), want, atol=1e-6)
    # One number and a comma: a one-item sequence (a constant window, the boxcar's).
    r = invoke("smooth", src, tmp_path / "one.npy", "--window", "general_cosine", "--param", "a=1,")
    assert r.exit_code == 0, r.output
    want = scipy_smooth(x, np.ones(31), "reflect")
    np.testing.assert_allclose(np.load(tmp_path / "one.npy"), want, atol=1e-6)
    (tmp_path / "one.npy").unlink()
    # A list for a one-number parameter would be one window per channel: refused.
    r = invoke("smooth", src, tmp_path / "g.npy", "--window", "gaussian", "--param", "std=1,2")
    assert r.exit_code == 2 and "std takes one value" in r.stderr
    assert listing(tmp_path) == ["out.npy"]


def test_gaussian_narrower_than_a_sample_passes_the_signal_through(tmp_path):
    # std=1e-300 squared underflows: the window was NaN, every sample written as 0 (silence)
    # with exit 0. Its limit is one tap: the file comes out as it went in.
    src = SAMPLES / "speech_mono16.wav"
    out = tmp_path / "out.wav"
    r = invoke("smooth", src, out, "--window", "gaussian", "--param", "std=1e-300")
    assert r.exit_code == 0, r.output
    assert "NaN" not in r.stderr
    np.testing.assert_array_equal(sf.read(out, dtype="int16")[0], sf.read(src, dtype="int16")[0])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--length", "0"], "length must be >= 1; got 0"),
        (["--length", "-5"], "got -5"),
        (["--window", "hanning-ish"], "unknown window 'hanning-ish'"),
        (["--window", "gaussian"], "requires parameter 'std'"),
        (["--param", "std"], "NAME=VALUE"),
        (["--window", "hann", "--param", "beta=3"], "beta"),
        (["--edges", "mirror"], "mirror"),
        (["--nan-policy", "drop"], "drop"),
        (["--width", "-1"], "width"),
        (["--method", "magic"], "magic"),
        # the last of two had silently won
        (["--window", "gaussian", "--param", "std=1", "--param", "std=2"], "std is given twice"),
    ],
)
def test_bad_options_are_usage_errors_and_write_nothing(tmp_path, args, message):
    r = invoke("smooth", SAMPLES / "speech_mono16.wav", tmp_path / "out.wav", *args)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output
    assert listing(tmp_path) == []


def test_even_length_is_valid(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(30.0) ** 2)
    r = invoke(
        "smooth",
        tmp_path / "x.npy",
        tmp_path / "y.npy",
        "--length",
        "4",
        "--window",
        "boxcar",
        "--edges",
        "zeros",
    )
    assert r.exit_code == 0, r.output
    want = scipy.signal.convolve(np.arange(30.0) ** 2, np.full(4, 0.25), "same")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-12)


@pytest.mark.parametrize(
    "extra",
    [[], ["--edges", "renormalize", "--nan-policy", "omit"], ["--edges", "circular"]],
)
def test_streamed_smooth_equals_whole_file(tmp_path, extra):
    rng = np.random.default_rng(5)
    x = 0.3 * rng.standard_normal((2, 6000))
    x[1, 2000:2100] = np.nan
    src = write_wav(tmp_path / "long.wav", x, subtype="DOUBLE")
    whole, streamed = tmp_path / "whole.wav", tmp_path / "streamed.wav"
    assert invoke("smooth", src, whole, "--length", "51", *extra).exit_code == 0
    r = invoke(
        "smooth",
        src,
        streamed,
        "--length",
        "51",
        "-v",
        *extra,
        env={"DIFFCONV_STREAM_SAMPLES": "1000", "DIFFCONV_BLOCK_FRAMES": "500"},
    )
    assert r.exit_code == 0 and "(streamed)" in r.stderr
    a = sf.read(whole, always_2d=True)[0]
    b = sf.read(streamed, always_2d=True)[0]
    np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12, equal_nan=True)
    assert sf.info(streamed).subtype == "DOUBLE"


@pytest.mark.parametrize("method", ["direct", "fft", "overlap"])
def test_method_option_reaches_the_core(tmp_path, monkeypatch, method):
    # --method used to be accepted and then dropped: every file ran with "auto".
    import diffconv_core.smooth

    seen = []
    real = diffconv_core.smooth.smooth

    def spy(*args, **kwargs):
        seen.append(kwargs.get("method"))
        return real(*args, **kwargs)

    monkeypatch.setattr(diffconv_core.smooth, "smooth", spy)
    out = tmp_path / "out.wav"
    r = invoke("smooth", SAMPLES / "speech_mono16.wav", out, "--method", method)
    assert r.exit_code == 0, r.output
    assert seen and set(seen) == {method}


@pytest.mark.parametrize(
    "param, hint",
    [
        ("width=3", "use --width"),  # had silently lost to --width, or replaced it
        ("edges=zeros", "use --edges"),  # had been a Python "multiple values" message
        ("normalize=peak", "it takes none"),
        ("sym=false", "--window hann_periodic"),
    ],
)
def test_param_takes_only_the_windows_own_parameters(tmp_path, param, hint):
    out = tmp_path / "out.npy"
    r = invoke("smooth", SAMPLES / "speech_mono16.wav", out, "--param", param)
    assert r.exit_code == 2, r.output
    assert "hann has no parameter" in r.stderr and hint in r.stderr
    assert "multiple values" not in r.stderr and not out.exists()


@pytest.mark.parametrize(("suffix", "subtype"), [(".wav", "PCM_24"), (".flac", "PCM_24")])
def test_24_bit_outputs_are_the_nearest_codes(tmp_path, suffix, subtype):
    # 24-bit files were filtered in float32, whose rounding is about one 24-bit step: 1 in 7
    # output codes were one off scipy's float64 result (up to 2 off in FLAC).
    x = np.clip(0.4 * np.random.default_rng(0).standard_normal((4000, 2)), -0.95, 0.95)
    src, out = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    sf.write(src, x, 48000, subtype=subtype)
    r = invoke("smooth", src, out)
    assert r.exit_code == 0, r.output
    x = sf.read(src, dtype="float64")[0].T
    w = scipy.signal.windows.hann(31)
    want = np.rint(scipy_smooth(x, w, "reflect") * 2**23)
    got = sf.read(out, dtype="int32")[0].T >> 8
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("subtype", ["DOUBLE", "PCM_32"])
def test_a_16_bit_input_written_wider_is_computed_in_float64(tmp_path, subtype):
    # The compute dtype followed the input only: a 16-bit file written as DOUBLE carried
    # float32's error (1.4e-7, some 300 steps of a 32-bit output).
    src, out = SAMPLES / "speech_mono16.wav", tmp_path / "out.wav"
    r = invoke("smooth", src, out, "--subtype", subtype)
    assert r.exit_code == 0, r.output
    x = sf.read(src, dtype="float64", always_2d=True)[0].T
    want = scipy_smooth(x, scipy.signal.windows.hann(31), "reflect")
    got = sf.read(out, dtype="float64", always_2d=True)[0].T
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_a_channels_last_npy_is_warned_about(tmp_path):
    # soundfile.read gives (samples, channels): saved as is, every row was smoothed as a
    # 2-sample signal with exit 0 and no word.
    x = sf.read(SAMPLES / "music_stereo24.wav")[0]
    np.save(tmp_path / "tc.npy", x)
    np.save(tmp_path / "ct.npy", x.T)
    r = invoke("smooth", tmp_path / "tc.npy", tmp_path / "tc_out.npy")
    assert r.exit_code == 0
    assert "read as 96000 signals of 2 samples each" in r.stderr
    assert "save its transpose" in r.stderr
    r = invoke("smooth", tmp_path / "ct.npy", tmp_path / "ct_out.npy")
    assert r.exit_code == 0 and "warning" not in r.stderr


def test_every_listed_value_of_a_window_setting_is_taken(tmp_path):
    # `diffconv windows` lists dpss's norm as "one of None, 2, ..." and taylor's nbar up to
    # its bound; --param norm=None was refused as the text 'None', and nbar=1000 (then the
    # bound) was never finite.
    source = SAMPLES / "speech_mono16.wav"
    for params, core in (
        (["NW=2.5", "norm=None"], {"NW": 2.5, "norm": None}),
        (["nbar=450", "sll=0.5"], {"nbar": 450, "sll": 0.5}),
    ):
        window = "dpss" if "NW" in core else "taylor"
        dest = tmp_path / f"{window}.npy"
        args = [a for p in params for a in ("--param", p)]
        result = invoke("smooth", source, dest, "--window", window, *args, "--edges", "zeros")
        assert result.exit_code == 0, result.output
        x = torch.as_tensor(sf.read(source, dtype="float32", always_2d=True)[0].T)
        expected = core_smooth(x, window, 31, edges="zeros", **core)
        torch.testing.assert_close(torch.as_tensor(np.load(dest)), expected)
    result = invoke(
        "smooth", source, tmp_path / "t.npy", "--window", "taylor", "--param", "nbar=451"
    )
    assert result.exit_code == 2 and "an integer from 1 to 450" in result.stderr
