"""Real recorded audio for tests: the development corpus if it is built, else Debian's packages.

The same sources as ``build_dev_corpus.py`` (``../shared/corpus``): the orchestral music of
``wesnoth-1.16-music`` (41 Ogg Vorbis tracks, GPL-2+) and the spoken prompts of
``asterisk-core-sounds-en-wav`` (CC-BY-SA-3.0). Nothing is committed: :func:`real_music_tracks`
and :func:`real_speech_clips` take the files from ``dev-corpus/audio`` (a built corpus, listed
by its ``manifest.csv``) and otherwise download the package with ``apt-get download`` and
unpack it with ``dpkg -x`` into ``.cache/test-music/`` under the repository root (kept between
runs). When neither works the calling test fails, naming both, rather than being skipped::

    tracks = real_music_tracks(6, min_duration_s=50)
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A corpus built by ``build_dev_corpus.sh`` (a symlink to it is fine).
CORPUS_DIR = REPO_ROOT / "dev-corpus"
#: Downloaded and unpacked packages (gitignored).
CACHE_DIR = REPO_ROOT / ".cache" / "test-music"
MUSIC_PACKAGE = "wesnoth-1.16-music"
SPEECH_PACKAGE = "asterisk-core-sounds-en-wav"
_TIMEOUT_S = 600


def _duration(path: Path) -> float:
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return 0.0
    return info.frames / info.samplerate if info.samplerate else 0.0


def _from_corpus(kind: str) -> list[Path]:
    """Originals of ``kind`` (``music``/``speech``) listed in the corpus manifest, by track ID."""
    manifest = CORPUS_DIR / "manifest.csv"
    if not manifest.is_file():
        return []
    with open(manifest, newline="") as fh:
        rows = [
            r for r in csv.DictReader(fh) if r.get("kind") == kind and r.get("origin") == "original"
        ]
    paths = [CORPUS_DIR / r["path"] for r in sorted(rows, key=lambda r: r["track_id"])]
    return [p for p in paths if p.is_file()]


def _from_package(package: str, suffix: str) -> list[Path]:
    """The ``suffix`` files of a Debian package, downloaded and unpacked once into the cache."""
    tree = CACHE_DIR / "x" / package
    if not tree.is_dir():
        for tool in ("apt-get", "dpkg"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed")
        debs = CACHE_DIR / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        if not list(debs.glob(f"{package}_*.deb")):
            download = ["apt-get", "download", package]
            done = subprocess.run(
                download, cwd=debs, capture_output=True, text=True, timeout=_TIMEOUT_S
            )
            if done.returncode != 0:  # stale package lists: refresh them once
                subprocess.run(["apt-get", "update"], capture_output=True, timeout=_TIMEOUT_S)
                done = subprocess.run(
                    download, cwd=debs, capture_output=True, text=True, timeout=_TIMEOUT_S
                )
            if done.returncode != 0:
                raise RuntimeError(f"apt-get download {package}: {done.stderr.strip()[-300:]}")
        deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
        (CACHE_DIR / "x").mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=CACHE_DIR / "x", prefix=f".{package}-"))
        try:
            subprocess.run(
                ["dpkg", "-x", str(deb), str(staging)],
                check=True,
                capture_output=True,
                timeout=_TIMEOUT_S,
            )
            os.replace(staging, tree)  # all or nothing: an interrupted unpack is never reused
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(p for p in tree.rglob(f"*{suffix}") if p.is_file())


def _pick(
    kind: str,
    package: str,
    suffix: str,
    n: int,
    *,
    min_duration_s: float,
    max_duration_s: float,
    longest: bool,
) -> list[Path]:
    def fits(path: Path) -> bool:
        return min_duration_s <= _duration(path) <= max_duration_s

    span = f"between {min_duration_s} and {max_duration_s} s"
    problems = []
    corpus = [p for p in _from_corpus(kind) if fits(p)]
    if len(corpus) >= n:
        return corpus[:n]
    problems.append(f"{CORPUS_DIR / 'audio'} has {len(corpus)} {kind} originals {span}")
    try:
        files = _from_package(package, suffix)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        problems.append(f"fetching Debian's {package} failed: {exc}")
    else:
        if longest:  # the package has thousands of short prompts: take the longest
            files.sort(key=lambda p: (-p.stat().st_size, p.name))
        found = []
        for path in files:
            if fits(path):
                found.append(path)
                if len(found) == n:
                    return found
        problems.append(f"{package} has {len(found)} {suffix} files {span}")
    pytest.fail(
        f"need {n} real {kind} recordings: "
        + "; ".join(problems)
        + " (build the corpus with ../shared/corpus/build_dev_corpus.sh and link it as dev-corpus, "
        "or allow apt-get to reach a Debian mirror)",
        pytrace=False,
    )


def real_music_tracks(
    n: int, *, min_duration_s: float = 0.0, max_duration_s: float = math.inf
) -> list[Path]:
    """``n`` real music tracks (Ogg Vorbis, 44.1 kHz stereo), always the same ones.

    Parameters
    ----------
    n : int
    min_duration_s, max_duration_s : float
        Only tracks this long, in seconds.

    Returns
    -------
    list of Path
        Read-only: copy before changing anything.
    """
    return _pick(
        "music", MUSIC_PACKAGE, ".ogg", n,
        min_duration_s=min_duration_s, max_duration_s=max_duration_s, longest=False,
    )  # fmt: skip


def real_speech_clips(
    n: int, *, min_duration_s: float = 0.0, max_duration_s: float = math.inf
) -> list[Path]:
    """``n`` real spoken prompts (WAV, 8 kHz mono), always the same ones (read-only); from the
    package, the longest that fit."""
    return _pick(
        "speech", SPEECH_PACKAGE, ".wav", n,
        min_duration_s=min_duration_s, max_duration_s=max_duration_s, longest=True,
    )  # fmt: skip
