"""Containers and subtypes an output keeps, and the limits of formats that cannot say no."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from cli.errors import FileProblem
from cli.writing import AtomicWriter, OutputSpec, sized_container
from tests.cli.conftest import invoke, listing, run_diffconv


@pytest.mark.parametrize(
    ("container", "subtype", "channels"),
    [("RF64", "PCM_24", 2), ("WAVEX", "PCM_16", 6), ("W64", "FLOAT", 1)],
)
def test_the_other_riff_containers_named_wav_stay_what_they_were(
    tmp_path, identity, container, subtype, channels
):
    # A .wav output meant plain WAV, so an RF64 input (the EBU convention for long .wav
    # files), an extensible one (channel masks) or a Wave64 one came out as something else.
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (300, channels))
    sf.write(tmp_path / "in.wav", data, 8000, format=container, subtype=subtype)
    r = invoke("convolve", tmp_path / "in.wav", tmp_path / "out.wav", "--kernel", identity)
    assert r.exit_code == 0, r.stderr
    info = sf.info(tmp_path / "out.wav")
    assert (info.format, info.subtype, info.channels) == (container, subtype, channels)
    expected = sf.read(tmp_path / "in.wav")[0]
    np.testing.assert_array_equal(sf.read(tmp_path / "out.wav")[0], expected)


def alac(tmp_path, bits: int):
    codes = np.random.default_rng(bits).integers(-(2**31), 2**31 - 1, (500, 2), np.int64)
    codes = (codes >> (32 - bits) << (32 - bits)).astype(np.int32)
    codes[0] = [-(2**31), (2**31 - 1) >> (32 - bits) << (32 - bits)]  # both extremes
    path = tmp_path / f"alac{bits}.caf"
    sf.write(path, codes, 44100, format="CAF", subtype=f"ALAC_{bits}")
    return path


@pytest.mark.parametrize(
    ("bits", "wav", "flac"), [(24, "PCM_24", "PCM_24"), (32, "PCM_32", "PCM_24")]
)
def test_alac_keeps_its_bits_in_other_formats_and_round_trips_exactly(
    tmp_path, identity, bits, wav, flac
):
    # ALAC was not on the precision ladder: to .wav or .flac it fell to the formats' default
    # 16 bits. And 32-bit ALAC was computed in float32, so even an identity kernel changed
    # half of its samples (by up to 64 codes).
    source = alac(tmp_path, bits)
    codes = sf.read(source, dtype="int32")[0]
    for name, subtype in [("out.caf", f"ALAC_{bits}"), ("out.wav", wav), ("out.flac", flac)]:
        r = invoke("convolve", source, tmp_path / name, "--kernel", identity)
        assert r.exit_code == 0, r.stderr
        assert sf.info(tmp_path / name).subtype == subtype
        if name != "out.flac" or bits == 24:
            np.testing.assert_array_equal(sf.read(tmp_path / name, dtype="int32")[0], codes)


@pytest.mark.parametrize("bits", [16, 20, 24, 32])
def test_alac_is_written_to_the_nearest_code(tmp_path, identity, bits):
    # libsndfile floors floats written as ALAC: every sample was biased by half a step (a
    # value 0.6 codes above a step came out a step below the nearest), as PCM once was.
    steps = np.arange(-100, 100) + 0.6
    np.save(tmp_path / "in.npy", (steps / 2 ** (bits - 1))[None])
    out = tmp_path / "out.caf"
    r = invoke("convolve", tmp_path / "in.npy", out, "--kernel", identity, "--rate", "44100",
               "--subtype", f"ALAC_{bits}")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    codes = sf.read(out, dtype="int32")[0] >> (32 - bits)
    np.testing.assert_array_equal(codes, np.rint(steps))


@pytest.mark.parametrize(("rate", "channels"), [(384_000, 1), (8_000, 256)])
def test_ogg_vorbis_beyond_its_limits_is_refused_not_a_crash(tmp_path, identity, rate, channels):
    # libvorbis ended the whole process with SIGSEGV above 200 kHz or 255 channels, leaving
    # a temporary file and no message.
    sf.write(tmp_path / "in.wav", np.zeros((100, channels)), rate, subtype="FLOAT")
    r = invoke("convolve", tmp_path / "in.wav", tmp_path / "out.ogg", "--kernel", identity)
    assert r.exit_code == 1
    said = f"out.ogg: Ogg Vorbis holds at most 255 channels at up to 200000 Hz; this is {channels}"
    assert said in r.stderr
    assert listing(tmp_path) == ["identity.npy", "in.wav"]


def test_ogg_vorbis_at_its_limits_is_written(tmp_path, identity):
    sf.write(tmp_path / "in.wav", np.zeros((100, 255)), 200_000, subtype="FLOAT")
    r = invoke("convolve", tmp_path / "in.wav", tmp_path / "out.ogg", "--kernel", identity)
    assert r.exit_code == 0, r.stderr
    info = sf.info(tmp_path / "out.ogg")
    assert (info.samplerate, info.channels) == (200_000, 255)


def test_a_wav_past_4_gib_is_written_as_rf64(tmp_path):
    # libsndfile wrote such a file with a header whose 32-bit sizes hid everything past
    # 4 GiB (the command said it succeeded). RF64 is the .wav that holds it.
    spec = OutputSpec("audio", "WAV", "DOUBLE", rate=48000.0)
    limit_frames = (2**32 - 2**16) // 8
    assert sized_container(spec, (1, limit_frames), "x.wav").format == "WAV"
    assert sized_container(spec, (1, limit_frames + 1), "x.wav").format == "RF64"
    pcm16 = OutputSpec("audio", "WAVEX", "PCM_16", rate=48000.0)
    assert sized_container(pcm16, (2, limit_frames * 2), "x.wav").format == "WAVEX"
    assert sized_container(pcm16, (2, limit_frames * 2 + 1), "x.wav").format == "RF64"
    # The writer applies it before the header is made (nothing written here: a header only).
    with AtomicWriter(tmp_path / "long.wav", spec, (1, limit_frames + 1)) as writer:
        writer.write(np.zeros((1, 10)))
    assert sf.info(tmp_path / "long.wav").format == "RF64"
    assert sf.read(tmp_path / "long.wav")[0].shape == (10,)


@pytest.mark.parametrize("container", ["AIFF", "AU"])
def test_past_4_gib_formats_without_a_64_bit_variant_are_refused(container):
    spec = OutputSpec("audio", container, "PCM_16", rate=48000.0)
    with pytest.raises(FileProblem, match="more than .* 4 GiB size fields can describe"):
        sized_container(spec, (2, 2**30), "x")
    assert sized_container(spec, (2, 2**29), "x") == spec


def test_a_long_ogg_vorbis_result_written_in_one_piece_does_not_crash(tmp_path):
    # Results that fit in memory were handed to libsndfile in one call, and its Vorbis
    # encoder takes stack space in proportion: 3 million frames ended the process (SIGSEGV,
    # a temporary left, the rest of the batch lost). In a subprocess, so a crash is a failure.
    source = tmp_path / "long.wav"
    noise = 0.1 * np.random.default_rng(0).standard_normal(3_000_000)
    sf.write(source, noise, 48000, subtype="PCM_16")
    env = dict(os.environ, DIFFCONV_STREAM_SAMPLES=str(10**9))  # in memory, whole
    r = run_diffconv("smooth", source, tmp_path / "long.ogg", "--length", "3", env=env)
    assert r.returncode == 0, r.stderr
    assert sf.info(tmp_path / "long.ogg").frames == 3_000_000
    assert listing(tmp_path) == ["long.ogg", "long.wav"]


@pytest.mark.parametrize(("container", "ext"), [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg")])
def test_text_tags_are_carried_to_the_output(tmp_path, container, ext):
    # Titles, artists and comments were dropped; sox and ffmpeg carry them over.
    tags = {"title": "A title", "artist": "Someone", "comment": "a note", "date": "2026"}
    source = tmp_path / f"in.{ext}"
    with sf.SoundFile(source, "w", 8000, 1, format=container) as f:
        for key, value in tags.items():
            setattr(f, key, value)
        f.write(np.zeros(4000))
    streamed = {"DIFFCONV_STREAM_SAMPLES": "100", "DIFFCONV_BLOCK_FRAMES": "333"}
    for env, out in [(None, f"out.{ext}"), (streamed, f"streamed.{ext}"), (None, "other.flac")]:
        r = invoke("smooth", source, tmp_path / out, env=env)
        assert r.exit_code == 0, r.stderr
        assert sf.SoundFile(tmp_path / out).copy_metadata() == tags, out


def test_compressed_subtypes_are_sized_by_their_own_bits():
    # IMA ADPCM takes 4 bits a sample: 5 billion samples (2.3 GiB) fit a plain WAV, where a
    # byte a sample refused them and suggested .rf64, which cannot hold IMA ADPCM at all.
    spec = OutputSpec("audio", "WAV", "IMA_ADPCM", rate=8000.0)
    assert sized_container(spec, (1, 5_000_000_000), "x.wav") == spec
    with pytest.raises(FileProblem, match="4.2 GiB of IMA_ADPCM .* write .w64 instead"):
        sized_container(spec, (1, 9_000_000_000), "x.wav")


@pytest.mark.parametrize("subtype", ["PCM_S8", "PCM_U8", "ULAW", "ALAW", "PCM_16"])
@pytest.mark.parametrize("frames", [2091, 2092])
def test_a_mono_aiff_of_one_byte_samples_keeps_its_frame_count(tmp_path, identity, subtype, frames):
    # libsndfile counts the pad byte of an odd sample chunk as one more frame: 2,091 frames
    # came back as 2,092, the last a zero, streamed to a file or written to stdout.
    source = tmp_path / "in.wav"
    samples = np.random.default_rng(frames).uniform(-0.9, 0.9, frames)
    sf.write(source, samples, 16000, subtype="PCM_16")
    out = tmp_path / "out.aiff"
    r = invoke("convolve", source, out, "--kernel", identity, "--subtype", subtype)
    assert r.exit_code == 0, r.output
    args = ["convolve", source, "-", "--kernel", identity, "-t", "aiff", "--subtype", subtype]
    piped = subprocess.run(
        [sys.executable, "-m", "cli", *map(str, args)], capture_output=True, timeout=120
    )
    assert piped.returncode == 0, piped.stderr
    (tmp_path / "piped.aiff").write_bytes(piped.stdout)
    expected, _ = sf.read(source)
    # one code of 8-bit PCM or 16-bit; companded codes are coarser near full scale
    atol = {"PCM_16": 2.0**-15, "ULAW": 0.06, "ALAW": 0.06}.get(subtype, 2.0**-7)
    for path in (out, tmp_path / "piped.aiff"):
        got, _ = sf.read(path)
        assert got.shape == (frames,), path.name
        np.testing.assert_allclose(got, expected, atol=atol)
