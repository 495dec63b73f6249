"""diffconv tune: an unwritable cache fails before the measurement, naming the path."""

from __future__ import annotations

import json
import os
import signal

import pytest

from diffconv_core import tuning
from tests.cli.conftest import invoke, listing


@pytest.fixture
def measured(monkeypatch):
    """Replace the (minutes-long) measurement by a record of whether it ran."""
    calls = []

    def measure(device, dtype, shapes, progress=None):
        calls.append(shapes)
        return []

    monkeypatch.setattr(tuning, "measure", measure)
    monkeypatch.setattr(tuning, "default_shapes", lambda device_type, quick=False: [(1, 64, 3)])
    return calls


def test_unwritable_cache_option_is_a_usage_error_before_measuring(tmp_path, measured):
    # The cache used to be written only after the whole measurement, then refused.
    (tmp_path / "file.txt").write_text("a file where a folder should be")
    target = tmp_path / "file.txt" / "methods.json"
    result = invoke("tune", "--device", "cpu", "--cache", target)
    assert result.exit_code == 2, result.output
    assert str(target) in result.stderr and "--cache" in result.stderr
    assert "is not a folder" in result.stderr and "exists" not in result.stderr
    assert measured == []


def test_unwritable_default_cache_fails_before_measuring_and_names_it(tmp_path, measured):
    (tmp_path / "file.txt").write_text("a file where a folder should be")
    cache_dir = tmp_path / "file.txt" / "diffconv"
    result = invoke("tune", "--device", "cpu", env={"DIFFCONV_CACHE_DIR": str(cache_dir)})
    assert result.exit_code == 1, result.output
    assert str(cache_dir / "methods.json") in result.stderr
    assert measured == []


def test_writable_cache_leaves_no_scratch_file(tmp_path, measured):
    target = tmp_path / "new" / "methods.json"
    result = invoke("tune", "--device", "cpu", "--cache", target, "-q")
    assert result.exit_code == 0, result.output
    assert measured and listing(tmp_path) == ["new/methods.json"]


def test_cache_option_never_replaces_a_file_that_is_not_a_cache(tmp_path, measured):
    # The measurements are merged into the cache file, and a file that was not a JSON object
    # was simply replaced: `--cache song.wav` lost the recording, with no --overwrite asked.
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    result = invoke("tune", "--device", "cpu", "--cache", song)
    assert result.exit_code == 2, result.output
    assert "not a diffconv method cache" in result.stderr and "--cache" in result.stderr
    assert song.read_bytes() == b"RIFF\x24\x00\x00\x00WAVEfmt " and measured == []
    # An existing cache (a JSON object) is still merged into.
    cache = tmp_path / "methods.json"
    cache.write_text('{"other:device": []}')
    result = invoke("tune", "--device", "cpu", "--cache", cache, "-q")
    assert result.exit_code == 0, result.output
    assert "other:device" in cache.read_text() and len(measured) == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_cache_option_never_replaces_a_special_file_or_another_json_object(tmp_path, measured):
    # Devices report size 0 and were taken for an empty cache, then replaced by the rename:
    # as root, --cache /dev/null made it a regular file. A FIFO was read forever. And any
    # JSON object (a package.json) was merged into and rewritten.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = invoke("tune", "--device", "cpu", "--cache", fifo)
    assert result.exit_code == 2, result.output
    assert "exists and is not a regular file" in result.stderr and "--cache" in result.stderr
    assert fifo.is_fifo() and measured == []
    package = tmp_path / "package.json"
    package.write_text('{"name": "pkg", "version": "1.0"}')
    result = invoke("tune", "--device", "cpu", "--cache", package)
    assert result.exit_code == 2 and "not a diffconv method cache" in result.stderr
    assert package.read_text() == '{"name": "pkg", "version": "1.0"}' and measured == []
    # The library refuses too, and a FIFO where the cache should be is no cache.
    import torch

    with pytest.raises(ValueError, match="is not a regular file"):
        tuning.save([], "cpu", torch.float32, fifo)
    assert fifo.is_fifo() and tuning._read_json(fifo) is None


def test_cache_option_through_a_symlink_updates_its_target(tmp_path, measured):
    # The link itself used to be replaced by a file, the shared cache it named left stale.
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "real.json").write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(shared / "real.json")
    result = invoke("tune", "--device", "cpu", "--cache", link, "-q")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and json.loads((shared / "real.json").read_text())
    assert listing(tmp_path) == ["link.json", "shared/real.json"]


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_saving_finishes_the_save_and_leaves_no_temporary(
    tmp_path, measured, monkeypatch, sigterm_handler, signum, status
):
    # A signal inside mkstemp (the file made, its name not yet returned) left a .methods-*
    # file behind: the save now holds the signal until it is done.
    import tempfile

    real = tempfile.mkstemp

    def made_then_signalled(*args, **kwargs):
        made = real(*args, **kwargs)
        if str(kwargs.get("suffix")) == ".json":  # the save's temporary, not the probe's
            os.kill(os.getpid(), signum)
            for _ in range(10_000):
                pass
        return made

    monkeypatch.setattr(tempfile, "mkstemp", made_then_signalled)
    target = tmp_path / "methods.json"
    result = invoke("tune", "--device", "cpu", "--cache", target, "-q")
    assert result.exit_code == status, result.output
    assert listing(tmp_path) == ["methods.json"] and json.loads(target.read_text())
