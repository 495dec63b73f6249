"""Batch commands under torchrun: every file processed exactly once, merged summary and code."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import soundfile as sf

from tests.cli.conftest import REPO, listing


def test_two_gloo_ranks_split_the_files(tmp_path, bad_inputs):
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
            "-m",
            "cli",
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
    # gather (its SIGTERM cost the other rank's file in progress).
    import datetime

    import torch.distributed as dist

    from cli import distributed, runner

    given = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *args, **kwargs: given.update(kwargs))
    distributed.start(distributed.Ranks(0, 2), wait_seconds=distributed.BATCH_WAIT_SECONDS)
    assert given["timeout"] >= datetime.timedelta(days=1)
    asked = []
    monkeypatch.setattr(
        distributed,
        "start",
        lambda ranks, backend="gloo", wait_seconds=None: asked.append(wait_seconds),
    )
    runner.run_sharded([], lambda jobs, report, ranks: None, quiet=True, verbose=False)
    assert asked == [distributed.BATCH_WAIT_SECONDS]


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
