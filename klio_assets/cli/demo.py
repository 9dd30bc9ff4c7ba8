"""A small catalog of generated music for the demo: chords, a bass line and drums.

Deterministic (seeded), a few seconds to a minute per track, written in the formats users
have (WAV, FLAC, OGG Vorbis, MP3, and M4A when ffmpeg is installed), plus one exact copy of a
track under another name to show content sharing: as many files as asked for, all counted.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import soundfile as sf

_FORMATS = (
    ("wav", "WAV", "PCM_16"),
    ("flac", "FLAC", "PCM_24"),
    ("ogg", "OGG", "VORBIS"),
    ("mp3", "MP3", "MPEG_LAYER_III"),
)
_RATES = (44100, 48000, 32000, 44100)


def synth_track(seed: int, *, seconds: float, sample_rate: int) -> np.ndarray:
    """A stereo loop: chord pads, a bass line and a kick/hat pattern at a seeded tempo.

    Returns
    -------
    np.ndarray [shape=(n, 2)], float32 in [-1, 1]
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    bpm = float(rng.choice([90, 100, 110, 120, 128]))
    beat = 60.0 / bpm
    root = 110.0 * 2 ** (int(rng.integers(0, 12)) / 12)
    chords = [(0, 4, 7), (5, 9, 12), (7, 11, 14), (-3, 0, 4)]
    out = np.zeros((n, 2), np.float32)
    bar = 4 * beat
    for i, start in enumerate(np.arange(0, seconds, bar)):
        sl = slice(int(start * sample_rate), min(n, int((start + bar) * sample_rate)))
        tt = t[sl] - start
        env = np.minimum(1, tt * 20) * np.exp(-tt / (bar * 0.8))
        for k, semis in enumerate(chords[i % 4]):
            f = root * 2 ** (semis / 12) * 2
            pan = 0.3 + 0.2 * k
            tone = (np.sin(2 * np.pi * f * tt) + 0.3 * np.sin(4 * np.pi * f * tt)) * env * 0.08
            out[sl, 0] += tone * (1 - pan)
            out[sl, 1] += tone * pan
        bass = (
            np.sign(np.sin(2 * np.pi * root / 2 * 2 ** (chords[i % 4][0] / 12) * tt)) * env * 0.05
        )
        out[sl] += bass[:, None]
    for start in np.arange(0, seconds, beat):
        a = int(start * sample_rate)
        m = min(n - a, int(0.25 * sample_rate))
        if m <= 0:
            continue
        tt = np.arange(m) / sample_rate
        kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-tt * 30)) * tt) * np.exp(-tt * 12) * 0.5
        out[a : a + m] += kick[:, None]
        h = int((start + beat / 2) * sample_rate)
        hm = min(n - h, int(0.05 * sample_rate))
        if hm > 0:
            hat = rng.standard_normal(hm) * np.exp(-np.arange(hm) / sample_rate * 80) * 0.1
            out[h : h + hm] += hat[:, None]
    peak = float(np.abs(out).max()) or 1.0
    return (out / peak * 0.8).astype(np.float32)


#: The exact copy of the first track (content sharing: its results are copied, not computed).
COPY_NAME = "demo-01-copy.wav"


def make_demo_audio(folder: str, *, n_tracks: int = 10) -> list[str]:
    """Write ``n_tracks`` files into ``folder`` (reusing existing ones): generated tracks in
    WAV, FLAC, OGG Vorbis and MP3, one M4A made from the first (with ffmpeg, from 3 tracks),
    and, from 2 tracks, :data:`COPY_NAME`, a byte copy of the first.

    Returns
    -------
    list of str
        The ``n_tracks`` paths, in the order above.
    """
    if n_tracks < 1:
        raise ValueError(f"n_tracks={n_tracks} must be at least 1")
    os.makedirs(folder, exist_ok=True)
    with_m4a = shutil.which("ffmpeg") is not None and n_tracks >= 3
    generated = n_tracks - (n_tracks >= 2) - with_m4a
    paths = []
    for i in range(generated):
        ext, fmt, subtype = _FORMATS[i % len(_FORMATS)]
        path = os.path.join(folder, f"demo-{i + 1:02d}.{ext}")
        if not os.path.exists(path):
            rate = _RATES[i % len(_RATES)]
            audio = synth_track(i, seconds=10 + 7 * (i % 5), sample_rate=rate)
            with sf.SoundFile(path + ".tmp", "w", rate, 2, format=fmt, subtype=subtype) as fh:
                for start in range(
                    0, len(audio), 65536
                ):  # block-wise: long OGG writes crash libvorbis
                    fh.write(audio[start : start + 65536])
            os.replace(path + ".tmp", path)
        paths.append(path)
    if with_m4a:
        m4a = os.path.join(folder, "demo-aac.m4a")
        if not os.path.exists(m4a):
            subprocess.run(
                [
                    "ffmpeg",
                    "-nostdin",
                    "-v",
                    "error",
                    "-y",
                    "-i",
                    paths[0],
                    "-c:a",
                    "aac",
                    "-b:a",
                    "128k",
                    m4a + ".tmp.m4a",
                ],
                check=True,
            )
            os.replace(m4a + ".tmp.m4a", m4a)
        paths.append(m4a)
    if n_tracks >= 2:
        copy = os.path.join(folder, COPY_NAME)
        if not os.path.exists(copy):
            shutil.copyfile(paths[0], copy)
        paths.append(copy)
    return paths
