"""The real ``diffconv`` process on the sample files: exit codes, streams, lazy imports."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from diffconv_core.smooth import smooth as core_smooth
from tests.cli.conftest import REPO, SAMPLES, listing, run_diffconv

NO_TORCH = """
import sys
from click.testing import CliRunner
from cli.main import cli
for args in {args!r}:
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == {code}, (args, r.output)
assert "torch" not in sys.modules, "importing torch for " + repr({args!r})
"""


def test_help_and_usage_errors_do_not_import_torch(tmp_path):
    helps = [
        ["--help"],
        ["smooth", "--help"],
        ["convolve", "--help"],
        ["filter", "--help"],
        ["info", "--help"],
        ["windows", "--help"],
    ]
    usage = [
        ["smooth", str(tmp_path / "missing.wav"), str(tmp_path / "o.wav")],
        ["smooth", "--device", "tpu", "a", "b"],
        ["filter", "in.wav"],
    ]
    for args, code in ((helps, 0), (usage, 2)):
        subprocess.run(
            [sys.executable, "-c", NO_TORCH.format(args=args, code=code)],
            check=True,
            cwd=REPO,
            timeout=60,
        )


def test_readme_command_works(tmp_path):
    # The README's first command, run from another directory on the real sample file.
    r = run_diffconv(
        "smooth", SAMPLES / "speech_mono16.wav", "speech_smoothed.wav", "--overwrite", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and "1 file processed." in r.stderr
    out = tmp_path / "speech_smoothed.wav"
    x = torch.from_numpy(
        sf.read(SAMPLES / "speech_mono16.wav", dtype="float32", always_2d=True)[0].T.copy()
    )
    want = core_smooth(x, "hann", 31).numpy()
    got = sf.read(out, dtype="float32", always_2d=True)[0].T
    assert sf.info(out).subtype == "PCM_16"
    np.testing.assert_allclose(got, want, atol=1.01 / 32768)


def test_readme_info_example_works():
    # The README's info example named sample_data/*, which takes in README.md and
    # make_samples.py, so the command a reader copies failed with exit code 1.
    line = next(
        line
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("diffconv info")
    )
    pattern = line.split("#")[0].split()[2]
    files = sorted(REPO.glob(pattern))  # as the shell expands it, from the repository root
    assert files, pattern
    r = run_diffconv("info", *files)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and len(r.stdout.splitlines()) == len(files)


def test_readme_grad_examples_work_on_the_sample_files(tmp_path):
    # The README's grad lines, with in.wav the samples: a whole file, and its Jacobian (exact,
    # so over a short stretch: a whole 2 s file exceeds the Jacobian's size limit).
    lines = [
        line.split("#")[0].split()[1:]
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("diffconv grad")
    ]
    assert len(lines) == 2 and any("--jacobian" in args for args in lines)
    for sample in ("speech_mono16.wav", "music_stereo24.wav"):
        for args in lines:
            args = [str(SAMPLES / sample) if a == "in.wav" else a for a in args]
            args = [str(tmp_path / sample / a) if a.endswith("/") else a for a in args]
            r = run_diffconv(*args)
            assert r.returncode == 0, (sample, args, r.stderr)
    assert list((tmp_path / "music_stereo24.wav" / "jac").glob("*.jacobian.npy"))


def test_exit_codes_and_messages_of_a_real_process(tmp_path, bad_inputs):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.wav").write_bytes((SAMPLES / "speech_mono16.wav").read_bytes())
    (folder / "bad.wav").write_bytes(bad_inputs["corrupt"].read_bytes())
    r = run_diffconv("smooth", folder, tmp_path / "out", "--length", "11")
    assert r.returncode == 1
    assert f"error: {folder / 'bad.wav'}: not a readable sound file" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert listing(tmp_path / "out") == ["good.wav"]
    r = run_diffconv("smooth", tmp_path / "missing.wav", tmp_path / "o.wav")
    assert r.returncode == 2 and "missing.wav" in r.stderr and "Traceback" not in r.stderr


def _signal_a_streamed_smooth(tmp_path, signum: int, frames: int, *, nohup: bool = False):
    """Start smoothing a ``frames``-long file block by block, send ``signum`` once its
    temporary output exists; the process, its stderr and the output folder. Under ``nohup``
    the process starts with SIGHUP ignored."""
    import signal
    import time

    src = tmp_path / "long.wav"
    sf.write(src, np.zeros((frames, 1), np.float32), 8000, subtype="FLOAT")
    out = tmp_path / "out"
    env = dict(os.environ, DIFFCONV_STREAM_SAMPLES="1000", DIFFCONV_BLOCK_FRAMES="64")

    def start_signals():
        # A suite started in the background by a shell ignores SIGINT, and so would the
        # child: it then finished its write and the test failed. Python handles SIGINT only
        # if the default action is in place when it starts.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if nohup:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "smooth", src, out / "long.wav", "--device", "cpu"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        preexec_fn=start_signals,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and listing(out)) and proc.poll() is None:
            assert time.monotonic() < deadline, "no temporary output appeared"
            time.sleep(0.01)
        assert proc.poll() is None, "finished before it could be stopped: " + proc.stderr.read()
        proc.send_signal(signum)
        stderr = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    return proc, stderr, out


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_mid_write_leaves_no_temporary(tmp_path, signal_name):
    # SIGTERM (timeout, kill) and SIGHUP (a closed terminal or ssh session) used to end the
    # process where it stood, leaving the streamed output's hidden .NAME.xxxx.part temporary
    # behind. Ctrl-C (SIGINT) exited 1 with click's "Aborted!", the code of a failed file;
    # all now exit 128 + the signal, as shells report.
    import signal

    signum = getattr(signal, signal_name)
    proc, stderr, out = _signal_a_streamed_smooth(tmp_path, signum, 400_000)
    assert listing(out) == []
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr


def test_a_hangup_ignored_at_the_start_stays_ignored(tmp_path):
    # Under nohup (SIGHUP ignored) the command must outlive the terminal: the hangup handler
    # goes in only where SIGHUP's default action is in place.
    import signal

    proc, stderr, out = _signal_a_streamed_smooth(tmp_path, signal.SIGHUP, 100_000, nohup=True)
    assert proc.returncode == 0, stderr
    assert listing(out) == ["long.wav"] and sf.info(out / "long.wav").frames == 100_000


# Commands whose answer is text on stdout; --help and --version answer while the group's
# options are parsed, before any command runs.
TEXT_COMMANDS = [
    ("windows",),
    ("info", SAMPLES / "speech_mono16.wav"),
    ("--help",),
    ("--version",),
    ("smooth", "--help"),
]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", TEXT_COMMANDS)
def test_text_for_a_full_disk_is_a_failure_not_a_traceback(args):
    # `diffconv info FILE > /dev/full` ended in a bare OSError traceback (exit 1, or 120 from
    # the flush at exit).
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "cli", *map(str, args)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=120,
        )
    assert result.returncode == 1, result.stderr
    assert "No space left on device" in result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


@pytest.mark.parametrize("suffix", [".npy", ".wav"])
def test_a_write_the_system_refuses_says_why(tmp_path, suffix):
    # A .npy output past the file-size limit (as a full disk) said only "cannot finish
    # writing (100000 requested and 49968 written)": numpy's tofile drops the reason.
    source = tmp_path / "in.npy"
    np.save(source, np.random.default_rng(0).standard_normal((2, 50_000)).astype(np.float32))
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"  # a write past it fails with EFBIG
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))\n"
        "sys.argv = ['diffconv', *sys.argv[1:]]\n"
        "from cli.main import main\n"
        "main()\n"
    )
    dest = tmp_path / f"out{suffix}"
    result = subprocess.run(
        [sys.executable, "-c", code, "smooth", source, dest, "--rate", "8000"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert f"{dest}: cannot finish writing (File too large)" in result.stderr
    assert listing(tmp_path) == ["in.npy"]


def test_text_into_a_closed_pipe_ends_quietly():
    # `diffconv windows | head -1`: the reader is done; no message, no traceback.
    command = f"{sys.executable} -m cli windows | head -1"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, cwd=REPO
    )
    assert result.stdout.count("\n") == 1
    assert result.stderr == ""


def _run_with_closed(fds: str, *args) -> subprocess.CompletedProcess:
    # bash closes the descriptors (`>&-`, `2>&-`) and execs Python with them closed.
    command = 'exec "$0" -m cli "$@" ' + fds
    return subprocess.run(
        ["bash", "-c", command, sys.executable, *map(str, args)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("args", TEXT_COMMANDS)
def test_text_for_a_closed_stdout_is_a_failure(args):
    # Python leaves sys.stdout None and click printed nothing: the answer was lost, exit 0.
    result = _run_with_closed(">&-", *args)
    assert result.returncode == 1
    assert "standard output is closed" in result.stderr and "Traceback" not in result.stderr


def test_data_for_a_closed_stdout_is_a_usage_error():
    result = _run_with_closed(">&-", "smooth", SAMPLES / "speech_mono16.wav", "-", "-t", "wav")
    assert result.returncode == 2
    assert "- (stdout) is closed" in result.stderr


def test_a_closed_stderr_changes_nothing_but_the_messages(tmp_path):
    src = SAMPLES / "speech_mono16.wav"
    assert _run_with_closed("2>&-", "smooth", src, tmp_path / "a.wav").returncode == 0
    assert _run_with_closed(">&- 2>&-", "smooth", src, tmp_path / "b.wav").returncode == 0
    assert sf.info(tmp_path / "a.wav").frames == sf.info(src).frames
    assert tmp_path.joinpath("b.wav").read_bytes() == tmp_path.joinpath("a.wav").read_bytes()
    assert (
        _run_with_closed("2>&-", "smooth", tmp_path / "none.wav", tmp_path / "c.wav").returncode
        == 2
    )
    assert _run_with_closed("2>&-", "info", tmp_path / "a.wav").returncode == 0


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
def test_closed_standard_descriptors_are_held_by_dev_null(tmp_path):
    # Left free, the next file opened took descriptor 1 or 2: an output file on 2 would
    # take in whatever C code prints to stderr.
    report = tmp_path / "fds.txt"
    script = (
        "import os, sys; from cli import errors; errors.stand_in_for_closed_streams(); "
        "print('message', file=sys.stderr); "
        "open(sys.argv[1], 'w').write(' '.join(os.readlink(f'/proc/self/fd/{fd}') "
        "for fd in (0, 1, 2)))"
    )
    command = 'exec "$0" -c "$1" "$2" <&- >&- 2>&-'
    result = subprocess.run(
        ["bash", "-c", command, sys.executable, script, str(report)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert report.read_text().split() == [os.devnull] * 3


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads /proc/PID/task")
@pytest.mark.parametrize("streamed", [False, True])
def test_sigterm_while_a_stalled_reader_blocks_stdout_ends_the_process(tmp_path, streamed):
    # `diffconv smooth big.wav - | stalled`: SIGTERM printed "stopped by signal 15" and the
    # process then waited for ever, for the writer thread blocked in write() on the full
    # pipe (or, with the write in the main thread, for the flush of stdout at exit).
    import signal
    import time

    src = tmp_path / "big.wav"
    sf.write(src, np.zeros((100_000, 1), np.float32), 8000, subtype="FLOAT")  # > a pipe
    env = dict(os.environ, **({"DIFFCONV_STREAM_SAMPLES": "1000"} if streamed else {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "smooth", src, "-", "-t", "wav", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        tasks = f"/proc/{proc.pid}/task"
        while not any("pipe_write" in open(f"{tasks}/{t}/wchan").read() for t in os.listdir(tasks)):
            assert proc.poll() is None and time.monotonic() < deadline, "never blocked"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=20)  # the reader never reads
    finally:
        proc.kill()
        stderr = proc.stderr.read().decode()
        proc.stdout.close()
        proc.stderr.close()
    assert returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_an_unwritable_stderr_does_not_stop_the_batch(tmp_path, verbose):
    # `2>/dev/full`: the first error message raised OSError out of the report, and the files
    # after it were never written.
    (tmp_path / "bad.wav").write_bytes(b"junk")
    good = SAMPLES / "speech_mono16.wav"
    out = tmp_path / "out"
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "cli", "smooth", tmp_path / "bad.wav", good, out, *verbose],
            stdout=subprocess.PIPE,
            stderr=full,
            cwd=REPO,
            timeout=120,
        )
    assert result.returncode == 1
    assert listing(out) == ["speech_mono16.wav"]
