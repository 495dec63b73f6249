"""``diffconv smooth`` against a shell loop of ``sox IN OUT fir COEFFS``.

Two jobs, each with a 31-tap and a 4,095-tap unit-sum Hann window:

(a) a directory of 2,000 five-second 16 kHz mono 16-bit WAV files;
(b) one ten-minute 48 kHz stereo 16-bit WAV file.

sox runs once per file from a bash loop (what users' batch scripts do); diffconv runs once on
the whole directory (or the one file). Both are measured in this one run, on the same warm
page cache, as a process tree started from here: wall time (``time.perf_counter``) and peak
resident memory, the larger of ``wait4``'s ``ru_maxrss`` (the largest single process in the
tree) and the sum of the tree's ``VmRSS`` polled every 20 ms from /proc (catches concurrent
workers). Results print as a markdown table of ratios diffconv / sox, beside the start-up
floor: ``python -c 'import torch'`` timed in the same interleaved runs, the time any
torch-based tool spends before its first sample (the long-file target has to clear it).

Data is generated into a temporary directory (never the repository) and removed afterwards.
Skips cleanly (exit 0, a message) when sox or the diffconv command is missing.

Usage:
    python benchmarks/bench_cli_sox.py [--files 2000] [--minutes 10] [--taps 31 4095]
        [--repeat 1] [--keep DIR] [--diffconv-args "..."]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent


def hann_unit_sum(taps: int) -> np.ndarray:
    """The window diffconv smooth uses (symmetric Hann, unit sum), as sox fir coefficients."""
    # Imported here: the core is the project's reference for its own window.
    import torch

    from diffconv_core.windows import get_window

    w = get_window("hann", taps, normalize="sum", dtype=torch.float64)
    return w.numpy()


def speech_like(rng: np.random.Generator, frames: int, rate: int, channels: int) -> np.ndarray:
    """Noise through a few resonances with a slow amplitude envelope, scaled into [-0.5, 0.5]."""
    t = np.arange(frames) / rate
    out = np.empty((frames, channels), dtype=np.float32)
    for c in range(channels):
        f0 = rng.uniform(90, 250)
        tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3, 5))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t) ** 2
        noise = rng.standard_normal(frames) * 0.1
        x = (tone * envelope + noise).astype(np.float32)
        out[:, c] = 0.5 * x / np.abs(x).max()
    return out


def make_directory(path: Path, files: int, seconds: float, rate: int) -> None:
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    frames = int(seconds * rate)
    # A handful of distinct signals, cycled: generation time stays small, content realistic.
    signals = [speech_like(rng, frames, rate, 1) for _ in range(16)]
    for i in range(files):
        sf.write(path / f"clip_{i:05d}.wav", signals[i % 16], rate, subtype="PCM_16")


def make_long_file(path: Path, minutes: float, rate: int, channels: int) -> None:
    rng = np.random.default_rng(1)
    frames = int(minutes * 60 * rate)
    block = speech_like(rng, 10 * rate, rate, channels)  # 10 s, repeated with fresh noise
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16") as out:
        written = 0
        while written < frames:
            n = min(len(block), frames - written)
            noisy = block[:n] + 0.01 * rng.standard_normal((n, channels)).astype(np.float32)
            out.write(noisy)
            written += n


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it, walking /proc/PID/task/TID/children."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass  # exited meanwhile
    return found


def _tree_rss_kib(root: int) -> int:
    """Sum of VmRSS over ``root`` and its descendants (0 for vanished processes)."""
    total = 0
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def measure(command: str) -> tuple[float, float, int]:
    """Run ``command`` in bash; return (wall seconds, peak RSS MiB, exit code).

    The command runs under ``/usr/bin/time`` when present: a child forked from this (large)
    Python process would otherwise report this process's RSS as its own maximum.
    """
    start = time.perf_counter()
    report = tempfile.NamedTemporaryFile(prefix="bench_time_", suffix=".txt", delete=False)
    report.close()
    argv = ["bash", "-c", command]
    gnu_time = shutil.which("time") or (
        "/usr/bin/time" if os.path.exists("/usr/bin/time") else None
    )
    if gnu_time:
        argv = [gnu_time, "-o", report.name, "-f", "%M"] + argv
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    peak_sum = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak_sum
        while not done.is_set():
            peak_sum = max(peak_sum, _tree_rss_kib(proc.pid))
            done.wait(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    poller.join()
    single = usage.ru_maxrss
    if gnu_time:
        with open(report.name) as fh:
            lines = fh.read().split()
        single = int(lines[-1]) if lines and lines[-1].isdigit() else single
    os.unlink(report.name)
    # The tree sum counts /usr/bin/time (~2 MiB) too; negligible next to the commands.
    return wall, max(single, peak_sum) / 1024, os.waitstatus_to_exitcode(status)


def best(runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    """Fastest wall time, highest peak memory, worst exit code over repeated runs."""
    return min(r[0] for r in runs), max(r[1] for r in runs), max(r[2] for r in runs)


def find_diffconv() -> list[str] | None:
    # The console script installed beside this interpreter first: a PATH lookup may find a
    # version manager's shim (pyenv's costs 50 ms of bash per call), which is not diffconv.
    exe = shutil.which("diffconv", path=os.path.dirname(sys.executable)) or shutil.which("diffconv")
    if exe:
        return [exe]
    if (ROOT / "cli" / "main.py").exists():
        return [sys.executable, "-m", "cli"]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="files in the directory job")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each file")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long file")
    parser.add_argument("--taps", type=int, nargs="+", default=[31, 4095])
    parser.add_argument("--jobs", nargs="+", default=["dir", "long"], choices=["dir", "long"])
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each command; the fastest counts"
    )
    parser.add_argument(
        "--compare-env",
        default="OMP_WAIT_POLICY=PASSIVE",
        help="also time diffconv under these environment settings ('' to skip): by default "
        "OpenMP threads that sleep instead of spinning, which matters on a busy machine",
    )
    parser.add_argument("--keep", type=Path, help="generate data here and keep it")
    parser.add_argument(
        "--diffconv-args",
        default="--edges zeros --device cpu -q",
        help="extra options for diffconv smooth (zero edges, as sox's fir)",
    )
    args = parser.parse_args(argv)

    sox = shutil.which("sox")
    if sox is None:
        print("sox not found; skipping (apt-get install sox)", file=sys.stderr)
        return 0
    diffconv = find_diffconv()
    if diffconv is None or not (ROOT / "cli" / "commands" / "smooth.py").exists():
        print("the diffconv smooth command is not available; skipping", file=sys.stderr)
        return 0

    work = args.keep or Path(tempfile.mkdtemp(prefix="diffconv_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        data_dir, long_file = work / "clips", work / "long.wav"
        t0 = time.perf_counter()
        if "dir" in args.jobs and not data_dir.exists():
            make_directory(data_dir, args.files, args.seconds, 16000)
        if "long" in args.jobs and not long_file.exists():
            make_long_file(long_file, args.minutes, 48000, 2)
        print(f"data generated in {time.perf_counter() - t0:.1f} s under {work}", file=sys.stderr)

        q = shlex.quote
        dc = " ".join(q(p) for p in diffconv)
        for taps in args.taps:
            coeffs = work / f"hann_{taps}.txt"
            np.savetxt(coeffs, hann_unit_sum(taps), fmt="%.10e")
            for job in args.jobs:
                out_sox, out_dc = work / f"out_sox_{job}_{taps}", work / f"out_dc_{job}_{taps}"
                for d in (out_sox, out_dc):
                    shutil.rmtree(d, ignore_errors=True)
                    d.mkdir()
                if job == "dir":
                    sox_cmd = (
                        f'for f in {q(str(data_dir))}/*.wav; do {q(sox)} "$f" '
                        f'{q(str(out_sox))}/"${{f##*/}}" fir {q(str(coeffs))} || exit 1; done'
                    )
                    dc_cmd = f"{dc} smooth {q(str(data_dir))} {q(str(out_dc))}"
                    label = f"{args.files} x {args.seconds:g} s 16 kHz mono"
                else:
                    sox_cmd = (
                        f"{q(sox)} {q(str(long_file))} {q(str(out_sox / 'long.wav'))} "
                        f"fir {q(str(coeffs))}"
                    )
                    dc_cmd = f"{dc} smooth {q(str(long_file))} {q(str(out_dc / 'long.wav'))}"
                    label = f"{args.minutes:g} min 48 kHz stereo"
                dc_cmd += f" --window hann --length {taps} {args.diffconv_args}"
                # The start-up floor: what the interpreter and torch cost before any work.
                floor_cmd = f"{q(sys.executable)} -c 'import torch'"
                variant_cmd = f"env {args.compare_env} {dc_cmd}" if args.compare_env else None
                sox_runs, dc_runs, variant_runs, floor_runs = [], [], [], []
                for _ in range(args.repeat):  # interleaved, so all see the same machine load
                    sox_runs.append(measure(sox_cmd))
                    floor_runs.append(measure(floor_cmd))
                    dc_runs.append(measure(dc_cmd + " --overwrite"))
                    if variant_cmd:
                        variant_runs.append(measure(variant_cmd + " --overwrite"))
                sox_wall, sox_mem, sox_rc = best(sox_runs)
                dc_wall, dc_mem, dc_rc = best(dc_runs)
                var_wall, _, var_rc = best(variant_runs) if variant_runs else (None, None, 0)
                floor_wall = best(floor_runs)[0]
                if sox_rc or dc_rc or var_rc:
                    print(
                        f"{label}, {taps} taps: sox exit {sox_rc}, diffconv exit {dc_rc}/{var_rc}"
                    )
                    print(f"  diffconv command: {dc_cmd}", file=sys.stderr)
                ok = dc_rc == 0 and var_rc == 0
                rows.append(
                    (label, taps, sox_wall, dc_wall, var_wall, floor_wall, sox_mem, dc_mem, ok)
                )
                print(
                    f"{label}, {taps} taps: sox {sox_wall:.2f} s {sox_mem:.0f} MiB, "
                    f"diffconv {dc_wall:.2f} s {dc_mem:.0f} MiB, import torch {floor_wall:.2f} s"
                    + (f", with {args.compare_env} {var_wall:.2f} s" if var_wall else ""),
                    file=sys.stderr,
                )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    extra = f" | diffconv with {args.compare_env} (s) | ratio" if args.compare_env else ""
    print(
        "| job | taps | sox wall (s) | diffconv wall (s) | wall ratio"
        + extra
        + " | import torch alone (s) | its ratio"
        + " | sox peak RSS (MiB) | diffconv peak RSS (MiB) | memory ratio | target |"
    )
    print(
        "|---|---:|---:|---:|---:" + ("|---:|---:" if extra else "") + "|---:|---:"
        "|---:|---:|---:|---|"
    )
    for label, taps, sw, dw, vw, fw, sm, dm, ok in rows:
        target = 0.5 if "mono" in label else 1.5
        verdict = "failed" if not ok else ("met" if dw / sw <= target else "missed")
        variant = f" | {vw:.2f} | {vw / sw:.2f}x" if vw is not None else ""
        print(
            f"| {label} | {taps} | {sw:.2f} | {dw:.2f} | {dw / sw:.2f}x{variant} "
            f"| {fw:.2f} | {fw / sw:.2f}x | {sm:.0f} "
            f"| {dm:.0f} | {dm / sm:.1f}x | <= {target}x: {verdict} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
