"""Directories, several inputs, one bad file in a batch, batching by shape, OOM splitting."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from cli.jobs import plan_jobs
from cli.runner import Operation, RunOptions, run_jobs
from tests.cli.conftest import SAMPLES, invoke, listing, write_wav

KERNEL = SAMPLES / "impulse_response.wav"  # at 16 kHz: 8 kHz files get a warning, once


@pytest.fixture
def tree(tmp_path):
    """in/a.wav, in/b.wav, in/sub/c.wav (equal shapes) and in/sub/d.npy, in/notes.txt."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav", "sub/c.wav"):
        write_wav(root / name, 0.1 * rng.standard_normal((2, 400)), subtype="FLOAT")
    np.save(root / "sub" / "d.npy", rng.standard_normal(300))
    (root / "notes.txt").write_text("not a signal")
    return root


def test_directory_mirrors_relative_paths(tree, tmp_path):
    out = tmp_path / "out"
    r = invoke("convolve", tree, out, "--kernel", KERNEL, "--recursive")
    assert r.exit_code == 0, r.output
    assert listing(out) == ["a.wav", "b.wav", "sub/c.wav", "sub/d.npy"]
    assert "4 files processed" in r.stderr
    # Without --recursive only the top level; --glob narrows the choice.
    r = invoke("convolve", tree, tmp_path / "top", "--kernel", KERNEL)
    assert r.exit_code == 0 and listing(tmp_path / "top") == ["a.wav", "b.wav"]
    r = invoke("convolve", tree, tmp_path / "g", "--kernel", KERNEL, "-r", "--glob", "*.npy")
    assert r.exit_code == 0 and listing(tmp_path / "g") == ["sub/d.npy"]
    r = invoke("convolve", tree, tmp_path / "none", "--kernel", KERNEL, "--glob", "*.flac")
    assert r.exit_code == 2 and "no input files matching '*.flac'" in r.stderr


def test_several_files_into_a_directory(tmp_path):
    out = tmp_path / "out"
    r = invoke(
        "convolve",
        SAMPLES / "speech_mono16.wav",
        SAMPLES / "music_stereo24.wav",
        out,
        "--kernel",
        KERNEL,
        "-q",
    )
    assert r.exit_code == 0 and r.stderr == "" and r.stdout == ""
    assert listing(out) == ["music_stereo24.wav", "speech_mono16.wav"]


def test_one_corrupt_file_does_not_stop_the_batch(tree, tmp_path, bad_inputs):
    (tree / "zz_corrupt.wav").write_bytes(bad_inputs["corrupt"].read_bytes())
    (tree / "m_empty.wav").write_bytes(b"")
    out = tmp_path / "out"
    r = invoke("convolve", tree, out, "--kernel", KERNEL, "-r")
    assert r.exit_code == 1
    assert "zz_corrupt.wav" in r.stderr and "m_empty.wav: file is empty" in r.stderr
    assert "4 files processed, 2 files failed" in r.stderr
    assert listing(out) == ["a.wav", "b.wav", "sub/c.wav", "sub/d.npy"]


def test_a_name_with_control_characters_keeps_its_message_on_one_line(tmp_path):
    # A file named with a newline (legal on POSIX) split its error over two lines, which
    # scripts reading one line per file took for two files.
    src = tmp_path / "in"
    src.mkdir()
    write_wav(src / "good.wav", np.zeros((1, 800)), 8000)
    (src / "take\n2\t.wav").write_bytes(b"not a sound file")
    r = invoke("smooth", src, tmp_path / "out", "-v")
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert sum(line.startswith("error: ") for line in lines) == 1
    error = next(line for line in lines if line.startswith("error: "))
    assert "take\\n2\\t.wav: " in error, r.stderr
    assert sum(line.startswith("done: ") for line in lines) == 1
    assert listing(tmp_path / "out") == ["good.wav"]


def test_an_unexpected_error_while_reading_one_file_does_not_stop_the_batch(
    tree, tmp_path, monkeypatch
):
    # Reading a file can raise what no reader foresaw (numpy's header parser raised
    # tokenize.TokenError): it fails that file, with its type named, and the others go on.
    from cli import runner

    real_probe = runner.probe

    def probe(path, *args):
        if path.name == "a.wav":
            raise RuntimeError("a reader's own surprise")
        return real_probe(path, *args)

    monkeypatch.setattr(runner, "probe", probe)
    out = tmp_path / "out"
    r = invoke("convolve", tree, out, "--kernel", KERNEL)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "a.wav: RuntimeError: a reader's own surprise" in r.stderr
    assert listing(out) == ["b.wav"]


def test_an_npy_whose_header_does_not_parse_does_not_stop_the_batch(tree, tmp_path, bad_inputs):
    # numpy's header parser raised tokenize.TokenError: a traceback that ended the batch
    # before the good files; as an option value (a kernel) it is a usage error.
    (tree / "0_bad.npy").write_bytes(bad_inputs["unterminated"].read_bytes())
    out = tmp_path / "out"
    r = invoke("convolve", tree, out, "--kernel", KERNEL)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "0_bad.npy: not a valid .npy file" in r.stderr
    assert "2 files processed, 1 file failed" in r.stderr
    assert listing(out) == ["a.wav", "b.wav"]
    r = invoke("convolve", tree / "a.wav", tmp_path / "y.wav", "--kernel", tree / "0_bad.npy")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "--kernel" in r.stderr and "not a valid .npy file" in r.stderr


def test_same_directory_rerun_keeps_outputs_and_skips_temporaries(tree, tmp_path):
    out = tmp_path / "out"
    assert invoke("convolve", tree, out, "--kernel", KERNEL).exit_code == 0
    before = {p: (out / p).read_bytes() for p in listing(out)}
    r = invoke("convolve", tree, out, "--kernel", KERNEL)
    assert r.exit_code == 1 and r.stderr.count("output exists") == 2
    assert {p: (out / p).read_bytes() for p in listing(out)} == before


def test_output_equal_to_input_only_with_overwrite(tmp_path):
    src = write_wav(tmp_path / "x.wav", np.full((1, 50), 0.25), subtype="FLOAT")
    np.save(tmp_path / "k.npy", np.array([2.0]))
    r = invoke("convolve", src, src, "--kernel", tmp_path / "k.npy")
    assert r.exit_code == 1 and "output exists" in r.stderr
    assert np.allclose(sf.read(src)[0], 0.25)
    r = invoke("convolve", src, src, "--kernel", tmp_path / "k.npy", "--overwrite")
    assert r.exit_code == 0
    assert np.allclose(sf.read(src)[0], 0.5) and listing(tmp_path) == ["k.npy", "x.wav"]


def test_equal_shapes_are_stacked_into_one_batch(tree, tmp_path):
    calls = []

    def apply(batch, info):
        calls.append(tuple(batch.shape))
        return batch * 2

    jobs = plan_jobs([tree], tmp_path / "out", recursive=True)
    report = run_jobs(jobs, Operation(apply=apply), RunOptions(device="cpu", quiet=True))
    assert report.return_code == 0 and report.done_count == 4
    assert sorted(calls) == [(1, 1, 300), (3, 2, 400)]
    got = sf.read(tmp_path / "out" / "sub" / "c.wav", dtype="float32")[0]
    np.testing.assert_allclose(got, 2 * sf.read(tree / "sub" / "c.wav", dtype="float32")[0])


def test_out_of_memory_splits_the_batch_and_retries(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(7):
        np.save(folder / f"x{i}.npy", np.full((2, 64), float(i)))
    sizes = []

    def apply(batch, info):
        sizes.append(batch.shape[0])
        if batch.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return batch + 1

    jobs = plan_jobs([folder], tmp_path / "out")
    report = run_jobs(jobs, Operation(apply=apply), RunOptions(device="cpu", quiet=True))
    assert report.return_code == 0 and report.done_count == 7
    for i in range(7):
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"x{i}.npy"), i + 1.0)
    assert max(s for s in sizes if s <= 2) == 2 and sizes[0] == 7


def test_out_of_memory_on_a_single_file_fails_only_that_file(tmp_path):
    np.save(tmp_path / "big.npy", np.zeros((1, 100)))
    np.save(tmp_path / "small.npy", np.zeros((1, 10)))

    def apply(batch, info):
        if batch.shape[-1] > 50:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return batch

    jobs = plan_jobs([tmp_path / "big.npy", tmp_path / "small.npy"], tmp_path / "out")
    report = run_jobs(jobs, Operation(apply=apply), RunOptions(device="cpu", quiet=True))
    assert report.return_code == 1
    assert report.failures == [(str(tmp_path / "big.npy"), "out of device memory")]
    assert listing(tmp_path / "out") == ["small.npy"]


def test_interrupt_leaves_no_partial_output(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 10)))

    def apply(batch, info):
        raise KeyboardInterrupt

    jobs = plan_jobs([tmp_path / "x.npy"], tmp_path / "out" / "y.npy")
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, Operation(apply=apply), RunOptions(device="cpu", quiet=True))
    assert listing(tmp_path) == ["x.npy"]


def test_no_progress_bar_when_stderr_is_not_a_terminal(tree, tmp_path):
    r = invoke("convolve", tree, tmp_path / "out", "--kernel", KERNEL, "-r")
    assert r.exit_code == 0 and "it/s" not in r.stderr and "file/s" not in r.stderr


def test_a_failed_write_in_a_stacked_batch_fails_only_that_file(tree, tmp_path):
    out = tmp_path / "out"
    (out / "a.wav").mkdir(parents=True)  # passes the up-front check under --overwrite
    r = invoke("convolve", tree, out, "--kernel", KERNEL, "-r", "--overwrite")
    assert r.exit_code == 1
    assert "a.wav: output is a directory" in r.stderr
    assert "3 files processed, 1 file failed" in r.stderr
    assert listing(out) == ["b.wav", "sub/c.wav", "sub/d.npy"]


def test_interrupt_while_writing_stops_the_run_and_leaves_no_partial_output(tmp_path, monkeypatch):
    import cli.runner

    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.zeros((1, 10)))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.runner, "write_signal", interrupted)
    jobs = plan_jobs([tmp_path / "a.npy", tmp_path / "b.npy"], tmp_path / "out")
    op = Operation(apply=lambda batch, info: batch)
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, op, RunOptions(device="cpu", quiet=True))
    assert listing(tmp_path) == ["a.npy", "b.npy"]


def test_interrupt_stops_within_one_write_not_one_batch(tmp_path, monkeypatch):
    import time

    import cli.runner

    for name in "abcdef":
        np.save(tmp_path / f"{name}.npy", np.zeros((1, 10)))
    monkeypatch.setattr(cli.runner, "initial_batch_size", lambda *args: 3)
    real_write = cli.runner.write_signal

    def slow_write(*args, **kwargs):
        time.sleep(0.2)
        return real_write(*args, **kwargs)

    calls = []

    def apply(batch, info):
        calls.append(batch.shape[0])
        if len(calls) == 2:  # Ctrl-C while the first batch's three writes wait
            raise KeyboardInterrupt
        return batch

    monkeypatch.setattr(cli.runner, "write_signal", slow_write)
    sources = [tmp_path / f"{name}.npy" for name in "abcdef"]
    jobs = plan_jobs(sources, tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, Operation(apply=apply), RunOptions(device="cpu", quiet=True))
    written = listing(tmp_path / "out") if (tmp_path / "out").exists() else []
    assert len(written) <= 1 and all(name.endswith(".npy") for name in written)


def test_recursive_search_skips_hidden_folders_like_hidden_files(tree, tmp_path):
    # Hidden files were skipped, but -r still descended into hidden folders.
    for hidden in (tree / ".ipynb_checkpoints", tree / "sub" / ".git"):
        hidden.mkdir()
        write_wav(hidden / "copy.wav", np.zeros((2, 400)), subtype="FLOAT")
    write_wav(tree / ".dot.wav", np.zeros((2, 400)), subtype="FLOAT")
    out = tmp_path / "out"
    r = invoke("convolve", tree, out, "--kernel", KERNEL, "-r")
    assert r.exit_code == 0, r.output
    assert listing(out) == ["a.wav", "b.wav", "sub/c.wav", "sub/d.npy"]
    # A hidden folder named as the INPUT itself is still searched.
    r = invoke("convolve", tree / ".ipynb_checkpoints", tmp_path / "h", "--kernel", KERNEL)
    assert r.exit_code == 0 and listing(tmp_path / "h") == ["copy.wav"]
    # A pattern starting with a dot asks for hidden files by name (it said "no input files
    # matching '.*.wav'" with .dot.wav right there); hidden folders stay out.
    r = invoke("convolve", tree, tmp_path / "d", "--kernel", KERNEL, "-r", "--glob", ".*.wav")
    assert r.exit_code == 0, r.output
    assert listing(tmp_path / "d") == [".dot.wav"]


def test_an_output_path_that_cannot_be_checked_fails_only_that_file(tree, tmp_path, monkeypatch):
    # Path.exists raises for anything but "not there" (no search permission on a folder, a
    # name too long); that used to stop the whole batch before anything was written.
    from pathlib import Path

    out = tmp_path / "out"
    exists = Path.exists

    def refusing(self, *args, **kwargs):
        if self == out / "b.wav":
            raise PermissionError(13, "Permission denied", str(self))
        return exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", refusing)
    r = invoke("convolve", tree, out, "--kernel", KERNEL)
    assert r.exit_code == 1
    assert f"{out / 'b.wav'}: cannot write there (Permission denied)" in r.stderr
    assert "1 file processed, 1 file failed" in r.stderr
    assert listing(out) == ["a.wav"]


def test_a_folder_of_folders_without_r_says_to_give_it(tmp_path):
    # "no input files" alone left the user to guess that subfolders need -r.
    (tmp_path / "in" / "day1").mkdir(parents=True)
    write_wav(tmp_path / "in" / "day1" / "a.wav", np.zeros((1, 400)), subtype="FLOAT")
    r = invoke("convolve", tmp_path / "in", tmp_path / "out", "--kernel", KERNEL)
    assert r.exit_code == 2
    assert "no input files" in r.stderr and "searched with -r/--recursive" in r.stderr
    (tmp_path / "in" / "day1" / "a.wav").unlink()
    (tmp_path / "in" / "day1").rmdir()
    r = invoke("convolve", tmp_path / "in", tmp_path / "out", "--kernel", KERNEL)
    assert r.exit_code == 2 and "recursive" not in r.stderr  # no subfolder: no hint
