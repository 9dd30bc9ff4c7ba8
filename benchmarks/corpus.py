"""Benchmark tracks: N distinct real recordings from the dev corpus, transcoded where it is short.

``../shared/corpus/build_dev_corpus.sh`` gives ~86 files a plain soundfile loop can read (41
Ogg Vorbis music tracks, 41 spoken prompts, a few transcodes). Benchmarks ask for more (200 by
default), so the music is also encoded as FLAC, MP3 and 48 kHz WAV with ffmpeg, the way one
recording reaches a catalog in several encodings. Past those (~209 files), distinct copies
are made without re-encoding: the same audio stream with a ``comment`` tag naming the copy
(``ffmpeg -c copy``), so 1,000 tracks cost ~1,000 small stream copies. Every file has
distinct bytes (the content key hashes the bytes), so content dedup shares nothing and every
track is really computed. Variants are made once and cached
under ``.cache/bench/corpus`` (gitignored: the recordings keep their licences and are never
committed).

Usage::

    python benchmarks/corpus.py [--corpus dev-corpus] [--tracks 200]   # builds and lists them
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from harness import CACHE as BENCH_CACHE
from harness import CORPUS as DEFAULT_CORPUS
from harness import PLAIN_FORMATS, corpus_rows, warm_page_cache

CACHE = os.path.join(BENCH_CACHE, "corpus")
#: (file suffix, ffmpeg output arguments) of the extra encodings, in the order they are used.
VARIANTS = (
    (".flac", ["-c:a", "flac"]),
    (".mp3", ["-c:a", "libmp3lame", "-b:a", "192k"]),
    (".48k.wav", ["-ar", "48000", "-c:a", "pcm_s16le"]),
)
warm = warm_page_cache


def _variant(src: str, suffix: str, args: list[str]) -> str:
    stem = os.path.splitext(os.path.basename(src))[0]
    dst = os.path.join(CACHE, stem + suffix)
    if not os.path.exists(dst):
        if not shutil.which("ffmpeg"):
            sys.exit(
                "ffmpeg is needed to make more benchmark tracks than the corpus has (apt-get install ffmpeg)"
            )
        os.makedirs(CACHE, exist_ok=True)
        tmp = dst + ".part" + os.path.splitext(dst)[1]
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", src, *args, tmp], check=True)
        os.replace(tmp, dst)
    return dst


def bench_files(corpus: str = DEFAULT_CORPUS, n: int | None = 200) -> list[str]:
    """``n`` distinct real audio files (all the corpus' readable files when ``n`` is None).

    The originals come first, then the music in each extra encoding of :data:`VARIANTS`.
    """
    rows = [
        r for r in corpus_rows(os.path.abspath(corpus)) if r["path"].lower().endswith(PLAIN_FORMATS)
    ]
    files = [r["path"] for r in rows]
    music = [
        r["path"] for r in rows if r.get("kind") == "music" and r["path"].lower().endswith(".ogg")
    ]
    for suffix, args in VARIANTS:
        for src in music:
            if n is not None and len(files) >= n:
                break
            files.append(_variant(src, suffix, args))
    made = list(files)
    copy = 0
    while n is not None and len(files) < n and made:
        files.append(_copy(made[copy % len(made)], copy // len(made) + 1))
        copy += 1
    if n is not None and len(files) < n:
        sys.exit(f"only {len(files)} distinct files can be made from {corpus}, {n} asked")
    return files if n is None else files[:n]


def _copy(src: str, number: int) -> str:
    """Copy ``number`` of ``src``: the same audio stream, distinct bytes (a ``comment`` tag)."""
    stem, ext = os.path.splitext(os.path.basename(src))
    if stem.endswith(".48k"):  # keep the variant's suffix as the extension
        stem, ext = stem[: -len(".48k")], ".48k" + ext
    dst = os.path.join(CACHE, f"{stem}.copy{number}{ext}")
    if not os.path.exists(dst):
        os.makedirs(CACHE, exist_ok=True)
        tmp = dst + ".part" + os.path.splitext(dst)[1]
        tag = f"comment=klio-assets benchmark copy {number}"
        cmd = ["ffmpeg", "-v", "error", "-y", "-i", src, "-map", "0", "-c", "copy"]
        subprocess.run([*cmd, "-metadata", tag, tmp], check=True)
        os.replace(tmp, dst)
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--tracks", type=int, default=200)
    args = parser.parse_args()
    for path in bench_files(args.corpus, args.tracks):
        print(path)


if __name__ == "__main__":
    main()
