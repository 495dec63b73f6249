"""``diffconv fit``: outputs, least-squares agreement, resume, bad pairs, torchrun equality.

Synthetic pairs: float WAV files (no quantisation) whose targets are a known FIR applied with
scipy's "same" convolution plus noise. The reference for plain-FIR fits is numpy.linalg.lstsq.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch
from click.testing import CliRunner

from cli.main import cli

REPO = Path(__file__).resolve().parents[2]
RATE = 8000
TRUE_FIR = np.array([0.1, -0.3, 0.8, 0.45, -0.2, 0.05, 0.12])
FAST = ["--taps", "7", "--steps", "12", "--lr", "0.05", "--crop", "0.02", "--batch-size", "4"]


# Thousands of tiny ops: on 2 shared cores intra-op threads only contend.
pytestmark = pytest.mark.usefixtures("single_thread")


def invoke(*args):
    return CliRunner().invoke(cli, ["fit", *[str(a) for a in args]], catch_exceptions=False)


def write_pairs(folder: Path, n=3, frames=1200, channels=2, noise=0.01, seed=0, kernel=TRUE_FIR):
    rng = np.random.default_rng(seed)
    (folder / "in").mkdir(parents=True)
    (folder / "tg").mkdir()
    for i in range(n):
        x = 0.2 * rng.standard_normal((frames, channels))
        y = np.stack([scipy.signal.convolve(x[:, c], kernel, "same") for c in range(channels)], 1)
        y += noise * rng.standard_normal(y.shape)
        sf.write(folder / "in" / f"p{i}.wav", x, RATE, subtype="FLOAT")
        sf.write(folder / "tg" / f"p{i}.wav", y, RATE, subtype="FLOAT")
    return folder / "in", folder / "tg"


def lstsq_reference(in_dir: Path, tg_dir: Path, K: int) -> np.ndarray:
    rows, rhs = [], []
    for path in sorted(in_dir.glob("*.wav")):
        x, _ = sf.read(path, always_2d=True)
        y, _ = sf.read(tg_dir / path.name, always_2d=True)
        for c in range(x.shape[1]):
            cols = [scipy.signal.convolve(x[:, c], np.eye(K)[k], "same") for k in range(K)]
            rows.append(np.stack(cols, 1))
            rhs.append(y[:, c])
    return np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0]


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


# --------------------------------------------------------------------------------------------


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['fit', '--help'])\n"
        "assert r.exit_code == 0 and '--resume' in r.output, r.output\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_fir_fit_matches_least_squares_and_writes_every_output(tmp_path):
    in_dir, tg_dir = write_pairs(tmp_path, n=2, frames=800)
    out, plot = tmp_path / "k.npy", tmp_path / "loss.png"
    args = [in_dir, tg_dir, "--out", out, "--taps", 7, "--optimizer", "lbfgs", "--steps", 4]
    result = invoke(*args, "--crop", 0, "--val-split", 0, "--plot", plot)
    assert result.exit_code == 0, result.output
    kernel = np.load(out, allow_pickle=False)
    assert kernel.dtype == np.float64 and kernel.shape == (7,)
    ref = lstsq_reference(in_dir, tg_dir, 7)
    err = np.linalg.norm(kernel - ref) / np.linalg.norm(ref)
    assert err < 1e-3, f"relative error {err:.2e} to the least-squares solution"

    # sox's fir effect: one coefficient per line; reading the text back gives the kernel.
    lines = (tmp_path / "k.txt").read_text().splitlines()
    assert len(lines) == 7
    np.testing.assert_array_equal(np.array([float(v) for v in lines]), kernel)

    summary = json.loads((tmp_path / "k.json").read_text())
    np.testing.assert_array_equal(summary["coefficients"], kernel)
    assert summary["learned"] == {"kind": "fir", "taps": 7, "init": "delta"}
    assert summary["steps"] == 4 and summary["final_val_loss"] is None
    assert summary["pairs"] == ["p0.wav", "p1.wav"] and summary["rate"] == RATE
    assert 0 < summary["final_train_loss"] < 1e-3  # noise variance 1e-4, plus float32

    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = torch.load(tmp_path / "k.ckpt.pt", weights_only=True)
    assert state["trainer"]["step"] == 4 and state["setup"]["taps"] == 7
    assert "fitted 7 taps in 4 steps" in result.stderr


def test_adam_crops_deterministic_and_kernel_usable_by_convolve(tmp_path):
    in_dir, tg_dir = write_pairs(tmp_path)
    a = invoke(in_dir, tg_dir, "--out", tmp_path / "a.npy", *FAST, "--seed", 1, "-q")
    b = invoke(in_dir, tg_dir, "--out", tmp_path / "b.npy", *FAST, "--seed", 1, "-q")
    c = invoke(in_dir, tg_dir, "--out", tmp_path / "c.npy", *FAST, "--seed", 2, "-q")
    assert a.exit_code == b.exit_code == c.exit_code == 0, a.output + b.output + c.output
    assert a.stderr == ""  # -q: nothing but errors
    ka, kb, kc = (np.load(tmp_path / f"{n}.npy") for n in "abc")
    np.testing.assert_array_equal(ka, kb)
    assert not np.array_equal(ka, kc)
    summary = json.loads((tmp_path / "a.json").read_text())
    assert summary["crop_samples"] == round(0.02 * RATE) and summary["final_val_loss"] > 0

    # The learned kernel works at once with `diffconv convolve`.
    result = CliRunner().invoke(
        cli,
        ["convolve", str(in_dir / "p0.wav"), str(tmp_path / "y.wav"), "--kernel",
         str(tmp_path / "a.npy")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    x, _ = sf.read(in_dir / "p0.wav", always_2d=True)
    y, _ = sf.read(tmp_path / "y.wav", always_2d=True)
    ref = np.stack([scipy.signal.convolve(x[:, c], ka, "same") for c in range(2)], 1)
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_stop_and_resume_reaches_the_uninterrupted_kernel(tmp_path):
    in_dir, tg_dir = write_pairs(tmp_path)
    whole = invoke(in_dir, tg_dir, "--out", tmp_path / "whole.npy", *FAST, "--val-every", 5)
    assert whole.exit_code == 0, whole.output

    part = tmp_path / "part.npy"
    args = [in_dir, tg_dir, "--out", part, *FAST, "--val-every", 5]
    first = invoke(*args, "--stop-after", 7)
    assert first.exit_code == 0, first.output
    assert "stopped after step 7 of 12" in first.stderr
    assert not part.exists() and (tmp_path / "part.ckpt.pt").exists()
    # Starting over by accident is refused: the checkpoint would be lost.
    again = invoke(*args)
    assert again.exit_code == 2 and "--resume" in again.stderr
    # Resuming with other settings is refused too.
    other = invoke(*args[:-2], "--val-every", 6, "--resume", tmp_path / "part.ckpt.pt")
    assert other.exit_code == 2 and "val_every" in other.stderr

    second = invoke(*args, "--resume", tmp_path / "part.ckpt.pt")
    assert second.exit_code == 0, second.output
    np.testing.assert_array_equal(np.load(part), np.load(tmp_path / "whole.npy"))
    s_whole = json.loads((tmp_path / "whole.json").read_text())
    s_part = json.loads((tmp_path / "part.json").read_text())
    assert s_part["final_train_loss"] == s_whole["final_train_loss"]
    assert s_part["final_val_loss"] == s_whole["final_val_loss"]


def _with_adam_state(state: dict, key: str, value: torch.Tensor | None) -> dict:
    # The Adam state with `key` set to `value`, or removed for None.
    optimizer = state["trainer"]["optimizer"]
    moments = {k: v for k, v in {**optimizer["state"][0], key: value}.items() if v is not None}
    return _with_optimizer(state, {**optimizer, "state": {0: moments}})


def _with_adam_settings(state: dict, **settings) -> dict:
    optimizer = state["trainer"]["optimizer"]
    groups = [{**group, **settings} for group in optimizer["param_groups"]]
    return _with_optimizer(state, {**optimizer, "param_groups": groups})


def _with_optimizer(state: dict, optimizer: dict) -> dict:
    return {**state, "trainer": {**state["trainer"], "optimizer": optimizer}}


def test_resume_refuses_another_validation_split_and_damaged_checkpoints(tmp_path):
    in_dir, tg_dir = write_pairs(tmp_path)
    part = tmp_path / "part.npy"
    checkpoint = tmp_path / "part.ckpt.pt"
    args = [in_dir, tg_dir, "--out", part, *FAST, "--val-every", 5]
    assert invoke(*args, "--stop-after", 7).exit_code == 0
    # --val-split was not part of what a checkpoint must match: the resumed run validated on
    # another part of each pair and its history mixed the two.
    other = invoke(*args, "--val-split", 0.3, "--resume", checkpoint)
    assert other.exit_code == 2 and "val_split" in other.stderr, other.stderr
    # A checkpoint damaged or edited inside failed with a traceback (KeyError: 'config'), or
    # resumed from a step that makes no sense.
    state = torch.load(checkpoint, weights_only=True)
    hist = state["trainer"]["history"]
    damaged = [
        {**state, "trainer": {}},
        {**state, "setup": []},
        {**state, "trainer": {**state["trainer"], "step": -5}},
        {**state, "trainer": {**state["trainer"], "step": 10**6}},
        {**state, "trainer": {**state["trainer"], "model": {"taps": torch.zeros(3)}}},
        {**state, "trainer": {**state["trainer"], "history": 3}},
        {**state, "trainer": {**state["trainer"], "history": {}}},
        {**state, "trainer": {**state["trainer"], "history": {**hist, "train": ["a"] * 5}}},
        # The optimizer's own state: taken by load_state_dict, then a traceback at the first
        # step ("The size of tensor a (13) must match ...", a ComplexDouble cast).
        _with_adam_state(state, "exp_avg", torch.zeros(13)),
        _with_adam_state(state, "step", torch.tensor(-5.0)),
        _with_adam_state(state, "exp_avg_sq", torch.full((7,), float("nan"))),
        # NaN taps resumed into "training diverged ... Try a lower --lr".
        {**state, "trainer": {**state["trainer"], "model": {"taps": torch.full((7,), np.nan)}}},
        # Edits that passed the checks above, then failed in a traceback: moments of the
        # right size in another shape, a moment missing, other optimizer settings (amsgrad
        # wants a moment the state lacks; betas above 1 a complex power), a history that
        # disagrees with its step count (an IndexError after the last step) or with itself
        # (the loss plot's matplotlib error, after the kernel was written).
        _with_adam_state(state, "exp_avg", torch.zeros(1, 7)),
        _with_adam_state(state, "exp_avg_sq", torch.zeros(7, 1)),
        _with_adam_state(state, "exp_avg", None),
        _with_adam_settings(state, amsgrad=True),
        _with_adam_settings(state, betas=(2.0, 5.0)),
        {**state, "trainer": {**state["trainer"], "step": 12, "history": {**hist, "train": []}}},
        {**state, "trainer": {**state["trainer"], "history": {**hist, "val": []}}},
    ]
    for i, bad in enumerate(damaged):
        path = tmp_path / f"bad{i}.pt"
        torch.save(bad, path)
        result = invoke(*args, "--resume", path, "--checkpoint", tmp_path / f"new{i}.pt")
        assert result.exit_code == 2, (i, result.stderr)
        assert str(path) in result.stderr and "Traceback" not in result.stderr, (i, result.stderr)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(300))
    result = invoke(*args, "--resume", junk, "--checkpoint", tmp_path / "new.pt")
    assert result.exit_code == 2 and "not a readable diffconv fit checkpoint" in result.stderr
    assert "weights_only" not in result.stderr  # torch's advice to unpickle it is not ours
    assert invoke(*args, "--resume", checkpoint).exit_code == 0  # the real one still resumes


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--crop", "inf", "must be a finite number"),
        ("--crop", "nan", "must be a finite number"),
        ("--val-split", "nan", "must be a finite number"),
        ("--lr", "nan", "must be a finite number"),
        ("--seed", "-10000000000000", "must be between"),
        ("--checkpoint", "OUT.npy", "is also an output of the fit"),
        ("--checkpoint", "OUT.txt", "is also an output of the fit"),
    ],
)
def test_option_values_that_cannot_work_are_usage_errors(tmp_path, option, value, said):
    # Each was a traceback (OverflowError for --crop inf, a NaN check deep in the trainer,
    # a seed overflowing at the first step), or a checkpoint that the kernel overwrote.
    in_dir, tg_dir = write_pairs(tmp_path)
    value = value.replace("OUT", str(tmp_path / "k"))
    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST, option, value)
    assert result.exit_code == 2, result.stderr
    assert said in result.stderr and f"'{option}'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "k.npy").exists()


def test_gaussian_std_learned_from_files(tmp_path):
    from diffconv_core.windows import get_window

    true_std, K = 2.6, 21
    target_kernel = scipy.signal.windows.gaussian(K, true_std)
    in_dir, tg_dir = write_pairs(
        tmp_path, n=1, frames=2000, noise=1e-4, kernel=target_kernel / target_kernel.sum()
    )
    args = [in_dir, tg_dir, "--out", tmp_path / "g.npy", "--taps", K, "--window", "gauss"]
    args += ["--param", "std=1.5", "--steps", 150, "--lr", 0.05, "--crop", 0, "--val-split", 0]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    learned = json.loads((tmp_path / "g.json").read_text())["learned"]
    assert learned["window"] == "gaussian" and learned["normalize"] == "sum"
    std = learned["params"]["std"]
    assert abs(std - true_std) / true_std < 0.01, f"std {std} vs {true_std}"
    # The kernel file is that window.
    window = get_window("gaussian", K, std=std, normalize="sum", dtype=torch.float64)
    np.testing.assert_allclose(np.load(tmp_path / "g.npy"), window.numpy(), rtol=1e-5)


def _window_fit(folder: Path, window: str):
    """Two steps of fitting a 9-tap ``window`` to one pair of files: a function of extra
    options and the output's name, giving the result and the learned record (None if the
    command failed)."""
    in_dir, tg_dir = write_pairs(folder, n=1, frames=400)
    args = [in_dir, tg_dir, "--taps", 9, "--window", window, "--steps", 2, "--crop", 0]

    def run(*extra, out: str):
        result = invoke(*args, *extra, "--out", folder / out)
        if result.exit_code != 0:
            return result, None
        return result, json.loads((folder / out).with_suffix(".json").read_text())["learned"]

    return run


def test_window_with_integer_and_boolean_settings(tmp_path):
    # taylor's defaults nbar=4 and norm=True were turned into floats, and norm=1.0 was then
    # refused ("norm must be True or False") although no --param was given.
    fit = _window_fit(tmp_path, "taylor")
    result, learned = fit(out="t.npy")
    assert result.exit_code == 0, result.output
    assert learned["params"] == {"nbar": 4, "sll": pytest.approx(30.0, rel=0.1), "norm": True}
    result, learned = fit("--param", "norm=false", out="f.npy")
    assert result.exit_code == 0, result.output
    assert learned["params"]["norm"] is False
    # With the width learned the settings are all fixed: kept as given, not made floats.
    result, learned = fit("--learn", "width", "--param", "norm=false", out="w.npy")
    assert result.exit_code == 0, result.output
    params = learned["params"]
    assert params["nbar"] == 4 and isinstance(params["nbar"], int) and params["norm"] is False


def test_window_with_a_word_setting(tmp_path):
    # dpss's norm takes words ("subsample"): fit refused any non-number --param value.
    from diffconv_core.windows import dpss

    fit = _window_fit(tmp_path, "dpss")
    result, learned = fit("--param", "NW=2", "--param", "norm=subsample", out="d.npy")
    assert result.exit_code == 0, result.output
    assert learned["params"]["norm"] == "subsample"
    nw = learned["params"]["NW"]
    expected = dpss(9, nw, norm="subsample", normalize="sum", dtype=torch.float64).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), expected, rtol=1e-5)
    result, _ = fit("--param", "NW=2", "--param", "norm=sideways", out="e.npy")
    assert result.exit_code == 2 and "norm must be one of" in result.stderr


def test_window_with_a_sequence_setting(tmp_path):
    # general_cosine's a=0.54,0.46 with a learned width was refused ("not a number"): a
    # sequence is a fixed setting, kept as a list in the learned record.
    from diffconv_core.windows import get_window

    fit = _window_fit(tmp_path, "general_cosine")
    result, learned = fit("--learn", "width", "--param", "a=0.54,0.46", out="c.npy")
    assert result.exit_code == 0, result.output
    assert learned["params"] == {"a": [0.54, 0.46]}
    expected = get_window("general_cosine", 9, a=[0.54, 0.46], width=learned["width"],
                          normalize="sum", dtype=torch.float64)  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), expected.numpy(), rtol=1e-5)
    # learning "params" would have nothing to learn: a usage error that says so
    result, _ = fit("--param", "a=0.54,0.46", out="p.npy")
    assert result.exit_code == 2
    assert "no parameters to learn (a: given, not learned); use --learn width" in result.stderr


@pytest.mark.parametrize("npy_side", ["input", "target"])
def test_npy_paired_with_audio_needs_a_rate(tmp_path, npy_side):
    # A .npy file has no sample rate: without --rate it cannot match an audio file's, and
    # the error says so (it was a TypeError traceback formatting None as a rate).
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(300), rng.standard_normal(300)
    npy, wav = (tmp_path / "x.npy", tmp_path / "y.wav")
    np.save(npy, x if npy_side == "input" else y)
    sf.write(wav, y if npy_side == "input" else x, RATE, subtype="FLOAT")
    pair = (npy, wav) if npy_side == "input" else (wav, npy)
    result = invoke(*pair, "--out", tmp_path / "k.npy", *FAST)
    assert result.exit_code == 2
    assert "sample rates differ" in result.stderr and "give --rate" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "k.npy").exists()
    result = invoke(*pair, "--out", tmp_path / "k.npy", "--rate", RATE, *FAST)
    assert result.exit_code == 0, result.stderr


def test_bad_pairs_listed_in_one_error(tmp_path):
    in_dir, tg_dir = write_pairs(tmp_path, n=2, frames=300)
    rng = np.random.default_rng(0)
    sf.write(in_dir / "only_input.wav", rng.standard_normal(300), RATE, subtype="FLOAT")
    sf.write(tg_dir / "only_target.wav", rng.standard_normal(300), RATE, subtype="FLOAT")
    sf.write(in_dir / "short.wav", rng.standard_normal((300, 2)), RATE, subtype="FLOAT")
    sf.write(tg_dir / "short.wav", rng.standard_normal((250, 2)), RATE, subtype="FLOAT")
    sf.write(in_dir / "mono.wav", rng.standard_normal((300, 2)), RATE, subtype="FLOAT")
    sf.write(tg_dir / "mono.wav", rng.standard_normal(300), RATE, subtype="FLOAT")
    sf.write(in_dir / "rate.wav", rng.standard_normal(300), RATE, subtype="FLOAT")
    sf.write(tg_dir / "rate.wav", rng.standard_normal(300), 16000, subtype="FLOAT")
    (tg_dir / "broken.wav").write_bytes(b"RIFF....not audio")
    sf.write(in_dir / "broken.wav", rng.standard_normal(300), RATE, subtype="FLOAT")
    before = sorted(p.name for p in tmp_path.iterdir())

    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST)
    assert result.exit_code == 2
    err = result.stderr
    assert "input/target pairs cannot be used" in err
    assert "only_input.wav: input" in err and "has no target" in err
    assert "only_target.wav: target" in err and "has no input" in err
    assert "short.wav: lengths differ: 300 vs 250 frames" in err
    assert "mono.wav: channel counts differ" in err
    assert "rate.wav: sample rates differ: 8000 Hz vs 16000 Hz" in err
    assert "broken.wav:" in err and "not a readable sound file" in err
    assert "p0.wav" not in err and "Traceback" not in err
    assert err.count("Error:") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_unreadable_file_pair_named_once(tmp_path, monkeypatch):
    # The pair's name is the input's file name: the line read "text.wav: text.wav: ...".
    monkeypatch.chdir(tmp_path)
    Path("text.wav").write_text("this is not audio\n" * 20)
    sf.write("clean.wav", np.zeros(300), RATE, subtype="FLOAT")
    result = invoke("text.wav", "clean.wav", "--out", "k.npy", *FAST)
    assert result.exit_code == 1, result.output  # a file that cannot be read: runtime failure
    assert "\n  text.wav: not a readable sound file" in result.stderr
    assert "text.wav: text.wav" not in result.stderr and "Traceback" not in result.stderr


def test_unreadable_files_alone_exit_1_beside_other_problems_2(tmp_path):
    # An unreadable or corrupt file is a runtime failure (exit 1) as in every command; a
    # pair problem of what was given (here a missing partner) makes it a usage error.
    in_dir, tg_dir = write_pairs(tmp_path, n=2, frames=300)
    (tg_dir / "p1.wav").write_bytes(b"RIFF....not audio")
    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST)
    assert result.exit_code == 1, result.stderr
    assert "p1.wav: not a readable sound file" in result.stderr
    sf.write(in_dir / "lonely.wav", np.zeros(300), RATE, subtype="FLOAT")
    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST)
    assert result.exit_code == 2, result.stderr
    assert "lonely.wav: input" in result.stderr and "p1.wav: not a readable" in result.stderr
    assert not (tmp_path / "k.npy").exists()


def test_a_symlinked_file_in_a_tree_pairs_as_any_file(tmp_path):
    # fit writes nothing into either tree, yet the batch commands' check that no two jobs
    # write one file refused this: "tg/p0.wav and tg/p1.wav would both be written to in/p1.wav".
    in_dir, tg_dir = write_pairs(tmp_path, n=2, frames=300)
    (in_dir / "p1.wav").unlink()
    (in_dir / "p1.wav").symlink_to("p0.wav")
    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST)
    assert result.exit_code == 0, result.stderr
    assert np.load(tmp_path / "k.npy").shape == (7,)


@pytest.mark.parametrize("which", ["--out", "--checkpoint", "--plot"])
def test_no_output_replaces_a_training_file_even_with_overwrite(tmp_path, monkeypatch, which):
    # --out xin.npy --overwrite replaced the input with the 7-tap kernel it learned.
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.save("xin.npy", rng.standard_normal((1, 600)))
    np.save("yin.npy", rng.standard_normal((1, 600)))
    before = {name: Path(name).read_bytes() for name in ("xin.npy", "yin.npy")}
    victim = {"--out": "xin.npy", "--checkpoint": "yin.npy", "--plot": "xin.npy"}[which]
    outputs = {"--out": "k.npy", which: victim}
    if which == "--plot":
        Path("x.png").symlink_to("xin.npy")  # the same file by another name
        outputs[which] = "x.png"
    args = [a for pair in outputs.items() for a in pair]
    result = invoke("xin.npy", "yin.npy", *args, *FAST, "--crop", 0, "--overwrite")
    assert result.exit_code == 2, result.output
    assert "is a training file" in result.stderr and "Traceback" not in result.stderr
    assert {name: Path(name).read_bytes() for name in before} == before


def test_an_output_that_is_a_directory_is_refused_before_training(tmp_path):
    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=300)
    (tmp_path / "k.txt").mkdir()  # fit wrote k.npy and k.ckpt.pt, then failed on this
    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST, "--overwrite")
    assert result.exit_code == 2, result.output
    assert "k.txt is a directory" in result.stderr
    assert not (tmp_path / "k.npy").exists() and not (tmp_path / "k.ckpt.pt").exists()


def test_a_crop_longer_than_any_pair_trains_on_whole_pairs(tmp_path):
    # 1e305 s times the rate overflowed round(): a traceback. 1e30 s trained already.
    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=300)
    for crop in (1e30, 1e305):
        out = tmp_path / f"k{crop:g}.npy"
        result = invoke(in_dir, tg_dir, "--out", out, *FAST[:-4], "--crop", crop)
        assert result.exit_code == 0, result.output
        assert np.isfinite(np.load(out)).all() and np.load(out).shape == (7,)


def test_a_learned_setting_leaving_its_range_is_a_divergence(tmp_path):
    # std=1e-300 became NaN at the first step; the window refused it inside the trainer and
    # the run ended in a traceback.
    rng = np.random.default_rng(0)  # float64 pairs: 1e-300 is no float32
    np.save(tmp_path / "x.npy", rng.standard_normal((1, 300)))
    np.save(tmp_path / "y.npy", rng.standard_normal((1, 300)))
    in_dir, tg_dir = tmp_path / "x.npy", tmp_path / "y.npy"
    result = invoke(
        in_dir, tg_dir, "--out", tmp_path / "k.npy", "--window", "gaussian",
        "--param", "std=1e-300", "--steps", 5, "--crop", 0,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "training diverged: a learned setting left its range" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "k.npy").exists()


def test_an_unknown_matplotlib_backend_in_the_environment_does_not_stop_the_plot(tmp_path):
    # MPLBACKEND=nonsense made matplotlib's import raise: a traceback after the kernel files.
    from tests.cli.conftest import run_diffconv

    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=300)
    out, plot = tmp_path / "k.npy", tmp_path / "l.png"
    env = {**os.environ, "MPLBACKEND": "nonsense"}
    result = run_diffconv("fit", in_dir, tg_dir, "--out", out, *FAST, "--plot", plot, env=env)
    assert result.returncode == 0, result.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nonfinite_samples_refused_before_training(tmp_path):
    # They trained to "train loss nan", exit code 0 and a kernel of NaN.
    in_dir, tg_dir = write_pairs(tmp_path, n=3, frames=300)
    x, _ = sf.read(in_dir / "p0.wav", always_2d=True)
    x[10, 1] = np.nan
    sf.write(in_dir / "p0.wav", x, RATE, subtype="FLOAT")
    y, _ = sf.read(tg_dir / "p2.wav", always_2d=True)
    y[[5, 7], 0], y[200, 1] = np.nan, -np.inf
    sf.write(tg_dir / "p2.wav", y, RATE, subtype="FLOAT")
    before = sorted(p.name for p in tmp_path.iterdir())

    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST, "--crop", 0)
    assert result.exit_code == 1, result.output
    err = result.stderr
    assert f"p0.wav: input {in_dir / 'p0.wav'} holds 1 non-finite sample (1 NaN)" in err
    assert f"p2.wav: target {tg_dir / 'p2.wav'} holds 3 non-finite samples (2 NaN, 1 Inf)" in err
    assert "p1.wav" not in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no kernel, no checkpoint


@pytest.mark.parametrize("lr", ["1e30", "1e39"])  # Inf loss at step 2; a step torch refuses
def test_diverging_fit_stops_without_a_kernel(tmp_path, lr):
    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=300)
    args = [in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST, "--lr", lr]
    result = invoke(*args, "--steps", 40, "--checkpoint-every", 1)
    assert result.exit_code == 1, result.output
    assert "training diverged" in result.stderr and "Try a lower --lr" in result.stderr
    assert f"this run used {float(lr):g}" in result.stderr and "Traceback" not in result.stderr
    assert not any((tmp_path / f"k.{ext}").exists() for ext in ("npy", "txt", "json"))
    # Checkpoints written before it diverged hold finite taps; none holds the blown-up ones.
    if (tmp_path / "k.ckpt.pt").exists():
        state = torch.load(tmp_path / "k.ckpt.pt", weights_only=True)
        assert all(v.isfinite().all() for v in state["trainer"]["model"].values())


def test_pairs_at_different_rates_refused(tmp_path):
    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=300)
    x = np.zeros(300)
    sf.write(in_dir / "fast.wav", x, 2 * RATE, subtype="FLOAT")
    sf.write(tg_dir / "fast.wav", x, 2 * RATE, subtype="FLOAT")
    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST)
    assert result.exit_code == 2
    assert "different sample rates (fast.wav at 16000 Hz, p0.wav at 8000 Hz)" in result.stderr


@pytest.mark.parametrize("npy_name", ["a.npy", "z.npy"])
def test_npy_pairs_beside_audio_pairs_need_a_rate_whatever_their_names(tmp_path, npy_name):
    # The rate came from the first pair by name: z.npy beside p0.wav trained as if at the
    # audio's rate, a.npy was refused. Same data, same answer now: give --rate.
    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=600)
    np.save(in_dir / npy_name, np.zeros((2, 600)))
    np.save(tg_dir / npy_name, np.zeros((2, 600)))
    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST)
    assert result.exit_code == 2, result.stderr
    said = f"{npy_name}: .npy pairs carry no sample rate, the others are at {RATE:g} Hz"
    assert said in result.stderr and "give --rate" in result.stderr
    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST, "--rate", RATE)
    assert result.exit_code == 0, result.stderr


def test_npy_pairs_need_rate_to_crop_in_seconds(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(500)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", scipy.signal.convolve(x, TRUE_FIR, "same"))
    args = [tmp_path / "x.npy", tmp_path / "y.npy", "--out", tmp_path / "k.npy", "--taps", 7]
    result = invoke(*args, "--steps", 3)
    assert result.exit_code == 2 and "give --rate" in result.stderr
    result = invoke(*args, "--steps", 3, "--optimizer", "lbfgs", "--crop", 0, "--val-split", 0)
    assert result.exit_code == 0, result.output
    # Noiseless float64 data: L-BFGS finds the FIR itself.
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), TRUE_FIR, atol=1e-4)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--window", "hann"], "no parameters to learn; use --learn width"),
        (["--window", "nope"], "unknown window 'nope'"),
        (["--window", "gaussian"], "needs a starting value for std"),
        # a sequence is given, not learned; a=4 would be refused as not a sequence
        (
            ["--window", "general_cosine", "--learn", "width"],
            "needs a value for a (e.g. --param a=0.54,0.46)",
        ),
        (["--window", "gaussian", "--param", "beta=2"], "gaussian has no parameter 'beta'"),
        (["--window", "gaussian", "--param", "std=-1"], "'--param': learned parameter std"),
        (["--window", "gaussian", "--param", "std=wide"], "std='wide' is not a number"),
        (["--window", "tukey", "--param", "alpha=1.5"], "'--param': learned parameter alpha"),
        (["--window", "hann", "--learn", "width", "--width", "50"], "'--width': learned"),
        (["--window", "tukey", "--optimizer", "lbfgs"], "lbfgs is for plain FIR taps"),
        (["--width", "3"], "--width needs --window"),
        # Given without a window they were ignored.
        (["--learn", "width"], "--learn needs --window"),
        (["--normalize", "peak"], "--normalize needs --window"),
        (["--param", "std=3"], "give --window, or a window as --init"),
        (["--init", "nosuchwindow"], "nosuchwindow"),
        (["--plot", "loss.jpg"], "is not a .png file"),
        (["--out", "k.wav"], "--out must name a .npy file"),
        (["--resume", "missing.pt"], "no such checkpoint file"),
        # Its crop plan failed to allocate at the first step: a traceback, exit 1.
        (["--batch-size", str(10**12)], "'--batch-size': 1,000,000,000,000 crops"),
    ],
)
def test_option_errors_exit_2(tmp_path, monkeypatch, extra, message):
    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=300)
    monkeypatch.chdir(tmp_path)
    result = invoke(in_dir, tg_dir, "--out", "k.npy", *FAST, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not Path("k.npy").exists()


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"),
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"),
        MemoryError(),
    ],
)
def test_a_step_out_of_memory_is_a_failure_not_a_traceback(tmp_path, monkeypatch, error):
    # A step past the device's memory (the host's is checked up front) ended in the
    # allocator's traceback; the checkpoint of the last good step stands.
    from diffconv_core.fitting import Trainer

    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=300)
    original = Trainer.step

    def step(self):
        if self.step_index == 3:
            raise error
        return original(self)

    monkeypatch.setattr(Trainer, "step", step)
    out = tmp_path / "k.npy"
    result = invoke(in_dir, tg_dir, "--out", out, *FAST, "--checkpoint-every", 2)
    assert result.exit_code == 1, result.output
    assert "out of memory at step 4" in result.stderr and "--batch-size" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
    state = torch.load(tmp_path / "k.ckpt.pt", weights_only=True)
    assert state["trainer"]["step"] == 2


def test_file_and_directory_cannot_pair(tmp_path):
    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=300)
    result = invoke(in_dir / "p0.wav", tg_dir, "--out", tmp_path / "k.npy", *FAST)
    assert result.exit_code == 2 and "two files or two directories" in result.stderr


def test_existing_outputs_need_overwrite(tmp_path):
    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=300)
    (tmp_path / "k.txt").write_text("keep me\n")
    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST)
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert (tmp_path / "k.txt").read_text() == "keep me\n"
    assert not (tmp_path / "k.npy").exists()
    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST, "--overwrite")
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "k.txt").read_text().splitlines()) == 7


def test_torchrun_two_processes_equal_one(tmp_path):
    """A 2-process gloo run on CPU, started here, gives the 1-process kernel."""
    in_dir, tg_dir = write_pairs(tmp_path, n=3)
    args = [str(in_dir), str(tg_dir), *FAST, "--val-every", 4, "--device", "cpu"]
    args = [str(a) for a in args]
    single = invoke(*args, "--out", tmp_path / "one.npy")
    assert single.exit_code == 0, single.output
    # --standalone: torchrun binds a free local port itself (no race between picking a free
    # port here and binding it there, which parallel test runs could lose).
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launcher += ["--nproc_per_node=2"]
    double = subprocess.run(
        [*launcher, "-m", "cli", "fit", *args, "--out", str(tmp_path / "two.npy")],
        capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert double.returncode == 0, double.stderr
    np.testing.assert_allclose(
        np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy"), rtol=1e-5, atol=1e-6
    )
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["final_val_loss"] == pytest.approx(one["final_val_loss"], rel=1e-5)
    # Only rank 0 writes and logs: one summary line.
    assert double.stderr.count("fitted 7 taps") == 1


@pytest.mark.parametrize(
    "signum, status, resume",
    [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False), (signal.SIGHUP, 129, False)],
    ids=["ctrl-c", "sigterm", "sighup"],
)
def test_interrupt_checkpoints_and_resume_reaches_the_same_kernel(tmp_path, signum, status, resume):
    """Ctrl-C (SIGTERM) finishes the running step, checkpoints, exits 130 (143, as the other
    commands do); --resume completes it."""
    in_dir, tg_dir = write_pairs(tmp_path, n=2, frames=600)
    common = [in_dir, tg_dir, "--taps", 7, "--steps", 400, "--lr", 0.02, "--crop", 0.01]
    common += ["--batch-size", 2, "--val-every", 50, "--device", "cpu"]
    ckpt = tmp_path / "cut.ckpt.pt"
    command = [sys.executable, "-m", "cli", "fit", *[str(a) for a in common]]
    command += ["--out", str(tmp_path / "cut.npy"), "--checkpoint-every", "1"]
    proc = subprocess.Popen(
        command,
        env=subprocess_env(),
        cwd=REPO,
        stderr=subprocess.PIPE,
        # A suite started in the background by a shell ignores SIGINT, and so would the
        # child, whose fit then keeps ignoring it (as it does a SIGHUP under nohup).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    step = torch.load(ckpt, weights_only=True)["trainer"]["step"]
    if proc.returncode == 0:
        pytest.skip(f"the fit finished before the signal arrived (step {step})")
    assert proc.returncode == status, err.decode()
    assert "interrupted after step" in err.decode() and "Traceback" not in err.decode()
    assert 1 <= step < 400 and not (tmp_path / "cut.npy").exists()
    if not resume:
        return

    resumed = invoke(*common, "--out", tmp_path / "cut.npy", "--resume", ckpt)
    assert resumed.exit_code == 0, resumed.output
    whole = invoke(*common, "--out", tmp_path / "whole.npy")
    assert whole.exit_code == 0, whole.output
    np.testing.assert_array_equal(np.load(tmp_path / "cut.npy"), np.load(tmp_path / "whole.npy"))


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_bar_on_a_terminal(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=400)
    command = [sys.executable, "-m", "cli", "fit", str(in_dir), str(tg_dir), *map(str, FAST)]
    command += ["--out", str(tmp_path / "k.npy"), "--val-every", "3"]
    leader, follower = pty.openpty()
    # A fresh pseudo-terminal is 0 columns wide; give it a real terminal's size.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(command, env=subprocess_env(), cwd=REPO, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "12/12" in text and "train=" in text and "val=" in text
    assert "fitted 7 taps" in text


def test_kernel_files_are_written_all_or_none(tmp_path, monkeypatch):
    # A failed .json write (a full disk) left KERNEL.npy and KERNEL.txt of the new run beside
    # nothing: a set that looked finished.
    from cli import fit_outputs
    from cli.errors import FileProblem

    real = fit_outputs.atomic_write

    def fail_on_json(dest, fill, **kwargs):
        if str(dest).endswith(".json"):
            raise FileProblem(dest, "cannot write (No space left on device)")
        return real(dest, fill, **kwargs)

    monkeypatch.setattr(fit_outputs, "atomic_write", fail_on_json)
    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=300)
    result = invoke(in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST)
    assert result.exit_code == 1, result.output
    assert "k.json: cannot write (No space left on device)" in result.stderr
    assert not any((tmp_path / f"k.{ext}").exists() for ext in ("npy", "txt", "json"))


def test_resume_from_a_directory_says_so(tmp_path):
    in_dir, tg_dir = write_pairs(tmp_path, n=1, frames=300)
    (tmp_path / "ckpt").mkdir()
    result = invoke(
        in_dir, tg_dir, "--out", tmp_path / "k.npy", *FAST, "--resume", tmp_path / "ckpt"
    )
    assert result.exit_code == 2, result.output
    assert "ckpt: a directory, not a checkpoint file" in result.stderr
