"""Files: formats kept, cross-format writes, clipping, atomic writes, .npy rules."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cli.audio_io import probe, read_signal
from cli.errors import FileProblem
from cli.writing import AtomicWriter, output_spec
from tests.cli.conftest import REPO, SAMPLES, invoke, listing, without_root_overrides, write_wav


@pytest.mark.parametrize(
    "name, fmt, subtype, rate, channels",
    [
        ("speech_mono16.wav", "WAV", "PCM_16", 16000, 1),
        ("music_stereo24.wav", "WAV", "PCM_24", 48000, 2),
        ("multichannel_float.wav", "WAV", "FLOAT", 8000, 5),
    ],
)
def test_format_subtype_rate_channels_kept(tmp_path, identity, name, fmt, subtype, rate, channels):
    out = tmp_path / name
    r = invoke("convolve", SAMPLES / name, out, "--kernel", identity, "--method", "direct")
    assert r.exit_code == 0, r.output
    info = sf.info(out)
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        fmt,
        subtype,
        rate,
        channels,
    )
    # An identity kernel must give back the very same integer codes / floats.
    kind = "float32" if subtype == "FLOAT" else "int32"
    np.testing.assert_array_equal(
        sf.read(out, dtype=kind)[0], sf.read(SAMPLES / name, dtype=kind)[0]
    )


def test_cross_format_writes(tmp_path, identity):
    src = SAMPLES / "music_stereo24.wav"
    # The extension picks the format; the subtype is kept where the format allows it.
    assert (
        invoke(
            "convolve", src, tmp_path / "a.flac", "--kernel", identity, "--method", "direct"
        ).exit_code
        == 0
    )
    assert (sf.info(tmp_path / "a.flac").format, sf.info(tmp_path / "a.flac").subtype) == (
        "FLAC",
        "PCM_24",
    )
    assert (
        invoke(
            "convolve", src, tmp_path / "b.ogg", "--kernel", identity, "--method", "direct"
        ).exit_code
        == 0
    )
    assert sf.info(tmp_path / "b.ogg").subtype == "VORBIS"
    # --subtype overrides.
    r = invoke(
        "convolve",
        src,
        tmp_path / "c.wav",
        "--kernel",
        identity,
        "--method",
        "direct",
        "--subtype",
        "PCM_16",
    )
    assert r.exit_code == 0 and sf.info(tmp_path / "c.wav").subtype == "PCM_16"
    # .wav -> .npy writes floats (C, T); .npy -> .wav needs --rate and writes FLOAT.
    assert (
        invoke(
            "convolve", src, tmp_path / "d.npy", "--kernel", identity, "--method", "direct"
        ).exit_code
        == 0
    )
    d = np.load(tmp_path / "d.npy")
    assert d.shape == (2, 96000) and d.dtype == np.float64
    np.testing.assert_array_equal(d, sf.read(src, dtype="float64")[0].T)
    r = invoke(
        "convolve",
        tmp_path / "d.npy",
        tmp_path / "e.wav",
        "--kernel",
        identity,
        "--method",
        "direct",
        "--rate",
        "22050",
    )
    assert r.exit_code == 0, r.output
    info = sf.info(tmp_path / "e.wav")
    assert (info.samplerate, info.subtype, info.channels) == (22050, "FLOAT", 2)


def test_npy_dtypes_and_shapes(tmp_path, identity):
    cases = {
        "f32.npy": np.ones((2, 20), dtype=np.float32),
        "f64.npy": np.ones(20),
        "i16.npy": np.arange(20, dtype=np.int16),
        "ncT.npy": np.ones((3, 2, 20)),
    }
    for name, array in cases.items():
        np.save(tmp_path / name, array)
        r = invoke(
            "convolve",
            tmp_path / name,
            tmp_path / f"out_{name}",
            "--kernel",
            identity,
            "--method",
            "direct",
        )
        assert r.exit_code == 0, r.output
        got = np.load(tmp_path / f"out_{name}")
        assert got.shape == array.shape
        assert got.dtype == (array.dtype if array.dtype.kind == "f" else np.float32)
        np.testing.assert_array_equal(got, array.astype(got.dtype))


def test_integer_pcm_clips_never_wraps_and_reports(tmp_path):
    x = np.array([[0.5, 0.9, -0.9, 0.1, 0.6]])
    src = write_wav(tmp_path / "x.wav", x, subtype="PCM_16")
    np.save(tmp_path / "k.npy", np.array([2.0]))
    out = tmp_path / "y.wav"
    r = invoke("convolve", src, out, "--kernel", tmp_path / "k.npy", "--method", "direct")
    assert r.exit_code == 0
    assert "3 samples clipped to [-1, 1]" in r.stderr and str(out) in r.stderr
    codes = sf.read(out, dtype="int16")[0]
    doubled = 2 * int(sf.read(src, dtype="int16")[0][3])
    assert codes.tolist() == [32767, 32767, -32768, doubled, 32767]
    r = invoke("convolve", src, tmp_path / "q.wav", "--kernel", tmp_path / "k.npy", "-q")
    assert r.exit_code == 0 and r.stderr == ""


def test_nan_into_integer_pcm_is_written_as_zero_and_reported(tmp_path):
    np.save(tmp_path / "x.npy", np.array([0.1, np.nan, 0.2]))
    np.save(tmp_path / "k.npy", np.array([1.0]))
    out = tmp_path / "y.wav"
    r = invoke(
        "convolve",
        tmp_path / "x.npy",
        out,
        "--kernel",
        tmp_path / "k.npy",
        "--rate",
        "8000",
        "--subtype",
        "PCM_16",
    )
    assert r.exit_code == 0 and "1 NaN/Inf sample written as 0" in r.stderr
    assert sf.read(out, dtype="int16")[0].tolist()[1] == 0


def test_interrupted_write_leaves_old_file_and_no_temporary(tmp_path):
    info = probe(SAMPLES / "speech_mono16.wav")
    data = read_signal(info)
    dest = tmp_path / "y.wav"
    dest.write_bytes(b"old")
    spec = output_spec(dest, info)
    with pytest.raises(KeyboardInterrupt):
        with AtomicWriter(dest, spec, data.shape, overwrite=True) as writer:
            writer.write(data[:, :1000])
            assert len(listing(tmp_path)) == 2  # the hidden temporary exists meanwhile
            raise KeyboardInterrupt
    assert listing(tmp_path) == ["y.wav"] and dest.read_bytes() == b"old"
    # A completed write replaces it, with ordinary permissions (not mkstemp's 0600).
    with AtomicWriter(dest, spec, data.shape, overwrite=True) as writer:
        writer.write(data)
    assert listing(tmp_path) == ["y.wav"] and sf.info(dest).frames == data.shape[1]


def test_probe_reasons(bad_inputs, tmp_path):
    for kind, reason in [("empty", "empty"), ("objects", "pickled"), ("4d", "4-D")]:
        with pytest.raises(FileProblem, match=reason) as err:
            probe(bad_inputs[kind])
        assert err.value.exit_code == 1 and err.value.path == str(bad_inputs[kind])
    np.save(tmp_path / "c.npy", np.ones(3, dtype=np.complex64))
    with pytest.raises(FileProblem, match="not a real number type"):
        probe(tmp_path / "c.npy")
    np.save(tmp_path / "z.npy", np.ones((2, 0)))
    with pytest.raises(FileProblem, match="no samples"):
        probe(tmp_path / "z.npy")


def test_info_command(tmp_path, bad_inputs):
    r = invoke(
        "info", SAMPLES / "speech_mono16.wav", SAMPLES / "sensor_gaps.npy", bad_inputs["text"]
    )
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    assert lines[0].endswith("32000 frames, 16000 Hz, 1 channel, WAV/PCM_16, 2.000 s")
    assert lines[1].endswith("sensor_gaps.npy: shape (4000,), float64")
    assert "text.wav" in r.stderr and len(lines) == 2
    r = invoke("info", tmp_path / "missing.wav")
    assert r.exit_code == 2 and "missing.wav" in r.stderr
    (tmp_path / "dangling.wav").symlink_to(tmp_path / "nowhere.wav")
    r = invoke("info", tmp_path / "dangling.wav")  # exit 1 before, as a failed read
    assert r.exit_code == 2 and "dangling.wav: a link to no file" in r.stderr


def test_info_describes_the_files_after_one_whose_reader_raised_the_unexpected(
    bad_inputs, monkeypatch
):
    # An unterminated .npy header (numpy raised tokenize.TokenError) was a traceback that
    # hid the files after it; any other surprise of a reader fails that file alone too.
    from cli import audio_io

    good = SAMPLES / "speech_mono16.wav"
    r = invoke("info", bad_inputs["unterminated"], good)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "unterminated.npy: not a valid .npy file" in r.stderr
    assert r.stdout.strip().endswith("WAV/PCM_16, 2.000 s")
    real_probe = audio_io.probe

    def probe(path, *args):
        if str(path).endswith(".npy"):
            raise RuntimeError("a reader's own surprise")
        return real_probe(path, *args)

    monkeypatch.setattr(audio_io, "probe", probe)
    r = invoke("info", SAMPLES / "sensor_gaps.npy", good)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "sensor_gaps.npy: RuntimeError: a reader's own surprise" in r.stderr
    assert r.stdout.strip().endswith("WAV/PCM_16, 2.000 s")


def test_info_describes_every_file_around_missing_ones_and_directories(tmp_path):
    # A missing FILE or a directory used to stop info with a usage error before any file
    # was described, although it promises to describe the others first.
    wav, npy = SAMPLES / "speech_mono16.wav", SAMPLES / "sensor_gaps.npy"
    r = invoke("info", tmp_path / "missing.wav", wav, tmp_path, npy)
    assert r.exit_code == 2  # a missing input is a usage error, as in every command
    assert [line.split(":")[0] for line in r.stdout.splitlines()] == [str(wav), str(npy)]
    assert f"error: {tmp_path / 'missing.wav'}: no such file or directory" in r.stderr
    assert f"error: {tmp_path}: is a directory, not a file" in r.stderr
    assert "Traceback" not in r.output
    r = invoke("info", tmp_path, wav)  # nothing missing: a directory is a file that failed
    assert r.exit_code == 1 and r.stdout.splitlines() == [probe(wav).describe()]
    assert str(tmp_path) in r.stderr and "is a directory" in r.stderr


def test_output_directory_removed_before_its_temporary_is_made_again(tmp_path, monkeypatch):
    # A writer that made a directory and failed removes it while empty; another writer may
    # have just found it there, and its temporary file must not fail for that.
    info = probe(SAMPLES / "speech_mono16.wav")
    x = read_signal(info)
    real, folders = tempfile.mkstemp, []

    def racing(*args, dir, **kwargs):
        folders.append(dir)
        if len(folders) == 1:
            os.rmdir(dir)  # the other writer's clean-up, between mkdir and mkstemp
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", racing)
    dest = tmp_path / "new" / "a.wav"
    with AtomicWriter(dest, output_spec(dest, info), x.shape, buffered=True) as w:
        w.write(x)
    assert folders == [str(dest.parent)] * 2 and listing(tmp_path) == ["new/a.wav"]


@pytest.mark.parametrize("hard_links", [True, False])
@pytest.mark.parametrize("buffered", [True, False])
def test_an_output_made_while_writing_is_kept_without_overwrite(
    tmp_path, monkeypatch, buffered, hard_links
):
    # The name was checked once, at the start; the final rename then replaced whatever had
    # taken it meanwhile (another run, for a streamed file the whole write long): both runs
    # exited 0 and one result was lost. With --overwrite, replacing it is what was asked.
    info = probe(SAMPLES / "speech_mono16.wav")
    x = read_signal(info)
    if not hard_links:  # a file system without them (FAT): link(2) says EPERM

        def no_link(*args, **kwargs):
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    dest = tmp_path / "a.wav"
    with pytest.raises(FileProblem, match="output exists .* use --overwrite"):
        with AtomicWriter(dest, output_spec(dest, info), x.shape, buffered=buffered) as w:
            w.write(x)
            dest.write_bytes(b"precious")
    assert dest.read_bytes() == b"precious" and listing(tmp_path) == ["a.wav"]
    dest.unlink()
    with AtomicWriter(dest, output_spec(dest, info), x.shape, buffered=buffered) as w:
        w.write(x)  # a free name is taken as before
    assert sf.info(dest).frames == x.shape[-1] and listing(tmp_path) == ["a.wav"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~_umask()
    dest.unlink()
    with AtomicWriter(dest, output_spec(dest, info), x.shape, overwrite=True) as w:
        w.write(x)
        dest.write_bytes(b"replace me")
    assert sf.info(dest).frames == x.shape[-1] and listing(tmp_path) == ["a.wav"]


def test_atomic_write_keeps_an_output_made_while_writing_without_overwrite(tmp_path):
    from cli.writing import atomic_write

    dest = tmp_path / "k.json"

    def fill(f):
        f.write(b"{}")
        dest.write_bytes(b"precious")

    with pytest.raises(FileProblem, match="output exists"):
        atomic_write(dest, fill, overwrite=False)
    assert dest.read_bytes() == b"precious" and listing(tmp_path) == ["k.json"]
    atomic_write(dest, fill, overwrite=True)
    assert dest.read_bytes() == b"{}" and listing(tmp_path) == ["k.json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_files_behind_paths_longer_than_libsndfile_takes_are_read(tmp_path, monkeypatch):
    # libsndfile refuses names past 1,023 bytes ("Supplied filename too long") where Linux
    # takes 4,096: such files failed as "not a readable sound file", in info and -r too.
    from cli.audio_io import LIBSNDFILE_PATH_MAX
    from cli.pipes import input_format

    monkeypatch.chdir(tmp_path)
    deep = Path(*["d" * 200] * 5, "e" * 40)
    deep.mkdir(parents=True)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 3000))
    names = {"a.wav": "PCM_16", "b.flac": "PCM_24", "c.raw": "PCM_16"}
    for name, subtype in names.items():
        with open(deep / name, "wb") as file:  # not by name: libsndfile refuses it
            sf.write(file, x.T, 8000, subtype=subtype, format=name.split(".")[1].upper())
        assert len(os.fsencode(str(deep / name))) > LIBSNDFILE_PATH_MAX
    raw = ["--rate", 8000, "--raw-subtype", "PCM_16", "--channels", 2]
    for name in names:
        r = invoke("smooth", deep / name, f"out_{name}", *(raw if name.endswith(".raw") else []))
        assert r.exit_code == 0, r.output
        rate = {"samplerate": 8000, "channels": 2, "subtype": "PCM_16"} if "raw" in name else {}
        got, _ = sf.read(f"out_{name}", always_2d=True, **rate)
        with open(deep / name, "rb") as file:
            want, _ = sf.read(file, always_2d=True, **rate)
        assert got.shape == want.shape
    assert input_format(deep / "b.flac") == "FLAC"
    r = invoke("info", deep / "a.wav", deep / "b.flac")
    assert r.exit_code == 0 and "3000 frames" in r.stdout.replace(",", ""), r.output
    r = invoke("smooth", "d" * 200, "tree", "-r")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in Path("tree").rglob("*.*")) == ["a.wav", "b.flac"]
    missing = invoke("smooth", deep / "gone.wav", "out_gone.wav")
    assert missing.exit_code == 2 and "gone.wav" in missing.stderr, missing.stderr


def test_info_says_1_frame(tmp_path):
    for frames in (1, 2):
        src = write_wav(tmp_path / f"f{frames}.wav", np.zeros((1, frames)), 8000)
        r = invoke("info", src)
        assert r.exit_code == 0, r.output
        assert r.stdout.strip() == probe(src).describe()
    assert ": 1 frame, 8000 Hz, 1 channel, WAV/PCM_16" in probe(tmp_path / "f1.wav").describe()
    assert ": 2 frames, 8000 Hz" in probe(tmp_path / "f2.wav").describe()


def test_output_directory_removed_during_a_run_is_made_again(tmp_path):
    info = probe(SAMPLES / "speech_mono16.wav")
    x = read_signal(info)
    out_dir = tmp_path / "deep" / "out"
    for name in ["a.wav", "b.wav"]:
        dest = out_dir / name
        with AtomicWriter(dest, output_spec(dest, info), x.shape, buffered=True) as w:
            w.write(x)
        assert sf.info(dest).frames == x.shape[-1]
        shutil.rmtree(tmp_path / "deep")  # the writer remembered the directory; it is gone


def test_replacing_keeps_permissions_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / "out.wav"
    write_wav(dest, np.zeros((1, 100)), 8000)
    dest.chmod(0o640)
    result = invoke("smooth", SAMPLES / "speech_mono16.wav", dest, "--overwrite")
    assert result.exit_code == 0, result.output
    assert dest.stat().st_mode & 0o777 == 0o640
    assert listing(tmp_path) == ["out.wav"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_replacing_as_root_keeps_the_owner(tmp_path):
    # The rename handed another user's file to root (sox and cp keep the owner).
    dest = tmp_path / "out.wav"
    write_wav(dest, np.zeros((1, 100)), 8000)
    os.chown(dest, 65534, 65534)
    result = invoke("smooth", SAMPLES / "speech_mono16.wav", dest, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (dest.stat().st_uid, dest.stat().st_gid) == (65534, 65534)
    assert sf.info(dest).frames > 100


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("name", ["out.wav", "out.npy"])
def test_overwriting_a_symlink_writes_the_file_it_names(tmp_path, streamed, name):
    # Renaming onto the link would replace the link with a plain file and leave the file it
    # names stale; sox, cp and `>` write through it.
    real = tmp_path / "store" / name
    real.parent.mkdir()
    real.write_bytes(b"old")
    (tmp_path / "links").mkdir()
    link = tmp_path / "links" / name
    link.symlink_to(os.path.relpath(real, link.parent))
    env = {"DIFFCONV_STREAM_SAMPLES": "1000"} if streamed else None
    src = SAMPLES / "speech_mono16.wav"
    r = invoke("smooth", src, link, env=env)
    assert r.exit_code == 1 and "--overwrite" in r.stderr and real.read_bytes() == b"old"
    r = invoke("smooth", src, link, "--overwrite", env=env)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and link.resolve() == real.resolve()
    expected = tmp_path / ("plain" + real.suffix)
    assert invoke("smooth", src, expected, env=env).exit_code == 0
    assert real.read_bytes() == expected.read_bytes()
    assert listing(tmp_path / "store") == [name] and listing(tmp_path / "links") == [name]


def test_dangling_symlink_output_creates_the_file_it_names(tmp_path):
    link = tmp_path / "out.wav"
    link.symlink_to("made.wav")
    r = invoke("smooth", SAMPLES / "speech_mono16.wav", link)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and sf.info(tmp_path / "made.wav").frames > 0


def test_symlink_loop_output_fails_that_file_only(tmp_path):
    (tmp_path / "a.wav").symlink_to("b.wav")
    (tmp_path / "b.wav").symlink_to("a.wav")
    r = invoke("smooth", SAMPLES / "speech_mono16.wav", tmp_path / "a.wav", "--overwrite")
    assert r.exit_code == 1 and "a.wav" in r.stderr and "symbolic links" in r.stderr
    assert "Traceback" not in r.stderr


def test_atomic_write_writes_through_a_symlink(tmp_path):
    from cli.writing import atomic_write

    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to("real.json")
    atomic_write(link, lambda f: f.write(b'{"a": 1}'))
    assert link.is_symlink() and real.read_text() == '{"a": 1}'
    assert listing(tmp_path) == ["link.json", "real.json"]


@pytest.mark.parametrize("through_link", [False, True])
def test_atomic_write_keeps_the_permissions_of_the_file_it_replaces(tmp_path, through_link):
    # As signal outputs do: `fit --overwrite` onto a private (0600) kernel or checkpoint left
    # it readable by everyone (the umask's 0644), here or through a link to it.
    from cli.writing import atomic_write

    real = tmp_path / "kernel.json"
    real.write_text("{}")
    real.chmod(0o600)
    dest = real
    if through_link:
        dest = tmp_path / "link.json"
        dest.symlink_to("kernel.json")
    atomic_write(dest, lambda f: f.write(b'{"a": 1}'))
    assert real.read_text() == '{"a": 1}'
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    atomic_write(tmp_path / "new.json", lambda f: f.write(b"{}"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("streamed", [False, True])
def test_format_refusing_the_channel_count_says_so(tmp_path, streamed):
    # FLAC holds at most 8 channels; libsndfile only says "Format not recognised", and the
    # message used to name an in-memory buffer ("<_io.BytesIO object at 0x...>").
    src = write_wav(tmp_path / "nine.wav", np.zeros((9, 2000)))
    out = tmp_path / "out" / "nine.flac"
    env = {"DIFFCONV_STREAM_SAMPLES": "1000"} if streamed else None
    r = invoke("smooth", src, out, env=env)
    assert r.exit_code == 1
    assert str(out) in r.stderr and "9 channels" in r.stderr and "FLAC" in r.stderr
    assert "_io." not in r.stderr and "object at 0x" not in r.stderr
    assert listing(tmp_path) == ["nine.wav"]  # no output, no temporary
    assert not (tmp_path / "out").exists()  # nor the directory made for it


def test_failed_write_removes_only_the_empty_directories_it_made(tmp_path):
    info = probe(SAMPLES / "speech_mono16.wav")
    x = read_signal(info)

    def write(dest, fail: bool) -> None:
        with contextlib.ExitStack() as stack:
            if fail:
                stack.enter_context(pytest.raises(RuntimeError, match="stopped"))
            with AtomicWriter(dest, output_spec(dest, info), x.shape, buffered=True) as w:
                w.write(x)
                if fail:
                    raise RuntimeError("stopped")

    (tmp_path / "there").mkdir()
    write(tmp_path / "there" / "new" / "deeper" / "a.wav", fail=True)
    assert list(tmp_path.rglob("*")) == [tmp_path / "there"]  # made: gone; found: kept
    write(tmp_path / "out" / "a.wav", fail=False)
    write(tmp_path / "out" / "b.wav", fail=True)  # the directory holds another output
    assert listing(tmp_path) == ["out/a.wav"]
    write(tmp_path / "two" / "b.wav", fail=True)
    write(tmp_path / "two" / "a.wav", fail=False)  # made again after the failure removed it
    assert listing(tmp_path / "two") == ["a.wav"]


@pytest.mark.parametrize(
    "subtype, extension, expected",
    [
        ("DOUBLE", ".flac", "PCM_24"),
        ("FLOAT", ".flac", "PCM_24"),
        ("PCM_32", ".flac", "PCM_24"),
        ("DOUBLE", ".caf", "DOUBLE"),
        ("FLOAT", ".ogg", "VORBIS"),
        ("PCM_U8", ".flac", "PCM_16"),
    ],
)
def test_subtype_the_output_format_lacks_keeps_the_most_precision(
    tmp_path, subtype, extension, expected
):
    # FLAC has no float or 32-bit subtype; float input used to become 16-bit FLAC (the
    # format's default), throwing away 8 bits that PCM_24 keeps.
    x = 0.5 * np.sin(np.arange(4000) / 9.0)
    src = write_wav(tmp_path / "in.wav", x, subtype=subtype)
    out = tmp_path / f"out{extension}"
    r = invoke("convolve", src, out, "--kernel", SAMPLES / "impulse_response.wav", "--mode",
               "same", "--normalize", "peak")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sf.info(out).subtype == expected


def test_npy_to_flac_is_24_bit(tmp_path, identity):
    np.save(tmp_path / "x.npy", 0.5 * np.sin(np.arange(4000) / 9.0))
    out = tmp_path / "x.flac"
    r = invoke("convolve", tmp_path / "x.npy", out, "--kernel", identity, "--rate", "8000")
    assert r.exit_code == 0, r.output
    assert sf.info(out).subtype == "PCM_24"
    np.testing.assert_allclose(sf.read(out)[0], np.load(tmp_path / "x.npy"), atol=1.01 / 2**24)


@pytest.mark.parametrize(
    "dtype, computed",
    [(">f4", np.float32), (">f8", np.float64), (">i4", np.float64), (np.longdouble, np.float64)],
)
@pytest.mark.parametrize("streamed", [False, True])
def test_big_endian_and_long_double_npy(tmp_path, identity, dtype, computed, streamed):
    # Streaming handed big-endian blocks to torch ("byte order different from the native
    # byte order") and long doubles failed everywhere ("can't convert np.ndarray").
    array = (np.arange(3000) % 17 - 8).astype(dtype)
    np.save(tmp_path / "x.npy", array)
    out = tmp_path / "y.npy"
    env = {"DIFFCONV_STREAM_SAMPLES": "1000", "DIFFCONV_BLOCK_FRAMES": "256"} if streamed else None
    r = invoke("convolve", tmp_path / "x.npy", out, "--kernel", identity, "-v", env=env)
    assert r.exit_code == 0, r.output
    assert ("(streamed)" in r.stderr) == streamed
    got = np.load(out)
    assert got.dtype == computed and got.dtype.isnative
    np.testing.assert_array_equal(got, array.astype(computed))


def test_a_fractional_rate_rounded_into_audio_headers_is_noted(tmp_path):
    # WAV headers hold whole rates: the header says 8000 where the filter used 8000.5, which
    # is said, not left for the user to discover.
    np.save(tmp_path / "a.npy", np.zeros(64, dtype=np.float32))
    np.zeros(64, dtype=np.float32).tofile(tmp_path / "b.raw")
    runs = {
        ("a.npy", "a.wav", "--rate", "8000.5"): True,
        ("b.raw", "b.wav", "--rate", "8000.5", "--raw-subtype", "FLOAT"): True,
        ("a.npy", "c.wav", "--rate", "8000"): False,  # a whole rate
        ("a.npy", "c.npy", "--rate", "8000.5"): False,  # no header
        ("b.raw", "c.raw", "--rate", "8000.5", "--raw-subtype", "FLOAT"): False,  # none
        ("a.npy", "d.wav", "--rate", "8000.5", "--quiet"): False,
    }
    for (source, dest, *options), noted in runs.items():
        r = invoke("smooth", tmp_path / source, tmp_path / dest, *options)
        assert r.exit_code == 0, r.output
        assert r.stderr.count("note:") == noted, (source, dest, r.stderr)
        if noted:
            assert f"{tmp_path / dest} will say 8000 Hz" in r.stderr
            assert "processed at 8000.5 Hz" in r.stderr
            assert sf.info(tmp_path / dest).samplerate == 8000


@pytest.mark.parametrize("rate", ["44100.25", "8000.0000001"])
def test_the_rounded_rate_note_says_the_rate_as_given(tmp_path, rate):
    # Six significant digits made 44100.25 "44100.2", and 8000.0000001 a note that 8000 Hz
    # will be written as 8000 Hz.
    np.save(tmp_path / "a.npy", np.zeros(64, dtype=np.float32))
    r = invoke("smooth", tmp_path / "a.npy", tmp_path / "a.wav", "--rate", rate)
    assert r.exit_code == 0, r.output
    assert f"--rate {rate}:" in r.stderr
    assert f"processed at {rate} Hz" in r.stderr


def test_a_rate_that_rounds_to_zero_in_an_audio_header_is_a_usage_error(tmp_path):
    # libsndfile refuses a 0 Hz header ("SF_INFO struct incomplete") after the work is done.
    np.save(tmp_path / "a.npy", np.zeros(64, dtype=np.float32))
    for rate in ("0.4", "0.5"):
        r = invoke("smooth", tmp_path / "a.npy", tmp_path / "a.wav", "--rate", rate)
        assert r.exit_code == 2, r.output
        assert f"{rate} Hz rounds to 0" in r.stderr and "a.wav" in r.stderr
        assert not (tmp_path / "a.wav").exists()
    r = invoke("smooth", tmp_path / "a.npy", tmp_path / "a.npy.out.npy", "--rate", "0.4")
    assert r.exit_code == 0, r.output  # .npy stores no rate
    r = invoke("smooth", tmp_path / "a.npy", tmp_path / "b.wav", "--rate", "0.6")
    assert r.exit_code == 0, r.output
    assert sf.info(tmp_path / "b.wav").samplerate == 1


def test_npy_headers_that_promise_more_than_the_file_holds_are_refused_up_front(tmp_path):
    # info listed such files as sound; converting one blamed the output ("No space left on
    # device", a memmap of the 8 TB the header claimed); a short file failed only late.
    data = np.random.default_rng(0).standard_normal((2, 1000)).astype(np.float32)
    np.save(tmp_path / "ok.npy", data)
    whole = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(whole[:-100])
    with open(tmp_path / "huge.npy", "wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (2, 10**12)}
        np.lib.format.write_array_header_1_0(f, header)
        f.write(bytes(4000))
    version9 = bytearray(whole)
    version9[6] = 9
    (tmp_path / "v9.npy").write_bytes(bytes(version9))
    r = invoke("info", tmp_path / "ok.npy", tmp_path / "short.npy", tmp_path / "huge.npy",
               tmp_path / "v9.npy")  # fmt: skip
    assert r.exit_code == 1
    assert "ok.npy: shape (2, 1000), float32" in r.stdout
    said = "truncated .npy: its header promises 8,000 bytes of samples, the file holds 7,900"
    assert f"short.npy: {said}" in r.stderr
    assert "huge.npy: truncated .npy: its header promises 8,000,000,000,000 bytes" in r.stderr
    assert "v9.npy: not a valid .npy file (unsupported .npy format version 9.0)" in r.stderr
    r = invoke("smooth", tmp_path / "huge.npy", tmp_path / "out.npy")
    assert r.exit_code == 1 and "huge.npy: truncated .npy" in r.stderr
    assert not (tmp_path / "out.npy").exists()


def test_info_prints_every_digit_of_a_rate(tmp_path):
    for rate in (1234567, 2822400, 11025):
        sf.write(tmp_path / f"r{rate}.wav", np.zeros(10), rate)
        r = invoke("info", tmp_path / f"r{rate}.wav")
        assert f", {rate} Hz, " in r.stdout, r.stdout


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("name", ["out.wav", "out.npy"])
def test_overwrite_refuses_to_replace_a_fifo_or_a_device(tmp_path, streamed, name):
    # The rename would swap the pipe (or /dev/null behind a link) for a plain file, and the
    # reader would get nothing.
    fifo = tmp_path / ("fifo_" + name)
    os.mkfifo(fifo)
    link = tmp_path / ("link_" + name)
    link.symlink_to(fifo.name)
    cases = [(fifo, "a FIFO"), (link, "a FIFO")]
    device = tmp_path / ("null_" + name)
    with contextlib.suppress(PermissionError):  # a device of our own (not /dev/null) as root
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        cases.append((device, "a device"))
    env = {"DIFFCONV_STREAM_SAMPLES": "1000"} if streamed else None
    src = SAMPLES / "speech_mono16.wav"
    for dest, kind in cases:
        r = invoke("smooth", src, dest, "--overwrite", env=env)
        assert r.exit_code == 1
        assert f"{dest}: is {kind}, not a regular file; write to - and redirect" in r.stderr
        assert not dest.resolve().is_file()
    assert link.is_symlink() and listing(tmp_path) == []


def test_info_describes_the_files_around_an_unreadable_one(tmp_path, monkeypatch):
    # click.Path's readable check made one unreadable FILE a usage error (exit 2) that
    # described none of the others. (os.access is what that check asks; as root it says yes.)
    wav, npy = SAMPLES / "speech_mono16.wav", SAMPLES / "sensor_gaps.npy"
    locked = tmp_path / "locked.wav"
    shutil.copy(wav, locked)
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: p != str(locked) and access(p, m, **k))
    r = invoke("info", wav, locked, npy)
    assert r.exit_code != 2, r.output
    names = [line.split(":")[0] for line in r.stdout.splitlines()]
    assert str(wav) in names and str(npy) in names


def test_an_unreadable_input_says_permission_denied(tmp_path):
    # libsndfile's reason was "System error"; the other files are still described.
    wav, npy = SAMPLES / "speech_mono16.wav", SAMPLES / "sensor_gaps.npy"
    locked = tmp_path / "locked.wav"
    shutil.copy(wav, locked)
    locked.chmod(0)
    command = [*without_root_overrides(), sys.executable, "-m", "cli", "info", wav, locked, npy]
    r = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"error: {locked}: cannot read (Permission denied)" in r.stderr
    assert [line.split(":")[0] for line in r.stdout.splitlines()] == [str(wav), str(npy)]


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS names must be UTF-8")
@pytest.mark.parametrize("streamed", [False, True])
def test_names_that_are_not_utf8_can_be_read(tmp_path, streamed):
    # soundfile encodes a str path strictly: b"bad\xff.wav" (legal on POSIX) ended in a
    # UnicodeEncodeError traceback in info and in `smooth X -`.
    wav = tmp_path / os.fsdecode(b"bad\xff.wav")
    shutil.copy(SAMPLES / "speech_mono16.wav", wav)
    env = {**os.environ, "DIFFCONV_STREAM_SAMPLES": "1000"} if streamed else None
    out = tmp_path / os.fsdecode(b"out\xff.wav")
    for args in (["info", wav], ["smooth", wav, "-"], ["smooth", wav, out]):
        command = [sys.executable, "-m", "cli", *map(os.fsencode, args)]
        r = subprocess.run(command, capture_output=True, cwd=REPO, env=env, timeout=120)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        assert b"Traceback" not in r.stderr
    assert sf.info(os.fsencode(out)).frames == 32000


@pytest.mark.parametrize(
    "fmt, subtype, name", [("MP3", "MPEG_LAYER_III", "in.mp3"), ("OGG", "VORBIS", "in.ogg")]
)
def test_a_lossy_codec_is_not_carried_into_another_format(tmp_path, fmt, subtype, name):
    # sf.check_format says WAV holds MPEG Layer III, which libsndfile cannot encode there
    # ("cannot write WAV/MPEG_LAYER_III"), and RAW's default subtype is None ("subtype None
    # is not valid for RAW"): the decoded samples are written as 16-bit PCM.
    if subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}")
    src = tmp_path / name
    sf.write(src, 0.1 * np.random.default_rng(0).standard_normal((8000, 2)), 16000, subtype=subtype)
    for out in ("out.wav", "out.raw", "out.flac", "same" + src.suffix):
        r = invoke("smooth", src, tmp_path / out)
        assert r.exit_code == 0, r.output
    assert sf.info(tmp_path / "out.wav").subtype == "PCM_16"
    assert (tmp_path / "out.raw").stat().st_size == 8000 * 2 * 2
    assert sf.info(tmp_path / ("same" + src.suffix)).subtype == subtype  # its own format
    r = invoke("smooth", src, "-", "-t", "raw")
    assert r.exit_code == 0 and len(r.stdout_bytes) == 8000 * 2 * 2
