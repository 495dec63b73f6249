"""Batch commands under torchrun: every file processed exactly once, merged summary and code."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import soundfile as sf

from tests.cli.conftest import REPO, listing

SAMPLE = REPO / "sample_data" / "speech_mono16.wav"
# The installed command, beside this interpreter or else on PATH.
DIFFCONV = shutil.which("diffconv", path=os.path.dirname(sys.executable)) or shutil.which(
    "diffconv"
)


def test_two_gloo_ranks_split_the_files(tmp_path, bad_inputs):
    assert DIFFCONV, "the diffconv command is not installed"
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(6)
    names = [f"f{i}.wav" for i in range(5)] + ["sub/g.wav", "sub/h.npy"]
    for name in names:
        if name.endswith(".npy"):
            np.save(folder / name, rng.standard_normal(500))
        else:
            sf.write(folder / name, 0.1 * rng.standard_normal(400 + 10 * len(name)), 8000)
    (folder / "sub" / "zz_bad.wav").write_bytes(bad_inputs["text"].read_bytes())
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "--no-python",  # as docs/distributed.md says to launch it
            DIFFCONV,
            "smooth",
            str(folder),
            str(out),
            "-r",
            "-v",
            "--length",
            "9",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    # A failure on one rank shows in the launch's exit code.
    assert r.returncode != 0
    done = [line for line in r.stderr.splitlines() if line.startswith("done: ")]
    sources = sorted(line.split(" -> ")[0][len("done: ") :] for line in done)
    assert sources == sorted(str(folder / n) for n in names)  # each file exactly once
    assert listing(out) == sorted(names)
    # Rank 0 alone prints the merged summary, counting both ranks' files.
    assert r.stderr.count("7 files processed, 1 file failed.") == 1
    assert r.stderr.count(f"error: {folder / 'sub' / 'zz_bad.wav'}: not a readable") == 1


def test_a_run_wide_warning_reads_as_in_one_process(tmp_path):
    # Said once per rate met, the warning about an impulse response at another rate was
    # said once per rank (each met its own files), and counted so: "2 warnings" for the one.
    from tests.cli.conftest import invoke

    ir = REPO / "sample_data" / "impulse_response.wav"  # 16 kHz
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav", "c.wav"):
        sf.write(folder / name, 0.1 * rng.standard_normal(2000), 8000, subtype="FLOAT")
    alone = invoke("convolve", folder, tmp_path / "alone", "--kernel", ir)
    assert alone.exit_code == 0, alone.output
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launch += ["--nproc_per_node=2", "--no-python", DIFFCONV]
    command = [*launch, "convolve", str(folder), str(tmp_path / "ranks"), "--kernel", str(ir)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    ours = [line for line in r.stderr.splitlines() if line.startswith(("warning:", "3 files"))]
    assert ours == alone.stderr.splitlines() and len(ours) == 2, (ours, alone.stderr)
    assert "warning: " + str(folder / "a.wav") in ours[0] and ours[1].endswith("1 warning.")


ENDS_THE_GROUP = """
import os, sys
import torch, torch.distributed as dist
from cli.distributed import Ranks, finish, join_process_group

def threads():
    return len(os.listdir("/proc/self/task"))

alone = threads()
ranks = Ranks(0, int(os.environ["WORLD_SIZE"]))
join_process_group(ranks, "gloo")
torch.optim.Adam([torch.nn.Parameter(torch.ones(3))])  # imports torch._dynamo
flag = torch.ones(1)
dist.all_reduce(flag)
finish(Ranks(0, 2))
print("threads", alone, threads())
"""


def test_finishing_ends_the_process_group_after_dynamo_is_imported(tmp_path):
    # Imported after init_process_group, torch.distributed.nn.functional held the group in
    # its default arguments: gloo's threads outlived destroy_process_group and now and then
    # aborted the exiting process (SIGABRT). Finishing must leave no group threads behind.
    if not os.path.isdir("/proc/self/task"):
        import pytest

        pytest.skip("counts threads through /proc")
    script = tmp_path / "ends.py"
    script.write_text(ENDS_THE_GROUP)
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
         str(script)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    counts = [line.split()[1:] for line in r.stdout.splitlines() if line.startswith("threads")]
    assert len(counts) == 1 and counts[0][0] == counts[0][1], r.stdout


def test_batch_ranks_wait_days_for_each_other(monkeypatch):
    # Files are dealt out before any is read: one rank may finish hours before another, and
    # torch's default 30-minute wait then failed it with a gloo traceback at the closing
    # gather (its SIGTERM cost the other rank's file in progress). The ranks' wait for each
    # other to *join* stays short: a rank not there by then is not coming.
    import datetime

    import torch.distributed as dist

    from cli import distributed, runner

    joined, grouped, gathered_in = {}, {}, []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *args, **kw: joined.update(kw))
    monkeypatch.setattr(dist, "new_group", lambda **kw: grouped.update(kw) or "long-wait")
    monkeypatch.setattr(
        dist, "all_gather_object", lambda out, obj, group=None: gathered_in.append(group)
    )
    monkeypatch.setattr(dist, "destroy_process_group", lambda: None)
    ranks = distributed.Ranks(0, 2)
    distributed.start(ranks, wait_seconds=distributed.BATCH_WAIT_SECONDS)
    assert joined["timeout"] == datetime.timedelta(seconds=distributed.RENDEZVOUS_SECONDS)
    assert grouped["timeout"] >= datetime.timedelta(days=1)
    distributed.gather(ranks, "report")
    assert gathered_in == ["long-wait"]
    distributed.finish(ranks)
    distributed.gather(ranks, "report")  # a later group starts with the default wait again
    assert gathered_in == ["long-wait", None]
    asked = []
    monkeypatch.setattr(
        distributed,
        "start",
        lambda ranks, backend="gloo", wait_seconds=None: asked.append(wait_seconds),
    )
    runner.run_sharded([], lambda jobs, report, ranks: None, quiet=True, verbose=False)
    assert asked == [distributed.BATCH_WAIT_SECONDS]


def test_a_stop_signal_ends_the_wait_for_the_other_ranks(monkeypatch):
    # The rendezvous blocks in C++ until every rank has joined, so the Python handlers held
    # SIGTERM and Ctrl-C until then: a rank whose peer never came ignored torchrun's SIGTERM
    # and the user's Ctrl-C. While it waits they act at once; an ignored signal stays ignored.
    import signal

    import torch.distributed as dist

    from cli import distributed, interrupts

    during = {}

    def init_process_group(*args, **kwargs):
        during.update({n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGINT)})

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    saved = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGINT)}
    try:
        for n in saved:
            signal.signal(n, signal.SIG_DFL if n == signal.SIGTERM else signal.default_int_handler)
        interrupts.unwind_on_sigterm()
        ours = {n: signal.getsignal(n) for n in saved}
        assert all(interrupts.is_ours_or_pythons(h) for h in ours.values())
        distributed.join_process_group(distributed.Ranks(0, 2), "gloo")
        assert during == {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.SIG_DFL}
        assert {n: signal.getsignal(n) for n in saved} == ours  # put back afterwards
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a shell's background job
        distributed.join_process_group(distributed.Ranks(0, 2), "gloo")
        assert during[signal.SIGINT] is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        for n, handler in saved.items():
            signal.signal(n, handler)


MISSING_PEER = """
import sys
from cli import distributed
from cli.main import main
distributed.RENDEZVOUS_SECONDS = 2
sys.argv[0] = "diffconv"
main()
"""


def test_a_rank_whose_peers_never_come_says_so(tmp_path):
    # RANK/WORLD_SIZE/MASTER_ADDR set by hand and the other rank never started: each rank,
    # server (0) or client (1), waited 30 minutes at most (a batch command, 7 days) and then
    # ended with a torch traceback. Now it is a runtime failure that says what is missing.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
        env.update(MASTER_PORT=str(port), PYTHONPATH=str(REPO))
        r = subprocess.run(
            [sys.executable, "-c", MISSING_PEER, "smooth", str(SAMPLE), str(tmp_path / "o.wav")],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
        )  # fmt: skip
        assert r.returncode == 1, r.stderr
        said = f"rank {rank} of 2: the other ranks did not join at 127.0.0.1:{port} within 2 s"
        assert said in r.stderr and "Traceback" not in r.stderr
        assert listing(tmp_path) == []


def test_a_usage_error_under_torchrun_is_reported_once(tmp_path):
    # Every rank parsed the same arguments and printed the same usage error: N copies.
    (tmp_path / "empty").mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "cli", "smooth", str(tmp_path / "empty"), str(tmp_path / "out"), "--length", "0"],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=300,
    )  # fmt: skip
    assert r.returncode != 0
    assert r.stderr.count("Error: no input files") == 1, r.stderr
    assert r.stderr.count("Usage: diffconv smooth") == 1  # named as installed, not python -m cli


def test_ranks_other_than_0_leave_a_usage_error_after_rank_0_has_said_it(monkeypatch):
    # torchrun stops every worker once one exits: a rank 1 leaving at once got rank 0
    # stopped (143) before it printed, and the run ended without a word of why.
    from cli import distributed
    from tests.cli.conftest import invoke

    # Still running after the wait (here: not stopped), rank 0 did not say it: the error is
    # this rank's alone (a path missing on one node), and it says it, with its rank.
    slept = []
    monkeypatch.setattr("time.sleep", slept.append)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    result = invoke("smooth", "no-such-input.wav", "out.wav")
    assert result.exit_code == 2
    assert (
        result.stderr.startswith("diffconv (rank 1): error: ") and "no-such-input" in result.stderr
    )
    assert slept == [distributed.MAIN_SPEAKS_SECONDS]
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # put back
    slept.clear()
    result = invoke("fit", "no-inputs", "no-targets", "--out", "k.npy")  # fit's own path
    assert result.exit_code == 2 and result.stderr.startswith("diffconv (rank 1): error: ")
    assert slept == [distributed.MAIN_SPEAKS_SECONDS]
    monkeypatch.setenv("RANK", "0")
    slept.clear()
    result = invoke("smooth", "no-such-input.wav", "out.wav")
    assert result.exit_code == 2 and "no-such-input.wav" in result.stderr and not slept


def test_rank_variables_without_torchrun_are_a_usage_error(tmp_path):
    # RANK/WORLD_SIZE left in the environment, no MASTER_ADDR: a traceback from
    # init_process_group before; now what is wrong and what to do, exit 2, nothing written.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTER_")}
    env.update(RANK="0", WORLD_SIZE="2")
    out = tmp_path / "out.wav"
    r = subprocess.run(
        [sys.executable, "-m", "cli", "smooth", str(REPO / "sample_data" / "speech_mono16.wav"),
         str(out)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "RANK=0 and WORLD_SIZE=2 are set" in r.stderr and "run under torchrun" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_rank_variables_without_torchrun_are_reported_by_any_rank(monkeypatch):
    # With no group there may be no rank 0 to speak: rank 1 says it too, without waiting.
    from tests.cli.conftest import invoke

    slept = []
    monkeypatch.setattr("time.sleep", slept.append)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = invoke("smooth", REPO / "sample_data" / "speech_mono16.wav", "never.wav")
    assert result.exit_code == 2 and "RANK=1 and WORLD_SIZE=2 are set" in result.stderr
    assert not slept


def test_info_of_stdin_is_refused_under_torchrun(monkeypatch):
    from tests.cli.conftest import invoke

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = invoke("info", "-")
    assert result.exit_code == 2
    assert "- (stdin) cannot be used under torchrun" in result.stderr


def test_torchrun_variables_that_are_no_numbers_are_a_usage_error():
    # RANK=abc ended in a traceback from int() in ranks_from_env.
    from tests.cli.conftest import run_diffconv

    for name, value in (("RANK", "abc"), ("WORLD_SIZE", "two"), ("LOCAL_RANK", "-1")):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", name: value}
        result = run_diffconv("windows", env=env)
        assert result.returncode == 2, result.stderr
        assert f"{name}={value!r} is not a whole number" in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_rank_stopped_while_it_leaves_exits_with_the_usage_errors_code_in_silence():
    # torchrun stops the other workers once rank 0 has exited 2 on a usage error; a rank
    # waiting to leave said "diffconv: stopped by signal 15" and exited 143.
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "smooth", "no-such-input.wav", "out.wav"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.0)  # within the MAIN_SPEAKS_SECONDS wait, after the start-up
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    assert err == "" and out == ""


def test_every_option_has_a_name_torchruns_parser_lets_through():
    # torchrun's argparse reads the command's arguments too and stops on an abbreviation of
    # two of its own options: `grad --start` ("ambiguous option: --start could match
    # --start-method, --start_method") could not be given under torchrun at all.
    import click
    from torch.distributed.run import get_args_parser

    from cli.main import COMMANDS, cli

    parser = get_args_parser()
    ctx = click.Context(cli)
    for name in COMMANDS:
        for param in cli.get_command(ctx, name).params:
            longs = [opt for opt in param.opts + param.secondary_opts if opt.startswith("--")]
            passed = []
            for opt in longs:
                line = ["--standalone", "--no-python", "diffconv", name, opt, "1", "in", "out"]
                try:
                    args = parser.parse_args(line)
                except SystemExit:
                    continue
                passed.append(args.training_script_args == [name, opt, "1", "in", "out"])
            assert not longs or any(passed), (name, longs)
    args = parser.parse_args(["--no-python", "diffconv", "grad", "--from", "0.5", "a", "b"])
    assert args.training_script_args == ["grad", "--from", "0.5", "a", "b"]
