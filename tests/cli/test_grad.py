"""``diffconv grad``: written arrays equal the library's, the figure, errors and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli.audio_io import probe, read_signal
from cli.grad_figure import figure_pixels, panel_count
from diffconv_core.gradients import gradient_map, jacobian, window_kernel
from tests.cli.conftest import SAMPLES, invoke, listing, run_diffconv, write_wav

RATE = 8000


@pytest.fixture
def short_wav(tmp_path):
    """A 0.25 s mono PCM_16 file (2,000 samples): small enough for the Jacobian."""
    t = np.arange(2000) / RATE
    rng = np.random.default_rng(0)
    x = 0.5 * np.sin(2 * np.pi * 300 * t) + 0.1 * rng.standard_normal(t.size)
    return write_wav(tmp_path / "tone.wav", x, RATE)


def _load(path):
    return np.load(path, allow_pickle=False)


def _same(written, expected):
    """The command's array equals the library's (to float32 round-off: --device auto may
    pick a GPU, whose reductions run in another order)."""
    expected = np.asarray(expected)
    assert written.shape == expected.shape and written.dtype == expected.dtype
    scale = float(np.abs(expected).max()) or 1.0
    np.testing.assert_allclose(written, expected, rtol=1e-5, atol=1e-6 * scale)


def _pixels(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_outputs_equal_the_library_result(short_wav, tmp_path):
    out = tmp_path / "out"
    args = ["--window", "gaussian", "--length", "21", "--param", "std=3", "--width", "15"]
    args += ["--padding", "reflect", "--jacobian", "--start", "0.05", "--duration", "0.02"]
    result = invoke("grad", short_wav, out, *args)
    assert result.exit_code == 0, result.output
    names = [
        "tone.grad.png",
        "tone.grad_kernel.npy",
        "tone.grad_params.json",
        "tone.grad_signal.npy",
        "tone.jacobian.npy",
    ]
    assert listing(out) == names

    x = torch.from_numpy(read_signal(probe(short_wav)))
    spec = window_kernel("gaussian", 21, normalize="sum", width=15.0, std=3)
    ref = gradient_map(x, spec, padding="reflect")
    _same(_load(out / "tone.grad_signal.npy"), ref.grad_signal.numpy())
    _same(_load(out / "tone.grad_kernel.npy"), ref.grad_kernel.numpy())
    assert _load(out / "tone.grad_signal.npy").shape == (1, 2000)  # the input's (C, T)

    # The excerpt: 0.05 s .. 0.07 s at 8 kHz = samples 400 .. 560.
    jac = _load(out / "tone.jacobian.npy")
    assert jac.shape == (160, 160)
    # An excerpt from the middle: real samples beyond its edges, no reflection there.
    _same(jac, jacobian(x[..., 400:560], ref.kernel, padding="zeros")[0].numpy())

    doc = json.loads((out / "tone.grad_params.json").read_text())
    assert doc["params"] == {"std": 3.0, "width": 15.0}
    assert doc["objective"] == "energy"
    assert doc["objective_value"] == pytest.approx(ref.value.item(), rel=1e-6)
    for name in ("std", "width"):
        assert doc["grad_params"][name] == pytest.approx(ref.grad_params[name].item(), rel=1e-6)


def test_figure_has_the_expected_size_and_is_not_blank(short_wav, tmp_path):
    out = tmp_path / "out"
    result = invoke("grad", short_wav, out, "--jacobian", "--duration", "0.1", "--format", "png")
    assert result.exit_code == 0, result.output
    assert listing(out) == ["tone.grad.png"]
    image = _pixels(out / "tone.grad.png")
    width, height = figure_pixels(panel_count(2000, True, True))
    assert image.shape[:2] == (height, width)
    rgb = image[..., :3]
    ink = np.mean(np.any(rgb < 0.9, axis=-1))  # share of pixels that are not near-white
    assert 0.03 < ink < 0.9
    codes = (rgb * 255).round().astype(np.uint32) @ np.array([1, 256, 65536], dtype=np.uint32)
    assert len(np.unique(codes)) > 50  # curves, colour bars, heat maps, text


def test_a_figure_that_fails_leaves_no_incomplete_set(short_wav, tmp_path, monkeypatch):
    # The arrays were written one by one before the figure was drawn: a figure that failed
    # left them behind without it. Now every output is made first, then written.
    from cli.commands import grad as grad_command

    def broken(*args, **kwargs):
        raise RuntimeError("the figure could not be drawn")

    monkeypatch.setattr(grad_command, "_figure", broken)
    out = tmp_path / "out"
    result = invoke("grad", short_wav, out, "--format", "both")
    assert result.exit_code == 1
    assert "tone.wav" in result.stderr and "could not be drawn" in result.stderr
    assert not out.exists() or listing(out) == []


def test_long_input_gets_a_time_frequency_panel(tmp_path):
    rng = np.random.default_rng(1)
    long = write_wav(tmp_path / "long.wav", 0.3 * rng.standard_normal(12000), RATE)
    short = write_wav(tmp_path / "short.wav", 0.3 * rng.standard_normal(4000), RATE)
    out = tmp_path / "out"
    result = invoke("grad", long, short, out, "--format", "png", "--length", "9")
    assert result.exit_code == 0, result.output
    long_h = _pixels(out / "long.grad.png").shape[0]
    short_h = _pixels(out / "short.grad.png").shape[0]
    assert long_h == figure_pixels(panel_count(12000, True, False))[1]
    assert long_h - short_h == figure_pixels(1)[1]  # one more panel: the heat map
    # Without the signal gradient that panel was a heat map of zeros (a flat -3080 dB
    # image): now it says that the signal gradient was not requested, as the one above.
    result = invoke("grad", long, out, "--format", "png", "--length", "9", "--wrt", "kernel",
                    "--overwrite")  # fmt: skip
    assert result.exit_code == 0, result.output
    panel = figure_pixels(1)[1]
    band = _pixels(out / "long.grad.png")[2 * panel : 3 * panel, :, :3]  # floats in [0, 1]
    white = np.mean(np.all(band > 0.94, axis=-1))
    assert white > 0.8, white  # a heat map covers most of its panel in colour


def test_format_npy_and_kernel_file(short_wav, tmp_path):
    kernel = np.array([0.2, -0.5, 1.0, 0.25])
    np.save(tmp_path / "k.npy", kernel)
    out = tmp_path / "out"
    result = invoke(
        "grad", short_wav, out, "--kernel", tmp_path / "k.npy", "--mode", "full", "--format", "npy"
    )
    assert result.exit_code == 0, result.output
    # A kernel file has no parameters: no JSON; no figure with --format npy.
    assert listing(out) == ["tone.grad_kernel.npy", "tone.grad_signal.npy"]
    x = torch.from_numpy(read_signal(probe(short_wav)))
    ref = gradient_map(x, torch.from_numpy(kernel).float(), mode="full")
    _same(_load(out / "tone.grad_kernel.npy"), ref.grad_kernel.numpy())
    _same(_load(out / "tone.grad_signal.npy"), ref.grad_signal.numpy())


def test_mse_target_and_npy_input_keep_their_shape(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(500)
    target = rng.standard_normal(500)
    np.save(tmp_path / "trace.npy", x)
    np.save(tmp_path / "goal.npy", target)
    out = tmp_path / "out"
    result = invoke(
        "grad", tmp_path / "trace.npy", out, "--objective", "mse", "--target",
        tmp_path / "goal.npy", "--window", "hann", "--length", "11", "--wrt", "signal,kernel",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    grad_x = _load(out / "trace.grad_signal.npy")
    assert grad_x.shape == (500,) and grad_x.dtype == np.float64
    ref = gradient_map(
        torch.from_numpy(x)[None],
        window_kernel("hann", 11, normalize="sum"),
        "mse",
        target=torch.from_numpy(target)[None],
        wrt=("signal", "kernel"),
    )
    _same(grad_x, ref.grad_signal.numpy()[0])
    assert not (out / "trace.grad_params.json").exists()  # params not asked for


def test_target_of_another_shape_fails_that_file_only(tmp_path, short_wav):
    other = write_wav(tmp_path / "other.wav", np.zeros(1500), RATE)
    np.save(tmp_path / "goal.npy", np.zeros(2000))
    out = tmp_path / "out"
    result = invoke(
        "grad", short_wav, other, out, "--objective", "l1", "--target", tmp_path / "goal.npy",
        "--format", "npy",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "other.wav" in result.stderr
    assert "target shape (1, 2000) does not match the output shape (1, 1500)" in result.stderr
    assert "1 file processed, 1 file failed" in result.stderr
    assert not any(p.startswith("other.") for p in listing(out))
    assert (out / "tone.grad_signal.npy").exists()


def test_a_set_that_cannot_be_completed_is_not_started(short_wav, tmp_path, monkeypatch):
    # A directory where the second output goes: the first was written before the second
    # failed, and with --overwrite an older set was left half replaced.
    out = tmp_path / "out"
    (out / "tone.grad_kernel.npy").mkdir(parents=True)
    result = invoke("grad", short_wav, out, "--format", "npy", "--overwrite")
    assert result.exit_code == 1
    assert "tone.grad_kernel.npy: output is a directory" in result.stderr
    assert listing(out) == []  # files only: the directory stays, nothing was written
    # A write failing later removes what this set had created (nothing older is touched).
    (out / "tone.grad_kernel.npy").rmdir()
    (out / "tone.grad_signal.npy").write_bytes(b"older")
    from cli.commands import grad as grad_command
    from cli.errors import FileProblem

    real = grad_command._write_bytes

    def full_disk(path, data, overwrite):
        raise FileProblem(path, "write failed (No space left on device)")

    monkeypatch.setattr(grad_command, "_write_bytes", full_disk)
    result = invoke("grad", short_wav, out, "--format", "npy", "--overwrite")
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    assert listing(out) == ["tone.grad_signal.npy"]  # the new kernel gradient removed again
    monkeypatch.setattr(grad_command, "_write_bytes", real)
    result = invoke("grad", short_wav, out, "--format", "npy", "--overwrite", "-v")
    assert result.exit_code == 0
    said = f"-> {out / 'tone'}.{{grad_signal.npy,grad_kernel.npy,grad_params.json}}"
    assert said in result.stderr  # the files written, not a pattern none of them matches


def test_parameters_of_a_float32_input_are_written_as_given(short_wav, tmp_path):
    # A WAV is computed in float32: the JSON said "std": 3.299999952316284 for std=3.3.
    args = ["--window", "gaussian", "--param", "std=3.3", "--width", "20.1", "--length", "31"]
    result = invoke("grad", short_wav, tmp_path / "out", *args, "--format", "npy")
    assert result.exit_code == 0, result.stderr
    saved = json.loads((tmp_path / "out" / "tone.grad_params.json").read_text())
    assert saved["params"] == {"std": 3.3, "width": 20.1}


def test_an_outdir_that_is_a_file_is_named_as_such(short_wav, tmp_path):
    # The batch commands' message said OUTPUT "must be a directory when the input is a
    # directory or several files", for grad's single input too.
    (tmp_path / "taken").write_text("a file")
    result = invoke("grad", short_wav, tmp_path / "taken")
    assert result.exit_code == 2
    assert f"OUTDIR {tmp_path / 'taken'} is a file; grad writes its outputs" in result.stderr
    assert (tmp_path / "taken").read_text() == "a file"


def test_vector_window_parameters_get_their_gradient(tmp_path):
    # general_cosine's coefficients a=0.5,0.3,0.2 were taken as a fixed setting: --help
    # says a window parameter's gradient is reported, and the library computes it.
    x = np.random.default_rng(0).standard_normal(500)
    np.save(tmp_path / "vec.npy", x)
    args = ["--window", "general_cosine", "--length", "21", "--param", "a=0.5,0.3,0.2"]
    result = invoke("grad", tmp_path / "vec.npy", tmp_path / "out", *args, "--format", "npy")
    assert result.exit_code == 0, result.stderr
    saved = json.loads((tmp_path / "out" / "vec.grad_params.json").read_text())
    a = np.array([0.5, 0.3, 0.2])
    from diffconv_core import convolve
    from diffconv_core.windows import get_window

    def energy(coefficients):
        w = get_window("general_cosine", 21, a=torch.tensor(coefficients), normalize="sum")
        return convolve(torch.tensor(x), w.double()).pow(2).sum().item()

    step = 1e-6
    numeric = [(energy(a + step * e) - energy(a - step * e)) / (2 * step) for e in np.eye(3)]
    np.testing.assert_allclose(saved["grad_params"]["a"], numeric, rtol=1e-6)


def test_too_large_jacobian_says_how_to_crop(tmp_path):
    big = write_wav(tmp_path / "big.wav", np.zeros(5000), RATE)
    out = tmp_path / "out"
    result = invoke("grad", big, out, "--jacobian")
    assert result.exit_code == 1
    assert "big.wav" in result.stderr and "crop" in result.stderr
    assert "--start/--duration" in result.stderr
    assert not out.exists() or listing(out) == []
    # Cropped to 0.1 s it works.
    cropped = invoke("grad", big, out, "--jacobian", "--duration", "0.1", "--format", "npy")
    assert cropped.exit_code == 0, cropped.stderr
    assert _load(out / "big.jacobian.npy").shape == (800, 800)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--objective", "l2"], "'l2' is not one of"),
        (["--objective", "mse"], "--objective mse needs --target FILE"),
        (["--wrt", "signal,taps"], "give a comma-separated list of signal, kernel, params"),
        (["--window", "nope"], "nope"),
        (["--window", "gaussian"], "std"),
        (
            ["--mode", "valid", "--padding", "reflect"],
            "--padding reflect has no effect in --mode valid",
        ),
        (["--start", "0.1"], "--start/--duration are in seconds; .npy input needs --rate"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, message):
    np.save(tmp_path / "x.npy", np.zeros(100))
    result = invoke("grad", tmp_path / "x.npy", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or listing(tmp_path / "out") == []


def test_kernel_file_conflicts_and_params(tmp_path, short_wav):
    np.save(tmp_path / "k.npy", np.ones(3))
    both = invoke(
        "grad", short_wav, tmp_path / "o", "--kernel", tmp_path / "k.npy", "--length", "5"
    )
    assert both.exit_code == 2 and "either --kernel FILE or --window" in both.output
    params = invoke(
        "grad", short_wav, tmp_path / "o", "--kernel", tmp_path / "k.npy", "--wrt", "params"
    )
    assert params.exit_code == 2 and "params needs a --window kernel" in params.output
    # A --param the window does not take: named as such (it had been blamed on --window).
    width = invoke("grad", short_wav, tmp_path / "o", "--param", "width=4")
    assert width.exit_code == 2 and "hann has no parameter 'width'" in width.stderr
    assert "use --width" in width.stderr


@pytest.mark.parametrize("option", ["--start", "--from"])  # --from: its name under torchrun
def test_start_past_the_end_is_a_file_error(short_wav, tmp_path, option):
    result = invoke("grad", short_wav, tmp_path / "out", option, "9")
    assert result.exit_code == 1
    assert "tone.wav" in result.stderr and "--start 9 is past the end" in result.stderr


def test_existing_outputs_need_overwrite(short_wav, tmp_path):
    out = tmp_path / "out"
    assert invoke("grad", short_wav, out, "--format", "npy").exit_code == 0
    before = _load(out / "tone.grad_signal.npy")
    again = invoke("grad", short_wav, out, "--format", "npy", "--param", "std=2", "--window",
                   "gaussian")  # fmt: skip
    assert again.exit_code == 1 and "output exists; use --overwrite" in again.stderr
    np.testing.assert_array_equal(_load(out / "tone.grad_signal.npy"), before)
    forced = invoke("grad", short_wav, out, "--format", "npy", "--overwrite", "--param", "std=2",
                    "--window", "gaussian")  # fmt: skip
    assert forced.exit_code == 0
    assert not np.array_equal(_load(out / "tone.grad_signal.npy"), before)
    assert not [p for p in listing(out) if p.startswith(".")]  # no temporaries left


def test_directory_with_a_corrupt_file_and_rerun_in_place(tmp_path, short_wav, bad_inputs):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "sub").mkdir()
    short_wav.rename(folder / "sub" / "tone.wav")
    bad_inputs["corrupt"].rename(folder / "corrupt.wav")
    result = invoke("grad", folder, folder, "-r", "--format", "npy")
    assert result.exit_code == 1
    assert "corrupt.wav" in result.stderr
    assert (folder / "sub" / "tone.grad_signal.npy").exists()
    # grad's own .npy outputs in the tree are not taken as inputs on a rerun.
    rerun = invoke("grad", folder / "sub", folder / "sub", "--format", "npy", "--overwrite")
    assert rerun.exit_code == 0, rerun.stderr
    assert "1 file processed" in rerun.stderr


def test_real_process_on_a_sample_file(tmp_path):
    out = tmp_path / "out"
    proc = run_diffconv("grad", SAMPLES / "speech_mono16.wav", out, "--format", "npy", "-q")
    assert proc.returncode == 0, proc.stderr
    grad_x = _load(out / "speech_mono16.grad_signal.npy")
    assert grad_x.shape == (1, 32000) and np.isfinite(grad_x).all()


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['grad', '--help'])\n"
        "assert r.exit_code == 0 and '--jacobian' in r.output, r.output\n"
        "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device_gives_the_cpu_result(short_wav, tmp_path):
    common = ["--window", "gaussian", "--param", "std=4", "--jacobian", "--duration", "0.05"]
    common += ["--format", "npy", "--padding", "circular"]
    assert invoke("grad", short_wav, tmp_path / "cpu", "--device", "cpu", *common).exit_code == 0
    gpu = invoke("grad", short_wav, tmp_path / "gpu", "--device", "cuda", *common)
    assert gpu.exit_code == 0, gpu.stderr
    for name in ("grad_signal", "grad_kernel", "jacobian"):
        a = _load(tmp_path / "cpu" / f"tone.{name}.npy")
        b = _load(tmp_path / "gpu" / f"tone.{name}.npy")
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())
    cpu_doc = json.loads((tmp_path / "cpu" / "tone.grad_params.json").read_text())
    gpu_doc = json.loads((tmp_path / "gpu" / "tone.grad_params.json").read_text())
    assert gpu_doc["grad_params"]["std"] == pytest.approx(cpu_doc["grad_params"]["std"], rel=1e-4)


def test_nan_input_warns_and_writes_strict_json(tmp_path):
    x = np.sin(np.arange(400) / 10.0)
    x[100:110] = np.nan
    np.save(tmp_path / "gaps.npy", x)
    out = tmp_path / "out"
    result = invoke(
        "grad", tmp_path / "gaps.npy", out, "--window", "gaussian", "--param", "std=2",
        "--format", "npy",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "gaps.npy" in result.stderr and "the energy is nan" in result.stderr
    text = (out / "gaps.grad_params.json").read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc["objective_value"] is None


def test_inputs_sharing_a_stem_are_a_usage_error(tmp_path, short_wav):
    # a.wav and a.npy both map to OUTDIR/a.grad_*: with --overwrite the second file's maps
    # used to replace the first's silently while the summary said "2 files processed".
    folder = tmp_path / "in"
    folder.mkdir()
    short_wav.rename(folder / "a.wav")
    np.save(folder / "a.npy", np.sin(np.arange(500) / 7.0))
    out = tmp_path / "out"
    result = invoke("grad", folder, out, "--format", "npy", "--overwrite", "--rate", RATE)
    assert result.exit_code == 2, result.stderr
    assert "a.npy" in result.stderr and "a.wav" in result.stderr
    assert not out.exists() or listing(out) == []


def test_dash_is_not_a_stream_for_grad(tmp_path, monkeypatch):
    # `diffconv grad in.wav -` made a directory named - and reported success: grad writes
    # several files per input, and - names stdin/stdout everywhere else (a file named - is
    # ./-); stdin as INPUT was "-: no such file or directory".
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros(100))
    for args in (["x.npy", "-"], ["-", "out"]):
        result = invoke("grad", *args, "--window", "hann", "--length", "5")
        assert result.exit_code == 2, result.output
        assert "grad reads files and writes a directory" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
    result = invoke("grad", "x.npy", "./-", "--window", "hann", "--length", "5")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "-" / "x.grad_signal.npy").exists()


@pytest.mark.parametrize("padding", ["reflect", "symmetric", "replicate", "circular", "zeros"])
@pytest.mark.parametrize("mode", ["same", "full"])
@pytest.mark.parametrize("start, duration", [(0.0, 0.3), (0.5, 0.6), (1.6, 0.4)])
def test_excerpt_jacobian_is_the_files_block(tmp_path, padding, mode, start, duration):
    # The Jacobian of an excerpt from the middle took the excerpt's own ends for the file's:
    # circular padding wrapped its end onto its start, reflect folded taps back at its edges.
    # It must be the excerpt's block of the whole file's Jacobian.
    x = np.random.default_rng(3).standard_normal(200)
    np.save(tmp_path / "x.npy", x)
    kernel = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    np.save(tmp_path / "k.npy", kernel)
    r = invoke(
        "grad", tmp_path / "x.npy", tmp_path / "o", "--rate", "100", "--kernel",
        tmp_path / "k.npy", "--jacobian", "--start", str(start), "--duration", str(duration),
        "--mode", mode, "--padding", padding, "--format", "npy", "--wrt", "signal",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    written = _load(tmp_path / "o" / "x.jacobian.npy").reshape(-1, int(round(duration * 100)))
    from diffconv_core import convolve

    whole = torch.autograd.functional.jacobian(
        lambda s: convolve(s, torch.from_numpy(kernel), mode, padding=padding),
        torch.from_numpy(x)[None],
    )[0, :, 0, :]
    first, last = int(round(start * 100)), int(round((start + duration) * 100))
    rows = written.shape[0]
    np.testing.assert_allclose(written, whole[first : first + rows, first:last].numpy(), atol=1e-12)


def test_excerpt_jacobian_of_a_window_is_the_files_block(tmp_path):
    # The same with a --window kernel (built from parameters, not a tensor).
    x = np.random.default_rng(4).standard_normal(120)
    np.save(tmp_path / "x.npy", x)
    r = invoke(
        "grad", tmp_path / "x.npy", tmp_path / "o", "--rate", "10", "--window", "gaussian",
        "--param", "std=2", "--length", "7", "--jacobian", "--start", "5", "--duration", "2",
        "--padding", "circular", "--format", "npy",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    written = _load(tmp_path / "o" / "x.jacobian.npy").reshape(20, 20)
    kernel = window_kernel("gaussian", 7, normalize="sum", std=2.0)
    band = jacobian(torch.from_numpy(x)[50:70], kernel)  # zero edges: no wrap inside the file
    np.testing.assert_allclose(written, band.numpy(), atol=1e-12)


@pytest.mark.parametrize("option", ["--start", "--duration"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_an_excerpt_that_is_no_number_of_seconds_is_a_usage_error(
    short_wav, tmp_path, option, value
):
    # click's float ranges let NaN and inf through: each file then failed with Python's
    # "cannot convert float NaN to integer" (exit 1).
    result = invoke("grad", short_wav, tmp_path / "out", option, value)
    assert result.exit_code == 2, result.output
    assert f"'{option}'" in result.stderr and "must be a finite number of seconds" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_excerpt_far_past_the_end_says_so(short_wav, tmp_path):
    # 1e308 s times the rate is no integer: an OverflowError named as the file's failure.
    result = invoke("grad", short_wav, tmp_path / "out", "--start", "1e308")
    assert result.exit_code == 1, result.output
    assert "--start 1e+308 is past the end of the signal" in result.stderr
    result = invoke("grad", short_wav, tmp_path / "out2", "--duration", "1e308")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("option, value", [("--width", "0"), ("--width", "nan"), ("--length", "0")])
def test_a_window_option_it_refuses_is_named(short_wav, tmp_path, option, value):
    # The window is built on a trial run, whose error said only "Invalid value: width ...".
    result = invoke("grad", short_wav, tmp_path / "out", option, value)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.stderr


def test_a_figure_of_many_channels_draws_the_first_few(monkeypatch, tmp_path):
    # One curve and legend entry per channel: a .npy read as 3,000 signals of 2 samples took
    # 103 s to draw. The maps (.npy) keep every channel; the figure says what it shows.
    from cli import grad_figure

    drawn, titles = [], []
    real_curve = grad_figure._plot_curve

    def counted(ax, t, values, label, color):
        drawn.append(label)
        return real_curve(ax, t, values, label, color)

    monkeypatch.setattr(grad_figure, "_plot_curve", counted)
    import matplotlib.figure

    real_suptitle = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "suptitle",
        lambda self, text, **kw: titles.append(text) or real_suptitle(self, text, **kw),
    )
    channels = 300
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((channels, 64))
    grad_figure.write_grad_figure(
        tmp_path / "many.png",
        signal=signal,
        output=signal,
        grad_signal=signal,
        grad_kernel=rng.standard_normal((channels, 5)),
        title="many",
    )
    limit = grad_figure.DRAWN_CHANNELS
    assert len(drawn) == 3 * limit  # input, output and gradient curves of the first ones
    assert titles == [f"many (channels 0-{limit - 1} of {channels} drawn)"]
    assert (tmp_path / "many.png").stat().st_size > 0
