"""Usage errors at the edges: bad --glob patterns, option values too large to build, rates
an audio header cannot hold, a .npy behind a pipe with a path, names near the length limit,
and corrupt .npy headers. Each exits with its code, says why, and leaves nothing behind."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import soundfile as sf

from .conftest import SAMPLES, invoke, listing

SPEECH = SAMPLES / "speech_mono16.wav"


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.wav").write_bytes(SPEECH.read_bytes())
    return d


@pytest.mark.parametrize(
    "pattern,message",
    [
        ("/tmp/*", "relative to the directory"),
        ("x**.wav", "'**' can only be an entire path component"),
    ],
)
@pytest.mark.parametrize("recursive", [False, True])
@pytest.mark.parametrize("command", ["smooth", "grad"])
def test_a_bad_glob_is_a_usage_error(tmp_path, folder, pattern, message, recursive, command):
    out = tmp_path / "out"
    args = [command, folder, out, "--glob", pattern] + (["-r"] if recursive else [])
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert f"--glob {pattern!r}" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["smooth", "--length", "10000000001"],
        ["smooth", "--length", "99999999999999999999"],
        ["filter", "--lowpass", "100", "--taps", "10000000001"],
    ],
)
def test_option_values_too_large_to_build_are_usage_errors(tmp_path, args):
    out = tmp_path / "o.wav"
    result = invoke(args[0], SPEECH, out, *args[1:])
    assert result.exit_code == 2, result.output
    assert "too large to build" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["smooth", "--length", "20000001"],
        ["filter", "--lowpass", "100", "--taps", "20000001"],
        ["grad", "--length", "20000001"],
        ["fit", "--taps", "20000001"],
    ],
)
def test_a_kernel_longer_than_memory_allows_is_refused_before_it_is_built(
    tmp_path, monkeypatch, args
):
    # Linux grants the allocation and kills the process once its pages are touched: exit 137
    # and no message (--length 10**9 on a 23 GB machine). The length is checked against the
    # memory available first; here 1 GiB, so 20 M taps (about 1.2 GiB to build) are refused.
    from cli import batch

    monkeypatch.setattr(batch, "available_memory", lambda: 2**30)
    out = tmp_path / ("k.npy" if args[0] == "fit" else "o.wav")
    target = ["--out", out] if args[0] == "fit" else []
    result = invoke(args[0], SPEECH, SPEECH if args[0] == "fit" else out, *target, *args[1:])
    assert result.exit_code == 2, result.output
    assert "20,000,001 taps: too large to build (about 1 GiB needed, 1.0 GiB" in result.stderr
    assert "Traceback" not in result.stderr and listing(tmp_path) == []


def test_available_memory_reads_the_system_and_the_address_space_limit():
    import resource

    from cli.batch import available_memory

    found = available_memory()
    assert found is not None and 0 < found
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    assert limit == resource.RLIM_INFINITY or found <= limit


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "trace.npy"
    np.save(path, np.random.default_rng(0).standard_normal(1000).astype(np.float32))
    return path


@pytest.mark.parametrize("output", ["o.wav", "o.flac"])
def test_a_rate_past_what_a_header_holds_is_a_usage_error(tmp_path, trace, output):
    result = invoke("smooth", trace, tmp_path / output, "--rate", "3e9")
    assert result.exit_code == 2, result.output
    assert "above the 2147483647 Hz" in result.stderr
    assert listing(tmp_path) == ["trace.npy"]


def test_a_huge_rate_is_fine_where_no_header_stores_it(tmp_path, trace):
    # A 3 GHz trace filtered at 100 MHz: .npy and headerless outputs store no rate.
    for output in ("o.npy", "o.raw"):
        result = invoke("filter", trace, tmp_path / output, "--rate", "3e9", "--lowpass", "1e8")
        assert result.exit_code == 0, result.output
    samples = np.fromfile(tmp_path / "o.raw", dtype="<f4")
    np.testing.assert_array_equal(samples, np.load(tmp_path / "o.npy"))
    again = invoke(
        "smooth", tmp_path / "o.raw", tmp_path / "p.raw", "--rate", "3e9", "--raw-subtype", "FLOAT"
    )
    assert again.exit_code == 0, again.output


def _through_fifo(tmp_path, data: bytes):
    """A named pipe that hands out ``data`` once (as ``<(cat file)`` does)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as f:
            f.write(data)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    return fifo, feeder


@pytest.mark.parametrize(
    "args,message",
    [
        (["filter", "{o}.npy", "--lowpass", "100"], "needs --rate for filtering in Hz"),
        # A cutoff under 1 was silently read as a fraction of Nyquist.
        (["filter", "{o}.npy", "--lowpass", "0.2"], "needs --rate for filtering in Hz"),
        (["smooth", "{o}.wav"], "writing audio from .npy needs --rate"),
        (["grad", "{o}", "--duration", "0.01", "--jacobian"], "in seconds; .npy input needs"),
    ],
)
def test_a_npy_behind_a_pipe_needs_rate_as_a_npy_file_does(tmp_path, trace, args, message):
    fifo, feeder = _through_fifo(tmp_path, trace.read_bytes())
    out = str(tmp_path / "out")
    result = invoke(args[0], fifo, *[a.format(o=out) for a in args[1:]])
    feeder.join(timeout=10)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


def test_a_npy_behind_a_pipe_with_rate_is_filtered_as_the_file(tmp_path, trace):
    fifo, feeder = _through_fifo(tmp_path, trace.read_bytes())
    args = ["--lowpass", "100", "--rate", "1000"]
    piped = invoke("filter", fifo, tmp_path / "piped.npy", *args)
    feeder.join(timeout=10)
    direct = invoke("filter", trace, tmp_path / "direct.npy", *args)
    assert piped.exit_code == direct.exit_code == 0, piped.output + direct.output
    np.testing.assert_array_equal(np.load(tmp_path / "piped.npy"), np.load(tmp_path / "direct.npy"))


def test_a_usage_error_found_once_a_piped_input_is_read_exits_2(tmp_path):
    # The input's format (for stdout) is known only once the pipe is read; as through stdin.
    fifo, feeder = _through_fifo(tmp_path, SPEECH.read_bytes())
    result = invoke("smooth", fifo, "-", "--subtype", "PCM_99")
    feeder.join(timeout=10)
    assert result.exit_code == 2, result.output
    assert "'PCM_99' is not valid for WAV" in result.stderr
    assert result.stdout_bytes == b""


def test_a_usage_failure_makes_the_batch_exit_2_on_every_rank():
    from cli.report import Report

    report = Report(quiet=True)
    report.done("a.wav", "out/a.wav")
    report.failed("b.wav", "file is empty")
    assert report.return_code == 1
    other = Report(quiet=True)
    other.failed("/dev/fd/63", ".npy input needs --rate for filtering in Hz", exit_code=2)
    assert other.return_code == 2
    report.merge(other.as_dict())  # another rank's usage failure counts here too
    assert report.return_code == 2 and report.failure_count == 2


@pytest.mark.parametrize("stem", ["a" * 237, "é" * 125, "b" * 251])
@pytest.mark.parametrize("streamed", [False, True])
def test_names_up_to_the_file_system_limit_are_written(tmp_path, stem, streamed):
    dest = tmp_path / f"{stem}.wav"  # 241 to 255 bytes: its temporary must be shorter
    assert len(os.fsencode(dest.name)) <= 255
    env = {"DIFFCONV_STREAM_SAMPLES": "1000"} if streamed else None
    for extra in ([], ["--overwrite"]):
        result = invoke("smooth", SPEECH, dest, *extra, env=env)
        assert result.exit_code == 0, result.output
    assert sf.info(dest).frames == sf.info(SPEECH).frames
    assert listing(tmp_path) == [dest.name]


@pytest.mark.parametrize("command", ["smooth", "fit"])
def test_a_name_past_the_file_system_limit_is_a_usage_error(tmp_path, command):
    # os.stat's ENAMETOOLONG escaped the planning: "diffconv: error: File name too long",
    # exit 1, as if a file had failed.
    dest = tmp_path / f"{'c' * 300}.wav"
    if command == "fit":
        result = invoke("fit", dest, SPEECH, "--out", tmp_path / "k.npy")
    else:
        result = invoke("smooth", SPEECH, dest)
    assert result.exit_code == 2, result.output
    assert f"{dest}: file name too long" in result.stderr and "Traceback" not in result.stderr
    assert listing(tmp_path) == []


@pytest.mark.parametrize("target", ["itself", "nowhere"])
def test_an_input_link_that_cannot_be_followed_says_so(tmp_path, target):
    link = tmp_path / "in.wav"
    if target == "itself":
        (tmp_path / "other.wav").symlink_to(link)
        link.symlink_to(tmp_path / "other.wav")
        reason = "too many levels of symbolic links"
    else:
        link.symlink_to(tmp_path / "gone.wav")
        reason = "no such file or directory"
    result = invoke("smooth", link, tmp_path / "out.wav")
    assert result.exit_code == 2, result.output
    assert f"{link}: a symbolic link that cannot be followed ({reason})" in result.stderr
    assert not (tmp_path / "out.wav").exists()


def test_a_npy_header_with_a_negative_dimension_is_corrupt(tmp_path):
    path = tmp_path / "neg.npy"
    np.save(path, np.zeros(5, np.float32))
    path.write_bytes(path.read_bytes().replace(b"'shape': (5,)", b"'shape': (-5,)"))
    for command in (["info"], ["smooth", "--overwrite"]):
        extra = [tmp_path / "o.npy"] if command[0] == "smooth" else []
        result = invoke(command[0], path, *extra, *command[1:])
        assert result.exit_code == 1, result.output
        assert "negative dimension" in result.stderr
    assert listing(tmp_path) == ["neg.npy"]


@pytest.mark.parametrize("command", ["smooth", "grad", "fit"])
@pytest.mark.parametrize("flags", [["-q", "-v"], ["-v", "-q"], ["-qv"]])
def test_quiet_and_verbose_together_are_a_usage_error(tmp_path, command, flags):
    # -q promises errors only, yet -q -v printed a line per file.
    src = SAMPLES / "speech_mono16.wav"
    args = [src, src, tmp_path / "k.npy"] if command == "fit" else [src, tmp_path / "out"]
    r = invoke(command, *args, *flags)
    assert r.exit_code == 2 and "contradict each other" in r.stderr
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    "args, said",
    [
        (["filter", "--highpass", "300", "--taps", "100"], "got --taps 100"),
        (["smooth", "--window", "hann", "--length", "2"], "cannot scale the window to a unit sum"),
        (["smooth", "--window", "gaussian"], "(give --param std=VALUE)"),
        (
            ["smooth", "--window", "exponential", "--param", "center=3"],
            "(--window exponential_periodic)",
        ),
    ],
)
def test_library_errors_are_said_in_option_terms(tmp_path, args, said):
    # They named the library's keywords (numtaps=100, normalize='sum', sym=True), which
    # the command line does not have.
    command, *options = args
    r = invoke(command, SAMPLES / "speech_mono16.wav", tmp_path / "o.wav", *options)
    assert r.exit_code == 2 and said in r.stderr
    assert "numtaps" not in r.stderr and "normalize=" not in r.stderr
