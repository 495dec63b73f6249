"""Headerless (raw) PCM inputs, read as --rate, --raw-subtype, --channels and --endian say
(sox's -r, -e/-b, -c, -L/-B): the samples numpy wrote, the same results as the same
samples in a WAV, in memory and streamed, from files, directories and stdin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cli.main import cli
from cli.raw import SAMPLE_BYTES
from tests.cli.conftest import REPO, SAMPLES, invoke, listing, run_diffconv, write_wav

STREAM = {"DIFFCONV_STREAM_SAMPLES": "1000", "DIFFCONV_BLOCK_FRAMES": "777"}
RATE = "8000"


def raw_args(subtype: str, channels: int = 1, endian: str | None = None, rate: str = RATE):
    args = ["--rate", rate, "--raw-subtype", subtype, "--channels", str(channels)]
    return args + (["--endian", endian] if endian else [])


@pytest.fixture
def identity(tmp_path) -> list:
    """convolve's options for a kernel of [1.0], computed directly: every sample exact."""
    kernel = tmp_path / "one.txt"
    kernel.write_text("1.0\n")
    return ["convolve", "--kernel", kernel, "--method", "direct"]


def codes_and_floats(subtype: str, channels: int, endian: str, frames: int = 600):
    """Random samples of ``subtype`` as the bytes a raw file holds (interleaved, ``endian``)
    and as the floats ``(channels, frames)`` they mean (code / 2**(bits - 1))."""
    rng = np.random.default_rng(sum(map(ord, subtype)) + channels)
    order = "<" if endian == "little" else ">"
    shape = (frames, channels)
    if subtype == "PCM_24":
        codes = rng.integers(-(2**23), 2**23, size=shape)
        as_bytes = codes.astype("<i4").view(np.uint8).reshape(*shape, 4)[..., :3]
        data = (as_bytes if order == "<" else as_bytes[..., ::-1]).tobytes()
        return data, (codes / 2.0**23).T  # 24-bit samples are computed in float64
    if subtype in ("FLOAT", "DOUBLE"):
        dtype = np.dtype(f"{order}f{4 if subtype == 'FLOAT' else 8}")
        values = rng.uniform(-1.5, 1.5, size=shape).astype(dtype)
        return values.tobytes(), values.T.astype(dtype.newbyteorder("="))
    kind, bits, offset = {
        "PCM_S8": ("i1", 8, 0),
        "PCM_U8": ("u1", 8, 128),
        "PCM_16": ("i2", 16, 0),
        "PCM_32": ("i4", 32, 0),
    }[subtype]
    codes = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=shape) + offset
    data = codes.astype(f"{order}{kind}").tobytes()
    compute = np.float64 if bits == 32 else np.float32
    return data, ((codes - offset) / 2.0 ** (bits - 1)).T.astype(compute)


CASES = [
    ("PCM_S8", 1, "little"),
    ("PCM_U8", 2, "little"),
    ("PCM_16", 1, "little"),
    ("PCM_16", 2, "big"),
    ("PCM_24", 3, "little"),
    ("PCM_24", 1, "big"),
    ("PCM_32", 2, "big"),
    ("FLOAT", 1, "big"),
    ("FLOAT", 2, "little"),
    ("DOUBLE", 2, "big"),
]


@pytest.mark.parametrize("subtype, channels, endian", CASES)
def test_raw_samples_read_as_numpy_wrote_them(tmp_path, identity, subtype, channels, endian):
    data, want = codes_and_floats(subtype, channels, endian)
    src = tmp_path / "in.raw"
    src.write_bytes(data)
    r = invoke(*identity, *raw_args(subtype, channels, endian), src, tmp_path / "out.npy")
    assert r.exit_code == 0, r.output
    got = np.load(tmp_path / "out.npy")
    assert got.dtype == want.dtype and got.shape == (channels, 600)
    np.testing.assert_array_equal(got, want)


def wav_data(path: Path) -> bytes:
    """The bytes of a WAV file's data chunk: its samples as a raw file holds them."""
    data, pos = path.read_bytes(), 12
    while pos < len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == b"data":
            return data[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise AssertionError(f"{path} has no data chunk")


COMMANDS = {
    "smooth": ["smooth", "--window", "hann", "--length", "9", "--method", "direct"],
    "filter": ["filter", "--lowpass", "1500", "--taps", "31", "--method", "direct"],
}


@pytest.mark.parametrize(
    "subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"]
)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_raw_gives_what_the_same_samples_in_a_wav_give(tmp_path, subtype, command):
    rng = np.random.default_rng(5)
    wav = write_wav(tmp_path / "in.wav", 0.4 * rng.standard_normal((2, 900)), 8000, subtype)
    raw = tmp_path / "in.raw"
    raw.write_bytes(wav_data(wav))
    assert raw.stat().st_size == 900 * 2 * SAMPLE_BYTES[subtype]
    from_wav, from_raw = tmp_path / "wav.npy", tmp_path / "raw.npy"
    assert invoke(*COMMANDS[command], wav, from_wav).exit_code == 0
    r = invoke(*COMMANDS[command], *raw_args(subtype.lower(), 2), raw, from_raw)
    assert r.exit_code == 0, r.output
    a, b = np.load(from_wav), np.load(from_raw)
    assert a.shape == b.shape == (2, 900) and a.dtype == b.dtype
    np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize(
    "subtype, channels, endian, ext",
    [
        ("PCM_16", 2, "big", ".raw"),
        ("PCM_24", 1, "little", ".pcm"),
        ("PCM_U8", 3, "little", ".raw"),
        ("FLOAT", 2, "big", ".pcm"),
        ("DOUBLE", 1, "little", ".raw"),
    ],
)
def test_raw_in_raw_out_keeps_every_byte(tmp_path, identity, subtype, channels, endian, ext):
    # The output keeps the input's format: headerless, same subtype, byte order, channels
    # (float samples beyond [-1, 1] included: float subtypes are never clipped).
    data, _ = codes_and_floats(subtype, channels, endian)
    src, out = tmp_path / f"in{ext}", tmp_path / f"out{ext}"
    src.write_bytes(data)
    r = invoke(*identity, *raw_args(subtype, channels, endian), src, out)
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == data


def test_raw_to_wav_takes_the_rate_and_subtype_option_sets_the_output(tmp_path, identity):
    data, want = codes_and_floats("PCM_16", 2, "big")
    src = tmp_path / "in.raw"
    src.write_bytes(data)
    r = invoke(*identity, *raw_args("PCM_16", 2, "big", rate="22050"), src, tmp_path / "o.wav")
    assert r.exit_code == 0, r.output
    info = sf.info(tmp_path / "o.wav")
    assert (info.samplerate, info.channels, info.subtype) == (22050, 2, "PCM_16")
    np.testing.assert_array_equal(sf.read(tmp_path / "o.wav", dtype="float32")[0].T, want)
    # --subtype changes the sample format of a raw output; the byte order stays the input's.
    out = tmp_path / "o.raw"
    r = invoke(*identity, *raw_args("PCM_16", 2, "big"), "--subtype", "FLOAT", src, out)
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.fromfile(out, ">f4").reshape(-1, 2).T, want)


@pytest.mark.parametrize("subtype, channels, endian", [("PCM_16", 2, "big"), ("FLOAT", 3, None)])
def test_streamed_raw_equals_the_input_and_the_whole_file_result(
    tmp_path, identity, subtype, channels, endian
):
    data, _ = codes_and_floats(subtype, channels, endian or "little", frames=3000)
    src = tmp_path / "long.raw"
    src.write_bytes(data)
    args = raw_args(subtype, channels, endian)
    r = invoke(*identity, *args, "-v", src, tmp_path / "same.raw", env=STREAM)
    assert r.exit_code == 0 and "(streamed)" in r.stderr, r.output
    assert (tmp_path / "same.raw").read_bytes() == data
    # Circular padding reads the file's end first (a seek in the headerless file).
    kernel = tmp_path / "k.npy"
    np.save(kernel, np.random.default_rng(1).standard_normal(25))
    conv = ["convolve", "--kernel", kernel, "--padding", "circular", *args, "-v"]
    whole, streamed = tmp_path / "whole.npy", tmp_path / "streamed.npy"
    r = invoke(*conv, src, whole)
    assert r.exit_code == 0 and "(streamed)" not in r.stderr, r.output
    r = invoke(*conv, src, streamed, env=STREAM)
    assert r.exit_code == 0 and "(streamed)" in r.stderr, r.output
    np.testing.assert_allclose(np.load(streamed), np.load(whole), rtol=1e-5, atol=1e-5)


def invoke_stdin(*args, data: bytes, env: dict | None = None):
    return CliRunner(env=env).invoke(cli, [str(a) for a in args], input=data)


@pytest.mark.parametrize("env", [None, STREAM], ids=["whole", "streamed"])
def test_raw_stdin_with_raw_subtype(tmp_path, identity, env):
    data, want = codes_and_floats("PCM_24", 2, "big", frames=2000)
    args = raw_args("PCM_24", 2, "big")
    # To stdout: the input's own format again, byte for byte.
    r = invoke_stdin(*identity, *args, "-", "-", data=data, env=env)
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == data
    # To a file, and to stdout as another format with -t.
    r = invoke_stdin(*identity, *args, "-v", "-", tmp_path / "o.npy", data=data, env=env)
    assert r.exit_code == 0, r.stderr
    assert ("(streamed)" in r.stderr) == (env is not None)
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), want)
    r = invoke_stdin(*identity, *args, "-", "-t", "wav", "-", data=data, env=env)
    assert r.exit_code == 0, r.stderr
    (tmp_path / "o.wav").write_bytes(r.stdout_bytes)
    assert sf.info(tmp_path / "o.wav").subtype == "PCM_24"
    np.testing.assert_array_equal(sf.read(tmp_path / "o.wav", dtype="float32")[0].T, want)


def test_stdin_without_raw_subtype_is_read_by_its_header(tmp_path):
    # A WAV on stdin stays a WAV; --channels alone does not make stdin raw, and says so.
    speech = (SAMPLES / "speech_mono16.wav").read_bytes()
    r = invoke_stdin("info", "-", data=speech)
    assert r.exit_code == 0 and "WAV/PCM_16" in r.stdout
    r = invoke_stdin("smooth", "--channels", "2", "-", tmp_path / "o.wav", data=speech)
    assert r.exit_code == 2
    assert "--channels describes headerless inputs" in r.stderr and "no INPUT is one" in r.stderr
    assert listing(tmp_path) == []


def test_info_describes_raw_files_and_stdin(tmp_path):
    data, _ = codes_and_floats("PCM_16", 2, "big", frames=4000)
    (tmp_path / "a.raw").write_bytes(data)
    (tmp_path / "b.pcm").write_bytes(bytes(range(256)) * 25)
    r = invoke("info", *raw_args("PCM_16", 2, "big"), tmp_path / "a.raw")
    assert r.exit_code == 0, r.output
    want = "4000 frames, 8000 Hz, 2 channels, RAW/PCM_16 big-endian, 0.500 s"
    assert r.stdout == f"{tmp_path / 'a.raw'}: {want}\n"
    r = invoke("info", "--rate", "6400", "--raw-subtype", "ulaw", tmp_path / "b.pcm")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{tmp_path / 'b.pcm'}: 6400 frames, 6400 Hz, 1 channel, RAW/ULAW, 1.000 s\n"
    r = invoke_stdin("info", *raw_args("PCM_16", 1), "-", data=data)
    assert r.exit_code == 0, r.output
    assert (
        r.stdout == "<stdin>: 8000 frames, 8000 Hz, 1 channel, RAW/PCM_16 little-endian, 1.000 s\n"
    )


@pytest.mark.parametrize(
    "given, missing",
    [
        ([], "--rate and --raw-subtype"),
        (["--rate", "8000"], "--raw-subtype"),
        (["--raw-subtype", "PCM_16", "--channels", "2"], "--rate"),
    ],
)
@pytest.mark.parametrize("command", ["smooth", "info"])
def test_a_raw_input_without_rate_or_subtype_is_a_usage_error(tmp_path, command, given, missing):
    raw = tmp_path / "x.raw"
    (np.arange(400, dtype="<i2") * 50).tofile(raw)
    write_wav(tmp_path / "ok.wav", np.zeros(100))
    outputs = [tmp_path / "out"] if command == "smooth" else []
    r = invoke(command, *given, tmp_path / "ok.wav", raw, *outputs)
    assert r.exit_code == 2, r.output
    assert f"{raw}: headerless (raw) input needs {missing} (" in r.stderr
    assert r.stdout == "" and listing(tmp_path) == ["ok.wav", "x.raw"]


@pytest.mark.parametrize(
    "given, named",
    [
        (["--raw-subtype", "PCM_16"], "--raw-subtype describes"),
        (["--channels", "2", "--endian", "big"], "--channels, --endian describe"),
    ],
)
@pytest.mark.parametrize("command", ["convolve", "info"])
def test_raw_options_without_a_raw_input_are_a_usage_error(
    tmp_path, identity, command, given, named
):
    # As --subtype with only .npy outputs: an option that would be dropped without a word.
    args = [*identity, *given, SAMPLES / "speech_mono16.wav", tmp_path / "o.wav"]
    if command == "info":
        args = ["info", *given, SAMPLES / "speech_mono16.wav"]
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert named in r.stderr and "headerless inputs" in r.stderr
    assert r.stdout == "" and listing(tmp_path) == ["one.txt"]


def test_info_refuses_a_rate_it_would_not_use():
    # info has no other use for --rate (it describes .npy by shape and dtype).
    r = invoke("info", "--rate", "8000", SAMPLES / "speech_mono16.wav")
    assert r.exit_code == 2 and "--rate describes headerless inputs" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--raw-subtype", "PCM_12"], "'PCM_12' is not one of"),
        (["--raw-subtype", "GSM610"], "'GSM610' is not one of"),
        (["--raw-subtype", "PCM_16", "--channels", "0"], "0 is not in the range 1<=x<=1024"),
        # libsndfile's limit: every raw file failed alone with "Bad format field in SF_INFO".
        (["--raw-subtype", "PCM_16", "--channels", "1025"], "1025 is not in the range"),
        (["--raw-subtype", "PCM_16", "--endian", "middle"], "'middle' is not one of"),
        (["--raw-subtype", "PCM_16", "--rate", "nan"], "nan is not a sample rate"),
    ],
)
def test_bad_raw_option_values_are_usage_errors(tmp_path, args, message):
    raw = tmp_path / "x.raw"
    raw.write_bytes(bytes(2 * 1025 * 4))
    r = invoke("smooth", "--rate", "8000", *args, raw, tmp_path / "o.wav")
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert listing(tmp_path) == ["x.raw"]


def test_a_raw_file_of_partial_frames_fails_alone_and_the_batch_goes_on(tmp_path, identity):
    folder = tmp_path / "in"
    folder.mkdir()
    good, _ = codes_and_floats("PCM_16", 2, "little")
    (folder / "good.raw").write_bytes(good)
    (folder / "odd.raw").write_bytes(good[:-1])  # half a sample short
    (folder / "half.pcm").write_bytes(good[:6])  # one and a half 4-byte frames
    write_wav(folder / "ok.wav", np.zeros((2, 50)))
    r = invoke(*identity, *raw_args("PCM_16", 2), folder, tmp_path / "out")
    assert r.exit_code == 1, r.output
    assert (
        f"{folder / 'odd.raw'}: headerless (raw) samples: 2399 bytes is not a whole number "
        "of 4-byte frames (2 channels of PCM_16)" in r.stderr
    )
    assert f"{folder / 'half.pcm'}: headerless (raw) samples: 6 bytes" in r.stderr
    assert "2 files processed, 2 files failed." in r.stderr
    assert listing(tmp_path / "out") == ["good.raw", "ok.wav"]
    assert (tmp_path / "out" / "good.raw").read_bytes() == good
    # info describes the others and exits 1.
    r = invoke("info", *raw_args("PCM_16", 2), folder / "good.raw", folder / "odd.raw")
    assert r.exit_code == 1 and r.stdout.startswith(f"{folder / 'good.raw'}: 600 frames")
    assert "odd.raw: headerless (raw) samples: 2399 bytes" in r.stderr


def test_directories_give_raw_files_once_raw_subtype_says_how_to_read_them(tmp_path, identity):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    data, _ = codes_and_floats("PCM_16", 1, "little")
    (folder / "a.raw").write_bytes(data)
    (folder / "sub" / "b.PCM").write_bytes(data)
    write_wav(folder / "c.wav", np.zeros(50))
    # Without the options they are left out, as before (they could not be read).
    r = invoke(*identity, folder, tmp_path / "wav_only", "-r")
    assert r.exit_code == 0, r.output
    assert listing(tmp_path / "wav_only") == ["c.wav"]
    # ... and the run says so, once, unless --quiet.
    note = f"note: {folder}: 2 headerless .raw/.pcm files left out (read them with --rate"
    assert r.stderr.count(note) == 1
    r = invoke(*identity, folder, tmp_path / "quiet", "-r", "--quiet")
    assert r.exit_code == 0 and "note:" not in r.stderr
    r = invoke(*identity, *raw_args("PCM_16"), folder, tmp_path / "all", "-r")
    assert r.exit_code == 0, r.output
    assert "note:" not in r.stderr
    assert listing(tmp_path / "all") == ["a.raw", "c.wav", "sub/b.PCM"]
    assert (tmp_path / "all" / "sub" / "b.PCM").read_bytes() == data
    # A folder of raw files alone, without the options, says why nothing was found.
    r = invoke(*identity, folder / "sub", tmp_path / "none")
    assert r.exit_code == 2
    assert "(1 headerless .raw/.pcm left out: their format was not given)" in r.stderr


def test_the_left_out_note_comes_with_a_usage_error_too(tmp_path):
    # The .npy beside the left-out raw file needs --rate: the note says that the raw file
    # needs it as well, before the error stops the run.
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.raw").write_bytes(np.zeros(64, dtype="<i2").tobytes())
    np.save(folder / "b.npy", np.zeros(64, dtype=np.float32))
    r = invoke("filter", "--lowpass", "1000", folder, tmp_path / "out")
    assert r.exit_code == 2
    assert ".npy input needs --rate" in r.stderr
    assert f"note: {folder}: 1 headerless .raw/.pcm file left out" in r.stderr


def test_grad_refuses_a_raw_input_clearly(tmp_path):
    # grad (and fit) have no --raw-subtype: a raw INPUT fails saying what to do.
    raw = tmp_path / "x.raw"
    (np.arange(400, dtype="<i2") * 50).tofile(raw)
    r = invoke("grad", raw, tmp_path / "maps", "--length", "5")
    assert r.exit_code == 1, r.output
    assert f"{raw}: headerless (raw) samples: no rate" in r.stderr
    assert "give --rate and --raw-subtype" in r.stderr and "Traceback" not in r.stderr


def test_readme_raw_example_works(tmp_path):
    # The README's raw line, run as a real process on the speech sample's samples (16 kHz,
    # 16-bit mono) without their header: the WAV the same smoothing of the WAV gives.
    (line,) = [
        line.split("#")[0].split()[1:]
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("diffconv") and "--raw-subtype" in line
    ]
    speech = SAMPLES / "speech_mono16.wav"
    (tmp_path / "in.raw").write_bytes(wav_data(speech))
    r = run_diffconv(*line, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert invoke(line[0], speech, tmp_path / "want.wav").exit_code == 0
    assert (tmp_path / "out.wav").read_bytes() == (tmp_path / "want.wav").read_bytes()


@pytest.mark.parametrize("env", [None, STREAM], ids=["whole", "streamed"])
def test_raw_at_a_rate_below_1_hz_is_written_raw_again(tmp_path, identity, env):
    # A sensor logging every 2.5 s: --rate 0.4 reads it (a headerless file stores no rate),
    # and writing it headerless again stores none either, so it must not fail on the rate.
    data, _ = codes_and_floats("PCM_16", 2, "big", frames=3000)
    src = tmp_path / "slow.raw"
    src.write_bytes(data)
    args = raw_args("PCM_16", 2, "big", rate="0.4")
    r = invoke(*identity, *args, src, tmp_path / "out.raw", env=env)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out.raw").read_bytes() == data
    r = invoke(*identity, *args, src, "-", env=env)
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == data


def test_npy_to_raw_needs_no_rate(tmp_path, identity):
    # A headerless output stores no rate: asking for --rate there was a needless usage error.
    x = np.random.default_rng(3).standard_normal((2, 500)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = invoke(*identity, tmp_path / "x.npy", tmp_path / "y.raw")
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.fromfile(tmp_path / "y.raw", "<f4").reshape(500, 2).T, x)
    r = invoke(*identity, tmp_path / "x.npy", tmp_path / "y.wav")
    assert r.exit_code == 2 and "needs --rate" in r.stderr
