"""``-`` as INPUT (stdin) and OUTPUT (stdout), through real pipes: the bytes on stdout are
the file the file-based command writes, and nothing else."""

from __future__ import annotations

import io
import os
import pty
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.cli.conftest import REPO, SAMPLES, invoke, run_diffconv, write_wav

SPEECH = SAMPLES / "speech_mono16.wav"


def run_piped(*args, stdin: bytes | Path = b"", env: dict | None = None):
    """``python -m cli ARGS`` with ``stdin`` (bytes, or a file redirected as ``< file``);
    stdout comes back as bytes, stderr as text."""
    source = open(stdin, "rb") if isinstance(stdin, Path) else subprocess.PIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cli", *[str(a) for a in args]],
            input=None if isinstance(stdin, Path) else stdin,
            stdin=source if isinstance(stdin, Path) else None,
            capture_output=True,
            env=env,
            cwd=REPO,
            timeout=120,
        )
    finally:
        if isinstance(stdin, Path):
            source.close()
    return proc.returncode, proc.stdout, proc.stderr.decode()


def invoke_piped(*args, stdin: bytes | Path = b"", env: dict | None = None):
    """:func:`run_piped` in this process (for what fails early: no torch start-up to wait
    for); stdin is never a terminal here."""
    from click.testing import CliRunner

    from cli.main import cli

    data = stdin.read_bytes() if isinstance(stdin, Path) else stdin
    r = CliRunner(env=env).invoke(cli, [str(a) for a in args], input=data)
    return r.exit_code, r.stdout_bytes, r.stderr


def file_based(
    tmp_path: Path, command: list[str], src: Path, ext: str, env: dict | None = None
) -> Path:
    """The file-to-file command's output, the reference for the piped one (in this process:
    the piped runs are the real processes)."""
    out = tmp_path / f"reference{ext}"
    r = invoke(*command, src, out, env=env)
    assert r.exit_code == 0, r.stderr
    return out


COMMANDS = {
    "smooth": ["smooth", "--length", "21"],
    "convolve": ["convolve", "--kernel", str(SAMPLES / "impulse_response.wav")],
    "filter": ["filter", "--lowpass", "1000", "--taps", "63"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_stdin_to_stdout_is_the_file_commands_output_byte_for_byte(tmp_path, name):
    command = COMMANDS[name]
    want = file_based(tmp_path, command, SPEECH, ".wav").read_bytes()
    code, out, err = run_piped(*command, "-", "-", stdin=SPEECH)
    assert code == 0, err
    assert out == want
    assert "1 file processed" in err  # the impulse response makes a few samples clip


def test_the_shell_redirection_form(tmp_path):
    # `diffconv smooth - - < in.wav > out.wav`, as a user types it.
    want = file_based(tmp_path, ["smooth"], SPEECH, ".wav").read_bytes()
    line = f"{shlex.quote(sys.executable)} -m cli smooth - - < {shlex.quote(str(SPEECH))} > out.wav"
    r = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.wav").read_bytes() == want


def test_type_flac_converts_on_stdout(tmp_path):
    want = file_based(tmp_path, ["smooth"], SPEECH, ".flac")
    code, out, err = run_piped("smooth", "-", "-", "--type", "flac", stdin=SPEECH)
    assert code == 0, err
    info = sf.info(io.BytesIO(out))
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        "FLAC",
        "PCM_16",
        16000,
        1,
    )
    got, _ = sf.read(io.BytesIO(out), dtype="int16")
    np.testing.assert_array_equal(got, sf.read(want, dtype="int16")[0])
    code, out, err = run_piped("smooth", "-", "-", "-t", ".NPY", stdin=SPEECH)
    assert code == 0, err
    assert np.load(io.BytesIO(out), allow_pickle=False).shape == (1, 32000)


def test_stereo_24_bit_keeps_format_subtype_rate_channels(tmp_path):
    src = SAMPLES / "music_stereo24.wav"
    want = file_based(tmp_path, ["smooth"], src, ".wav").read_bytes()
    code, out, err = run_piped("smooth", "-", "-", stdin=src.read_bytes())
    assert code == 0, err
    assert out == want
    assert sf.info(io.BytesIO(out)).subtype == "PCM_24"


def test_npy_in_and_out_through_pipes(tmp_path):
    src = SAMPLES / "sensor_gaps.npy"
    want = file_based(tmp_path, ["smooth", "--nan-policy", "omit"], src, ".npy")
    code, out, err = run_piped("smooth", "--nan-policy", "omit", "-", "-", stdin=src)
    assert code == 0, err
    assert out == want.read_bytes()
    got = np.load(io.BytesIO(out), allow_pickle=False)
    assert got.shape == np.load(src).shape and got.dtype == np.float64


def test_stdin_to_a_file_and_a_file_to_stdout(tmp_path):
    want = file_based(tmp_path, ["smooth"], SPEECH, ".wav").read_bytes()
    code, out, err = run_piped("smooth", "-", tmp_path / "from_stdin.wav", stdin=SPEECH)
    assert (code, out) == (0, b""), err
    assert (tmp_path / "from_stdin.wav").read_bytes() == want
    code, out, err = run_piped("smooth", SPEECH, "-", stdin=b"")
    assert code == 0, err
    assert out == want


def test_streamed_through_pipes_equals_the_streamed_file(tmp_path):
    # Long inputs stream block by block; from stdin the blocks are read from memory, and a
    # circular pad reads the end first (a seek in the in-memory file).
    command = ["convolve", "--kernel", str(SAMPLES / "impulse_response.wav")]
    command += ["--padding", "circular"]
    env = dict(os.environ, DIFFCONV_STREAM_SAMPLES="1000", DIFFCONV_BLOCK_FRAMES="777")
    want = file_based(tmp_path, [*command, "-v"], SPEECH, ".wav", env=env)
    code, out, err = run_piped(*command, "-v", "-", "-", stdin=SPEECH, env=env)
    assert code == 0, err
    assert "done: <stdin> -> <stdout> (streamed)" in err
    assert out == want.read_bytes()


def test_messages_warnings_and_summary_go_to_stderr_only(tmp_path):
    # A kernel that makes integer PCM clip: the clipping warning, -v's line and the summary
    # are on stderr; stdout parses back as exactly one WAV file of the input's length.
    kernel = tmp_path / "loud.npy"
    np.save(kernel, np.array([8.0]))
    code, out, err = run_piped("convolve", "--kernel", kernel, "-v", "-", "-", stdin=SPEECH)
    assert code == 0, err
    assert "warning: <stdout):".replace(")", ">") in err and "clipped" in err
    assert "1 file processed, 1 warning." in err
    info = sf.info(io.BytesIO(out))
    assert (info.format, info.frames, info.channels) == ("WAV", 32000, 1)
    assert len(out) == 44 + 2 * 32000  # the header and the samples, nothing after them


def test_a_print_during_the_run_cannot_reach_stdout(monkeypatch):
    # Whatever prints while a result goes to stdout (a library, a stray print) goes to
    # stderr: in a pipe it would be read as samples.
    import cli.commands.smooth as smooth_module

    real = smooth_module.smooth_operation

    def noisy(*args, **kwargs):
        operation = real(*args, **kwargs)
        apply = operation.apply

        def loud_apply(batch, info):
            print("a library talking")
            return apply(batch, info)

        operation.apply = loud_apply
        return operation

    monkeypatch.setattr(smooth_module, "smooth_operation", noisy)
    from click.testing import CliRunner

    from cli.main import cli

    r = CliRunner().invoke(cli, ["smooth", "-", "-"], input=SPEECH.read_bytes())
    assert r.exit_code == 0, r.stderr
    assert "a library talking" in r.stderr
    assert r.stdout_bytes[:4] == b"RIFF" and len(r.stdout_bytes) == 44 + 2 * 32000


def test_empty_stdin_is_a_failed_file(tmp_path):
    code, out, err = run_piped("smooth", "-", "-", stdin=b"")
    assert (code, out) == (1, b"")
    assert "error: <stdin>: stream is empty" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "garbage",
    [b"this is not audio\n" * 20, b"\x93NUMPY\x01\x00garbage", b"RIFF\x24\x00\x00\x00WAVE"],
    ids=["text", "broken-npy", "truncated-wav"],
)
def test_garbage_on_stdin_is_a_failed_file(garbage):
    code, out, err = (run_piped if garbage.startswith(b"this") else invoke_piped)(
        "smooth", "-", "-", stdin=garbage
    )
    assert (code, out) == (1, b"")
    assert "error: <stdin>: " in err and "Traceback" not in err


def test_pickled_npy_on_stdin_is_never_loaded():
    import pickle

    buffer = io.BytesIO()
    np.save(buffer, np.array([1, "a", None], dtype=object), allow_pickle=True)
    for data in (buffer.getvalue(), pickle.dumps({"evil": 1})):
        code, out, err = invoke_piped("smooth", "-", "-", stdin=data)
        assert (code, out) == (1, b""), err
        assert "error: <stdin>: " in err


def test_a_failure_after_reading_writes_nothing_to_stdout():
    # 9 kHz is above this 16 kHz file's Nyquist frequency: the file fails when its filter is
    # designed, after stdin was read and parsed.
    code, out, err = run_piped("filter", "--lowpass", "9000", "-", "-", stdin=SPEECH)
    assert (code, out) == (1, b"")
    assert "error: <stdin>: " in err and "fs/2 = 8000 Hz" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["-", str(SPEECH), "out.wav"], "- (stdin) must be the only INPUT"),
        ([str(SPEECH), str(SPEECH), "-"], "- (stdout) takes one result"),
        ([str(SAMPLES), "-"], "is a directory"),
        ([str(SPEECH), "out.wav", "--type", "flac"], "--type"),
        ([str(SPEECH), "-", "--type", "xyz"], "'xyz' is not an output format"),
        (["-", "some_folder/"], "no file name"),
        (["-", "-", "--subtype", "PCM_77"], "'PCM_77' is not valid for WAV"),
    ],
)
def test_usage_errors_exit_2_before_anything_is_written(tmp_path, args, message):
    # Written out: a Path would drop the trailing slash that makes OUTPUT a directory.
    paths = {"out.wav": f"{tmp_path}/out.wav", "some_folder/": f"{tmp_path}/some_folder/"}
    args = [paths.get(a, a) for a in args]
    code, out, err = invoke_piped("smooth", *args, stdin=SPEECH)
    assert (code, out) == (2, b""), err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.wav").exists()


def test_npy_stdin_written_as_audio_needs_rate():
    src = SAMPLES / "sensor_gaps.npy"
    code, out, err = invoke_piped("smooth", "-", "-", "-t", "wav", stdin=src)
    assert (code, out) == (2, b"") and "from .npy needs --rate" in err
    code, out, err = invoke_piped("smooth", "-", "-", "-t", "wav", "--rate", "1000", stdin=src)
    assert code == 0, err
    assert sf.info(io.BytesIO(out)).samplerate == 1000


def test_a_terminal_on_stdin_or_stdout_is_a_usage_error():
    primary, secondary = pty.openpty()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "cli", "smooth", "-", "-"],
            stdin=secondary,
            capture_output=True,
            cwd=REPO,
            timeout=60,
        )
        assert r.returncode == 2 and b"no input on stdin" in r.stderr
        with open(SPEECH, "rb") as source:
            r = subprocess.run(
                [sys.executable, "-m", "cli", "smooth", "-", "-"],
                stdin=source,
                stdout=secondary,
                stderr=subprocess.PIPE,
                cwd=REPO,
                timeout=60,
            )
        assert r.returncode == 2 and b"- (stdout) is a terminal" in r.stderr
    finally:
        os.close(primary)
        os.close(secondary)


def test_pipes_are_refused_under_torchrun():
    env = dict(os.environ, WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
    code, out, err = invoke_piped("smooth", "-", "-", stdin=SPEECH, env=env)
    assert (code, out) == (2, b"")
    assert "cannot be used under torchrun" in err


def test_a_file_named_dash_is_reached_as_dot_slash_dash(tmp_path):
    # pathlib shortens ./- to -, which libsndfile itself would open as stdin.
    (tmp_path / "-").write_bytes(SPEECH.read_bytes())
    r = run_diffconv("smooth", "./-", "out.wav", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sf.info(tmp_path / "out.wav").frames == 32000
    r = subprocess.run(
        [sys.executable, "-m", "cli", "smooth", "./-", "-"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == (tmp_path / "out.wav").read_bytes()


def test_info_reads_stdin():
    code, out, err = run_piped("info", "-", SAMPLES / "sensor_gaps.npy", stdin=SPEECH)
    assert code == 0, err
    assert out.decode().splitlines() == [
        "<stdin>: 32000 frames, 16000 Hz, 1 channel, WAV/PCM_16, 2.000 s",
        f"{SAMPLES / 'sensor_gaps.npy'}: shape (4000,), float64",
    ]
    code, out, err = invoke_piped("info", "-", stdin=b"")
    assert (code, out) == (1, b"") and "error: <stdin>: stream is empty" in err
    r = invoke("info", "-", "-")
    assert r.exit_code == 2 and "only once" in r.stderr


def test_readme_pipe_example_works(tmp_path):
    line = next(
        line
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("diffconv") and " - - " in line
    )
    command = line.split("#")[0].strip()
    command = command.replace("in.wav", shlex.quote(str(SPEECH)), 1)
    command = command.replace("diffconv", f"{shlex.quote(sys.executable)} -m cli", 1)
    r = subprocess.run(
        command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, (command, r.stderr)
    outputs = [p for p in tmp_path.iterdir() if p.is_file()]
    assert len(outputs) == 1
    info = sf.info(outputs[0])
    assert (info.format, info.frames) == ("FLAC", 32000)


@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "PYTHONUNBUFFERED"])
def test_a_reader_closing_the_pipe_early_is_a_failure_not_a_success(tmp_path, unbuffered):
    # `diffconv smooth - - < long.wav | head -c 100`: the result does not fit in the pipe, the
    # reader leaves after 100 bytes. With PYTHONUNBUFFERED (as many containers set it) stdout
    # is a raw file whose write() may write only part of the data: that part was sent, the
    # rest dropped, and the run reported success.
    src = write_wav(tmp_path / "long.wav", np.zeros((2, 48000 * 10)), rate=48000)
    env = dict(os.environ, PYTHONUNBUFFERED=unbuffered)
    with open(src, "rb") as source:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "smooth", "--device", "cpu", "-", "-"],
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        assert proc.stdout.read(100)[:4] == b"RIFF"
        proc.stdout.close()
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    assert code == 1, err
    assert "error: <stdout>: broken pipe" in err and "0 files processed, 1 file failed" in err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_stdin_is_read_to_its_end_when_it_is_non_blocking():
    # A parent may hand over a non-blocking pipe: read() then returns what has arrived so
    # far (None if nothing has), and the rest of the file was silently dropped: the signal
    # came out shorter, exit 0. read_stdin waits for the end of the stream.
    from cli import pipes

    whole = SPEECH.read_bytes()

    class NonBlockingPipe(io.RawIOBase):
        # Its reads: some bytes, None (nothing there yet), more bytes, None, the rest, EOF.
        def __init__(self, devnull):
            self.devnull = devnull  # select() finds it readable at once
            self.reads = [whole[:1000], None, whole[1000:40000], None, whole[40000:]]

        def readable(self):
            return True

        def fileno(self):
            return self.devnull.fileno()

        def readinto(self, buffer):
            chunk = self.reads.pop(0) if self.reads else b""  # b"": the end, for good
            if chunk is None:
                return None
            n = min(len(chunk), len(buffer))
            buffer[:n] = chunk[:n]
            if n < len(chunk):
                self.reads.insert(0, chunk[n:])
            return n

    with open(os.devnull, "rb") as devnull, pytest.MonkeyPatch.context() as patch:
        stdin = io.BufferedReader(NonBlockingPipe(devnull))
        patch.setattr(sys, "stdin", stdin)
        assert pipes.read_stdin() == whole


def test_an_audio_result_for_stdout_is_held_once_in_memory(monkeypatch):
    # The encoded file was copied into a second buffer before it was sent: a long piped
    # file held its whole output twice at the end (50 MB in, 50 MB more at the peak).
    import tracemalloc

    from cli import pipes
    from cli.audio_io import probe

    info = probe(SAMPLES / "music_stereo24.wav")
    sent = []

    def send(data):
        sent.append((bytes(data[:4]), len(data)))

    monkeypatch.setattr(pipes, "send", send)
    block, blocks = np.zeros((2, 4800), dtype=np.float32), 200
    tracemalloc.start()
    try:
        with pipes.StdoutWriter(pipes.stdout_spec(info), (2, 4800 * blocks)) as writer:
            for _ in range(blocks):
                writer.write(block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = 4800 * blocks * 2 * 3  # stereo 24-bit samples
    ((start, length),) = sent
    assert start == b"RIFF" and size < length < size + 1000
    assert peak < 1.5 * size, peak / size


def test_a_process_substitution_input_is_read_as_a_stream(tmp_path):
    # `diffconv info <(sox ...)`: the INPUT is a pipe with a path (/dev/fd/63), whose size
    # is 0; it was reported as 'file is empty'. It is read once, whole, as stdin is.
    want = file_based(tmp_path, ["smooth"], SPEECH, ".wav").read_bytes()
    python, speech = shlex.quote(sys.executable), shlex.quote(str(SPEECH))
    for line, path in [
        (f"{python} -m cli info <(cat {speech})", None),
        (f"{python} -m cli smooth <(cat {speech}) out.wav", "out.wav"),
        (f"{python} -m cli smooth <(cat {speech}) - > piped.wav", "piped.wav"),
    ]:
        r = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, (line, r.stderr)
        if path is None:
            assert r.stdout.endswith(": 32000 frames, 16000 Hz, 1 channel, WAV/PCM_16, 2.000 s\n")
        else:
            assert (tmp_path / path).read_bytes() == want, line
