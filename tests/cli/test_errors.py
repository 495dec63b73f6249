"""Every bad input gets its exit code and a message naming file and reason, and writes nothing."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from tests.cli.conftest import SAMPLES, invoke, listing

# A command that reads files without needing a smoothing window, so these tests isolate I/O.
KERNEL = SAMPLES / "impulse_response.wav"


def convolve(*args):
    return invoke("convolve", *args, "--kernel", KERNEL)


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("empty", "file is empty"),
        ("text", "not a readable sound file (Format not recognised)"),
        ("corrupt", "not a readable sound file"),
        ("pickled", "not a valid .npy file"),
        ("unterminated", "not a valid .npy file (EOF in multi-line statement)"),
        ("objects", "pickled data"),
        ("4d", "4-D"),
        ("truncated", "truncated: its header declares 4,000 bytes of samples, the file holds"),
        ("truncated_aiff", "truncated: its header declares"),
        ("truncated_au", "truncated: its header declares 4,000 bytes"),
    ],
)
def test_unreadable_input(bad_inputs, tmp_path, kind, reason):
    src = bad_inputs[kind]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = convolve(src, out_dir / "y.npy")
    assert r.exit_code == 1, r.output
    assert str(src) in r.stderr and reason in r.stderr
    assert "Traceback" not in r.output
    assert listing(out_dir) == []


def test_a_wav_streamed_with_its_size_unknown_is_read_whole(tmp_path):
    # Written to a pipe, a WAV's header keeps a placeholder size (0xFFFFFFFF, sox's
    # 0x7FFFF000): not a truncated file, whatever libsndfile's log says of it.
    whole = io.BytesIO()
    sf.write(whole, np.linspace(-0.5, 0.5, 1000), 8000, subtype="PCM_16", format="WAV")
    data = bytearray(whole.getvalue())
    at = data.find(b"data")
    for placeholder in (0xFFFFFFFF, 0x7FFFF000):
        data[at + 4 : at + 8] = struct.pack("<I", placeholder)
        src = tmp_path / f"streamed_{placeholder:x}.wav"
        src.write_bytes(bytes(data))
        r = convolve(src, tmp_path / f"{src.stem}.npy")
        assert r.exit_code == 0, r.output
        assert np.load(tmp_path / f"{src.stem}.npy").shape == (1, 1000)


def test_missing_input_is_usage_error(tmp_path):
    r = convolve(tmp_path / "nope.wav", tmp_path / "y.wav")
    assert r.exit_code == 2
    assert "nope.wav" in r.stderr and "no such file" in r.stderr
    assert listing(tmp_path) == []


def test_output_exists_needs_overwrite(tmp_path):
    out = tmp_path / "y.wav"
    out.write_bytes(b"precious")
    r = convolve(SAMPLES / "speech_mono16.wav", out)
    assert r.exit_code == 1
    assert "output exists" in r.stderr and "--overwrite" in r.stderr and str(out) in r.stderr
    assert out.read_bytes() == b"precious" and listing(tmp_path) == ["y.wav"]
    r = convolve(SAMPLES / "speech_mono16.wav", out, "--overwrite")
    assert r.exit_code == 0 and out.read_bytes() != b"precious"


def test_output_directory_is_a_file(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("a file")
    for args in (
        [SAMPLES / "speech_mono16.wav", SAMPLES / "music_stereo24.wav", blocker],  # many -> dir
        [SAMPLES / "speech_mono16.wav", blocker / "y.wav"],  # parent is a file
    ):
        r = convolve(*args)
        assert r.exit_code == 2, r.output
        assert "out" in r.stderr and "is a file" in r.stderr
    assert listing(tmp_path) == ["out"]


def test_unknown_output_extension(tmp_path):
    r = convolve(SAMPLES / "speech_mono16.wav", tmp_path / "y.xyz")
    assert r.exit_code == 2 and ".xyz" in r.stderr
    assert listing(tmp_path) == []


def test_bad_subtype(tmp_path):
    r = convolve(SAMPLES / "speech_mono16.wav", tmp_path / "y.flac", "--subtype", "FLOAT")
    assert r.exit_code == 2 and "FLOAT" in r.stderr and "FLAC" in r.stderr
    assert listing(tmp_path) == []


@pytest.mark.parametrize("name", ["", " "])
def test_an_empty_subtype_is_a_usage_error_before_any_file(tmp_path, name):
    # '' read as "not given" where outputs are checked: the .npy of a mixed batch was
    # written, then every audio file failed and the run ended with exit 2.
    sources = [SAMPLES / "speech_mono16.wav", SAMPLES / "sensor_gaps.npy"]
    r = invoke("convolve", *sources, tmp_path / "out", "--kernel", KERNEL, "--subtype", name)
    assert r.exit_code == 2 and "'--subtype'" in r.stderr, r.stderr
    assert listing(tmp_path) == []


@pytest.mark.parametrize("source", ["speech_mono16.wav", "sensor_gaps.npy"])
def test_subtype_with_only_npy_outputs(tmp_path, source):
    r = convolve(SAMPLES / source, tmp_path / "y.npy", "--subtype", "PCM_16")
    assert r.exit_code == 2 and "PCM_16" in r.stderr and "y.npy" in r.stderr
    assert listing(tmp_path) == []


def test_subtype_applies_to_the_audio_outputs_of_a_mixed_batch(tmp_path):
    import soundfile as sf

    sources = [SAMPLES / "speech_mono16.wav", SAMPLES / "sensor_gaps.npy"]
    r = invoke(
        "convolve", *sources, tmp_path, "--kernel", KERNEL, "--subtype", "PCM_24", "--rate", "8000"
    )
    assert r.exit_code == 0, r.stderr
    assert sf.info(tmp_path / "speech_mono16.wav").subtype == "PCM_24"
    assert np.load(tmp_path / "sensor_gaps.npy").dtype == np.load(sources[1]).dtype


def test_npy_to_audio_needs_rate(tmp_path):
    r = convolve(SAMPLES / "sensor_gaps.npy", tmp_path / "y.wav")
    assert r.exit_code == 2 and "--rate" in r.stderr and "sensor_gaps.npy" in r.stderr
    assert listing(tmp_path) == []


def test_3d_npy_cannot_become_audio(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 100)))
    r = convolve(tmp_path / "x.npy", tmp_path / "y.wav", "--rate", "100")
    assert r.exit_code == 1 and "3-D" in r.stderr
    assert listing(tmp_path) == ["x.npy"]


def test_bad_device_and_missing_cuda(tmp_path):
    r = convolve(SAMPLES / "speech_mono16.wav", tmp_path / "y.wav", "--device", "tpu")
    assert r.exit_code == 2 and "tpu" in r.stderr
    import torch

    if not torch.cuda.is_available():
        r = convolve(SAMPLES / "speech_mono16.wav", tmp_path / "y.wav", "--device", "cuda")
        assert r.exit_code == 2 and "CUDA is not available" in r.stderr
    assert listing(tmp_path) == []


def test_verbose_shows_traceback_for_failures(bad_inputs, tmp_path):
    r = convolve(bad_inputs["text"], tmp_path / "y.wav", "-v")
    assert r.exit_code == 1 and "Traceback" in r.stderr


def test_headerless_raw_input_is_a_clear_failure_not_a_traceback(tmp_path):
    # soundfile raised TypeError("samplerate must be specified") for a .raw name, which
    # `info` let through as a traceback. Without --rate and --raw-subtype it is a usage
    # error naming the file (tests/cli/test_raw.py reads it with them).
    raw = tmp_path / "x.raw"
    (np.arange(400, dtype="<i2") * 50).tofile(raw)
    for args in (("info", raw), ("smooth", raw, tmp_path / "y.wav")):
        r = invoke(*args)
        assert r.exit_code == 2, r.output
        assert f"{raw}: headerless (raw) input needs --rate and --raw-subtype" in r.stderr
        assert "Traceback" not in r.stderr
    assert listing(tmp_path) == ["x.raw"]


@pytest.mark.parametrize(
    "header, reason",
    [
        (b"{'descr': '<f4', garbage", "EOF in multi-line statement"),
        (b"[1, 2, 3]", "Header is not a dictionary"),
        (b"{'descr': '<f4', 'fortran_order': False}", "correct keys"),
        (b"{'descr': 'zz9', 'fortran_order': False, 'shape': (4,)}", "not a valid dtype"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': 4}", "shape is not valid"),
        (b"{'descr': '<f4', 'fortran_order': 'yes', 'shape': (4,)}", "not a valid bool"),
        (b"__import__('os').system('echo pwned')", "malformed node"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (-4,)}", "negative dimension"),
    ],
    ids=["unterminated", "list", "keys", "descr", "shape", "order", "call", "negative"],
)
def test_npy_headers_that_do_not_describe_an_array(tmp_path, header, reason):
    # numpy parses the header as a Python literal: each way it can fail (one raised
    # tokenize.TokenError, a traceback) is that file's problem, never code that runs.
    padded = header + b" " * max(0, 53 - len(header)) + b"\n"
    path = tmp_path / "x.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(padded)) + padded + bytes(16))
    for args in (("info", path), ("smooth", path, tmp_path / "y.npy")):
        r = invoke(*args)
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert str(path) in r.stderr and reason in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


@pytest.mark.parametrize(
    "fmt, subtype, ext", [("FLAC", "PCM_16", "flac"), ("MP3", "MPEG_LAYER_III", "mp3")]
)
def test_a_cut_off_compressed_file_is_truncated_not_whole(tmp_path, fmt, subtype, ext):
    # Their headers state the frame count whatever is left of the file: info described a
    # FLAC cut in half as whole (smooth then failed reading it), and an MP3 cut to two
    # thirds was smoothed into a shorter output with exit code 0.
    whole = tmp_path / f"whole.{ext}"
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (48000, 2))
    try:
        sf.write(whole, noise, 48000, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, TypeError, ValueError) as err:
        pytest.skip(f"this libsndfile cannot write {fmt}: {err}")
    cut = tmp_path / f"cut.{ext}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert invoke("info", whole).exit_code == 0
    for args in (("info", cut), ("smooth", cut, tmp_path / "out.wav")):
        r = invoke(*args)
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert f"{cut}: truncated or corrupt: its header declares 48,000 frames" in r.stderr
    assert not (tmp_path / "out.wav").exists()
    r = invoke("smooth", whole, tmp_path / "out.wav")
    assert r.exit_code == 0 and sf.info(tmp_path / "out.wav").frames == 48000


def test_a_mirrored_output_without_a_format_fails_that_file_alone(tmp_path):
    # README.md taken by --glob '*', or a WAV without an extension among several INPUTs: the
    # output name gives no format. Refused as a usage error, it stopped the whole batch.
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "speech.wav").write_bytes((SAMPLES / "speech_mono16.wav").read_bytes())
    (folder / "README.md").write_text("not audio\n")
    r = convolve(folder, tmp_path / "out", "--glob", "*")
    assert r.exit_code == 1, r.stderr
    assert "README.md" in r.stderr and "cannot tell the output format" in r.stderr
    assert listing(tmp_path / "out") == ["speech.wav"]
    bare = tmp_path / "noext"
    bare.write_bytes((SAMPLES / "speech_mono16.wav").read_bytes())
    r = convolve(SAMPLES / "speech_mono16.wav", bare, tmp_path / "out2")
    assert r.exit_code == 1 and "noext" in r.stderr, r.stderr
    assert listing(tmp_path / "out2") == ["speech_mono16.wav"]
    # An OUTPUT named on the command line is still a usage error, nothing written.
    r = convolve(SAMPLES / "speech_mono16.wav", tmp_path / "y.md")
    assert r.exit_code == 2 and not (tmp_path / "y.md").exists()


def test_a_rate_no_input_takes_is_noted(tmp_path):
    # --rate is for .npy and headerless inputs; given with audio files only it was ignored
    # without a word. With a .npy among them it is used, and nothing is said.
    r = convolve(SAMPLES / "speech_mono16.wav", tmp_path / "y.wav", "--rate", "8000")
    assert r.exit_code == 0, r.stderr
    assert "note: --rate 8000 is for .npy and headerless inputs" in r.stderr
    assert (
        sf.info(tmp_path / "y.wav").samplerate == sf.info(SAMPLES / "speech_mono16.wav").samplerate
    )
    sources = [SAMPLES / "speech_mono16.wav", SAMPLES / "sensor_gaps.npy"]
    r = invoke("convolve", *sources, tmp_path / "out", "--kernel", KERNEL, "--rate", "8000")
    assert r.exit_code == 0 and "--rate" not in r.stderr, r.stderr
