"""Long files stream block by block; the result equals whole-file processing."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import soundfile as sf

from tests.cli.conftest import SAMPLES, invoke, write_wav

STREAM = {"DIFFCONV_STREAM_SAMPLES": "1000", "DIFFCONV_BLOCK_FRAMES": "777"}


@pytest.fixture
def long_float_wav(tmp_path):
    rng = np.random.default_rng(3)
    return write_wav(tmp_path / "long.wav", 0.2 * rng.standard_normal((2, 5000)), subtype="FLOAT")


@pytest.mark.parametrize(
    "mode, padding, correlate",
    [
        ("same", "zeros", False),
        ("same", "reflect", True),
        ("full", "symmetric", False),
        ("valid", "zeros", True),
        ("same", "circular", False),
        ("full", "replicate", False),
    ],
)
def test_streamed_convolve_equals_whole_file(tmp_path, long_float_wav, mode, padding, correlate):
    rng = np.random.default_rng(4)
    np.save(tmp_path / "k.npy", rng.standard_normal(40))
    extra = ["--kernel", tmp_path / "k.npy", "--mode", mode, "--padding", padding, "-v"]
    if correlate:
        extra.append("--correlate")
    whole, streamed = tmp_path / "whole.npy", tmp_path / "streamed.npy"
    r = invoke("convolve", long_float_wav, whole, *extra)
    assert r.exit_code == 0 and "(streamed)" not in r.stderr
    r = invoke("convolve", long_float_wav, streamed, *extra, env=STREAM)
    assert r.exit_code == 0, r.output
    assert "(streamed)" in r.stderr
    a, b = np.load(whole), np.load(streamed)
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("container", ["OGG", "FLAC"])
def test_streamed_circular_convolve_of_a_compressed_file_equals_whole_file(tmp_path, container):
    # Circular padding reads the file's end first. libsndfile's seek in Vorbis (and MP3)
    # lands near the frame asked for, so the tail differed from the end the stream then
    # decoded, and the file failed with "circular_tail does not match the signal's last 15
    # samples" (a mention of an argument no CLI user gave).
    rng = np.random.default_rng(2)
    t = np.arange(50_000)
    x = np.sin(t / 20)[:, None] * [0.5, 0.3] + 0.05 * rng.standard_normal((50_000, 2))
    source = tmp_path / f"in.{container.lower()}"
    sf.write(source, x, 16000, format=container)
    from cli.audio_io import probe, read_tail

    decoded = sf.read(source, always_2d=True, dtype="float32")[0].T
    np.testing.assert_array_equal(read_tail(probe(source), 15), decoded[:, -15:])
    np.save(tmp_path / "k.npy", np.hanning(31) / np.hanning(31).sum())
    extra = ["--kernel", tmp_path / "k.npy", "--padding", "circular", "-v"]
    whole, streamed = tmp_path / "whole.npy", tmp_path / "streamed.npy"
    r = invoke("convolve", source, whole, *extra)
    assert r.exit_code == 0 and "(streamed)" not in r.stderr, r.stderr
    r = invoke("convolve", source, streamed, *extra, env=STREAM)
    assert r.exit_code == 0 and "(streamed)" in r.stderr, r.stderr
    np.testing.assert_allclose(np.load(streamed), np.load(whole), rtol=1e-5, atol=1e-6)


def test_streamed_circular_smooth_starts_from_the_files_end(tmp_path, long_float_wav, monkeypatch):
    # smooth --edges circular kept the whole file until its end (746 MB for an 80 MB WAV,
    # against 285 MB for the other edges): now it reads the end first, as convolve does.
    from diffconv_core import streaming

    tails = []
    built = streaming.StreamingSmoother.__init__

    def spy(self, *args, circular_tail=None, **kwargs):
        tails.append(circular_tail)
        built(self, *args, circular_tail=circular_tail, **kwargs)

    monkeypatch.setattr(streaming.StreamingSmoother, "__init__", spy)
    extra = ["--edges", "circular", "--length", "41", "--nan-policy", "omit", "-v"]
    whole, streamed = tmp_path / "whole.npy", tmp_path / "streamed.npy"
    r = invoke("smooth", long_float_wav, whole, *extra)
    assert r.exit_code == 0 and "(streamed)" not in r.stderr, r.stderr
    r = invoke("smooth", long_float_wav, streamed, *extra, env=STREAM)
    assert r.exit_code == 0 and "(streamed)" in r.stderr, r.stderr
    decoded = sf.read(long_float_wav, always_2d=True, dtype="float32")[0].T
    assert len(tails) == 1 and np.array_equal(tails[0].numpy(), decoded[:, -41:])
    np.testing.assert_allclose(np.load(streamed), np.load(whole), rtol=1e-5, atol=1e-6)


def test_streamed_16bit_wav_equals_whole_file(tmp_path):
    src = SAMPLES / "speech_mono16.wav"
    ir = SAMPLES / "impulse_response.wav"
    whole, streamed = tmp_path / "whole.wav", tmp_path / "streamed.wav"
    assert invoke("convolve", src, whole, "--kernel", ir, "--normalize", "peak").exit_code == 0
    r = invoke("convolve", src, streamed, "--kernel", ir, "--normalize", "peak", "-v", env=STREAM)
    assert r.exit_code == 0 and "(streamed)" in r.stderr
    assert sf.info(streamed).subtype == "PCM_16"
    a = sf.read(whole, dtype="int16")[0].astype(int)
    b = sf.read(streamed, dtype="int16")[0].astype(int)
    # Float round-off may move a sample across a rounding boundary: at most one step.
    assert np.abs(a - b).max() <= 1


def test_streamed_filter_equals_whole_file(tmp_path):
    src = SAMPLES / "music_stereo24.wav"
    whole, streamed = tmp_path / "whole.npy", tmp_path / "streamed.npy"
    assert invoke("filter", src, whole, "--bandpass", "200", "2000").exit_code == 0
    r = invoke("filter", src, streamed, "--bandpass", "200", "2000", "-v", env=STREAM)
    assert r.exit_code == 0 and "(streamed)" in r.stderr
    np.testing.assert_allclose(np.load(streamed), np.load(whole), atol=1e-6)


@pytest.mark.parametrize("padding", ["circular", "reflect"])
def test_streamed_3d_npy_with_per_channel_kernel_equals_whole_file(tmp_path, padding):
    rng = np.random.default_rng(8)
    np.save(tmp_path / "x.npy", rng.standard_normal((3, 2, 4000)))
    np.save(tmp_path / "k.npy", rng.standard_normal((2, 25)))
    args = ["--kernel", tmp_path / "k.npy", "--padding", padding, "-v"]
    whole, streamed = tmp_path / "whole.npy", tmp_path / "streamed.npy"
    assert invoke("convolve", tmp_path / "x.npy", whole, *args).exit_code == 0
    r = invoke("convolve", tmp_path / "x.npy", streamed, *args, env=STREAM)
    assert r.exit_code == 0 and "(streamed)" in r.stderr
    a, b = np.load(whole), np.load(streamed)
    assert a.shape == b.shape == (3, 2, 4000) and b.dtype == np.float64
    np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10)


def test_streamed_npy_smooth_with_nan_gaps_equals_whole_file(tmp_path):
    src = SAMPLES / "sensor_gaps.npy"
    args = ["--nan-policy", "omit", "--edges", "renormalize", "--length", "41", "-v"]
    whole, streamed = tmp_path / "whole.npy", tmp_path / "streamed.npy"
    assert invoke("smooth", src, whole, *args).exit_code == 0
    r = invoke("smooth", src, streamed, *args, env=STREAM)
    assert r.exit_code == 0 and "(streamed)" in r.stderr
    a, b = np.load(whole), np.load(streamed)
    assert a.shape == b.shape == (4000,)
    np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12, equal_nan=True)


def _fail_on_third_block(monkeypatch, exc: BaseException):
    """Make AtomicWriter.write raise ``exc`` on its third block (on the writer thread)."""
    from cli.writing import AtomicWriter

    real, calls = AtomicWriter.write, []

    def write(self, block):
        calls.append(block.shape)
        if len(calls) == 3:
            raise exc
        return real(self, block)

    monkeypatch.setattr(AtomicWriter, "write", write)
    return calls


def test_a_failed_block_write_discards_the_streamed_output(tmp_path, long_float_wav, monkeypatch):
    from cli.errors import FileProblem

    out = tmp_path / "out" / "smoothed.wav"
    calls = _fail_on_third_block(monkeypatch, FileProblem(out, "write failed: disk full"))
    r = invoke("smooth", long_float_wav, out, env=STREAM)
    assert r.exit_code == 1
    assert "smoothed.wav: write failed: disk full" in r.stderr
    assert len(calls) == 3  # nothing was written after the failure
    assert list(tmp_path.iterdir()) == [long_float_wav]  # no output, temporary or its folder


class _DiskFillsUp:
    """A file that takes ``room`` bytes, then fails as a full disk does (buffered: the
    error comes out of a later write, a seek or the final flush)."""

    def __init__(self, file, room: int):
        self._file, self._room = file, room

    def write(self, data):
        if self._file.tell() + len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)


@pytest.mark.parametrize("room", [0, 30_000])
def test_a_full_disk_fails_the_streamed_audio_file_cleanly(
    tmp_path, long_float_wav, room, monkeypatch
):
    # libsndfile writes a streamed file through Python callbacks: the OSError was raised
    # inside a cffi callback ("Exception ignored ... Traceback ... OSError" on stderr) and the
    # file failed as "AssertionError: " (soundfile's check of the frames written), naming the
    # input rather than the output and not the reason.
    import cli.writing

    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        file = real_fdopen(fd, mode, *args, **kwargs)
        return _DiskFillsUp(file, room) if mode == "w+b" else file

    monkeypatch.setattr(cli.writing.os, "fdopen", fdopen)
    out = tmp_path / "out" / "smoothed.wav"
    r = invoke("smooth", long_float_wav, out, env=STREAM)
    assert r.exit_code == 1
    assert "smoothed.wav: write failed (No space left on device)" in r.stderr
    assert "Traceback" not in r.stderr and "AssertionError" not in r.stderr
    assert list(tmp_path.iterdir()) == [long_float_wav]


def test_a_full_disk_fails_the_streamed_npy_file_before_mapping_it(tmp_path, monkeypatch):
    # A streamed .npy is a memory map of a sparse file: storing into a page the disk had no
    # room for killed the process with SIGBUS, leaving its temporary file behind. Its blocks
    # are now reserved first, so a full disk is an ordinary error.
    calls = []

    def posix_fallocate(fd, offset, length):
        calls.append(length)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", posix_fallocate, raising=False)
    src = tmp_path / "long.npy"
    np.save(src, np.random.default_rng(5).standard_normal((2, 5000)))
    out = tmp_path / "smoothed.npy"
    r = invoke("smooth", src, out, env=STREAM)
    assert r.exit_code == 1 and calls and calls[0] >= 2 * 5000 * 8
    assert "smoothed.npy" in r.stderr and "No space left on device" in r.stderr
    assert list(tmp_path.iterdir()) == [src]


def test_an_interrupted_stream_leaves_nothing(tmp_path, long_float_wav, monkeypatch):
    _fail_on_third_block(monkeypatch, KeyboardInterrupt())
    out = tmp_path / "out" / "smoothed.wav"
    r = invoke("smooth", long_float_wav, out, env=STREAM)
    assert r.exit_code == 130 and "interrupted" in r.stderr  # 128 + SIGINT, as shells say
    assert list(tmp_path.iterdir()) == [long_float_wav]


def test_streaming_leaves_one_core_to_the_writer_and_restores_the_threads(tmp_path, monkeypatch):
    import torch

    from cli.jobs import plan_jobs
    from cli.runner import Operation, RunOptions, run_jobs

    for key, value in STREAM.items():
        monkeypatch.setenv(key, value)
    np.save(tmp_path / "x.npy", np.zeros((1, 5000), dtype=np.float32))
    seen = []

    class Recorder:
        def push(self, block):
            seen.append(torch.get_num_threads())
            return block

        def flush(self):
            return torch.zeros(1, 0)

    op = Operation(apply=lambda b, i: b, streamer=lambda info, device: (Recorder(), 5000))
    jobs = plan_jobs([tmp_path / "x.npy"], tmp_path / "y.npy")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert run_jobs(jobs, op, RunOptions(device="cpu", quiet=True)).return_code == 0
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.zeros((1, 5000)))


@pytest.mark.parametrize(
    "env",
    [
        {"DIFFCONV_STREAM_SAMPLES": "abc"},
        {"DIFFCONV_STREAM_SAMPLES": "-5"},
        {"DIFFCONV_BLOCK_FRAMES": "1.5"},
        {"DIFFCONV_BLOCK_FRAMES": "0"},
    ],
)
def test_a_bad_streaming_setting_is_a_usage_error_naming_it(tmp_path, long_float_wav, env):
    # DIFFCONV_STREAM_SAMPLES=abc ended in a bare traceback; DIFFCONV_BLOCK_FRAMES=abc failed
    # every streamed file with "invalid literal for int()", naming no variable.
    r = invoke("smooth", long_float_wav, tmp_path / "out.wav", env={**STREAM, **env})
    ((name, value),) = env.items()
    assert r.exit_code == 2, r.stderr
    assert name in r.stderr and repr(value) in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("dest", ["streamed.npy", "-"])
def test_a_stream_that_ends_before_its_header_says_fails_instead_of_padding(tmp_path, dest):
    # A damaged Ogg decodes fewer frames than its header counts; the .npy, sized up front from
    # the header, was committed with zeros where the missing frames would be.
    rng = np.random.default_rng(5)
    sf.write(tmp_path / "full.ogg", 0.1 * rng.standard_normal((100_000, 2)), 44100)
    data = bytearray((tmp_path / "full.ogg").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    garbled = tmp_path / "garbled.ogg"
    garbled.write_bytes(bytes(data))
    header, decoded = sf.info(garbled).frames, len(sf.read(garbled)[0])
    assert decoded < header == 100_000
    out = tmp_path / dest if dest != "-" else "-"
    extra = ["-t", "npy"] if dest == "-" else []
    r = invoke("smooth", garbled, out, *extra, env=STREAM)
    assert r.exit_code == 1
    # The reader stops it, naming the input (the writer's check stays behind it).
    assert f"declares {header:,} frames, decoding ended after {decoded:,}" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.ogg", "garbled.ogg"]
    assert r.stdout_bytes == b""
