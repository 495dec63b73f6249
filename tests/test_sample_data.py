"""sample_data/: make_samples.py regenerates exactly the committed files, as its README says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"


def test_make_samples_rewrites_the_same_bytes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".wav", ".npy"))
    for name in written:
        # The float WAV's PEAK chunk held the time of writing: a byte or four every run.
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), name
