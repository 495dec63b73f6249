"""Refit the CUDA forward+backward model of ``choose_method`` from ``diffconv tune`` caches.

``diffconv tune --device cuda`` times every method's forward and forward+backward on a grid
and writes them to a cache (``methods.json``). This fits the weights of
``diffconv_core.methods._CUDA_TRAINING_COSTS`` to the forward+backward times of the first
cache given (least squares on relative error, non-negative, one method at a time, on the
terms of ``training_terms_cuda``), prints them, and for every cache given prints how often the
fitted model and the current one pick a method within 10% of the measured fastest. Nothing is
written: paste the weights into ``methods.py``.

    python benchmarks/fit_cuda_costs.py benchmarks/results/gpu_h200_tune_v3.json
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
from scipy.optimize import nnls

from diffconv_core.methods import _CUDA_TRAINING_COSTS, training_costs_cuda, training_terms_cuda


def load(path: str) -> list[tuple[int, int, int, str, dict[str, float]]]:
    """(batch, T, K, mode, {method: forward+backward seconds}) of every CUDA float32 record."""
    records = []
    for key, entries in json.load(open(path)).items():
        if key.startswith("cuda:") and key.endswith(":float32"):
            for e in entries:
                totals = {m: v["total"] for m, v in e["seconds"].items()}
                records.append((e["batch"], e["T"], e["K"], e["mode"], totals))
    return records


def fit(records) -> dict[str, tuple[float, ...]]:
    weights = {}
    for method in _CUDA_TRAINING_COSTS:
        rows = [(training_terms_cuda(method, B, T, K, mode), s[method] * 1e9)
                for B, T, K, mode, s in records if method in s]  # fmt: skip
        A = np.array([terms for terms, _ in rows])
        y = np.array([t for _, t in rows])
        coef, _ = nnls(A / y[:, None], np.ones_like(y))
        weights[method] = tuple(float(c) for c in coef)
    return weights


def regret(records, weights) -> tuple[float, float, int]:
    """Geometric-mean and worst ratio of the pick's time to the fastest; picks within 10%."""
    logs = []
    for B, T, K, mode, s in records:
        modelled = training_costs_cuda(B, T, K, mode, {m: weights[m] for m in s})
        pick = min(modelled, key=modelled.get)
        logs.append(math.log(s[pick] / min(s.values())))
    near = sum(v <= math.log(1.1) for v in logs)
    return math.exp(sum(logs) / len(logs)), math.exp(max(logs)), near


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("caches", nargs="+", help="methods.json files; the first is fitted")
    args = parser.parse_args()
    weights = fit(load(args.caches[0]))
    print("_CUDA_TRAINING_COSTS = {")
    for method, coef in weights.items():
        print(f'    "{method}": ({", ".join(f"{c:.4g}" for c in coef)}),')
    print("}")
    for path in args.caches:
        records = load(path)
        for label, table in (("current", _CUDA_TRAINING_COSTS), ("fitted", weights)):
            mean, worst, near = regret(records, table)
            print(f"{path} {label}: picks within 10% {near}/{len(records)}, "
                  f"geomean {mean:.3f}x, worst {worst:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
