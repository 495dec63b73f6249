"""The measured-method cache: measure, save, lookup, and choose_method consulting it."""

import json
import os
import stat
import threading

import pytest
import torch

from diffconv_core import choose_method, convolve, tuning


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DIFFCONV_NO_TUNING", raising=False)
    return tmp_path


def test_measure_times_every_method_and_picks_the_fastest(cache_dir):
    records = tuning.measure("cpu", torch.float32, [(2, 256, 5)], budget_s=0.0)
    (record,) = records
    assert set(record["seconds"]) == {"direct", "fft", "overlap"}
    totals = {m: s["total"] for m, s in record["seconds"].items()}
    assert record["method"] == min(totals, key=totals.get)
    forwards = {m: s["forward"] for m, s in record["seconds"].items()}
    assert record["method_forward"] == min(forwards, key=forwards.get)
    assert all(s["forward"] > 0 and s["total"] > 0 for s in record["seconds"].values())


def _fake_records(method):
    return [
        {
            "batch": 4,
            "T": 4096,
            "K": 31,
            "mode": "same",
            "method": method,
            "method_forward": method,
            "seconds": {},
            "generation": tuning.CACHE_GENERATION,
        }
    ]


@pytest.mark.parametrize("method", ["direct", "fft", "overlap"])
def test_choose_method_follows_the_cache_near_a_measured_shape(cache_dir, method):
    path = tuning.save(_fake_records(method), "cpu", torch.float32)
    assert path == cache_dir / "methods.json"
    assert choose_method((4, 4096), (31,)) == method
    assert choose_method((6, 5000), (40,)) == method  # within one octave on every axis
    assert choose_method((4, 4096), (31,), requires_grad=True) == method
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float64) is None  # other dtype
    assert tuning.lookup("cpu", 4, 1 << 20, 31, "same", torch.float32) is None  # far away


@pytest.mark.parametrize("method", ["direct", "fft", "overlap"])
def test_other_modes_find_the_measured_same_shapes_by_their_work(cache_dir, method):
    # diffconv tune measures zero-padded "same"; a padded "same" (smooth's default reflect
    # edges) reaches choose_method as "valid" over the signal extended by K - 1 samples, and
    # never found the cache. Shapes are compared by their number of outputs.
    tuning.save(_fake_records(method), "cpu", torch.float32)
    assert choose_method((4, 4096 + 30), (31,), mode="valid") == method
    assert choose_method((4, 4096), (31,), mode="full") == method
    assert tuning.lookup("cpu", 4, 4096, 31, "valid", torch.float32) == method  # 4,066 out
    assert tuning.lookup("cpu", 4, 40_000, 31, "valid", torch.float32) is None
    assert tuning.lookup("cpu", 4, 31, 4096, "valid", torch.float32) is None  # 4,066 taps


def test_another_thread_count_serves_when_this_one_was_not_measured(cache_dir, monkeypatch):
    # The CLI streams with one thread fewer (one core writes): its key is cpux1, not cpux2.
    tuning.save(_fake_records("overlap"), "cpu", torch.float32)
    measured = tuning.device_key("cpu", torch.float32)
    fewer = torch.get_num_threads() + 5
    monkeypatch.setattr(torch, "get_num_threads", lambda: fewer)
    assert tuning.device_key("cpu", torch.float32) != measured
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) == "overlap"
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float64) is None  # other dtype
    records = _fake_records("direct")
    tuning.save(records, "cpu", torch.float32)  # now measured with this count too: it wins
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) == "direct"


def test_a_thread_count_that_is_no_number_is_skipped(cache_dir, monkeypatch):
    # "²" passes str.isdigit but not int(): every auto convolve then failed.
    records = json.dumps(_fake_records("overlap"))
    fewer = torch.get_num_threads() + 5
    monkeypatch.setattr(torch, "get_num_threads", lambda: fewer)
    (cache_dir / "methods.json").write_text(f'{{"cpu:cpux\u00b2:float32": {records}}}')
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) is None
    x, w = torch.randn(4, 4096), torch.randn(31)
    torch.testing.assert_close(convolve(x, w), convolve(x, w, method="fft"))


def test_save_through_a_symlink_writes_its_target(cache_dir, tmp_path):
    real = tmp_path / "elsewhere" / "real.json"
    real.parent.mkdir()
    real.write_text("{}")
    link = cache_dir / "methods.json"
    link.symlink_to(real)
    assert tuning.save(_fake_records("fft"), "cpu", torch.float32) == real
    assert link.is_symlink() and tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) == "fft"


def test_cache_can_be_ignored_and_broken_caches_are_harmless(cache_dir, monkeypatch):
    tuning.save(_fake_records("overlap"), "cpu", torch.float32)
    monkeypatch.setenv("DIFFCONV_NO_TUNING", "1")
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) is None
    monkeypatch.delenv("DIFFCONV_NO_TUNING")
    (cache_dir / "methods.json").write_text("{not json")
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) is None
    x, w = torch.randn(4, 4096, dtype=torch.float64), torch.randn(31, dtype=torch.float64)
    torch.testing.assert_close(convolve(x, w), convolve(x, w, method="fft"))


def test_save_merges_devices_and_writes_valid_json(cache_dir):
    tuning.save(_fake_records("fft"), "cpu", torch.float32)
    tuning.save(_fake_records("direct"), "cpu", torch.float64)
    data = json.loads((cache_dir / "methods.json").read_text())
    assert len(data) == 2
    assert not list(cache_dir.glob(".methods-*"))  # no temp file left behind


def test_tune_command_writes_the_cache(cache_dir, monkeypatch):
    from click.testing import CliRunner

    from cli.main import cli

    monkeypatch.setattr(tuning, "default_shapes", lambda device_type, quick=False: [(1, 128, 3)])
    target = cache_dir / "custom.json"
    result = CliRunner().invoke(cli, ["tune", "--device", "cpu", "--cache", str(target)])
    assert result.exit_code == 0, result.output
    data = json.loads(target.read_text())
    (entries,) = data.values()
    assert entries[0]["T"] == 128 and entries[0]["method"] in {"direct", "fft", "overlap"}
    bad = CliRunner().invoke(cli, ["tune", "--device", "tpu"])
    assert bad.exit_code == 2 and "tpu" in bad.output


def test_training_and_inference_choices_are_cached_apart(cache_dir):
    record = dict(_fake_records("overlap")[0], method_forward="direct")
    tuning.save([record], "cpu", torch.float32)
    assert choose_method((4, 4096), (31,)) == "direct"
    assert choose_method((4, 4096), (31,), requires_grad=True) == "overlap"


def test_a_save_is_seen_at_once_by_the_same_process(cache_dir):
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) is None  # caches "no file"
    tuning.save(_fake_records("overlap"), "cpu", torch.float32)
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) == "overlap"


@pytest.mark.parametrize(
    "entries",
    [
        "not a list",
        {"batch": 4},
        ["not a record", 7, None],
        [{"batch": 4, "T": 4096, "mode": "same", "method": "fft", "method_forward": "fft"}],
        [dict(_fake_records("fft")[0], K=0)],
        [dict(_fake_records("fft")[0], K="31")],
        [dict(_fake_records("fft")[0], T=None)],
        [dict(_fake_records("fft")[0], batch=True)],
        [dict(_fake_records("fft")[0], T=10**400)],  # isfinite() overflowed on it
    ],
)
def test_malformed_records_are_skipped_not_raised_inside_convolve(cache_dir, entries):
    # lookup() runs inside every auto convolve: a hand-edited or older cache used to make
    # each one raise AttributeError, KeyError, TypeError or "math domain error".
    key = tuning.device_key("cpu", torch.float32)
    good = _fake_records("overlap")
    malformed = entries + good if isinstance(entries, list) else entries
    (cache_dir / "methods.json").write_text(json.dumps({key: malformed}))
    expected = "overlap" if isinstance(entries, list) else None
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) == expected
    x, w = torch.randn(4, 4096, dtype=torch.float64), torch.randn(31, dtype=torch.float64)
    torch.testing.assert_close(convolve(x, w), convolve(x, w, method="fft"))


def test_absurdly_nested_cache_is_no_cache(cache_dir):
    (cache_dir / "methods.json").write_text("[" * 100_000)
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) is None
    tuning.save(_fake_records("fft"), "cpu", torch.float32)  # replaces it
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) == "fft"


def test_concurrent_saves_keep_every_device(cache_dir):
    # Each save read the file, merged its device and renamed a new file over it: two at once
    # both merged into the old file and the second rename dropped the first one's device.
    dtypes = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
    keys = [(device, dtype) for device in ("cpu", "meta") for dtype in dtypes]
    start = threading.Barrier(len(keys))

    def save(device, dtype):
        start.wait()
        tuning.save(_fake_records("fft") * 200, device, dtype)

    threads = [threading.Thread(target=save, args=key) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    data = json.loads((cache_dir / "methods.json").read_text())
    assert sorted(data) == sorted(tuning.device_key(*key) for key in keys)
    assert sorted(p.name for p in cache_dir.iterdir()) == ["methods.json"]


def test_saved_cache_has_the_users_usual_permissions(cache_dir):
    # mkstemp's 0600 made a cache in a shared folder unreadable, so no one else used it.
    umask = os.umask(0o022)
    try:
        path = tuning.save(_fake_records("fft"), "cpu", torch.float32)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o640)  # a replaced cache keeps the permissions it was given
        tuning.save(_fake_records("direct"), "cpu", torch.float32)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(umask)


def test_answers_follow_a_changed_cache_file(cache_dir):
    # Lookups are remembered per cache content: a rewritten file (another tune run, another
    # process) must be seen once it is rechecked, not the remembered answer.
    tuning.save(_fake_records("overlap"), "cpu", torch.float32)
    assert choose_method((4, 4096), (31,)) == "overlap"
    path = cache_dir / "methods.json"
    data = json.loads(path.read_text())
    for record in next(iter(data.values())):
        record["method"] = record["method_forward"] = "fft"
    path.write_text(json.dumps(data))
    os.utime(path, ns=(1, 1))  # a new mtime even on coarse-timestamp filesystems
    tuning._loaded["checked"] = -float("inf")  # past RECHECK_SECONDS
    assert choose_method((4, 4096), (31,)) == "fft"


def test_an_answer_worked_out_while_another_thread_reloads_is_not_kept(cache_dir, monkeypatch):
    # A lookup read the entries, then (a few statements later) the answers dict: a reload by
    # another thread in between stored the old file's answer among the new file's answers,
    # where it stayed until the file changed again.
    tuning.save(_fake_records("overlap"), "cpu", torch.float32)
    path = cache_dir / "methods.json"
    data = json.loads(path.read_text())
    for record in next(iter(data.values())):
        record["method"] = record["method_forward"] = "fft"
    device_key = tuning.device_key

    def reloaded_meanwhile(*args):
        # Called by the lookup after it has read the cache: the other thread's reload.
        monkeypatch.setattr(tuning, "device_key", device_key)
        path.write_text(json.dumps(data))
        os.utime(path, ns=(1, 1))  # a new mtime even on coarse-timestamp filesystems
        tuning._loaded["checked"] = -float("inf")
        tuning._cache()
        return device_key(*args)

    tuning._loaded["checked"] = -float("inf")
    tuning._cache()
    monkeypatch.setattr(tuning, "device_key", reloaded_meanwhile)
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) == "overlap"
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) == "fft"


def test_remembered_answers_stay_bounded(cache_dir, monkeypatch):
    tuning.save(_fake_records("overlap"), "cpu", torch.float32)
    for T in range(4000, 4000 + 5000):
        tuning.lookup("cpu", 4, T, 31, "same", torch.float32)
    assert len(tuning._loaded["cache"][1]) <= 4096
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) == "overlap"


def test_a_kernel_per_row_is_priced_by_the_model_not_the_shared_kernel_cache(
    cache_dir, monkeypatch
):
    # The cache times one shared kernel; a kernel per row runs other code (batched GEMMs).
    tuning.save(_fake_records("overlap"), "cpu", torch.float32)
    assert choose_method((4, 4096), (31,)) == "overlap"
    monkeypatch.setenv("DIFFCONV_NO_TUNING", "1")
    model = choose_method((4, 4096), (4, 31))
    monkeypatch.delenv("DIFFCONV_NO_TUNING")
    assert model != "overlap"  # else this test shows nothing
    assert choose_method((4, 4096), (4, 31)) == model
    assert choose_method((4, 4096), (1, 31)) == "overlap"  # still one kernel for all rows


def test_the_cpu_measurement_skips_direct_past_the_toeplitz_taps(monkeypatch):
    # Past 1,024 taps the CPU's direct method is conv1d: 12 s a pass at 262,144 x 16,383,
    # measured eight times, never the winner; `tune --quick` took minutes instead of about one.
    from diffconv_core import _direct

    monkeypatch.setattr(_direct, "MAX_TOEPLITZ_TAPS", 8)
    records = tuning.measure("cpu", torch.float32, [(1, 64, 8), (1, 64, 9)], budget_s=0.0)
    assert set(records[0]["seconds"]) == {"direct", "fft", "overlap"}
    assert set(records[1]["seconds"]) == {"fft", "overlap"}
    assert records[1]["method"] in ("fft", "overlap")


@pytest.mark.parametrize("generation", [None, 1, 2, 3, 4, 5, "6"])
def test_records_of_another_implementation_are_not_used(cache_dir, generation):
    # Timings of methods this library no longer runs (a cache tuned before the CPU direct
    # path became one convolution, whose records carry no generation) would keep their old
    # picks: they are skipped and the cost model decides, until tune writes new ones.
    key = tuning.device_key("cpu", torch.float32)
    stale = [dict(_fake_records("overlap")[0], generation=generation)]
    if generation is None:
        del stale[0]["generation"]
    (cache_dir / "methods.json").write_text(json.dumps({key: stale}))
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) is None
    tuning.save([{k: v for k, v in stale[0].items() if k != "generation"}], "cpu", torch.float32)
    saved = json.loads((cache_dir / "methods.json").read_text())[key]
    assert [record["generation"] for record in saved] == [tuning.CACHE_GENERATION]
    assert tuning.lookup("cpu", 4, 4096, 31, "same", torch.float32) == "overlap"


def test_measure_warms_every_method_up_before_timing(monkeypatch):
    # A process's first calls pay one-off set-up, which had the first shape's direct time
    # three times its later one.
    from diffconv_core import convolution

    calls = []
    real = convolution.convolve

    def counted(x, w, mode, method):
        calls.append((tuple(x.shape), method, x.requires_grad))
        return real(x, w, mode, method=method)

    monkeypatch.setattr(convolution, "convolve", counted)
    tuning.measure("cpu", torch.float32, [(1, 64, 3)], budget_s=0.0)
    warm = [((2, 1024), method, True) for method in tuning.METHOD_NAMES]
    assert calls[:3] == warm and calls[3][0] == (1, 64)


@pytest.mark.parametrize("mode", ["full", "valid"])
def test_measure_times_every_mode_with_the_backward_pass(mode):
    # The backward's incoming gradient was shaped (batch, T), the "same" output only: "full"
    # and "valid" raised "Mismatch in shape: grad_output[0] ...".
    (record,) = tuning.measure("cpu", torch.float32, [(1, 64, 3)], mode=mode, budget_s=0.0)
    assert record["mode"] == mode and record["method"] in tuning.METHOD_NAMES
    assert all(t["total"] >= t["forward"] > 0 for t in record["seconds"].values())


@pytest.mark.parametrize(
    "arguments",
    [
        {"shapes": [(0, 64, 3)]},  # timed nothing; its record was dropped on reading
        {"shapes": [(1, 64)]},
        {"shapes": [(1, 64.0, 3)]},
        {"budget_s": -1.0},
        {"budget_s": float("nan")},
        {"mode": "sme"},
    ],
)
def test_measure_refuses_what_it_cannot_time(arguments):
    with pytest.raises(ValueError):
        tuning.measure("cpu", torch.float32, **{"shapes": [(1, 64, 3)], **arguments})


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        # torch's device-string RuntimeError, or randn's for an integer dtype, before.
        (lambda: tuning.device_key("nope", torch.float32), ValueError, "device must name"),
        (lambda: tuning.device_key(5, torch.float32), TypeError, "device must be a torch.dev"),
        (lambda: tuning.device_key("cpu", torch.int64), TypeError, "dtype must be a floating"),
        (
            lambda: tuning.measure("cpu", torch.int64, [(1, 64, 3)], budget_s=0),
            TypeError,
            "dtype must be a floating torch.dtype; got torch.int64",
        ),
        (lambda: tuning.measure("nope", torch.float32, [(1, 64, 3)]), ValueError, "'nope'"),
    ],
)
def test_device_and_dtype_are_checked(call, error, message):
    with pytest.raises(error, match=message):
        call()
