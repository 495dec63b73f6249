#!/usr/bin/env bash
# One prepared GPU check for a session with the device tool: CUDA tests, the core benchmark,
# the memory benchmark, the host cost of a call's pieces, the fused kernel's candidates, a
# profile of small calls and a quick `diffconv tune`, all output under $OUT (or ./gpu_out):
# eight files, as many as the device tool brings back.
#
#   Here, once:  echo /.whl/ >> .git/info/exclude, then download the wheels the device image
#                lacks into .whl/ (soundfile, cffi, pycparser, julius; see the device README).
#   There:       bash benchmarks/gpu_session.sh        (carry .whl; about 4 minutes on an H200)
set -uo pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 DIFFCONV_CACHE_DIR=$out
{ nvidia-smi -L
  python3 -c "import torch, diffconv_core._triton_direct as t; print('torch', torch.__version__, 'triton', t._kernel_module() is not None, t._disabled_reason)"
  timeout 150 python3 -m pytest -q -p no:cacheprovider -rf --tb=short -k "cuda or gpu or triton" tests
} > "$out/tests.txt" 2>&1
head -2 "$out/tests.txt"
grep -E "^(FAILED|ERROR)|passed|failed" "$out/tests.txt" | cut -c1-300 | tail -30
timeout 150 python3 benchmarks/bench_core.py --device cuda --budget 0.1 --no-naive --out "$out/bench.jsonl" 2>/dev/null | tee "$out/bench_core.md"
timeout 30 python3 benchmarks/bench_memory.py --device cuda | tee "$out/memory.md"
{ timeout 75 python3 benchmarks/gpu_call_costs.py; timeout 120 python3 benchmarks/gpu_kernel_variants.py; } \
    2>&1 | tee "$out/call_costs.md"
timeout 60 python3 benchmarks/gpu_profile.py > "$out/profile.md" 2>&1
timeout 90 python3 -m cli tune --device cuda --quick 2>&1 | tail -5 | tee "$out/tune.txt"
