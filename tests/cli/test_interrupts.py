"""SIGTERM is raised at a point where clean-up can run: never from inside a libsndfile call
(cffi swallows exceptions raised in its callbacks), always once that call returns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from cli import interrupts
from cli.audio_io import probe
from cli.writing import AtomicWriter, output_spec
from tests.cli.conftest import REPO


def test_sigterm_outside_a_deferred_block_stops_at_once(sigterm_handler):
    with pytest.raises(SystemExit) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # the handler runs between two bytecodes, well before this ends
            pass
        pytest.fail("the signal did not stop the loop")
    assert stop.value.code == 128 + signal.SIGTERM


def test_sigterm_inside_a_deferred_block_is_raised_when_it_ends(sigterm_handler):
    finished = False
    with pytest.raises(SystemExit) as stop:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):
                pass
            finished = True
    assert finished and stop.value.code == 128 + signal.SIGTERM


def test_ctrl_c_inside_a_deferred_block_is_raised_when_it_ends(sigterm_handler, monkeypatch):
    monkeypatch.setattr(interrupts, "ECHO_SECONDS", 0.0)  # the second one is not an echo
    finished = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):
                pass
            finished = True
    assert finished
    with pytest.raises(KeyboardInterrupt):  # outside a block, at once, as before
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):
            pass


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_echo_of_the_stop_signal_does_not_cut_the_clean_up_short(
    sigterm_handler, signum, monkeypatch
):
    # torchrun forwards to its workers the signal a terminal or scheduler already sent the
    # whole process group: the copy arrived during the clean-up, and (the handler reset to
    # the default for SIGTERM, a second KeyboardInterrupt for Ctrl-C) left a hidden
    # temporary behind.
    monkeypatch.setenv("RANK", "0")  # only torchrun echoes signals
    monkeypatch.setenv("WORLD_SIZE", "2")
    stop = SystemExit if signum == signal.SIGTERM else KeyboardInterrupt
    cleaned = False
    with pytest.raises(stop):
        try:
            os.kill(os.getpid(), signum)
            for _ in range(10_000):
                pass
            pytest.fail("the signal did not stop the loop")
        finally:
            os.kill(os.getpid(), signum)  # the echo, during the clean-up
            os.kill(os.getpid(), signal.SIGTERM if signum == signal.SIGINT else signal.SIGINT)
            for _ in range(10_000):
                pass
            cleaned = True
    assert cleaned


def test_a_later_second_sigterm_ends_the_process_at_once(tmp_path):
    # Past the echo window a repeated SIGTERM is the user insisting: the default action.
    code = (
        "import os, signal, time\n"
        "from cli import interrupts\n"
        "interrupts.ECHO_SECONDS = 0.05\n"
        "interrupts.unwind_on_sigterm()\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "finally:\n"
        "    time.sleep(0.1)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "    print('clean-up ran to its end')\n"
    )
    env = dict(os.environ, RANK="0", WORLD_SIZE="2")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == -signal.SIGTERM, result
    assert "clean-up ran to its end" not in result.stdout


def test_outside_torchrun_a_second_ctrl_c_interrupts_the_clean_up(sigterm_handler, monkeypatch):
    # No torchrun, no echo: a second Ctrl-C is the user's, acted on at once, as ever.
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(KeyboardInterrupt):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):
                pass
        finally:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):
                pass
            pytest.fail("the second Ctrl-C was ignored")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_during_the_shutdown_ends_the_process_without_a_traceback(signum):
    # A Ctrl-C pressed again while the interpreter shut down (atexit callbacks: torch's
    # finalizers) raised its KeyboardInterrupt there: "Exception ignored in atexit callback"
    # and a traceback. The command is over by then: the signal's default action ends it.
    code = (
        "import atexit, os, signal, sys, time\n"
        "def stop_during_shutdown():\n"
        f"    os.kill(os.getpid(), {int(signum)})\n"
        "    time.sleep(0.5)\n"
        "    print('shutdown went on', file=sys.stderr)\n"
        "atexit.register(stop_during_shutdown)\n"
        "sys.argv = ['diffconv', 'windows']\n"
        "from cli.main import main\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == -signum, result
    assert "hann" in result.stdout  # the command's output is all there
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert "shutdown went on" not in result.stderr


def test_under_torchrun_a_stop_after_the_command_keeps_its_exit_status():
    # torchrun stops the other workers once one exits; a rank whose command had ended (its
    # files reported, status chosen) was then recorded as killed by SIGTERM (-15).
    code = (
        "import atexit, os, signal, sys, time\n"
        "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.5)))\n"
        "sys.argv = ['diffconv', 'windows']\n"
        "from cli.main import main\n"
        "main()\n"
    )
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "2"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result
    assert "hann" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize("torchrun", [True, False])
@pytest.mark.parametrize("args, status", [(["windows"], 0), (["info", "missing.wav"], 2)])
def test_under_torchrun_a_rank_ends_without_the_interpreters_shutdown(torchrun, args, status):
    # Late in the shutdown (after atexit, as modules are torn down) Python puts the signals'
    # default actions back, and torchrun's SIGTERM to the other workers then killed a rank
    # whose command had ended: -15 instead of its status, about half the runs with 3 ranks.
    # Under torchrun a rank now ends as its command does, with no shutdown to be caught in
    # (its atexit callbacks do not run); alone, the shutdown runs as usual.
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('shutdown ran', file=sys.stderr))\n"
        f"sys.argv = ['diffconv', *{args!r}]\n"
        "from cli.main import main\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    if torchrun:
        env.update(RANK="0", WORLD_SIZE="2")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == status, result
    assert ("shutdown ran" in result.stderr) is not torchrun, result.stderr
    assert ("hann" in result.stdout) is (status == 0)  # flushed before the end


def test_a_stop_signal_fit_caught_is_forgotten_for_the_next_command(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    interrupts.unwind_on_sigterm()
    assert interrupts.note_stop_signal() is False  # fit's first signal, recorded
    interrupts.forget_stop_signal()  # as fit does when it ends
    assert interrupts.note_stop_signal() is False  # the next command's first: not an echo
    interrupts.forget_stop_signal()


def test_a_streamed_write_finishes_its_libsndfile_call_then_stops_and_cleans_up(
    sigterm_handler, monkeypatch, tmp_path
):
    # SIGTERM arrives while soundfile writes a block (as if during its callbacks): the call
    # completes, then the writer unwinds and removes its temporary.
    info = probe(REPO / "sample_data" / "speech_mono16.wav")
    dest = tmp_path / "out.wav"
    original, completed = sf.SoundFile.write, []

    def write_while_signalled(self, data):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):
            pass
        original(self, data)
        completed.append(True)

    monkeypatch.setattr(sf.SoundFile, "write", write_while_signalled)
    with pytest.raises(SystemExit):
        with AtomicWriter(dest, output_spec(dest, info), (1, 1000)) as writer:
            writer.write(np.zeros((1, 1000)))
    assert completed == [True]
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_waiting_for_a_write_still_lets_it_finish(sigterm_handler):
    # wait() used to take the writes off its list before waiting on them: a Ctrl-C arriving
    # then left draining() nothing to wait for, and the caller closed the streamed output's
    # file while the writer thread was still writing to it ("write to closed file").
    import threading
    import time

    from cli.runner import _Writes

    finished = []

    def slow_write():
        time.sleep(0.5)
        finished.append(True)

    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
    with _Writes() as writes:
        with pytest.raises(KeyboardInterrupt):
            with writes.draining():
                writes.submit([slow_write])
                writes.wait()
        assert finished == [True]  # draining() waited for the write already running


def test_ctrl_c_while_scheduling_a_write_is_raised_once_it_is_listed(sigterm_handler):
    # submit() scheduled a write and then listed it: a Ctrl-C in between left draining()
    # unaware of a write that then ran while its file was discarded ("write to closed file"
    # inside libsndfile, seen once in ~200 interrupted streamed runs under load).
    from cli.runner import _Writes

    with _Writes() as writes:
        real_submit = writes._pool.submit

        def submit_then_signal(task):
            future = real_submit(task)
            os.kill(os.getpid(), signal.SIGINT)  # lands before submit() has listed it
            for _ in range(10_000):
                pass
            return future

        writes._pool.submit = submit_then_signal
        with pytest.raises(KeyboardInterrupt):
            writes.submit([lambda: None])
        assert len(writes._pending) == 1


def test_a_deferred_block_on_another_thread_does_not_hold_the_main_threads_signal(
    sigterm_handler,
):
    # The writer thread's deferred() made the main thread hold a Ctrl-C, which the writer
    # thread then raised itself when its block ended, in the middle of its task.
    import threading

    inside, release, raised_there = threading.Event(), threading.Event(), []

    def writer_thread():
        try:
            with interrupts.deferred():
                inside.set()
                release.wait(10)
        except BaseException as err:  # noqa: BLE001  (what matters is that nothing is raised)
            raised_there.append(err)

    thread = threading.Thread(target=writer_thread)
    thread.start()
    inside.wait(10)
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):
                pass
    finally:
        release.set()
        thread.join(10)
    assert raised_there == []


def _signal_as_mkstemp_returns(monkeypatch, signum):
    # The window the review found: the temporary file exists, mkstemp has not yet returned
    # its name. A signal then used to leave a hidden .part file behind (grad: 5 runs in 12).
    import tempfile

    real = tempfile.mkstemp

    def made_then_signalled(*args, **kwargs):
        made = real(*args, **kwargs)
        os.kill(os.getpid(), signum)
        for _ in range(10_000):  # the handler runs here, before the name is returned
            pass
        return made

    monkeypatch.setattr(tempfile, "mkstemp", made_then_signalled)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("buffered", [False, True], ids=["streamed", "buffered"])
@pytest.mark.parametrize("name", ["out.wav", "out.npy"])
def test_a_signal_as_the_temporary_is_made_leaves_nothing(
    sigterm_handler, monkeypatch, tmp_path, signum, buffered, name
):
    info = probe(REPO / "sample_data" / "speech_mono16.wav")
    dest = tmp_path / "made" / name  # a folder the writer makes, and must remove again
    _signal_as_mkstemp_returns(monkeypatch, signum)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        with AtomicWriter(dest, output_spec(dest, info), (1, 1000), buffered=buffered) as w:
            w.write(np.zeros((1, 1000)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_as_atomic_writes_temporary_is_made_leaves_nothing(
    sigterm_handler, monkeypatch, tmp_path, signum
):
    from cli.writing import atomic_write

    _signal_as_mkstemp_returns(monkeypatch, signum)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        atomic_write(tmp_path / "params.json", lambda f: f.write(b"{}"))
    assert list(tmp_path.iterdir()) == []
