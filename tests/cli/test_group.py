import os
import subprocess
import sys

from click.testing import CliRunner

from cli import __version__
from cli.main import cli


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def _command_names() -> list[str]:
    import click

    return cli.list_commands(click.Context(cli))


def test_every_command_takes_version():
    assert len(_command_names()) >= 8
    for name in _command_names():
        result = CliRunner().invoke(cli, [name, "--version"])
        assert result.exit_code == 0, (name, result.output)
        assert __version__ in result.output, name


def test_each_commands_rate_and_overwrite_help_says_what_it_is_for():
    # grad and fit write no audio and take no OUTPUT equal to INPUT: their help says so.
    helps = {name: CliRunner().invoke(cli, [name, "--help"]).output for name in _command_names()}
    assert "OUTPUT equal to INPUT" in " ".join(helps["smooth"].split())
    for name in ("grad", "fit"):
        flat = " ".join(helps[name].split())
        assert "OUTPUT equal to INPUT" not in flat and "write them as audio" not in flat
    assert "--start/--duration" in " ".join(helps["grad"].split())
    assert "crop them in seconds" in " ".join(helps["fit"].split())
    assert "smooth, filter, grad and fit" in " ".join(helps["windows"].split())


def test_help_lists_commands_without_importing_torch():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'Usage' in r.output\n"
        "assert 'torch' not in sys.modules, 'diffconv --help imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_command_is_usage_error():
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "frobnicate" in result.output


def test_cli_choice_lists_match_the_core():
    # cli.options repeats them so that --help needs no torch; they must not drift apart.
    from cli.options import MODES, PADDINGS
    from diffconv_core._validation import MODES as CORE_MODES
    from diffconv_core._validation import PADDINGS as CORE_PADDINGS

    assert set(MODES) == set(CORE_MODES)
    assert set(PADDINGS) == set(CORE_PADDINGS)


def test_thread_settings_default_but_never_override_the_users():
    code = (
        "import os, cli.main; "
        "print(os.environ['OMP_WAIT_POLICY'], os.environ['OPENBLAS_NUM_THREADS'])"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS")
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["PASSIVE", "1"], out.stderr
    env.update(OMP_WAIT_POLICY="ACTIVE", OPENBLAS_NUM_THREADS="4")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["ACTIVE", "4"], out.stderr


def test_tune_measures_with_openmps_default_wait_policy():
    # Its timings serve "auto" in every process, which keep OpenMP's default: no PASSIVE.
    code = (
        "import os, sys; sys.argv = ['diffconv', {args}]; import cli.main; "
        "print(os.environ.get('OMP_WAIT_POLICY'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for args, policy in (("'tune', '--quick'", "None"), ("'smooth', 'tune.wav'", "PASSIVE")):
        command = [sys.executable, "-c", code.format(args=args)]
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        assert out.stdout.split() == [policy], out.stderr


def _run_one(tmp_path):
    import numpy as np

    from cli.jobs import plan_jobs
    from cli.runner import Operation, RunOptions, run_jobs

    np.save(tmp_path / "x.npy", np.zeros((1, 10)))
    jobs = plan_jobs([tmp_path / "x.npy"], tmp_path / "y.npy")
    run_jobs(jobs, Operation(apply=lambda b, i: b), RunOptions(device="cpu", quiet=True))


def test_a_command_run_restores_the_collector_thresholds(tmp_path, monkeypatch):
    import gc

    from cli import startup
    from diffconv_core import memory

    retained = []
    monkeypatch.setattr(memory, "retain_freed_memory", lambda: retained.append(True))
    before = gc.get_threshold()
    try:
        startup.begin()  # as diffconv's entry point does
        _run_one(tmp_path)
        assert gc.get_threshold() == startup.DEFAULT_THRESHOLDS
        assert retained == [True]  # the command's process keeps freed memory
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_library_callers_process_settings_are_left_alone(tmp_path, monkeypatch):
    import gc

    from diffconv_core import memory

    retained = []
    monkeypatch.setattr(memory, "retain_freed_memory", lambda: retained.append(True))
    before = gc.get_threshold()
    try:
        gc.set_threshold(1234, 5, 6)
        _run_one(tmp_path)
        assert gc.get_threshold() == (1234, 5, 6)
        assert gc.get_freeze_count() == 0
        assert retained == []  # nor its allocator
    finally:
        gc.set_threshold(*before)


def test_help_names_what_directories_give_and_the_streamed_block_size():
    # "[default: audio and .npy extensions]" left users guessing which files a folder gives
    # (.opus and .voc are read when named, skipped in folders); the block size had no default.
    from cli.extensions import INPUT_EXTENSIONS
    from cli.runner import DEFAULT_BLOCK_FRAMES

    for name in ("smooth", "convolve", "filter"):
        flat = " ".join(CliRunner().invoke(cli, [name, "--help"]).output.split())
        listed = flat.split("[default: the extensions ", 1)[1].split(";", 1)[0]
        assert sorted(listed.split(", ")) == sorted(INPUT_EXTENSIONS), name
        assert f"DIFFCONV_BLOCK_FRAMES frames (default {DEFAULT_BLOCK_FRAMES})" in flat, name
        assert "for a .npy input FLOAT" in flat, name
