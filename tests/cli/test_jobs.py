"""INPUT... OUTPUT planning rules, the torchrun sharding helper and the progress bar."""

from __future__ import annotations

import subprocess
import sys

import click
import numpy as np
import pytest

from cli.distributed import Ranks, ranks_from_env
from cli.jobs import plan_jobs
from cli.runner import Operation, RunOptions, run_jobs
from tests.cli.conftest import REPO, invoke, listing, without_root_overrides


def make(path, n=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.zeros(n))
    return path


def test_single_file_and_directory_outputs(tmp_path):
    src = make(tmp_path / "a.npy")
    assert [j.dest for j in plan_jobs([src], tmp_path / "b.npy")] == [tmp_path / "b.npy"]
    # A trailing separator or an existing directory means "into this directory".
    assert plan_jobs([src], f"{tmp_path / 'new'}/")[0].dest == tmp_path / "new" / "a.npy"
    (tmp_path / "existing").mkdir()
    assert plan_jobs([src], tmp_path / "existing")[0].dest == tmp_path / "existing" / "a.npy"


def test_two_inputs_with_one_output_name_are_refused(tmp_path):
    a = make(tmp_path / "d1" / "x.npy")
    b = make(tmp_path / "d2" / "x.npy")
    with pytest.raises(click.UsageError, match="would both be written"):
        plan_jobs([a, b], tmp_path / "out")
    with pytest.raises(click.UsageError, match="would both be written"):
        plan_jobs([a.parent, b.parent], tmp_path / "out")


def test_two_outputs_that_are_one_file_through_a_symlink_are_refused(tmp_path):
    # Outputs are written through symlinks: out/a.npy -> b.npy and out/b.npy are one file,
    # and with --overwrite one result would silently replace the other.
    a = make(tmp_path / "in" / "a.npy")
    b = make(tmp_path / "in" / "b.npy")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.npy").symlink_to("b.npy")
    with pytest.raises(click.UsageError, match="would both be written"):
        plan_jobs([a, b], tmp_path / "out")
    (tmp_path / "alias").symlink_to("out")  # a linked directory: the same files again
    assert len(plan_jobs([a], tmp_path / "alias" / "x.npy")) == 1
    with pytest.raises(click.UsageError, match="would both be written"):
        plan_jobs([tmp_path / "in"], tmp_path / "alias")


def test_outputs_inside_the_input_tree_are_not_inputs(tmp_path):
    make(tmp_path / "in" / "a.npy")
    make(tmp_path / "in" / "out" / "a.npy")  # an earlier run's result
    jobs = plan_jobs([tmp_path / "in"], tmp_path / "in" / "out", recursive=True)
    assert [j.source.name for j in jobs] == ["a.npy"] and len(jobs) == 1


def test_sharding_covers_every_job_once():
    jobs = list(range(11))
    shards = [Ranks(r, 3).shard(jobs) for r in range(3)]
    assert sorted(sum(shards, [])) == jobs
    assert ranks_from_env({}) == Ranks() and not ranks_from_env({"WORLD_SIZE": "1"}).distributed


def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch, capsys):
    for i in range(3):
        make(tmp_path / "in" / f"x{i}.npy")
    op = Operation(apply=lambda batch, info: batch)
    jobs = plan_jobs([tmp_path / "in"], tmp_path / "out")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    run_jobs(jobs, op, RunOptions(device="cpu"))
    assert "0/3 [" in capsys.readouterr().err  # tqdm drew the bar (and cleared it)
    run_jobs(jobs, op, RunOptions(device="cpu", quiet=True, overwrite=True))
    assert capsys.readouterr().err == ""


def test_folders_that_cannot_be_read_are_failed_entries(tmp_path):
    # rglob skipped a subfolder it could not list without a word, and an unreadable INPUT
    # folder said "no input files".
    tree = tmp_path / "in"
    make(tree / "a.npy")
    make(tree / "locked" / "b.npy")
    (tree / "locked").chmod(0)
    top = tmp_path / "top"
    make(top / "c.npy")
    top.chmod(0)
    try:
        prefix = [*without_root_overrides(), sys.executable, "-m", "cli", "smooth"]
        out = tmp_path / "out"
        r = subprocess.run([*prefix, tree, out, "-r"], capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 1, r.stderr
        assert f"error: {tree / 'locked'}: cannot read the folder (Permission denied)" in r.stderr
        assert listing(out) == ["a.npy"]
        r = subprocess.run(
            [*prefix, top, tmp_path / "o2"], capture_output=True, text=True, cwd=REPO
        )
        assert r.returncode == 1, r.stderr
        assert f"error: {top}: cannot read the folder (Permission denied)" in r.stderr
    finally:
        (tree / "locked").chmod(0o755)
        top.chmod(0o755)


def test_broken_symlinks_in_a_folder_are_failed_entries(tmp_path):
    # A dangling link or a link loop with an input's name was skipped without a word.
    tree = tmp_path / "in"
    make(tree / "a.npy")
    (tree / "dangling.wav").symlink_to("nowhere.wav")
    (tree / "loop.npy").symlink_to("loop.npy")
    (tree / "notes.txt").symlink_to("nowhere.txt")  # not an input's name: not an entry
    jobs = plan_jobs([tree], tmp_path / "out")
    assert [(j.source.name, j.problem) for j in jobs] == [
        ("a.npy", None),
        ("dangling.wav", "a link to no file"),
        ("loop.npy", "cannot read (Too many levels of symbolic links)"),
    ]
    r = invoke("smooth", tree, tmp_path / "out")
    assert r.exit_code == 1
    assert f"{tree / 'dangling.wav'}: a link to no file" in r.stderr
    assert f"{tree / 'loop.npy'}: cannot read (Too many levels" in r.stderr
    assert "1 file processed, 2 files failed." in r.stderr
    assert listing(tmp_path / "out") == ["a.npy"]
