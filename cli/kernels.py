"""Loading convolution kernels from files: .npy, text (.txt/.csv, as sox's ``fir`` takes
them) or audio (an impulse response; several channels give one kernel per channel).

A kernel file is an option value, so its problems are usage errors (exit code 2) raised as
:class:`~cli.errors.FileProblem` with ``exit_code=2``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from cli.audio_io import probe, read_signal
from cli.errors import EXIT_USAGE, FileProblem

NORMALIZATIONS = ("none", "sum", "peak", "energy")
_TEXT_SUFFIXES = {".txt", ".csv", ".tsv", ".dat", ".fir"}


def kernel_from_option(path: str, normalize: str) -> tuple[np.ndarray, float | None]:
    """The kernel named by ``--kernel``, normalised by ``--normalize``, and its sample rate
    (:func:`load_kernel`); problems with either become click usage errors (exit 2) naming
    the option.
    """
    import stat

    import click

    from cli.distributed import ranks_from_env

    if ranks_from_env().distributed:
        # Every rank reads the kernel: a FIFO's data goes to one of them and the others wait
        # in open() for good (the launch hung), as pipes do for INPUT.
        try:
            mode = os.stat(path).st_mode
            special = stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)
        except OSError:
            special = False  # no such file: load_kernel says so
        if special:
            raise click.BadParameter(
                f"{path}: every process under torchrun reads the kernel, which a pipe or "
                "device gives only once; save it to a file",
                param_hint="'--kernel'",
            )
    try:
        kernel, rate = load_kernel(path)
    except FileProblem as err:
        raise click.BadParameter(f"{err.path}: {err.reason}", param_hint="'--kernel'") from err
    try:
        return normalize_kernel(kernel, normalize), rate
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--normalize'") from err


def load_kernel(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """Read a kernel file, and the sample rate it was recorded at: an audio file's (an
    impulse response), None for .npy and text files, which carry none.

    - ``.npy``: ``(K,)`` or ``(C, K)`` (never unpickled);
    - ``.txt``/``.csv``: numbers separated by whitespace, commas, semicolons or newlines;
      ``#`` starts a comment (sox's ``fir`` coefficient files read as they are);
    - anything else: an audio file, one kernel per channel.

    Raises:
        FileProblem: unreadable file, no numbers, a non-number, NaN/Inf, a bad shape (exit 2).

    Shape:
        returns ``(K,)`` float64, or ``(C, K)`` for a multi-channel kernel.

    Example:
        >>> kernel, rate = load_kernel("sample_data/impulse_response.wav")
        >>> kernel.shape, rate
        ((1920,), 16000.0)
    """
    path = os.fspath(path)
    suffix = Path(path).suffix.lower()
    rate = None
    try:
        if suffix in _TEXT_SUFFIXES:
            kernel = _load_text(path)
        else:
            info = probe(path)
            kernel, rate = read_signal(info).astype(np.float64), info.rate
    except FileProblem as err:
        raise FileProblem(err.path, err.reason, exit_code=EXIT_USAGE) from err
    if kernel.ndim == 2 and kernel.shape[0] == 1:
        kernel = kernel[0]
    if kernel.ndim not in (1, 2) or kernel.shape[-1] == 0:
        raise FileProblem(
            path, f"kernel of shape {kernel.shape}; expected (K,) or (C, K)", EXIT_USAGE
        )
    if not np.isfinite(kernel).all():
        raise FileProblem(path, "kernel holds NaN or Inf values", EXIT_USAGE)
    return kernel, rate


def _load_text(path: str) -> np.ndarray:
    try:
        # utf-8-sig: spreadsheets and Notepad write a byte-order mark first.
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise FileProblem(path, f"cannot read kernel text ({err})") from err
    tokens = []
    for line in text.splitlines():
        tokens.extend(t for t in re.split(r"[\s,;]+", line.split("#", 1)[0]) if t)
    if not tokens:
        raise FileProblem(path, "kernel file holds no numbers")
    for token in tokens:
        # Python's float() also takes "1_0" (10) and other scripts' digits; a coefficient
        # file holds plain decimal numbers, as sox's fir reads them (NaN and Inf are
        # refused below with their own message).
        if not _NUMBER.fullmatch(token):
            raise FileProblem(path, f"kernel file holds a non-number ({token!r})")
    return np.array([float(t) for t in tokens], dtype=np.float64)


_NUMBER = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)", re.ASCII | re.IGNORECASE
)


def normalize_kernel(kernel: np.ndarray, how: str) -> np.ndarray:
    """Scale each kernel (last axis) to unit sum, unit peak magnitude or unit energy.

    Raises:
        ValueError: unknown ``how`` or a kernel whose sum/peak/energy is zero.

    Shape:
        ``(..., K)`` -> ``(..., K)``.

    Example:
        >>> normalize_kernel(np.array([1.0, 3.0]), "sum").tolist()
        [0.25, 0.75]
    """
    if how not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}; got {how!r}")
    if how == "none":
        return kernel
    if how == "sum":
        scale = kernel.sum(-1, keepdims=True)
    elif how == "peak":
        scale = np.abs(kernel).max(-1, keepdims=True)
    else:
        scale = np.sqrt((kernel * kernel).sum(-1, keepdims=True))
    if np.any(np.abs(scale) <= np.finfo(np.float64).eps * np.abs(kernel).sum(-1, keepdims=True)):
        raise ValueError(f"cannot normalize the kernel by its {how}: it is zero")
    return kernel / scale
