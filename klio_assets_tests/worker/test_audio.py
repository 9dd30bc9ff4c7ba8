"""Decoding, downmixing and resampling on signals with known answers."""

import math
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import soxr

from klio_assets.errors import DecodeError
from klio_assets.worker import audio
from klio_assets_tests.support import synth


def decode_all(path, track_id="t"):
    info = audio.probe(path, track_id=track_id, uri=path)
    decoder = audio.SourceDecoder(path, info, track_id=track_id, uri=path)
    blocks = list(decoder)
    return info, np.concatenate(blocks), decoder.frames


@pytest.mark.parametrize("name", ["wav44", "flac48", "ogg32", "mp3", "wav8k", "m4a"])
def test_probe_and_decode_each_format(catalog_tracks, name):
    track = catalog_tracks[name]
    info, frames, n = decode_all(track.path)
    assert info.sample_rate == track.sample_rate
    assert info.channels == track.channels
    assert frames.shape[1] == track.channels
    # lossless formats decode to the exact length; lossy ones within one codec frame
    tolerance = 0 if name in ("wav44", "flac48", "wav8k") else 2048
    assert abs(n - track.frames) <= tolerance
    expected_decoder = "ffmpeg" if name == "m4a" else "soundfile"
    assert info.decoder == expected_decoder
    mono = frames.mean(axis=1)
    assert synth.dominant_frequency(mono, info.sample_rate) == pytest.approx(track.freq, abs=2.0)


@pytest.mark.parametrize(
    ("frames", "source", "target"),
    [
        (132_317, 44100, 22050),
        (96_001, 48000, 22050),
        (100, 8000, 22050),
        (1, 44100, 22050),
        (7, 192000, 22050),
        (441_000, 44100, 16000),
        (50_000, 22050, 22050),
    ],
)
def test_resampled_length_is_exact(frames, source, target):
    x = np.random.default_rng(0).standard_normal((frames, 2)).astype(np.float32) * 0.1
    blocks = [x[i : i + 4096] for i in range(0, frames, 4096)]
    y = np.concatenate(
        list(audio.convert_blocks(blocks, source_rate=source, target_rate=target, mono=True))
    )
    assert len(y) == math.floor(frames * target / source + 0.5)  # round, halves up (as soxr)
    assert y.shape[1] == 1


def test_block_wise_resampling_equals_whole_file_soxr():
    x = np.random.default_rng(1).standard_normal((100_000, 2)).astype(np.float32) * 0.1
    blocks = [x[i : i + 7000] for i in range(0, len(x), 7000)]
    streamed = np.concatenate(
        list(audio.convert_blocks(blocks, source_rate=44100, target_rate=22050, mono=True))
    )[:, 0]
    whole = soxr.resample((x[:, 0] + x[:, 1]) * 0.5, 44100, 22050, quality="HQ")
    np.testing.assert_array_equal(streamed, whole)


def test_downmix_averages_channels():
    block = np.array([[1.0, 0.0], [0.5, 0.5], [-1.0, 1.0]], np.float32)
    np.testing.assert_allclose(audio.downmix(block), [0.5, 0.5, 0.0])
    surround = np.ones((4, 6), np.float32) * np.arange(6, dtype=np.float32)
    np.testing.assert_allclose(audio.downmix(surround), np.full(4, 2.5))


def test_empty_file_fails_with_plain_reason(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(
        DecodeError, match=r"track 'e': cannot decode .*empty.wav: the file is empty \(0 bytes\)"
    ):
        audio.probe(str(path), track_id="e", uri=str(path))


@pytest.mark.parametrize(
    ("content", "looks_like"),
    [
        (b"just some text\n" * 10, "text"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "a PNG image"),
        (b"%PDF-1.4\n" + bytes(200), "a PDF document"),
    ],
)
def test_non_audio_renamed_mp3_fails_saying_what_it_is(tmp_path, content, looks_like):
    path = tmp_path / "song.mp3"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=f"not audio: the file looks like {looks_like}"):
        audio.probe(str(path), track_id="song", uri=str(path))


def test_truncated_wav_is_detected(tmp_path):
    path = synth.write(str(tmp_path / "full.wav"), synth.sine(440, 2.0, 44100), 44100)
    data = open(path, "rb").read()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 3])  # header still announces 2 s
    info = audio.probe(str(cut), track_id="cut", uri=str(cut))
    with pytest.raises(DecodeError, match=r"truncated: audio stops after 0\.6"):
        list(audio.SourceDecoder(str(cut), info, track_id="cut", uri=str(cut)))


def test_nan_samples_in_float_wav_are_reported_with_their_time(tmp_path):
    frames = synth.sine(440, 1.0, 8000, channels=1)
    frames[4000, 0] = np.nan
    path = synth.write(str(tmp_path / "nan.wav"), frames, 8000, subtype="FLOAT")
    info = audio.probe(path, track_id="nan", uri=path)
    with pytest.raises(DecodeError, match=r"NaN or infinite samples at 0\.50 s"):
        list(audio.SourceDecoder(path, info, track_id="nan", uri=path))


def test_header_over_the_channel_limit_is_refused_before_decoding(tmp_path):
    path = synth.write(str(tmp_path / "eight.wav"), synth.sine(440, 0.1, 8000, channels=8), 8000)
    with pytest.raises(DecodeError, match="8 channels exceeds the limit of 4"):
        audio.probe(path, track_id="eight", uri=path, limits=audio.DecodeLimits(max_channels=4))


def test_m4a_without_ffmpeg_names_the_fix(catalog_tracks, monkeypatch):
    monkeypatch.setattr(audio, "ffmpeg_available", lambda: False)
    path = catalog_tracks["m4a"].path
    with pytest.raises(
        DecodeError, match=r"need ffmpeg, which is not installed \(apt-get install ffmpeg\)"
    ):
        audio.probe(path, track_id="m4a", uri=path)


def test_write_audio_clips_overshoot_and_writes_block_wise(tmp_path):
    loud = np.full((70_000, 1), 1.5, np.float32)
    path = str(tmp_path / "x.flac")
    n = audio.write_audio(path, [loud[:40_000], loud[40_000:]], sample_rate=22050, channels=1)
    y, sr = sf.read(path, dtype="float32")
    assert n == 70_000 and sr == 22050
    assert y.max() <= 1.0 and y.max() > 0.99


def test_long_ogg_is_written_without_crashing(tmp_path):
    # one-shot writes of >= 50 s stereo Vorbis overflow libvorbis' stack; ours are block-wise
    frames = synth.sine(220, 60.0, 44100)
    path = str(tmp_path / "long.ogg")
    audio.write_audio(
        path,
        (frames[i : i + 65536] for i in range(0, len(frames), 65536)),
        sample_rate=44100,
        channels=2,
        format="OGG",
        subtype="VORBIS",
    )
    assert sf.info(path).duration == pytest.approx(60.0, abs=0.05)


def test_ffmpeg_fallback_decoder_reads_what_soundfile_reads(catalog_tracks):
    path = catalog_tracks["flac48"].path
    info = audio.probe(path, track_id="f", uri=path)
    assert shutil.which("ffmpeg")
    via_ffmpeg = audio.SourceInfo(**{**info.to_dict(), "decoder": "ffmpeg"})
    a = np.concatenate(list(audio.SourceDecoder(path, info, track_id="f", uri=path)))
    b = np.concatenate(list(audio.SourceDecoder(path, via_ffmpeg, track_id="f", uri=path)))
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert os.path.exists(path)


def test_resampled_blocks_are_bounded_whatever_the_rate_ratio():
    """A low source rate must not turn one decoded block into a huge resampled one (a header
    saying 1 Hz once asked soxr for 1.4e9 frames per block)."""
    source = [np.zeros((audio.BLOCK_FRAMES, 1), np.float32)] * 2
    out = list(audio.convert_blocks(source, source_rate=1000, target_rate=192000, mono=False))
    assert max(len(b) for b in out) <= audio.MAX_RESAMPLED_BLOCK
    assert sum(len(b) for b in out) == audio.exact_length(2 * audio.BLOCK_FRAMES, 1000, 192000)


@pytest.mark.parametrize(("channels", "frames"), [(1, 262144), (2, 262144), (8, 65536)])
def test_sources_decode_in_big_blocks_bounded_by_their_channels(tmp_path, channels, frames):
    """Big blocks (fewer trips through Python per second of audio, issue 15), at most 2 MiB
    a block up to stereo and at least a quarter of it for many channels."""
    path = str(tmp_path / f"c{channels}.wav")
    sf.write(path, np.zeros((300_000, channels), np.float32), 44100, subtype="PCM_16")
    info = audio.probe(path, track_id="t", uri=path, limits=audio.DecodeLimits())
    blocks = list(audio.SourceDecoder(path, info, track_id="t", uri=path))
    assert [len(b) for b in blocks] == [frames] * (300_000 // frames) + [300_000 % frames]
    assert audio.block_frames_for(channels) == frames
