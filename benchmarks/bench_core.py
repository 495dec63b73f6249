#!/usr/bin/env python3
"""diffconv_core.convolve against its peers, forward and forward+backward, in one run.

Every contender computes the same thing: true convolution, "same" length, zero padding, one
odd-length Hann kernel shared by a batch of B signals of length T. Times are medians; each
row reports diffconv's time as a ratio to the fastest peer (< 1 means diffconv is faster),
and the table ends with geometric means. The contenders of a row run in interleaved rounds
(each called once per round), so a drifting machine slows them alike.

    python benchmarks/bench_core.py --device cpu --grid full
    python benchmarks/bench_core.py --device cuda --grid full --out gpu.jsonl

Peers (each used when importable): F.conv1d with the flipped kernel, a plain torch rfft/irfft
at power-of-two size, julius.fft_conv1d, torchaudio.functional.fftconvolve (GPU),
scipy.signal.convolve(method="auto") and scipy.signal.oaconvolve (CPU, forward only).
"copy" is ``x.clone()``, the memory-traffic floor, timed twice: alone (repeated, cache-hot,
its buffer reused) and as one more contender in the forward rounds, where it meets the same
neighbours (caches evicted by a peer, threads asleep, pages to fault in) as every other
contender; "fwd / copy" gives diffconv's forward time over both.

``--retain-freed-memory`` first calls ``diffconv_core.memory.retain_freed_memory()`` (as the
``diffconv`` command does), for every contender alike.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import diffconv_core


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn, device: str, budget_s: float = 0.3, max_reps: int = 40) -> float:
    return interleaved_medians({"only": fn}, device, budget_s, max_reps)["only"]


def interleaved_medians(
    fns: dict,
    device: str,
    budget_s: float = 0.3,
    max_reps: int = 40,
    context: str = "",
    seed: int = 0,
) -> dict[str, float]:
    """Median seconds per call of each function, timed in rounds that call every function
    once, in an order shuffled every round (by a generator seeded with ``seed``, so a rerun
    calls them in the same orders): a machine whose speed drifts over seconds (shared 2-core
    runners swing up to 2x) then slows all contenders alike instead of whichever happened to
    run during a slow spell, and none always follows the same neighbour.
    ``budget_s`` is per function; a function that raises is dropped, its error reported."""
    alive: dict = {}
    for label, fn in fns.items():
        try:
            for _ in range(2):
                fn()
            sync(device)
            alive[label] = fn
        except Exception as error:  # a peer that cannot do a case is reported, not fatal
            print(f"# {label} failed{context}: {type(error).__name__}: {error}")
    times: dict[str, list[float]] = {label: [] for label in alive}
    deadline = time.perf_counter() + budget_s * max(1, len(alive))
    rounds = 0
    order = list(alive.items())
    rng = random.Random(seed)
    while order and rounds < max_reps and (rounds < 5 or time.perf_counter() < deadline):
        # A new order every round: what ran just before a call (another tool's cache
        # footprint, threads gone to sleep during a single-threaded peer) costs small cases up
        # to 5x here. A rotation kept the cyclic order, so each contender nearly always ran
        # right after the same one (diffconv after x.clone() of the same input).
        rng.shuffle(order)
        for label, fn in order:
            start = time.perf_counter()
            fn()
            sync(device)
            times[label].append(time.perf_counter() - start)
        rounds += 1
    return {label: statistics.median(ts) for label, ts in times.items()}


# --- contenders: each maps (x (B, T), w (K,)) to the "same" convolution (B, T) --------------


def run_conv1d(x, w):
    K = w.shape[-1]
    return F.conv1d(x.unsqueeze(1), w.flip(-1).view(1, 1, K), padding=K // 2).squeeze(1)


def run_torch_fft(x, w):
    T, K = x.shape[-1], w.shape[-1]
    n = 1 << (T + K - 2).bit_length()
    y = torch.fft.irfft(torch.fft.rfft(x, n) * torch.fft.rfft(w, n), n)
    start = (K - 1) // 2
    return y[..., start : start + T]


def run_julius(x, w):
    import julius

    K = w.shape[-1]
    return julius.fft_conv1d(x.unsqueeze(1), w.flip(-1).view(1, 1, K), padding=K // 2).squeeze(1)


def run_torchaudio(x, w):
    import torchaudio.functional as AF

    return AF.fftconvolve(x, w.expand(x.shape[0], -1), mode="same")


def run_scipy_auto(x, w):
    import scipy.signal as ss

    return ss.convolve(x, w[None, :], mode="same", method="auto")


def run_scipy_oa(x, w):
    import scipy.signal as ss

    return ss.oaconvolve(x, w[None, :], mode="same", axes=-1)


def run_diffconv(x, w):
    return diffconv_core.convolve(x, w, mode="same")


TORCH_PEERS = {
    "conv1d": run_conv1d,
    "torch_fft": run_torch_fft,
    "julius": run_julius,
    "torchaudio_fft": run_torchaudio,
}
NUMPY_PEERS = {"scipy_auto": run_scipy_auto, "scipy_oa": run_scipy_oa}
NEEDS = {
    "julius": "julius",
    "torchaudio_fft": "torchaudio",
    "scipy_auto": "scipy",
    "scipy_oa": "scipy",
}


def importable(name: str) -> bool:
    module = NEEDS.get(name)
    if module is None:
        return True
    try:
        __import__(module)
        return True
    except Exception:
        return False


#: Small calls, beyond the issue's grids: where host time decides, and conv1d is the peer.
SMALL_CALLS = [(1, 256, 7), (1, 1024, 3), (1, 1024, 31), (4, 1024, 31), (1, 4096, 31)]
SMALL_CALLS += [(16, 512, 15), (32, 1024, 31)]


#: A few long rows with long kernels, beyond the issue's grids: a second of audio or ten
#: through a long FIR or a room's impulse response, mono or stereo, where one row's
#: transforms decide (the CPU FFT method's complex transforms of half the length).
FEW_ROWS = [(1, 16_384, 2047), (1, 48_000, 4095), (1, 65_536, 8191), (1, 262_144, 32767)]
FEW_ROWS += [(1, 480_000, 16383), (2, 480_000, 4095), (4, 131_072, 16383), (8, 65_536, 8191)]


def grid(device: str, size: str) -> list[tuple[int, int, int]]:
    """The cases of a run: the issue's grid for the device ("full", every third case for
    "small"), "calls", small calls of one to 32 rows, or "rows", a few long rows with long
    kernels.

    Example:
        >>> grid("cpu", "calls")[:2], len(grid("cpu", "full")), len(grid("cpu", "small"))
        ([(1, 256, 7), (1, 1024, 3)], 11, 4)
        >>> grid("cpu", "rows")[0]
        (1, 16384, 2047)
    """
    if size == "calls":
        return list(SMALL_CALLS)
    if size == "rows":
        return list(FEW_ROWS)
    if device.startswith("cuda"):
        cases = [(16, 480_000, k) for k in (3, 31, 255, 1023, 4095, 16383, 65535)]
        cases += [(1, 1 << 24, k) for k in (31, 1023, 16383)]
        cases += [(4096, 1024, k) for k in (3, 31, 255)] + [(1, 1024, 31)]
    else:
        cases = [(4, 480_000, k) for k in (3, 31, 255, 1023, 4095, 16383)]
        cases += [(1, 1 << 22, k) for k in (31, 1023)]
        cases += [(512, 1024, k) for k in (3, 31, 255)]
    return cases[::3] if size == "small" else cases


def naive_loop(signals: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """What people write by hand today: Python loops writing into a tensor."""
    out = torch.zeros(signals.shape, requires_grad=True).clone()
    half = (window.shape[0] - 1) // 2
    for b in range(signals.shape[0]):
        for t in range(signals.shape[1]):
            for k in range(window.shape[0]):
                src = t + half - k
                if 0 <= src < signals.shape[1]:
                    out[b, t] += signals[b, src] * window[k]
    return out


def _no_grad(fn):
    def call():
        with torch.no_grad():
            return fn()

    return call


def fwd_bwd(fn, x, w, grad):
    xg = x.detach().requires_grad_(True)
    wg = w.detach().requires_grad_(True)

    def step():
        xg.grad = None
        wg.grad = None
        fn(xg, wg).backward(grad)

    return step


#: The label of the copy floor among a row's forward contenders (never a peer).
FLOOR = "copy"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--grid", choices=("small", "full", "calls", "rows"), default="full")
    parser.add_argument("--out", help="also write one JSON line per measurement here")
    parser.add_argument("--no-naive", action="store_true", help="skip the ~3 s naive-loop row")
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per measurement")
    parser.add_argument(
        "--retain-freed-memory",
        action="store_true",
        help="keep freed memory for reuse in this process (diffconv_core.memory)",
    )
    args = parser.parse_args()
    if args.retain_freed_memory:
        from diffconv_core.memory import retain_freed_memory

        retain_freed_memory()
    device = args.device
    torch.manual_seed(0)
    sink = open(args.out, "w") if args.out else None
    records: list[dict] = []

    def emit(record: dict) -> None:
        records.append(record)
        if sink:
            sink.write(json.dumps(record) + "\n")
            sink.flush()

    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(
        f"# torch {torch.__version__}, device {name}, threads {torch.get_num_threads()}, "
        f"freed memory retained: {args.retain_freed_memory}"
    )

    if not args.no_naive:
        signals = torch.randn(3, 1000)
        window = torch.hann_window(31, periodic=False)
        start = time.perf_counter()
        slow = naive_loop(signals, window)
        naive_s = time.perf_counter() - start
        fast_s = median_time(lambda: diffconv_core.convolve(signals, window), "cpu")
        exact = torch.allclose(slow, diffconv_core.convolve(signals, window), atol=1e-5)
        print("\n## What people do today: 3 x 1000 samples, 31-tap Hann, on CPU\n")
        print("| naive Python loop | diffconv | speed-up | same result |\n|---|---|---|---|")
        speedup = naive_s / fast_s
        print(f"| {naive_s * 1e3:.0f} ms | {fast_s * 1e3:.3f} ms | {speedup:,.0f}x | {exact} |")
        emit({"case": "naive", "naive_s": naive_s, "diffconv_s": fast_s})

    peers = [p for p in TORCH_PEERS if importable(p)]
    if not device.startswith("cuda"):
        peers += [p for p in NUMPY_PEERS if importable(p)]
    rows = []
    for B, T, K in grid(device, args.grid):
        x = torch.randn(B, T, device=device)
        w = torch.hann_window(K, periodic=False, device=device)
        grad = torch.randn(B, T, device=device)
        floor = median_time(x.clone, device, args.budget)
        method = diffconv_core.choose_method(x.shape, w.shape, device=device)
        method_grad = diffconv_core.choose_method(
            x.shape, w.shape, device=device, requires_grad=True
        )
        forward, both = {}, {}
        for peer in ["diffconv", *peers]:
            fn = run_diffconv if peer == "diffconv" else TORCH_PEERS.get(peer) or NUMPY_PEERS[peer]
            if peer == "conv1d" and device == "cpu" and B * T * K > 4e9:
                continue  # minutes on CPU; it is never the fastest there
            if peer in NUMPY_PEERS:
                xn, wn = x.numpy(), w.numpy()
                forward[peer] = lambda fn=fn, xn=xn, wn=wn: fn(xn, wn)
                continue
            forward[peer] = _no_grad(lambda fn=fn, x=x, w=w: fn(x, w))
            both[peer] = fwd_bwd(fn, x, w, grad)
        forward[FLOOR] = x.clone  # the floor, under the same neighbours as the contenders
        times = {
            kind: interleaved_medians(fns, device, args.budget, context=f" on {(B, T, K)} {kind}")
            for kind, fns in (("fwd", forward), ("fwd+bwd", both))
        }
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        emit({"case": [B, T, K], "device": name, "copy_alone_s": floor, "method": method,
              "method_grad": method_grad, **times})  # fmt: skip
        rows.append(((B, T, K), floor, f"{method} / {method_grad}", times))
        print(f"# done {(B, T, K)}", file=sys.stderr, flush=True)

    print(f"\n## {name}: median ms; ratio = diffconv / fastest peer\n")
    print(
        "| B, T, K | copy alone | copy in rounds | auto (fwd / grad) | diffconv fwd | "
        "best peer fwd | ratio | diffconv fwd+bwd | best peer fwd+bwd | ratio | "
        "fwd / copy alone | fwd / copy in rounds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    ratios: dict[str, list[float]] = {"fwd": [], "fwd+bwd": []}
    for case, floor, method, times in rows:
        cells, row_ratios = table_row(case, floor, method, times)
        print("| " + " | ".join(cells) + " |")
        for kind, ratio in row_ratios.items():
            ratios[kind].append(ratio)
    for kind, values in ratios.items():
        if values:
            geo = math.exp(sum(math.log(v) for v in values) / len(values))
            print(f"\ngeometric mean ratio, {kind}: {geo:.2f}x (worst {max(values):.2f}x)")


def table_row(
    case: tuple[int, int, int], floor: float, method: str, times: dict[str, dict[str, float]]
) -> tuple[list[str], dict[str, float]]:
    """One row's cells, and diffconv's ratio to the fastest peer per kind ("fwd",
    "fwd+bwd") where both were timed; the copy floor is never a peer."""
    in_rounds = times["fwd"].get(FLOOR)
    cells = [", ".join(map(str, case)), _ms(floor), _ms(in_rounds), method]
    ratios = {}
    for kind in ("fwd", "fwd+bwd"):
        mine = times[kind].get("diffconv")
        others = {p: s for p, s in times[kind].items() if p not in ("diffconv", FLOOR)}
        if mine is None or not others:
            cells += ["-", "-", "-"]
            continue
        best = min(others, key=others.__getitem__)
        ratios[kind] = mine / others[best]
        cells += [_ms(mine), f"{best} {_ms(others[best])}", f"{ratios[kind]:.2f}x"]
    mine_fwd = times["fwd"].get("diffconv")
    for copy in (floor, in_rounds):
        cells.append(f"{mine_fwd / copy:.1f}x" if mine_fwd and copy else "-")
    return cells, ratios


if __name__ == "__main__":
    main()
