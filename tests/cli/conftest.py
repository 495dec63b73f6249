"""Shared fixtures for the CLI tests: sample files, a CliRunner helper, bad inputs."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cli.main import cli

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_data"


def invoke(*args, env: dict | None = None):
    """Run the click app in-process; stderr is kept apart from stdout."""
    return CliRunner(env=env).invoke(cli, [str(a) for a in args], catch_exceptions=False)


def run_diffconv(*args, env: dict | None = None, cwd: Path = REPO):
    """Run ``python -m cli ...`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture
def identity(tmp_path):
    """A one-tap kernel of 1.0 (--kernel): the output is the input."""
    path = tmp_path / "identity.npy"
    np.save(path, np.array([1.0]))
    return path


@pytest.fixture
def sigterm_handler():
    """diffconv's own SIGTERM/Ctrl-C handlers (cli.interrupts), the previous ones restored."""
    import signal

    from cli import interrupts

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupts.unwind_on_sigterm()
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def listing(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden temporaries included), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def bad_inputs(tmp_path) -> dict[str, Path]:
    """One file for each kind of unreadable input."""
    folder = tmp_path / "bad"
    folder.mkdir()
    files = {
        "empty": folder / "empty.wav",
        "text": folder / "text.wav",
        "corrupt": folder / "corrupt.wav",
        "pickled": folder / "pickled.npy",
        "unterminated": folder / "unterminated.npy",
        "objects": folder / "objects.npy",
        "4d": folder / "four_d.npy",
        "truncated": folder / "truncated.wav",
        "truncated_aiff": folder / "truncated.aiff",
        "truncated_au": folder / "truncated.au",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not audio\n" * 20)
    files["corrupt"].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 40)
    files["pickled"].write_bytes(pickle.dumps({"evil": 1}))
    # A header dict cut off mid-way: numpy's parser raised tokenize.TokenError, no ValueError.
    files["unterminated"].write_bytes(
        b"\x93NUMPY\x01\x00\x20\x00{'descr': '<f4', garbage" + b" " * 20
    )
    np.save(files["objects"], np.array([1, "a", None], dtype=object), allow_pickle=True)
    np.save(files["4d"], np.zeros((2, 2, 2, 8)))
    for kind in ("truncated", "truncated_aiff", "truncated_au"):
        # Cut short (an interrupted copy): the header promises 1,000 frames, 400 are there.
        whole = io.BytesIO()
        fmt = files[kind].suffix[1:].upper()
        sf.write(whole, np.zeros((1000, 2)), 8000, subtype="PCM_16", format=fmt)
        files[kind].write_bytes(whole.getvalue()[: 1600 + 64])
    return files


def write_wav(path: Path, data: np.ndarray, rate: int = 8000, subtype: str = "PCM_16") -> Path:
    """Write ``(C, T)`` or ``(T,)`` samples as a sound file."""
    sf.write(path, np.asarray(data).T, rate, subtype=subtype)
    return path


def without_root_overrides() -> list[str]:
    """A command prefix that runs without root's permission overrides (nothing when not
    root); skips the test where that cannot be had."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root without setpriv: permissions are not enforced")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("setpriv cannot drop capabilities here")
    return prefix
