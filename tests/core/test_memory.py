"""``retain_freed_memory``: freed work arrays stay in the process instead of being fetched
again page by page on the next call (counted as minor page faults, not timed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from diffconv_core import memory

# A fresh process (malloc's settings are process-wide and one-way): convolve a 64 x 8,000
# batch with 31 taps (output and work arrays of 2 MiB, several alive at once) ten times, then
# count the page faults of 20 more calls. Under glibc's default policy that count depends on
# the process's history: 250-1,000 in some runs, 24,000 in others (the output and work
# arrays fetched afresh on every call); retained, it stayed at 0-750.
_PROBE = """
import json, resource
import torch
import diffconv_core
from diffconv_core.memory import retain_freed_memory
applied = retain_freed_memory()
torch.set_num_threads(1)
x, w = torch.randn(64, 8000), torch.hann_window(31)
with torch.no_grad():
    for _ in range(10):
        diffconv_core.convolve(x, w, method="direct")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        diffconv_core.convolve(x, w, method="direct")
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


@pytest.fixture(autouse=True)
def _restore_retained_bytes(monkeypatch):
    # The tests below call retain_freed_memory with a stand-in mallopt: what it records for
    # the FFT's kept arrays is undone after each.
    monkeypatch.setattr(memory, "_retained_bytes", 0)


def _probe() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(memory._glibc_mallopt() is None, reason="needs glibc")
def test_retained_memory_is_reused_without_page_faults():
    retained = _probe()
    assert retained["applied"] is True
    # Fetching even the 2 MiB output afresh on every call would be 20 x 512 faults.
    assert retained["faults"] < 2500, retained


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: None)
    assert memory.retain_freed_memory() is False


def test_settings_passed_to_mallopt(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: lambda *args: calls.append(args) or 1)
    assert memory.retain_freed_memory(8 * 2**30) is True
    # The mmap threshold is capped at glibc's 32 MiB; the trim threshold at a C int.
    assert calls == [(memory._M_MMAP_THRESHOLD, 32 * 2**20), (memory._M_TRIM_THRESHOLD, 2**31 - 1)]
    assert memory.retained_bytes() == 32 * 2**20


def test_retained_bytes_only_once_glibc_accepted_the_settings(monkeypatch):
    assert memory.retained_bytes() == 0
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: lambda *args: 0)  # refused
    assert memory.retain_freed_memory(2**20) is False
    assert memory.retained_bytes() == 0
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: lambda *args: 1)
    assert memory.retain_freed_memory(2**20) is True
    assert memory.retained_bytes() == 2**20
    assert memory.retain_freed_memory(2**10) is True  # glibc's own policy: nothing lowered
    assert memory.retained_bytes() == 2**20


@pytest.mark.parametrize(
    "limit, expected",
    [
        (0, []),  # at or below glibc's own thresholds: its policy is left alone
        (128 * 2**10, []),
        (2**20, [(memory._M_MMAP_THRESHOLD, 2**20), (memory._M_TRIM_THRESHOLD, 2**20)]),
    ],
)
def test_small_limits_never_lower_glibcs_thresholds(monkeypatch, limit, expected):
    # A limit of 0 set the mmap threshold to 0: every allocation became a fresh mapping.
    calls = []
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: lambda *args: calls.append(args) or 1)
    assert memory.retain_freed_memory(limit) is True
    assert calls == expected


def test_negative_limit_is_refused():
    with pytest.raises(ValueError, match="limit_bytes"):
        memory.retain_freed_memory(-1)
    # A fractional or text limit was passed on to mallopt (ctypes.ArgumentError) or compared
    # with 0 (a TypeError that did not name the argument).
    for bad in (1.5, "64M", True):
        with pytest.raises(TypeError, match=rf"limit_bytes must be an integer; got {bad!r}"):
            memory.retain_freed_memory(bad)
