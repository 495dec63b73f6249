"""diffconv filter: designed FIR filtering in Hz, against scipy.signal.firwin."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from tests.cli.conftest import SAMPLES, invoke


@pytest.mark.parametrize(
    "args, cutoff, pass_zero",
    [
        (["--lowpass", "1000"], 1000.0, True),
        (["--highpass", "300", "--taps", "51"], 300.0, False),
        (["--bandpass", "300", "3000", "--window", "hann"], [300.0, 3000.0], False),
        (["--bandstop", "500", "900"], [500.0, 900.0], True),
    ],
)
def test_filter_equals_firwin_then_convolve(tmp_path, args, cutoff, pass_zero):
    src = SAMPLES / "multichannel_float.wav"
    out = tmp_path / "out.wav"
    r = invoke("filter", src, out, *args)
    assert r.exit_code == 0, r.output
    taps = int(args[args.index("--taps") + 1]) if "--taps" in args else 101
    window = args[args.index("--window") + 1] if "--window" in args else "hamming"
    h = scipy.signal.firwin(taps, cutoff, window=window, pass_zero=pass_zero, fs=8000)
    x = sf.read(src, dtype="float64", always_2d=True)[0].T
    want = np.stack([scipy.signal.convolve(c, h, "same") for c in x])
    got = sf.read(out, dtype="float64", always_2d=True)[0].T
    info = sf.info(out)
    assert (info.subtype, info.channels, info.samplerate) == ("FLOAT", 5, 8000)
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_a_window_with_parameters_designs_as_firwin_does(tmp_path):
    # kaiser, the usual design window, needs its beta: there was no way to give it
    # ("kaiser window requires parameter 'beta'" with exit 2, and no --param option).
    src = SAMPLES / "multichannel_float.wav"
    out = tmp_path / "out.wav"
    r = invoke("filter", src, out, "--lowpass", "1000", "--window", "kaiser", "--param", "beta=8.6")
    assert r.exit_code == 0, r.output
    h = scipy.signal.firwin(101, 1000.0, window=("kaiser", 8.6), fs=8000)
    x = sf.read(src, dtype="float64", always_2d=True)[0].T
    want = np.stack([scipy.signal.convolve(c, h, "same") for c in x])
    np.testing.assert_allclose(sf.read(out, dtype="float64", always_2d=True)[0].T, want, atol=2e-6)
    r = invoke("filter", src, tmp_path / "b.wav", "--lowpass", "1000", "--window", "kaiser")
    assert r.exit_code == 2 and "requires parameter 'beta'" in r.stderr


def test_npy_needs_rate_and_uses_it(tmp_path):
    src = SAMPLES / "sensor_gaps.npy"
    out = tmp_path / "out.npy"
    r = invoke("filter", src, out, "--lowpass", "0.01")
    assert r.exit_code == 2
    assert "--rate" in r.stderr and not out.exists()
    r = invoke("filter", src, out, "--lowpass", "0.01", "--rate", "1")
    assert r.exit_code == 0, r.output
    x = np.load(src)
    h = scipy.signal.firwin(101, 0.01, fs=1.0)
    got = np.load(out)
    assert got.shape == x.shape and got.dtype == np.float64
    want = scipy.signal.convolve(np.nan_to_num(x), h, "same")
    finite = np.isfinite(got)
    # NaN gaps spread exactly over the outputs whose window covers them.
    covered = np.convolve(np.isnan(x).astype(float), np.ones(101), "same") > 0
    np.testing.assert_array_equal(~finite, covered)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-9, atol=1e-9)


def test_exactly_one_band(tmp_path):
    out = tmp_path / "o.wav"
    r = invoke("filter", SAMPLES / "speech_mono16.wav", out)
    assert r.exit_code == 2 and "exactly one" in r.stderr
    r = invoke("filter", SAMPLES / "speech_mono16.wav", out, "--lowpass", "1", "--highpass", "2")
    assert r.exit_code == 2 and "--lowpass, --highpass" in r.stderr
    assert not out.exists()


def test_cutoff_above_a_files_nyquist_fails_that_file(tmp_path):
    # 6 kHz is fine at 16 kHz but not at 8 kHz: only the 8 kHz file fails.
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("speech_mono16.wav", "multichannel_float.wav"):
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    r = invoke("filter", folder, tmp_path / "out", "--lowpass", "6000")
    assert r.exit_code == 1
    assert "multichannel_float.wav" in r.stderr and "fs/2" in r.stderr
    assert (tmp_path / "out" / "speech_mono16.wav").exists()
    assert not (tmp_path / "out" / "multichannel_float.wav").exists()


def test_even_taps_for_highpass_is_a_usage_error(tmp_path):
    out = tmp_path / "o.wav"
    r = invoke("filter", SAMPLES / "speech_mono16.wav", out, "--highpass", "100", "--taps", "100")
    assert r.exit_code == 2 and "odd" in r.stderr and not out.exists()


@pytest.mark.parametrize(
    "args", [["--lowpass", "nan"], ["--highpass", "inf"], ["--bandpass", "300", "nan"]]
)
def test_non_finite_cutoff_is_a_usage_error_naming_the_option(tmp_path, args):
    # It used to say "fs must be a positive number; got nan", blaming a rate nobody gave.
    out = tmp_path / "o.wav"
    r = invoke("filter", SAMPLES / "speech_mono16.wav", out, *args)
    assert r.exit_code == 2 and args[0] in r.stderr
    assert "fs must be" not in r.stderr and not out.exists()


def test_cutoff_above_nyquist_says_the_files_limit(tmp_path):
    out = tmp_path / "o.wav"
    r = invoke("filter", SAMPLES / "multichannel_float.wav", out, "--lowpass", "4500")
    assert r.exit_code == 1 and "multichannel_float.wav" in r.stderr
    assert "fs/2 = 4000 Hz" in r.stderr and not out.exists()


def test_rate_applies_to_npy_inputs_only(tmp_path):
    # --rate 1500 made a 1 kHz lowpass of a 16 kHz WAV a usage error ("less than fs/2"),
    # though --rate is the rate of .npy inputs; an .npy it does not suit now fails by name.
    np.save(tmp_path / "trace.npy", np.random.default_rng(0).standard_normal(400))
    wav_out, npy_out = tmp_path / "w.wav", tmp_path / "t.npy"
    args = ["--lowpass", "1000", "--rate", "1500"]
    r = invoke("filter", SAMPLES / "speech_mono16.wav", wav_out, *args)
    assert r.exit_code == 0, r.stderr
    assert sf.info(wav_out).samplerate == 16000
    r = invoke("filter", tmp_path / "trace.npy", npy_out, *args)
    assert r.exit_code == 1 and "trace.npy" in r.stderr and "--rate 1500" in r.stderr
    assert not npy_out.exists()


@pytest.mark.parametrize("rate", ["nan", "inf"])
def test_non_finite_rate_is_a_usage_error(tmp_path, rate):
    np.save(tmp_path / "trace.npy", np.zeros(100))
    r = invoke(
        "filter", tmp_path / "trace.npy", tmp_path / "o.npy", "--lowpass", "1", "--rate", rate
    )
    assert r.exit_code == 2 and "'--rate'" in r.stderr and "fs" not in r.stderr


@pytest.mark.parametrize("param", ["width=400", "scale=false", "fs=16000", "numtaps=11"])
def test_param_that_is_not_the_windows_is_refused(tmp_path, param):
    # firwin's own keywords reached it through --param: width=400 turned a hamming design
    # into a Kaiser one and scale=false dropped the gain scaling, both with exit 0.
    out = tmp_path / "out.wav"
    r = invoke(
        "filter", SAMPLES / "multichannel_float.wav", out, "--lowpass", "1000", "--param", param
    )
    assert r.exit_code == 2, r.output
    assert f"hamming has no parameter '{param.split('=')[0]}'" in r.stderr
    assert not out.exists()
    r = invoke(
        "filter",
        SAMPLES / "multichannel_float.wav",
        out,
        "--lowpass",
        "1000",
        "--window",
        "kaiser",
        "--param",
        "beta=8.6",
        "--param",
        param,
    )
    assert r.exit_code == 2 and "its parameters: beta" in r.stderr
