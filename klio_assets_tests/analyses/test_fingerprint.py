"""The ``fingerprint`` analysis and the duplicate matcher (:mod:`klio_assets.catalog.duplicates`).

On real music: excerpts of seven orchestral tracks by one composer (``battle`` and
``battle-epic`` among them), each
transcoded the ways a catalog receives one master (MP3, Opus, AAC, other sample rates and bit
depths), plus spoken prompts. Every variant must land in its original's group and no two
originals may share one. The matcher's own behaviour (incremental adds, merges, idempotence,
silence and short tracks) is checked on synthetic fingerprints with known answers.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from klio_assets.analyses.fingerprint import (
    FINGERPRINT_RATE,
    ITEM_SECONDS,
    FingerprintParams,
    fingerprint,
)
from klio_assets.catalog import duplicates
from klio_assets.catalog.duplicates import (
    MATCH_BER,
    SILENCE_ITEM,
    FingerprintIndex,
    FingerprintItem,
    bit_error_rate,
)
from klio_assets.errors import CatalogError, DecodeError, ParameterError, TrackError
from klio_assets.worker import audio as audio_io
from klio_assets.worker.analysis import AudioStream, TrackContext
from klio_assets_tests.support.postgres import running_postgres
from klio_assets_tests.support.realmusic import real_music_tracks, real_speech_clips

#: Seconds of each real track used (keeps the module well under a minute on 2 cores).
EXCERPT_S = 40
#: How a catalog receives one master: name, extension, ffmpeg options.
VARIANTS = [
    ("mp3-128k", "mp3", ["-c:a", "libmp3lame", "-b:a", "128k"]),
    ("opus-96k", "opus", ["-c:a", "libopus", "-b:a", "96k"]),
    ("aac-128k", "m4a", ["-c:a", "aac", "-b:a", "128k"]),
    ("wav-22k", "wav", ["-ar", "22050"]),
    ("wav-48k", "wav", ["-ar", "48000"]),
    ("flac-24bit-96k", "flac", ["-ar", "96000", "-sample_fmt", "s32"]),
]
_FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


def _stream(path: str | os.PathLike[str], track_id: str = "t") -> AudioStream:
    """The stream the engine would hand ``fingerprint``: the project's decoder, mono, 11025 Hz."""
    info = audio_io.probe(str(path), track_id=track_id, uri=str(path))
    decoder = audio_io.SourceDecoder(str(path), info, track_id=track_id, uri=str(path))
    blocks = audio_io.convert_blocks(
        iter(decoder), source_rate=info.sample_rate, target_rate=FINGERPRINT_RATE, mono=True
    )
    return AudioStream(blocks, sample_rate=FINGERPRINT_RATE, channels=1)


def _fingerprint_file(path: Path, track_id: str, **params) -> dict:
    return fingerprint.fn(
        audio=_stream(path, track_id),
        params=FingerprintParams(**params),
        track=TrackContext(track_id=track_id, uri=str(path)),
    )


def _synthetic_stream(samples: np.ndarray, block: int = 16384) -> AudioStream:
    blocks = (
        samples[i : i + block, None].astype(np.float32) for i in range(0, len(samples), block)
    )
    return AudioStream(blocks, sample_rate=FINGERPRINT_RATE, channels=1)


def _track(track_id: str = "synthetic") -> TrackContext:
    return TrackContext(track_id=track_id, uri=f"/audio/{track_id}.wav")


def _partition(frame) -> set[frozenset[str]]:
    return {frozenset(g.track_id) for _, g in frame.groupby("duplicate_group")}


# -- the real-music corpus -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_corpus(tmp_path_factory) -> dict:
    """Fingerprints of originals, their transcodes and speech clips.

    Returns ``{"items": {track_id: FingerprintItem}, "original": {track_id: original_id},
    "docs": {track_id: analysis output}, "music": [...], "speech": [...], "short": [...]}``;
    an original maps to itself, a speech clip too; the last three list originals.
    """
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is needed to build transcoded variants (apt-get install ffmpeg)")
    out = tmp_path_factory.mktemp("variants")
    jobs: list[tuple[str, str, list[str]]] = []  # (track_id, original_id, ffmpeg command)
    music = real_music_tracks(7, min_duration_s=EXCERPT_S + 5)
    for source in music:
        original = source.stem
        master = out / f"{original}.flac"  # the master: 44.1 kHz, 16 bits, stereo
        subprocess.run(
            [*_FFMPEG, "-i", str(source), "-t", str(EXCERPT_S), "-c:a", "flac", str(master)],
            check=True,
        )
        jobs.append((original, original, []))
        for name, ext, options in VARIANTS:
            target = out / f"{original}--{name}.{ext}"
            jobs.append(
                (target.stem, original, [*_FFMPEG, "-i", str(master), *options, str(target)])
            )
    # Long enough to compare (> ~5 s) and some too short to (< 3 s): both must stay alone.
    speech = real_speech_clips(3, min_duration_s=5.0)
    short = real_speech_clips(2, max_duration_s=2.5)
    for clip in speech + short:
        shutil.copyfile(clip, out / clip.name)
        jobs.append((clip.stem, clip.stem, []))

    def run(job: tuple[str, str, list[str]]) -> tuple[str, dict]:
        track_id, _, command = job
        if command:
            subprocess.run(command, check=True)
            path = Path(command[-1])
        else:
            path = next(out.glob(f"{track_id}.*"))
        return track_id, _fingerprint_file(path, track_id)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        docs = dict(pool.map(run, jobs))
    return {
        "docs": docs,
        "items": {t: FingerprintItem.from_result(t, d) for t, d in docs.items()},
        "original": {track_id: original for track_id, original, _ in jobs},
        "music": [p.stem for p in music],
        "speech": [p.stem for p in speech + short],
        "short": [p.stem for p in short],
    }


def test_fingerprint_of_real_music_has_chromaprint_layout(real_corpus):
    docs = real_corpus["docs"]
    doc = docs[f"{real_corpus['music'][0]}--mp3-128k"]
    assert doc["algorithm"] == "chromaprint-2" and doc["fpcalc_version"] != "unknown"
    assert doc["duration_s"] == pytest.approx(EXCERPT_S, abs=0.05)
    assert doc["fingerprint_duration_s"] == pytest.approx(EXCERPT_S, abs=0.05)  # under length_s
    # Chromaprint's first item needs ~2.6 s, then one item per 4096/3 samples.
    expected = (EXCERPT_S - 2.6) / ITEM_SECONDS
    assert (
        abs(doc["fingerprint_items"] - expected) <= 3
        and len(doc["fingerprint"]) == doc["fingerprint_items"]
    )
    assert all(isinstance(v, int) and 0 <= v < 2**32 for v in doc["fingerprint"])
    assert len(set(doc["fingerprint"])) > 0.8 * len(doc["fingerprint"])  # music: few repeats


def test_every_transcode_lands_in_its_originals_group_and_songs_never_share_one(
    real_corpus, tmp_path
):
    items, original = real_corpus["items"], real_corpus["original"]
    index = FingerprintIndex(sa.create_engine(f"sqlite:///{tmp_path / 'catalog.db'}"))
    index.ensure_tables()
    originals = [t for t in items if original[t] == t]
    variants = [t for t in items if original[t] != t]
    # Originals arrive first, transcodes later and in two batches: incremental matching.
    first = index.add(items[t] for t in originals)
    assert first == {t: t for t in originals}  # nothing alike among different recordings
    index.add(items[t] for t in variants[::2])
    index.add(items[t] for t in variants[1::2])
    groups = index.groups().set_index("track_id")
    wrong = {
        t: groups.loc[t, "duplicate_group"]
        for t in variants
        if groups.loc[t, "duplicate_group"] != original[t]
    }
    assert not wrong, f"transcodes outside their original's group: {wrong}"
    assert groups.loc[originals, "duplicate_group"].is_unique
    music, speech = real_corpus["music"], real_corpus["speech"]
    assert sorted(originals) == sorted(music + speech)
    assert (groups.loc[music, "group_size"] == 1 + len(VARIANTS)).all()
    assert (groups.loc[speech, "group_size"] == 1).all()
    assert not groups.loc[real_corpus["short"], "matchable"].any()  # < 3 s: alone on purpose
    assert groups.loc[music, "matchable"].all()


def test_grouping_does_not_depend_on_arrival_order(real_corpus, tmp_path):
    items = real_corpus["items"]
    reference = FingerprintIndex(sa.create_engine("sqlite://"))
    reference.ensure_tables()
    reference.add(items.values())
    shuffled = FingerprintIndex(sa.create_engine(f"sqlite:///{tmp_path / 'shuffled.db'}"))
    shuffled.ensure_tables()
    order = list(items)
    np.random.default_rng(7).shuffle(order)
    for start in range(0, len(order), 5):  # transcodes often before their original
        shuffled.add(items[t] for t in order[start : start + 5])
    assert _partition(shuffled.groups()) == _partition(reference.groups())


def test_bit_error_rate_separates_transcodes_from_other_recordings(real_corpus):
    items, original = real_corpus["items"], real_corpus["original"]
    prints = {
        t: np.asarray(i.fingerprint, np.uint32)[: duplicates.STORED_ITEMS] for t, i in items.items()
    }
    prints = {t: p for t, p in prints.items() if (p != SILENCE_ITEM).sum() >= duplicates.MIN_ITEMS}
    same, different = [], []
    for a, b in itertools.combinations(sorted(prints), 2):
        ber, _ = bit_error_rate(prints[a], prints[b])
        (same if original[a] == original[b] else different).append((ber, a, b))
    worst_same, best_different = max(same), min(different)
    print(f"worst transcode pair {worst_same}, closest different recordings {best_different}")
    assert worst_same[0] < MATCH_BER / 2, worst_same
    assert best_different[0] > MATCH_BER + 0.1, best_different


# -- the analysis function ------------------------------------------------------------------------


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Band-limited noise with a moving spectrum: fingerprints as varied as music."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FINGERPRINT_RATE)
    t = np.arange(n) / FINGERPRINT_RATE
    tones = sum(
        np.sin(2 * np.pi * f * t + 40 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t))
        for f in rng.uniform(110, 1760, 6)
    )
    return (0.1 * tones + 0.02 * rng.standard_normal(n)).astype(np.float32)


def test_fingerprint_stops_feeding_after_length_s_but_drains_the_stream():
    samples = _noise(30)
    stream = _synthetic_stream(samples)
    doc = fingerprint.fn(audio=stream, params=FingerprintParams(length_s=10), track=_track())
    assert stream.frames == len(samples)  # drained: shared decodes never wait, duration is whole
    assert doc["duration_s"] == pytest.approx(30) and doc[
        "fingerprint_duration_s"
    ] == pytest.approx(10)
    full = fingerprint.fn(
        audio=_synthetic_stream(samples), params=FingerprintParams(), track=_track()
    )
    assert full["fingerprint_items"] > 2.5 * doc["fingerprint_items"]
    n = doc["fingerprint_items"] - 2  # the last items see the cut
    assert doc["fingerprint"][:n] == full["fingerprint"][:n]


def test_fingerprint_of_a_track_too_short_to_fingerprint_is_empty():
    doc = fingerprint.fn(
        audio=_synthetic_stream(_noise(1.5)), params=FingerprintParams(), track=_track()
    )
    assert doc["fingerprint"] == [] and doc["fingerprint_items"] == 0
    assert doc["duration_s"] == pytest.approx(1.5, abs=1e-3)


def test_fingerprint_of_digital_silence_is_chromaprints_silence_value():
    silent = np.zeros(20 * FINGERPRINT_RATE, np.float32)
    doc = fingerprint.fn(
        audio=_synthetic_stream(silent), params=FingerprintParams(), track=_track()
    )
    assert doc["fingerprint_items"] > 100 and set(doc["fingerprint"]) == {SILENCE_ITEM}


def test_fingerprint_without_fpcalc_names_the_track_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        TrackError, match=r"track 'a1b2': /audio/a1b2.wav: .*fpcalc not found.*libchromaprint-tools"
    ):
        fingerprint.fn(
            audio=_synthetic_stream(_noise(5)), params=FingerprintParams(), track=_track("a1b2")
        )


def test_fingerprint_reports_what_a_failing_fpcalc_said(monkeypatch, tmp_path):
    fake = tmp_path / "fpcalc"
    fake.write_text("#!/bin/sh\necho 'ERROR: could not open the stream' >&2\nexit 2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(
        TrackError, match=r"track 'a1b2': .*fpcalc failed: ERROR: could not open the stream"
    ):
        fingerprint.fn(
            audio=_synthetic_stream(_noise(20)), params=FingerprintParams(), track=_track("a1b2")
        )


def test_decode_error_mid_stream_fails_the_track_and_stops_fpcalc():
    def blocks():
        yield _noise(5)[:, None]
        raise DecodeError("a1b2", "/audio/a1b2.mp3", "the file is truncated")

    stream = AudioStream(blocks(), sample_rate=FINGERPRINT_RATE, channels=1)
    with pytest.raises(DecodeError, match="truncated"):
        fingerprint.fn(audio=stream, params=FingerprintParams(), track=_track("a1b2"))


def test_fingerprint_refuses_audio_it_was_not_declared_for():
    stream = AudioStream(
        iter([np.zeros((10, 2), np.float32)]), sample_rate=FINGERPRINT_RATE, channels=2
    )
    with pytest.raises(TrackError, match="needs mono 11025 Hz audio, got 2 channel"):
        fingerprint.fn(audio=stream, params=FingerprintParams(), track=_track())


def test_fingerprint_declares_a_cheap_mono_11025_hz_stream():
    (spec,) = fingerprint.inputs.values()
    assert (spec.sample_rate, spec.mono, spec.stream) == (FINGERPRINT_RATE, True, True)
    assert fingerprint.name == "fingerprint" and fingerprint.output.kind == "json"
    with pytest.raises(ParameterError):
        fingerprint.params({"length_s": 0})


# -- the matcher, on synthetic fingerprints -------------------------------------------------------

_RNG = np.random.default_rng(2024)


def _random_print(items: int = 400) -> np.ndarray:
    return _RNG.integers(0, 2**32, items, dtype=np.uint64).astype(np.uint32)


def _transcode(fp: np.ndarray, changed: float = 0.3, bits: int = 3) -> np.ndarray:
    """``fp`` with ``bits`` random bits flipped in a fraction ``changed`` of its items (a lossy
    re-encoding: BER ~ changed * bits / 32)."""
    out = fp.copy()
    for i in np.flatnonzero(_RNG.random(len(fp)) < changed):
        for bit in _RNG.choice(32, bits, replace=False):
            out[i] ^= np.uint32(1 << int(bit))
    return out


def _index(tmp_path: Path) -> FingerprintIndex:
    tmp_path.mkdir(parents=True, exist_ok=True)
    index = FingerprintIndex(sa.create_engine(f"sqlite:///{tmp_path / 'catalog.db'}"))
    index.ensure_tables()
    return index


def _groups(index: FingerprintIndex) -> dict[str, str]:
    return dict(zip(index.groups().track_id, index.groups().duplicate_group, strict=True))


def test_tracks_arriving_later_join_the_group_of_their_original(tmp_path):
    index = _index(tmp_path)
    a, b = _random_print(), _random_print()
    assert index.add([FingerprintItem("a", a, 180.0), FingerprintItem("b", b, 180.0)]) == {
        "a": "a",
        "b": "b",
    }
    assert index.known(["a", "b", "c"]) == {"a", "b"}
    assert index.add([FingerprintItem("a-mp3", _transcode(a), 180.02)]) == {"a-mp3": "a"}
    assert index.add([FingerprintItem("a-opus", _transcode(a, 0.6), 179.99)]) == {"a-opus": "a"}
    assert index.add([FingerprintItem("c", _random_print(), 180.0)]) == {"c": "c"}
    frame = index.groups()
    assert list(frame.columns[:3]) == ["track_id", "duplicate_group", "group_size"]
    assert _groups(index) == {"a": "a", "a-mp3": "a", "a-opus": "a", "b": "b", "c": "c"}
    assert dict(zip(frame.track_id, frame.group_size, strict=True))["a-opus"] == 3


def test_a_track_matching_two_groups_merges_them_into_the_older(tmp_path):
    index = _index(tmp_path)
    base = _random_print()
    far = base.copy()
    swapped = np.flatnonzero(_RNG.random(len(base)) < 0.4)
    far[swapped] = _random_print(len(swapped))  # BER ~0.2 from base: not the same recording
    bridge = base.copy()
    bridge[swapped[::2]] = far[swapped[::2]]  # BER ~0.1 from each
    assert bit_error_rate(base, far)[0] > MATCH_BER
    assert max(bit_error_rate(bridge, base)[0], bit_error_rate(bridge, far)[0]) <= MATCH_BER
    index.add(
        [FingerprintItem("old", base, 200.0), FingerprintItem("old-copy", _transcode(base), 200.0)]
    )
    index.add(
        [FingerprintItem("far", far, 200.0), FingerprintItem("far-copy", _transcode(far), 200.0)]
    )
    assert _groups(index)["far"] == "far"
    # The bridge is reported, and so is every track whose group was renamed.
    changed = index.add([FingerprintItem("bridge", bridge, 200.0)])
    assert changed == {"bridge": "old", "far": "old", "far-copy": "old"}
    assert set(_groups(index).values()) == {"old"}


def test_merges_resolve_the_same_way_across_chunks(tmp_path, monkeypatch):
    base = _random_print()
    far = base.copy()
    swapped = np.flatnonzero(_RNG.random(len(base)) < 0.4)
    far[swapped] = _random_print(len(swapped))
    bridge = base.copy()
    bridge[swapped[::2]] = far[swapped[::2]]
    items = [
        FingerprintItem("t1", base, 200.0),
        FingerprintItem("t2", far, 200.0),
        FingerprintItem("t3", _random_print(), 200.0),
        FingerprintItem("t4", bridge, 200.0),
        FingerprintItem("t5", _transcode(far), 200.0),
    ]
    whole = _index(tmp_path / "whole")
    whole.add(items)
    monkeypatch.setattr(duplicates, "CHUNK", 2)  # t4 merges t2's group, committed a chunk ago
    chunked = _index(tmp_path / "chunked")
    changed = chunked.add(items)
    assert (
        _groups(chunked)
        == _groups(whole)
        == {"t1": "t1", "t2": "t1", "t3": "t3", "t4": "t1", "t5": "t1"}
    )
    assert changed == _groups(whole)


def test_adding_known_tracks_again_changes_nothing(tmp_path):
    index = _index(tmp_path)
    a = _random_print()
    index.add([FingerprintItem("a", a, 100.0), FingerprintItem("a2", _transcode(a), 100.0)])
    before = index.groups()
    # Same IDs, even with other fingerprints: indexed tracks are never re-matched.
    assert (
        index.add([FingerprintItem("a", _random_print(), 100.0), FingerprintItem("a2", a, 100.0)])
        == {}
    )
    assert index.groups().equals(before)


def test_silent_short_and_constant_tracks_stay_alone(tmp_path):
    index = _index(tmp_path)
    silence = np.full(480, SILENCE_ITEM, np.uint32)
    tone = np.full(480, 0x12345678, np.uint32)
    tail = _random_print(8)
    intro = _random_print(60)
    items = [
        FingerprintItem("silence-1", silence, 60.0),
        FingerprintItem("silence-2", silence, 60.0),
        FingerprintItem("tone-1", tone, 60.0),
        FingerprintItem("tone-2", _transcode(tone, 0.05), 60.0),
        FingerprintItem("short-1", tail, 3.5),
        FingerprintItem("short-2", tail, 3.5),
        FingerprintItem("empty", [], 1.0),
        # Mostly silence around a different minute of sound: silence must not make them alike.
        FingerprintItem("padded-1", np.concatenate([silence[:400], intro]), 60.0),
        FingerprintItem("padded-2", np.concatenate([silence[:400], _random_print(60)]), 60.0),
        FingerprintItem("padded-1-mp3", np.concatenate([silence[:400], _transcode(intro)]), 60.0),
    ]
    index.add(items)
    frame = index.groups().set_index("track_id")
    alone = [
        "silence-1",
        "silence-2",
        "tone-1",
        "tone-2",
        "short-1",
        "short-2",
        "empty",
        "padded-2",
    ]
    assert (frame.loc[alone, "group_size"] == 1).all()
    assert not frame.loc[alone[:-1], "matchable"].any()
    assert frame.loc["padded-1-mp3", "duplicate_group"] == "padded-1"  # its sound still matches


def test_a_mix_opening_with_a_track_is_not_that_track(tmp_path):
    index = _index(tmp_path)
    song = _random_print(480)
    index.add(
        [FingerprintItem("song", song, 210.0), FingerprintItem("dj-mix", _transcode(song), 3600.0)]
    )
    index.add(
        [
            FingerprintItem("radio-edit", song, 170.0),
            FingerprintItem("song-aac", _transcode(song), 210.4),
        ]
    )
    assert _groups(index) == {
        "song": "song",
        "dj-mix": "dj-mix",
        "radio-edit": "radio-edit",
        "song-aac": "song",
    }


def test_a_shifted_copy_matches_within_the_offset_search(tmp_path):
    index = _index(tmp_path)
    song = _random_print(600)
    index.add([FingerprintItem("song", song[20:], 75.0)])  # starts 2.5 s later (lead-in cut)
    assert index.add([FingerprintItem("song-with-lead-in", song, 76.5)]) == {
        "song-with-lead-in": "song"
    }
    assert bit_error_rate(song, song[20:]) == (0.0, 20)


def test_bad_fingerprints_are_refused_before_anything_is_written(tmp_path):
    index = _index(tmp_path)
    with pytest.raises(ParameterError, match=r"track 'bad': fingerprint items must be in"):
        index.add(
            [FingerprintItem("good", _random_print(), 60.0), FingerprintItem("bad", [-1, 5], 60.0)]
        )
    with pytest.raises(ParameterError, match="not a fingerprint result"):
        FingerprintItem.from_result("x", {"fingerprint": []})
    assert index.known(["good"]) == set()


def test_an_index_built_with_another_format_is_refused(tmp_path, monkeypatch):
    index = _index(tmp_path)
    index.ensure_tables()  # idempotent
    monkeypatch.setattr(duplicates, "INDEX_FORMAT", "chromaprint-2/items999/key28/bottom32")
    with pytest.raises(CatalogError, match="drop the klio_fp_\\* tables"):
        index.ensure_tables()


@pytest.mark.postgres
def test_matcher_on_postgresql(tmp_path, monkeypatch):
    monkeypatch.setattr(duplicates, "CHUNK", 2)
    monkeypatch.setattr(duplicates, "ANALYZE_AFTER", 2)  # statistics refreshed mid-call too
    (tmp_path / "pg").mkdir()
    with running_postgres(tmp_path / "pg") as server:
        server.create_database("catalog_fp")
        engine = sa.create_engine(server.url("catalog_fp"))
        try:
            index = FingerprintIndex(engine)
            index.ensure_tables()
            a, b = _random_print(480), _random_print(480)
            a[:10] = np.uint32(2**32 - 1)  # keys at the top of the 28-bit range
            silent = np.full(100, SILENCE_ITEM, np.uint32)
            index.add(
                [
                    FingerprintItem("a", a, 120.0),
                    FingerprintItem("b", b, 120.0),
                    FingerprintItem("c", _random_print(480), 120.0),
                    FingerprintItem("d", silent, 12.0),
                    FingerprintItem("e", _random_print(480), 120.0),
                ]
            )
            assert index.add([FingerprintItem("a-mp3", _transcode(a), 120.1)]) == {"a-mp3": "a"}
            groups = _groups(index)
            assert groups == {"a": "a", "a-mp3": "a", "b": "b", "c": "c", "d": "d", "e": "e"}
        finally:
            engine.dispose()
