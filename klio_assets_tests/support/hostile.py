"""A hostile and odd audio corpus, generated (never committed), with the outcome each file must get.

::

    cases = make_corpus(tmp_path / "library", outside=tmp_path / "outside")
    # add tmp_path / "library", run every analysis, then for each case:
    #   case.expect == "computed": outputs exist and are valid
    #   case.expect == "failed":   one line naming the track, the file and case.problem
    #   case.expect == "refused":  `klio-assets add` refused it, naming the file and why

Each file is small (the "very long" file is 3 h of 8 kHz silence in FLAC, 270 kB) and is
made in well under a second, except the long one (~2 s). :func:`hanging_ffmpeg` makes a
wrapper around the real ``ffmpeg`` that hangs on inputs whose name contains ``hang``,
the way a real decoder can stall, so that the per-track timeout is exercised on a real
process tree.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from klio_assets.catalog.trackids import track_id_from_name
from klio_assets_tests.support import synth

#: Limits the corpus is run with (see ``KLIO_ASSETS_*`` in :mod:`klio_assets.settings`).
MAX_DURATION_S = 7200.0
#: Seconds a probe or decode may take in the corpus run; the hanging decoder costs this much.
TRACK_TIMEOUT_S = 6.0
HANG_MARKER = "HANGME"
#: File in the fake ffmpeg's folder listing the PIDs of the stalled grandchildren it started.
STALLED_PIDS = "stalled.pids"


@dataclass(frozen=True)
class Case:
    """One file of the corpus and what must happen to it.

    Attributes
    ----------
    label : str
        What the file is, for the table.
    name : str
        File name in the library folder.
    expect : str
        ``"computed"``, ``"failed"`` (the track fails with a reason) or ``"refused"``
        (``klio-assets add`` does not register it).
    problem : str
        Regular expression the reason must match (failed and refused cases).
    frames : int or None
        Exact source frames expected by ``source_audio`` (computed cases), if known.
    sample_rate, channels : int
        The source's (computed cases).
    min_seconds : float
        Least duration ``source_audio`` must report (computed cases whose exact length depends
        on the decoder).
    round : int
        The round of hostile testing that found the class (1: issue 7, 2: issue 17); the
        benchmark prints one table per round.
    """

    label: str
    name: str
    expect: str
    problem: str = ""
    frames: int | None = None
    sample_rate: int = 0
    channels: int = 0
    min_seconds: float = 0.0
    round: int = 1

    @property
    def track_id(self) -> str:
        """The ID ``klio-assets add`` derives from the file name."""
        return track_id_from_name(self.name)


def _truncate(path: str, dst: str, fraction: float) -> str:
    with open(path, "rb") as fh:
        data = fh.read()
    with open(dst, "wb") as fh:
        fh.write(data[: int(len(data) * fraction)])
    return dst


def _wav_claiming(path: str, *, data_bytes: int, actual_frames: int, sample_rate: int) -> str:
    """A mono 16-bit WAV whose ``data`` chunk claims ``data_bytes`` but holds ``actual_frames``."""
    samples = (np.sin(np.arange(actual_frames) * 0.1) * 8000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    riff_size = min(0xFFFFFFFF, 4 + 8 + len(fmt) + 8 + data_bytes)
    with open(path, "wb") as fh:
        fh.write(b"RIFF" + struct.pack("<I", riff_size) + b"WAVE")
        fh.write(b"fmt " + struct.pack("<I", len(fmt)) + fmt)
        fh.write(b"data" + struct.pack("<I", data_bytes) + samples)
    return path


def _silence_flac(path: str, *, seconds: float, sample_rate: int) -> str:
    block = np.zeros((sample_rate * 60, 1), np.float32)
    left = int(seconds * sample_rate)
    with sf.SoundFile(path, "w", sample_rate, 1, format="FLAC", subtype="PCM_16") as fh:
        while left > 0:
            fh.write(block[: min(left, len(block))])
            left -= min(left, len(block))
    return path


def _rf64_claiming(path: str, *, seconds: float, actual_frames: int, sample_rate: int) -> str:
    """A mono 16-bit RF64 whose ``ds64`` chunk announces ``seconds`` of audio but whose
    ``data`` holds ``actual_frames`` (its 32-bit size fields say 0xFFFFFFFF, as RF64 does)."""
    samples = (np.sin(np.arange(actual_frames) * 0.1) * 8000).astype("<i2").tobytes()
    data_bytes = int(seconds * sample_rate) * 2
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    ds64 = struct.pack(
        "<QQQI", 4 + 36 + 8 + len(fmt) + 8 + data_bytes, data_bytes, data_bytes // 2, 0
    )
    with open(path, "wb") as fh:
        fh.write(b"RF64" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE")
        fh.write(b"ds64" + struct.pack("<I", len(ds64)) + ds64)
        fh.write(b"fmt " + struct.pack("<I", len(fmt)) + fmt)
        fh.write(b"data" + struct.pack("<I", 0xFFFFFFFF) + samples)
    return path


def _mp3_with_cover_art(path: str, scratch: str) -> str:
    """A 3-s CBR MP3 with a ~1 MB ID3v2 cover picture and no Xing header (common in real
    catalogs): libsndfile's length estimate counts the picture as audio."""
    require = synth.require_ffmpeg()
    cover = os.path.join(scratch, "cover.png")
    run = ["-nostdin", "-v", "error", "-y"]
    subprocess.run([require, *run, "-f", "lavfi", "-i", "color=c=red:s=600x600", "-frames:v", "1",
                    "-c:v", "png", "-compression_level", "0", cover], check=True)  # fmt: skip
    subprocess.run([require, *run, "-f", "lavfi", "-i", "sine=f=440:d=3:r=44100", "-i", cover,
                    "-map", "0:a", "-map", "1:v", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k",
                    "-c:v", "copy", "-disposition:v", "attached_pic", "-id3v2_version", "3",
                    "-write_xing", "0", path], check=True)  # fmt: skip
    return path


def _chained_ogg(path: str, scratch: str, seconds: tuple[float, ...]) -> str:
    """Ogg Vorbis streams of ``seconds`` each, chained one after the other in one file."""
    with open(path, "wb") as out:
        for i, length in enumerate(seconds):
            part = synth.write(os.path.join(scratch, f"link{i}.ogg"),
                               synth.sine(330 * (i + 1), length, 44100), 44100)  # fmt: skip
            with open(part, "rb") as fh:
                out.write(fh.read())
    return path


def make_corpus(folder: str, *, outside: str) -> list[Case]:
    """Write the corpus into ``folder`` (and a file outside it, for the symlink case).

    Returns
    -------
    list of Case
        In the order written; track IDs are distinct.
    """
    os.makedirs(folder, exist_ok=True)
    os.makedirs(outside, exist_ok=True)
    scratch = os.path.join(outside, "_scratch")
    os.makedirs(scratch, exist_ok=True)

    def at(name: str) -> str:
        return os.path.join(folder, name)

    cases: list[Case] = []
    freqs = iter(range(300, 3000, 37))

    def tone() -> np.ndarray:
        """1 s of stereo sine, a new frequency each time: no two files share content."""
        return synth.sine(next(freqs), 1.0, 44100)

    # good files, the batch around the hostile ones
    for name, fmt in (
        ("good wav.wav", None),
        ("good-flac.flac", None),
        ("good-ogg.ogg", None),
        ("good-mp3.mp3", None),
    ):
        synth.write(at(name), tone(), 44100, format=fmt)
        lossless = name.endswith((".wav", ".flac"))
        cases.append(Case(f"good {name.rsplit('.', 1)[1].upper()}", name, "computed",
                          frames=44100 if lossless else None, sample_rate=44100, channels=2))  # fmt: skip
    synth.to_m4a(
        synth.write(os.path.join(scratch, "m4a-src.wav"), tone(), 44100), at("good-m4a.m4a")
    )
    cases.append(
        Case("good M4A (ffmpeg)", "good-m4a.m4a", "computed", sample_rate=44100, channels=2)
    )

    # empty and truncated files
    open(at("zero-byte.mp3"), "wb").close()
    cases.append(
        Case("zero-byte file", "zero-byte.mp3", "failed", r"the file is empty \(0 bytes\)")
    )
    two_s = synth.sine(440, 2.0, 44100)
    for ext in ("flac", "wav", "ogg", "mp3"):
        full = synth.write(os.path.join(scratch, f"full.{ext}"), two_s, 44100)
        _truncate(full, at(f"truncated-{ext}.{ext}"), 0.4)
    cases += [
        Case("truncated FLAC (40 % kept)", "truncated-flac.flac", "failed",
             r"the audio data is corrupt or cut short \(libsndfile: flac decoder lost sync"),
        Case("truncated WAV (40 % kept)", "truncated-wav.wav", "failed",
             r"the file is truncated: audio stops after 0\.\d+ s but the header announces 2\.00 s"),
        Case("truncated OGG (40 % kept)", "truncated-ogg.ogg", "failed",
             r"not a readable audio file \(libsndfile: .*malformed; ffmpeg: .*End of file\)"),
        # libsndfile writes a Xing header with the length, so a cut MP3 is caught too
        Case("truncated MP3 (40 % kept)", "truncated-mp3.mp3", "failed",
             r"the file is truncated: audio stops after 0\.\d+ s but the header announces 2\.\d+ s"),
    ]  # fmt: skip

    # not audio, or not what the extension says
    with open(at("text-as-mp3.mp3"), "w") as fh:
        fh.write("Track list\n1. Intro\n2. Outro\n" * 20)
    with open(at("image-as-mp3.mp3"), "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
    with open(at("random-bytes.wav"), "wb") as fh:
        fh.write(np.random.default_rng(7).bytes(4096))
    synth.write(at("flac-named-wav.wav"), tone(), 44100, format="FLAC", subtype="PCM_16")
    cases += [
        Case("text renamed .mp3", "text-as-mp3.mp3", "failed", r"not audio: the file looks like text"),
        Case("PNG image renamed .mp3", "image-as-mp3.mp3", "failed", r"not audio: the file looks like a PNG image"),
        Case("random bytes named .wav", "random-bytes.wav", "failed", r"not a readable audio file"),
        Case("valid FLAC named .wav", "flac-named-wav.wav", "computed", frames=44100, sample_rate=44100, channels=2),
    ]  # fmt: skip

    # headers that lie or ask too much
    _wav_claiming(
        at("wav-claims-4gb.wav"), data_bytes=0xFFFFFFF0, actual_frames=8000, sample_rate=8000
    )
    synth.write(at("forty-channels.wav"), synth.sine(440, 0.1, 8000, channels=40), 8000)
    _silence_flac(at("three-hours.flac"), seconds=3 * 3600, sample_rate=8000)
    cases += [
        Case("WAV header claiming 4 GB of data", "wav-claims-4gb.wav", "failed",
             r"header announces 268435 s, over the limit of 7200 s \(max_duration_s\)"),
        Case("40 channels (limit 32)", "forty-channels.wav", "failed",
             r"40 channels exceeds the limit of 32 \(max_channels\)"),
        Case("very long file (3 h, limit 2 h)", "three-hours.flac", "failed",
             r"header announces 10800 s, over the limit of 7200 s \(max_duration_s\)"),
    ]  # fmt: skip

    # odd but valid signals
    nan = synth.sine(440, 1.0, 8000, channels=1)
    nan[2000, 0] = np.nan
    synth.write(at("float-nan.wav"), nan, 8000, subtype="FLOAT")
    inf = synth.sine(440, 1.0, 8000, channels=1)
    inf[6000, 0] = np.inf
    synth.write(at("float-inf.wav"), inf, 8000, subtype="FLOAT")
    synth.write(at("digital-silence.flac"), np.zeros((44100, 2), np.float32), 44100)
    synth.write(at("one-sample.wav"), np.full((1, 1), 0.25, np.float32), 44100)
    synth.write(at("eight-channels.flac"), synth.sine(440, 0.5, 48000, channels=8), 48000)
    synth.write(at("rate-8k.wav"), synth.sine(440, 1.0, 8000, channels=1), 8000)
    synth.write(at("rate-192k.flac"), synth.sine(440, 0.5, 192000), 192000)
    cases += [
        Case("float WAV with NaN", "float-nan.wav", "failed", r"contains NaN or infinite samples at 0\.25 s"),
        Case("float WAV with +inf", "float-inf.wav", "failed", r"contains NaN or infinite samples at 0\.75 s"),
        Case("digital silence", "digital-silence.flac", "computed", frames=44100, sample_rate=44100, channels=2),
        Case("a 1-sample file", "one-sample.wav", "computed", frames=1, sample_rate=44100, channels=1),
        Case("8 channels", "eight-channels.flac", "computed", frames=24000, sample_rate=48000, channels=8),
        Case("8 kHz", "rate-8k.wav", "computed", frames=8000, sample_rate=8000, channels=1),
        Case("192 kHz", "rate-192k.flac", "computed", frames=96000, sample_rate=192000, channels=2),
    ]  # fmt: skip

    # second round (issue 17): headers that lie, containers libsndfile misreads
    _wav_claiming(at("one-hertz.wav"), data_bytes=160_000, actual_frames=80_000, sample_rate=1)
    _rf64_claiming(at("rf64-30h.wav"), seconds=30 * 3600, actual_frames=21, sample_rate=8000)
    _mp3_with_cover_art(at("cover-art.mp3"), scratch)
    _chained_ogg(at("chained.ogg"), scratch, (2.0, 3.0))
    cases += [
        Case("WAV header saying 1 Hz (80,000 frames)", "one-hertz.wav", "failed",
             r"1 Hz is below the lowest accepted rate of 1000 Hz \(min_sample_rate\)", round=2),
        Case("RF64 announcing 30 h in ds64, 21 frames", "rf64-30h.wav", "failed",
             r"header announces 108000 s, over the limit of 7200 s \(max_duration_s\)", round=2),
        Case("MP3 with 1 MB cover art, no Xing header", "cover-art.mp3", "computed",
             sample_rate=44100, channels=2, min_seconds=2.9, round=2),
        Case("chained Ogg (2 s + 3 s streams)", "chained.ogg", "computed",
             sample_rate=44100, channels=2, min_seconds=4.9, round=2),
    ]  # fmt: skip

    # names
    for name in ('Été "live" l\'été & co.flac', "日本語 テスト.wav", "  spaced   out  .ogg"):
        synth.write(at(name), tone(), 44100)
        cases.append(Case(f"file name {name!r}", name, "computed", sample_rate=44100, channels=2,
                          frames=None if name.endswith(".ogg") else 44100))  # fmt: skip

    # things that are not plain files in the catalog
    secret = synth.write(os.path.join(outside, "outside.flac"), tone(), 44100)
    os.symlink(secret, at("link-outside.flac"))
    cases.append(Case("symlink pointing outside the catalog", "link-outside.flac", "refused",
                      r"symlink to .*outside\.flac, outside .* \(--follow-symlinks to allow\)"))  # fmt: skip
    os.mkfifo(at("named-pipe.wav"))
    cases.append(Case("named pipe (FIFO) named .wav", "named-pipe.wav", "failed",
                      r"is not a regular file \(a folder, FIFO or device\)"))  # fmt: skip

    # a decoder that hangs (see hanging_ffmpeg)
    shutil.copyfile(at("good-m4a.m4a"), at(f"{HANG_MARKER}-decoder.m4a"))
    with open(at(f"{HANG_MARKER}-decoder.m4a"), "ab") as fh:
        fh.write(b"\0")  # other bytes than good-m4a: not shared by content
    cases.append(Case("decoder hangs (ffmpeg stalls)", f"{HANG_MARKER}-decoder.m4a", "failed",
                      rf"decoding did not finish within {TRACK_TIMEOUT_S:g} s \(ffmpeg"))  # fmt: skip
    shutil.rmtree(scratch)
    ids = [c.track_id for c in cases]
    assert len(set(ids)) == len(ids), "corpus track IDs must be distinct"
    return cases


def hanging_ffmpeg(bin_dir: str) -> str:
    """Put an ``ffmpeg`` in ``bin_dir`` that hangs on inputs named ``*hang*`` and runs the real
    one otherwise. The hang is a grandchild (``sh`` waiting on ``sleep``) holding the output
    pipe open, as a stalled decoder would: killing only ``sh`` would not end the read.

    The PIDs of the stalled processes are appended to ``bin_dir/stalled.pids`` so that a
    test can check none outlives the timeout.

    Returns
    -------
    str
        ``bin_dir``, to put first on ``PATH``.
    """
    real = synth.require_ffmpeg()
    os.makedirs(bin_dir, exist_ok=True)
    script = os.path.join(bin_dir, "ffmpeg")
    with open(script, "w") as fh:
        fh.write(
            "#!/bin/sh\n"
            f'case "$*" in *{HANG_MARKER}*)\n'
            f"  sleep 600 & echo $! >> {os.path.join(bin_dir, STALLED_PIDS)}; wait $!; exit 1 ;;\n"
            "esac\n"
            f'exec {real} "$@"\n'
        )
    os.chmod(script, 0o755)
    return bin_dir


@dataclass
class Outcome:
    """What happened to one case in a run, and whether it is what :class:`Case` expects."""

    case: Case
    outcome: str
    detail: str
    ok: bool
    problems: list[str]


def judge(
    cases: list[Case], *, folder: str, add_stderr: str, run: dict, analyses: tuple[str, ...]
) -> list[Outcome]:
    """Compare a ``klio-assets add`` + ``klio-assets run --json`` over the corpus with the cases.

    For a computed case every analysis must be ``computed``, ``source_audio``'s JSON must hold
    the expected rate, channels and frames, and ``downsampled_audio`` must be a readable mono
    22.05 kHz file of exactly ``round(frames * 22050 / rate)`` frames. For a failed case every
    analysis must fail with one line starting ``track '<id>'``, naming the file, and matching
    :attr:`Case.problem`. A refused case must be named in ``add``'s errors and never run.
    """
    import json
    import re

    from klio_assets.worker.audio import exact_length

    out: list[Outcome] = []
    for case in cases:
        path = os.path.join(folder, case.name)
        records = run["tracks"].get(case.track_id, {})
        problems: list[str] = []
        if case.expect == "refused":
            line = next((ln for ln in add_stderr.splitlines() if path in ln), "")
            if records:
                problems.append("was registered and run")
            if not re.search(case.problem, line):
                problems.append(f"add did not refuse it as expected: {line!r}")
            out.append(
                Outcome(
                    case,
                    "refused by add" if line else "?",
                    line.split(": ", 1)[-1],
                    not problems,
                    problems,
                )
            )
            continue
        statuses = {name: records.get(name, {}).get("status", "missing") for name in analyses}
        outcome = "/".join(sorted(set(statuses.values())))
        detail = ""
        if case.expect == "computed":
            if set(statuses.values()) != {"computed"}:
                problems.append(
                    f"statuses {statuses}: {[r.get('reason') for r in records.values()]}"
                )
            else:
                with open(records["source_audio"]["uri"]) as fh:
                    facts = json.load(fh)
                detail = (
                    f"{facts['channels']} ch, {facts['sample_rate']} Hz, {facts['frames']} frames"
                )
                for key in ("sample_rate", "channels", "frames"):
                    want = getattr(case, key)
                    if want and facts[key] != want:
                        problems.append(f"source_audio {key}={facts[key]}, expected {want}")
                seconds = facts["frames"] / facts["sample_rate"]
                if seconds < case.min_seconds:
                    problems.append(
                        f"source_audio is {seconds:.2f} s, expected >= {case.min_seconds}"
                    )
                info = sf.info(records["downsampled_audio"]["uri"])
                want_frames = exact_length(facts["frames"], facts["sample_rate"], 22050)
                if (info.samplerate, info.channels, info.frames) != (22050, 1, want_frames):
                    problems.append(f"downsampled_audio is {info.samplerate} Hz, {info.channels} ch, "
                                    f"{info.frames} frames; expected 22050 Hz, 1 ch, {want_frames}")  # fmt: skip
        else:
            reasons = {records.get(name, {}).get("reason", "") for name in analyses}
            if set(statuses.values()) != {"failed"}:
                problems.append(f"statuses {statuses}")
            for reason in reasons:
                if not reason.startswith(f"track {case.track_id!r}"):
                    problems.append(f"reason does not start with the track: {reason!r}")
                if path not in reason:
                    problems.append(f"reason does not name the file: {reason!r}")
                if not re.search(case.problem, reason):
                    problems.append(f"reason does not say {case.problem!r}: {reason!r}")
            detail = min(reasons, key=len).replace(path, "<file>") if reasons else ""
        out.append(Outcome(case, outcome, detail, not problems, problems))
    return out


def markdown_table(outcomes: list[Outcome]) -> str:
    """The table of inputs and outcomes, in Markdown."""
    lines = [
        "| input | track ID | expected | outcome | detail / reason |",
        "| --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        mark = "" if o.ok else " **(unexpected)**"
        lines.append(
            f"| {o.case.label} | `{o.case.track_id}` | {o.case.expect} | {o.outcome}{mark} | "
            f"{o.detail.replace('|', '/')} |"
        )
    return "\n".join(lines)
