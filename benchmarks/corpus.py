"""Benchmark tracks: N distinct real recordings from the dev corpus, transcoded where it is short.

``../shared/corpus/build_dev_corpus.sh`` gives ~86 files a plain soundfile loop can read (41
Ogg Vorbis music tracks, 41 spoken prompts, a few transcodes). Benchmarks ask for more (200 by
default), so the music is also encoded as FLAC, MP3 and 48 kHz WAV with ffmpeg, the way one
recording reaches a catalog in several encodings. Every file has distinct bytes, so content
dedup shares nothing and every track is really computed. Variants are made once and cached
under ``.cache/bench/corpus`` (gitignored: the recordings keep their licences and are never
committed).

Usage::

    python benchmarks/corpus.py [--corpus dev-corpus] [--tracks 200]   # builds and lists them
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_CORPUS = os.path.join(REPO, "..", "shared", "corpus", "build_dev_corpus.sh")
CACHE = os.path.join(REPO, ".cache", "bench", "corpus")
DEFAULT_CORPUS = os.path.join(REPO, "dev-corpus")
PLAIN_FORMATS = (".wav", ".flac", ".ogg", ".mp3")
#: (file suffix, ffmpeg output arguments) of the extra encodings, in the order they are used.
VARIANTS = (
    (".flac", ["-c:a", "flac"]),
    (".mp3", ["-c:a", "libmp3lame", "-b:a", "192k"]),
    (".48k.wav", ["-ar", "48000", "-c:a", "pcm_s16le"]),
)


def originals(corpus: str) -> list[tuple[str, str]]:
    """``(kind, path)`` of the corpus files libsndfile reads completely, building the corpus if absent."""
    manifest = os.path.join(corpus, "manifest.csv")
    if not os.path.exists(manifest):
        if not os.path.exists(BUILD_CORPUS):
            sys.exit(f"no corpus at {corpus} and no {BUILD_CORPUS} to build one")
        subprocess.run(["bash", BUILD_CORPUS, corpus], check=True)
    with open(manifest) as fh:
        rows = list(csv.DictReader(fh))
    return [
        (r.get("kind", ""), os.path.join(corpus, r["path"]))
        for r in rows
        if r["path"].lower().endswith(PLAIN_FORMATS)
    ]


def _variant(src: str, suffix: str, args: list[str]) -> str:
    stem = os.path.splitext(os.path.basename(src))[0]
    dst = os.path.join(CACHE, stem + suffix)
    if not os.path.exists(dst):
        if not shutil.which("ffmpeg"):
            sys.exit("ffmpeg is needed to make more benchmark tracks than the corpus has (apt-get install ffmpeg)")
        os.makedirs(CACHE, exist_ok=True)
        tmp = dst + ".part" + os.path.splitext(dst)[1]
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", src, *args, tmp], check=True)
        os.replace(tmp, dst)
    return dst


def bench_files(corpus: str = DEFAULT_CORPUS, n: int | None = 200) -> list[str]:
    """``n`` distinct real audio files (all the corpus' readable files when ``n`` is None).

    The originals come first, then the music in each extra encoding of :data:`VARIANTS`.
    """
    found = originals(os.path.abspath(corpus))
    files = [path for _, path in found]
    music = [path for kind, path in found if kind == "music" and path.lower().endswith(".ogg")]
    for suffix, args in VARIANTS:
        for src in music:
            if n is not None and len(files) >= n:
                break
            files.append(_variant(src, suffix, args))
    if n is not None and len(files) < n:
        sys.exit(f"only {len(files)} distinct files can be made from {corpus}, {n} asked")
    return files if n is None else files[:n]


def warm(files: list[str]) -> None:
    """Read every file once, so that no side of a comparison pays the disk."""
    for path in files:
        with open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--tracks", type=int, default=200)
    args = parser.parse_args()
    for path in bench_files(args.corpus, args.tracks):
        print(path)


if __name__ == "__main__":
    main()
