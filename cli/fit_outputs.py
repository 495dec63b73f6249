"""What ``diffconv fit`` writes: kernel (.npy and sox .txt), JSON, loss plot, checkpoints.

Every file goes through a hidden temporary file in its destination's directory and an atomic
``os.replace``, so an interrupted run never leaves a half-written output (nor a half-written
checkpoint that ``--resume`` would trip over). Nothing here imports torch at module level.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from cli.errors import FileProblem
from cli.writing import atomic_write, save_npy


def output_paths(out: str | os.PathLike) -> dict[str, Path]:
    """The files a fit writes, derived from ``--out KERNEL.npy``.

    Example:
        >>> {k: str(v) for k, v in output_paths("k/lp.npy").items()}
        {'npy': 'k/lp.npy', 'txt': 'k/lp.txt', 'json': 'k/lp.json'}
    """
    path = Path(out)
    if path.suffix.lower() != ".npy":
        raise ValueError(f"--out must name a .npy file; got {os.fspath(out)!r}")
    return {"npy": path, "txt": path.with_suffix(".txt"), "json": path.with_suffix(".json")}


def default_checkpoint(out: str | os.PathLike) -> Path:
    """``KERNEL.npy`` -> ``KERNEL.ckpt.pt``.

    Example:
        >>> str(default_checkpoint("k/lp.npy"))
        'k/lp.ckpt.pt'
    """
    return Path(out).with_suffix(".ckpt.pt")


def sox_text(kernel: np.ndarray) -> str:
    """One coefficient per line, as sox's ``fir`` effect reads a coefficient file.

    ``repr`` of a float64 round-trips exactly, so reading the text back gives the kernel.

    Example:
        >>> sox_text(np.array([0.25, 0.5, 0.25]))
        '0.25\\n0.5\\n0.25\\n'
    """
    return "".join(f"{float(v)!r}\n" for v in kernel)


def write_kernel_files(
    paths: dict[str, Path], kernel: np.ndarray, summary: dict[str, object]
) -> None:
    """Write KERNEL.npy (float64, ``(K,)``), KERNEL.txt and KERNEL.json: all three, or
    (a write failed) none of those this call wrote, so no set is left half new."""
    kernel = np.asarray(kernel, dtype=np.float64).reshape(-1)
    text = sox_text(kernel).encode()
    blob = (json.dumps(summary, indent=2, allow_nan=True) + "\n").encode()
    fills = {
        "npy": lambda f: save_npy(f, kernel),
        "txt": lambda f: f.write(text),
        "json": lambda f: f.write(blob),
    }
    written: list[Path] = []
    try:
        for key, fill in fills.items():
            atomic_write(paths[key], fill)
            written.append(Path(paths[key]))
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def write_loss_plot(dest: str | os.PathLike, history: dict[str, list[float]], title: str) -> None:
    """Training and validation loss against the step, log scale, as a PNG."""
    from cli.agg import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        train = history["train"]
        ax.plot(range(1, len(train) + 1), train, label="train", lw=1)
        if history["val"]:
            ax.plot(history["val_step"], history["val"], "o-", ms=3, label="validation")
        positive = [v for v in train + history["val"] if v > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        atomic_write(dest, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)


def save_checkpoint(dest: str | os.PathLike, state: dict) -> None:
    """``torch.save`` of plain tensors/numbers/strings, written atomically."""
    import torch

    atomic_write(dest, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint without unpickling arbitrary objects (``weights_only=True``).

    Raises:
        FileProblem: missing, or not a diffconv fit checkpoint (exit code 2: a bad option).
    """
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        what = (
            "a directory, not a checkpoint file"
            if os.path.isdir(path)
            else "no such checkpoint file"
        )
        raise FileProblem(path, what, exit_code=2)
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": the file's business
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign or corrupt files
        # torch's own text advises weights_only=False ("will likely succeed, but it can
        # result in arbitrary code execution"): never the advice for a file a user names.
        raise FileProblem(
            path, "not a readable diffconv fit checkpoint (a foreign or damaged file)", exit_code=2
        ) from err
    if not (
        isinstance(state, dict)
        and isinstance(state.get("setup"), dict)
        and isinstance(state.get("trainer"), dict)
    ):
        raise FileProblem(path, "not a diffconv fit checkpoint", exit_code=2)
    return state
