"""diffconv convolve: results against scipy and the core, kernel files, modes, options."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from diffconv_core import convolve as core_convolve
from tests.cli.conftest import SAMPLES, invoke, listing, write_wav


def read_ct(path):
    data, rate = sf.read(path, dtype="float64", always_2d=True)
    return data.T, rate


@pytest.mark.parametrize("mode", ["same", "full", "valid"])
def test_float_wav_equals_scipy_per_mode(tmp_path, mode):
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal((2, 500))).astype(np.float32)
    k = rng.standard_normal(24)
    src = write_wav(tmp_path / "x.wav", x, subtype="FLOAT")
    np.save(tmp_path / "k.npy", k)
    out = tmp_path / "y.wav"
    r = invoke("convolve", src, out, "--kernel", tmp_path / "k.npy", "--mode", mode)
    assert r.exit_code == 0, r.output
    got, rate = read_ct(out)
    want = np.stack([scipy.signal.convolve(c.astype(np.float64), k, mode) for c in x])
    assert rate == 8000 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_correlate_and_padding_equal_core(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 300))
    k = rng.standard_normal(8)
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "k.txt", k)
    out = tmp_path / "y.npy"
    r = invoke(
        "convolve",
        tmp_path / "x.npy",
        out,
        "--kernel",
        tmp_path / "k.txt",
        "--correlate",
        "--padding",
        "reflect",
    )
    assert r.exit_code == 0, r.output
    got = np.load(out)
    from diffconv_core import correlate

    want = correlate(torch.from_numpy(x), torch.from_numpy(k), "same", padding="reflect")
    assert got.dtype == np.float64 and got.shape == (3, 300)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)
    # The padding-free reference: correlation is convolution with the reversed kernel.
    r = invoke(
        "convolve",
        tmp_path / "x.npy",
        tmp_path / "z.npy",
        "--kernel",
        tmp_path / "k.txt",
        "--correlate",
    )
    assert r.exit_code == 0
    np.testing.assert_allclose(
        np.load(tmp_path / "z.npy"),
        np.stack([scipy.signal.correlate(c, k, "same") for c in x]),
        atol=1e-12,
    )


def test_text_kernel_formats_like_sox(tmp_path):
    # sox's fir effect takes coefficients separated by whitespace, commas or newlines.
    (tmp_path / "k.csv").write_text("# a comment line\n0.25, 0.5\n 0.25 \n")
    (tmp_path / "k.txt").write_text("0.25 0.5\t0.25")
    # Excel's "CSV UTF-8" and Notepad start the file with a byte-order mark: it was read as
    # part of the first number ("holds a non-number").
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf0.25,0.5,0.25\r\n")
    x = np.arange(10, dtype=np.float64)
    np.save(tmp_path / "x.npy", x)
    for name in ("k.csv", "k.txt", "bom.csv"):
        out = tmp_path / f"y_{name}.npy"
        r = invoke("convolve", tmp_path / "x.npy", out, "--kernel", tmp_path / name)
        assert r.exit_code == 0, r.output
        got = np.load(out)
        assert got.shape == (10,)  # a (T,) array comes back (T,)
        np.testing.assert_allclose(got, scipy.signal.convolve(x, [0.25, 0.5, 0.25], "same"))


def test_impulse_response_wav_and_per_channel_kernel(tmp_path):
    src = SAMPLES / "music_stereo24.wav"
    ir = SAMPLES / "impulse_response.wav"
    out = tmp_path / "wet.wav"
    r = invoke("convolve", src, out, "--kernel", ir, "--normalize", "energy")
    assert r.exit_code == 0, r.output
    info = sf.info(out)
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        "WAV",
        "PCM_24",
        48000,
        2,
    )
    x, _ = read_ct(src)
    k = sf.read(ir, dtype="float64")[0]
    k = k / np.sqrt((k * k).sum())
    want = np.clip(np.stack([scipy.signal.convolve(c, k, "same") for c in x]), -1, 1)
    got, _ = read_ct(out)
    np.testing.assert_allclose(got, want, atol=2e-6)  # float32 compute + 24-bit storage

    # A two-channel response applies one kernel per channel.
    rng = np.random.default_rng(2)
    k2 = rng.standard_normal((2, 16)) * 0.1
    write_wav(tmp_path / "ir2.wav", k2, rate=48000, subtype="DOUBLE")
    out2 = tmp_path / "wet2.npy"
    r = invoke("convolve", src, out2, "--kernel", tmp_path / "ir2.wav", "--mode", "full")
    assert r.exit_code == 0, r.output
    want2 = np.stack([scipy.signal.convolve(c, kc, "full") for c, kc in zip(x, k2, strict=True)])
    got2 = np.load(out2)
    assert got2.dtype == np.float64 and got2.shape == (2, 96000 + 15)
    np.testing.assert_allclose(got2, want2, atol=1e-5)
    # ...and refuses a file with another channel count, naming both counts.
    out3 = tmp_path / "mono.wav"
    r = invoke("convolve", SAMPLES / "speech_mono16.wav", out3, "--kernel", tmp_path / "ir2.wav")
    assert r.exit_code == 1
    assert "2 channels" in r.stderr and "1" in r.stderr and not out3.exists()


def test_output_matches_core_on_16bit_speech(tmp_path):
    src = SAMPLES / "speech_mono16.wav"
    k = np.hanning(9)
    np.save(tmp_path / "k.npy", k)
    out = tmp_path / "out.wav"
    r = invoke("convolve", src, out, "--kernel", tmp_path / "k.npy", "--normalize", "sum")
    assert r.exit_code == 0, r.output
    x = torch.from_numpy(sf.read(src, dtype="float32", always_2d=True)[0].T.copy())
    want = core_convolve(x, torch.from_numpy(k / k.sum()).float()).numpy()
    got = sf.read(out, dtype="float32", always_2d=True)[0].T
    assert sf.info(out).subtype == "PCM_16"
    np.testing.assert_allclose(got, want, atol=1.01 / 32768)  # one 16-bit step


def test_kernel_longer_than_signal_in_valid_mode(tmp_path):
    np.save(tmp_path / "x.npy", np.ones(5))
    np.save(tmp_path / "k.npy", np.ones(9))
    out = tmp_path / "y.npy"
    r = invoke(
        "convolve", tmp_path / "x.npy", out, "--kernel", tmp_path / "k.npy", "--mode", "valid"
    )
    assert r.exit_code == 1
    assert "longer than the signal" in r.stderr and "x.npy" in r.stderr
    assert "only where the kernel fits inside the signal" in r.stderr
    assert "has no output" not in r.stderr  # it has one in scipy: K - T + 1 samples
    assert not out.exists() and listing(tmp_path) == ["k.npy", "x.npy"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no numbers"),
        ("1, 2, abc", "non-number"),
        ("1 nan 2", "NaN"),
        ("1_0\n2", "non-number ('1_0')"),  # Python's float() read 10
        ("1 \u0661", "non-number"),  # an Arabic-Indic digit one, to float()
    ],
)
def test_bad_kernel_files_are_usage_errors(tmp_path, content, message):
    (tmp_path / "k.txt").write_text(content)
    np.save(tmp_path / "x.npy", np.ones(20))
    r = invoke("convolve", tmp_path / "x.npy", tmp_path / "y.npy", "--kernel", tmp_path / "k.txt")
    assert r.exit_code == 2
    assert message in r.stderr and "--kernel" in r.stderr
    assert not (tmp_path / "y.npy").exists()


def test_zero_sum_kernel_cannot_be_sum_normalized(tmp_path):
    np.save(tmp_path / "k.npy", np.array([1.0, -1.0]))
    np.save(tmp_path / "x.npy", np.ones(20))
    r = invoke(
        "convolve",
        tmp_path / "x.npy",
        tmp_path / "y.npy",
        "--kernel",
        tmp_path / "k.npy",
        "--normalize",
        "sum",
    )
    assert r.exit_code == 2 and "zero" in r.stderr
    assert not (tmp_path / "y.npy").exists()


def test_padding_with_valid_mode_is_a_usage_error(tmp_path):
    np.save(tmp_path / "k.npy", np.ones(3))
    np.save(tmp_path / "x.npy", np.ones(20))
    r = invoke(
        "convolve",
        tmp_path / "x.npy",
        tmp_path / "y.npy",
        "--kernel",
        tmp_path / "k.npy",
        "--mode",
        "valid",
        "--padding",
        "reflect",
    )
    assert r.exit_code == 2 and "valid" in r.stderr
    assert not (tmp_path / "y.npy").exists()


def test_an_impulse_response_at_another_rate_is_warned_about_once_per_rate(tmp_path):
    # Applied sample for sample, a 16 kHz room response on 8 kHz files is another room: a
    # warning, once for each rate met (a directory of 2,000 clips gets one line, not 2,000).
    ir = SAMPLES / "impulse_response.wav"  # 16 kHz
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, rate in (("a.wav", 8000), ("b.wav", 8000), ("c.wav", 16000)):
        sf.write(folder / name, 0.1 * rng.standard_normal(4000), rate, subtype="FLOAT")
    result = invoke("convolve", folder, tmp_path / "out", "--kernel", ir)
    assert result.exit_code == 0, result.output
    said = "is at 16000 Hz and this file at 8000 Hz: the kernel is applied sample for sample"
    assert result.stderr.count(said) == 1 and "in/a.wav" in result.stderr
    assert listing(tmp_path / "out") == ["a.wav", "b.wav", "c.wav"]
    # A kernel without a rate (.npy, text) says nothing of it.
    np.save(tmp_path / "k.npy", sf.read(ir)[0])
    result = invoke("convolve", folder, tmp_path / "out2", "--kernel", tmp_path / "k.npy")
    assert result.exit_code == 0 and "sample for sample" not in result.stderr


def test_a_pipe_as_kernel_is_refused_under_torchrun(tmp_path):
    # Every rank reads the kernel: a FIFO's data reached one and the others blocked in
    # open() for good. Refused before anything opens it (here no writer ever comes).
    fifo = tmp_path / "k.fifo"
    os.mkfifo(fifo)
    src = tmp_path / "a.wav"
    sf.write(src, np.zeros(100), 8000)
    import threading

    def writer():  # a kernel for whoever opens the FIFO: a regression fails, not hangs
        with contextlib.suppress(OSError), open(fifo, "w") as f:
            f.write("0.5 0.5\n")

    threading.Thread(target=writer, daemon=True).start()
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    try:
        result = invoke("convolve", src, tmp_path / "out.wav", "--kernel", fifo, env=env)
    finally:  # the writer, still waiting for a reader, is let go
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    assert result.exit_code == 2
    assert "every process under torchrun reads the kernel" in result.stderr
    assert not (tmp_path / "out.wav").exists()
