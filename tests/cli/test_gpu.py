"""GPU paths of the batch runner (skipped without CUDA): results equal the CPU's, and a real
CUDA out-of-memory error splits the batch instead of crashing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import cli.runner
from tests.cli.conftest import SAMPLES, invoke, listing

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("command", [["smooth", "--length", "101"], ["filter", "--lowpass", "900"]])
def test_cuda_output_equals_cpu_output(tmp_path, command):
    name, *args = command
    src = SAMPLES / "multichannel_float.wav"
    outs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.wav"
        r = invoke(name, src, out, *args, "--device", device)
        assert r.exit_code == 0, r.output
        outs[device] = sf.read(out, dtype="float64")[0]
    np.testing.assert_allclose(outs["cuda"], outs["cpu"], atol=1e-5)


def test_real_out_of_memory_splits_the_batch(tmp_path, monkeypatch):
    from diffconv_core.smooth import smooth

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(32):
        np.save(folder / f"x{i:02d}.npy", rng.standard_normal((1, 2**20)).astype(np.float32))
    options = dict(window="boxcar", length=4001, method="fft")
    # Measure what one file needs on this GPU, then cap the process at about three files'
    # worth: the first batch (all 32 files) cannot fit, batches of two can.
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(0)
    torch.cuda.reset_peak_memory_stats(0)
    one = torch.from_numpy(np.load(folder / "x00.npy"))[None].cuda()
    smooth(one, **options)
    peak = torch.cuda.max_memory_allocated(0) - base
    del one
    torch.cuda.empty_cache()
    released = []
    real_release = cli.runner.release_cached_memory

    def counting_release(device):
        released.append(device)
        real_release(device)

    monkeypatch.setattr(cli.runner, "release_cached_memory", counting_release)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((base + 3 * peak) / total, 0)
    try:
        r = invoke(
            "smooth",
            folder,
            tmp_path / "out",
            "--device",
            "cuda",
            "--window",
            options["window"],
            "--length",
            options["length"],
            "--method",
            options["method"],
        )
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()
    assert r.exit_code == 0, f"one file needs {peak} bytes\n{r.output}"
    assert released, "no out-of-memory happened; the test did not exercise the split"
    assert listing(tmp_path / "out") == sorted(f"x{i:02d}.npy" for i in range(32))
    for i in (0, 31):
        x = torch.from_numpy(np.load(folder / f"x{i:02d}.npy"))
        want = smooth(x, **options).numpy()
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"x{i:02d}.npy"), want, atol=1e-4)
