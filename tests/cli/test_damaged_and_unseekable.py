"""Files libsndfile reads only by a frame count (GSM 6.10, G.72x), files that decode fewer
frames than their header declares, .npy headers with non-integer shapes and formats that
cannot be written here: each is one file's matter, with a message naming it, never a
traceback that stops the batch."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import soundfile as sf

from cli import audio_io
from cli.writing import AtomicWriter, output_spec

from .conftest import SAMPLES, invoke, listing

SAMPLE = SAMPLES / "speech_mono16.wav"

STREAMED = {"DIFFCONV_STREAM_SAMPLES": "100", "DIFFCONV_BLOCK_FRAMES": "700"}


def _signal(frames: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((frames, channels)) * 0.2).astype("f4")


@pytest.mark.parametrize("env", [None, STREAMED], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    "name, fmt, subtype", [("gsm.wav", "WAV", "GSM610"), ("g721.au", "AU", "G721_32")]
)
def test_files_read_only_by_a_frame_count_are_filtered_in_a_batch(
    tmp_path, env, name, fmt, subtype
):
    # libsndfile refuses "read to the end" for them ("frames must be specified for
    # non-seekable files", a ValueError): a traceback that stopped the whole batch.
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "a.wav", _signal(3000), 8000, subtype="PCM_16")
    sf.write(folder / name, _signal(5000, seed=1), 8000, format=fmt, subtype=subtype)
    with sf.SoundFile(folder / name) as f:
        assert not f.seekable()
        frames = f.frames
    result = invoke("smooth", folder, tmp_path / "out", "--rate", "8000", env=env)
    assert result.exit_code == 0, result.output + result.stderr
    assert listing(tmp_path / "out") == sorted(["a.wav", name])
    assert sf.info(tmp_path / "out" / name).frames == frames
    kernel = tmp_path / ("kernel_" + name)
    sf.write(kernel, _signal(400, seed=2), 8000, format=fmt, subtype=subtype)
    result = invoke("convolve", folder / "a.wav", tmp_path / "k.wav", "--kernel", kernel)
    assert result.exit_code == 0, result.output + result.stderr


def _damaged_ogg(path, frames: int = 160_000) -> None:
    sf.write(path, _signal(frames), 16000, format="OGG", subtype="VORBIS")
    data = bytearray(path.read_bytes())
    n = len(data)
    data[n // 3 : n // 3 + n // 4] = bytes(n // 4)  # a quarter of the stream zeroed
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("env", [None, STREAMED], ids=["whole", "streamed"])
@pytest.mark.parametrize("output", ["out.ogg", "out.wav", "out.npy"])
def test_a_file_that_decodes_fewer_frames_than_it_declares_fails_alone(tmp_path, env, output):
    # Its header counts 160,000 frames, decoding ends after ~100,000: the part read was
    # written as the result, exit 0, a third of the recording gone without a word.
    folder = tmp_path / "in"
    folder.mkdir()
    _damaged_ogg(folder / "mid.ogg")
    assert sf.info(folder / "mid.ogg").frames == 160_000
    sf.write(folder / "ok.wav", _signal(2000), 16000, subtype="PCM_16")
    suffix = output.rsplit(".", 1)[1]
    result = invoke("smooth", folder, tmp_path / "out", "--glob", "*", env=env)
    assert result.exit_code == 1, result.output + result.stderr
    assert "mid.ogg: damaged or cut short: its header declares 160,000 frames" in result.stderr
    assert listing(tmp_path / "out") == ["ok.wav"]
    single = invoke("smooth", folder / "mid.ogg", tmp_path / f"one.{suffix}", env=env)
    assert single.exit_code == 1 and not (tmp_path / f"one.{suffix}").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_wav_cut_short_after_it_was_checked_is_not_read_in_part(tmp_path):
    # A batch probes every file first; one truncated afterwards (its header unchanged) was
    # read as far as it went and written as a short result.
    path = tmp_path / "x.wav"
    sf.write(path, _signal(20_000), 8000, subtype="PCM_16")
    info = audio_io.probe(str(path))
    with open(path, "r+b") as f:
        f.truncate(44 + 2 * 14)
    with pytest.raises(audio_io.FileProblem, match="declares 20,000 frames, decoding ended"):
        audio_io.read_signal(info)
    with pytest.raises(audio_io.FileProblem, match="declares 20,000 frames, decoding ended"):
        list(audio_io.read_blocks(info, 4096))


def test_an_npy_header_with_a_boolean_dimension_is_a_failed_file(tmp_path):
    # numpy writes True into the header's shape; the probe took it for a length of 1 and
    # np.load then raised TypeError: a traceback that stopped the batch.
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((1, 50), "f4"))
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (True,), }"
    header = header.ljust(118) + "\n"
    (folder / "b.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00" + header.encode() + b"\0\0\0\0")
    result = invoke("smooth", folder, tmp_path / "out", "--rate", "8000")
    assert result.exit_code == 1, result.output + result.stderr
    assert "b.npy: corrupt .npy header: shape (True,) is not made of integers" in result.stderr
    assert listing(tmp_path / "out") == ["a.npy"]
    info = invoke("info", folder / "b.npy")
    assert info.exit_code == 1 and "not made of integers" in info.stderr


def test_sound_designer_ii_outputs_are_refused(tmp_path, monkeypatch):
    # libsndfile keeps SD2's header in a resource fork beside a named file: written through
    # a file object the output could not be read back, and an empty "._" was left behind.
    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / "in.wav", _signal(3000), 16000, subtype="PCM_16")
    result = invoke("smooth", tmp_path / "in.wav", tmp_path / "out.sd2")
    assert result.exit_code == 2
    assert "cannot write Sound Designer II" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_a_second_interrupt_during_the_discard_still_removes_the_temporary(tmp_path):
    # A second Ctrl-C raised as the close ends (interrupts.deferred) skipped the unlink.
    info = audio_io.probe(str(SAMPLE))
    dest = tmp_path / "out.wav"
    writer = AtomicWriter(dest, output_spec(dest, info), info.shape)

    def interrupted_close(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with writer:
            writer.write(audio_io.read_signal(info)[:, :100])
            assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")]
            writer._close = interrupted_close
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_second_ctrl_c_while_the_first_ones_exit_is_under_way_exits_130(
    sigterm_handler, monkeypatch
):
    # Between click's exit (130) and the signals being quietened a second Ctrl-C raised
    # KeyboardInterrupt out of main(): a bare traceback.
    from cli import interrupts
    from cli import main as entry

    def interrupted_command(**kwargs):
        raise SystemExit(interrupts.EXIT_CTRL_C)

    calls = []
    real_quiet = interrupts.quiet_after_command

    def quiet(exit_code=None):
        calls.append(exit_code)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the second Ctrl-C, as the first one's exit goes on
        real_quiet(exit_code)

    monkeypatch.setattr(entry, "cli", interrupted_command)
    monkeypatch.setattr(interrupts, "quiet_after_command", quiet)
    hangup = signal.getsignal(signal.SIGHUP)  # quietened too; the fixture keeps the others
    try:
        with pytest.raises(SystemExit) as done:
            entry.main()
    finally:
        signal.signal(signal.SIGHUP, hangup)
    assert done.value.code == interrupts.EXIT_CTRL_C
    assert calls == [interrupts.EXIT_CTRL_C, interrupts.EXIT_CTRL_C]


def test_a_file_removed_after_it_was_checked_says_so(tmp_path):
    # libsndfile's reason was "System error".
    path = tmp_path / "x.wav"
    sf.write(path, _signal(2000), 8000, subtype="PCM_16")
    info = audio_io.probe(str(path))
    path.unlink()
    for read in (audio_io.read_signal, lambda i: list(audio_io.read_blocks(i, 512))):
        with pytest.raises(audio_io.FileProblem, match="no such file \\(removed since it was"):
            read(info)


def test_inputs_under_the_output_directory_are_left_out_with_a_note(tmp_path):
    # OUTPUT inside the input tree is never searched for inputs (a rerun must not take its
    # own outputs); files put there were left out without a word.
    folder = tmp_path / "ins"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "a.wav", _signal(1000), 8000, subtype="PCM_16")
    sf.write(folder / "sub" / "b.wav", _signal(1000), 8000, subtype="PCM_16")
    result = invoke("smooth", folder, folder / "sub", "-r")
    assert result.exit_code == 0, result.stderr
    assert f"1 file under the output directory {folder / 'sub'} left out" in result.stderr
    assert listing(folder / "sub") == ["a.wav", "b.wav"]
