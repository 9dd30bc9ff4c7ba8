"""Disk full and read-only targets, on real file systems, through ``klio-assets run``.

A write that fails fails the tracks it belongs to, with the reason (naming the track, the
file and "No space left on device" or "Read-only file system"), and leaves every earlier
output intact; no temporary file is left; the same run later succeeds once there is room.

The full disk is a real 16 MB tmpfs, which takes root (this machine and CI containers run
as root); the test is skipped, saying so, where mounting is not allowed. The read-only target
is a read-only bind mount as root, a ``chmod`` folder otherwise (root ignores permissions).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess

import numpy as np
import pytest
import soundfile as sf

from klio_assets_tests.conftest import cli_json, run_cli
from klio_assets_tests.support import synth

pytestmark = pytest.mark.e2e
BOTH = ("source_audio", "downsampled_audio")  # named: other analyses may be installed
ONE_WORKER = {"KLIO_ASSETS_BEAM_OPTIONS": "--direct_num_workers=1"}  # writes in a known order


def _can_mount(where: str) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", where], capture_output=True
    )
    return done.returncode == 0


@contextlib.contextmanager
def _unmounted_at_exit(path: str):
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


def _library(folder, prefix: str, n: int, *, noise: bool) -> list[str]:
    rng = np.random.default_rng(len(prefix))
    ids = []
    for i in range(n):
        frames = (rng.standard_normal((3 * 44100, 2)) * 0.2).astype(np.float32) if noise else \
            synth.sine(300 + 50 * i + 17 * len(prefix), 3.0, 44100)  # fmt: skip
        synth.write(str(folder / f"{prefix}{i}.flac"), frames, 44100)
        ids.append(f"{prefix}{i}")
    return ids


def _snapshot(root: str) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        if "_runs" in folder:
            continue
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                out[path] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _tracks(ids):
    return [a for t in ids for a in ("--tracks", t)]


def test_disk_full_fails_the_tracks_that_do_not_fit_and_keeps_earlier_outputs(tmp_path):
    library = tmp_path / "library"
    early = _library(library, "early", 3, noise=False)
    late = _library(library, "late", 3, noise=True)  # noise: FLAC outputs of ~250 KB
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount(str(disk)):
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN); not available here")
    home = str(tmp_path / "home")
    env = {"KLIO_ASSETS_STORAGE": str(disk), **ONE_WORKER}
    run_cli("add", str(library), home=home, env=env, check=True)
    with _unmounted_at_exit(str(disk)):
        first, _ = cli_json("run", "downsampled_audio", *_tracks(early), home=home, env=env)
        assert first["assets"]["downsampled_audio"] == {"computed": 3}
        before = _snapshot(str(disk))
        filler = disk / "filler"
        # leave 64 KiB: room for the run's small records, not for the outputs
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        with open(filler, "wb") as fh:
            fh.write(b"\0" * (free - 64 * 1024))
        command = ("run", "downsampled_audio", *_tracks(late))
        full, _ = cli_json(*command, home=home, env=env, expect_code=1)
        for t in late:
            reason = full["tracks"][t]["downsampled_audio"]["reason"]
            assert (
                reason.startswith(f"track '{t}': {library / t}.flac: write ")
                and "No space left" in reason
            )
            assert f"/{t}.flac: " in reason  # names the output it could not write
        assert full["assets"]["downsampled_audio"] == {"failed": 3}
        after = _snapshot(str(disk))
        after.pop(str(filler), None)
        assert after == before  # earlier outputs intact, nothing partial or temporary added
        for path in before:
            if path.endswith(".flac"):
                sf.read(path)
        filler.unlink()
        again, _ = cli_json(*command, home=home, env=env)
        assert again["assets"]["downsampled_audio"] == {"computed": 3}


def test_read_only_output_folder_fails_its_analysis_only_and_keeps_earlier_outputs(tmp_path):
    library = tmp_path / "library"
    early = _library(library, "early", 2, noise=False)
    late = _library(library, "late", 2, noise=False)
    home = str(tmp_path / "home")
    outputs = os.path.join(home, "outputs")
    run_cli("add", str(library), home=home, check=True)
    first, _ = cli_json("run", *BOTH, *_tracks(early), home=home)
    assert first["assets"]["downsampled_audio"] == {"computed": 2}
    target = os.path.join(outputs, "downsampled_audio")
    before = _snapshot(outputs)
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["mount", "--bind", target, target], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)
        says = "Read-only file system"
    else:
        for folder, _, _ in os.walk(target):
            os.chmod(folder, 0o555)
        says = "Permission denied"
    try:
        second, _ = cli_json("run", *BOTH, *_tracks(late), home=home, expect_code=1)
    finally:
        if as_root:
            subprocess.run(["umount", target], check=True)
        else:
            for folder, _, _ in os.walk(target):
                os.chmod(folder, 0o755)
    assert second["assets"] == {"source_audio": {"computed": 2}, "downsampled_audio": {"failed": 2}}
    for t in late:
        reason = second["tracks"][t]["downsampled_audio"]["reason"]
        assert (
            reason.startswith(f"track '{t}': {library / t}.flac: write {target}/")
            and says in reason
        ), reason
    after = _snapshot(outputs)
    assert {p: h for p, h in after.items() if p in before} == before
    assert not [p for p in after if ".tmp-" in p]
    again, _ = cli_json("run", *BOTH, *_tracks(late), home=home)
    assert again["assets"]["downsampled_audio"] == {"computed": 2}


def _bookkeeping_failure(out: dict, says: str, ids: list[str], library) -> None:
    """One error line naming the problem; each track's reason short and about that track."""
    assert len(out["errors"]) == 1 and "\n" not in out["errors"][0], out["errors"]
    assert says in out["errors"][0], out["errors"]
    assert out["assets"] == {"source_audio": {"failed": len(ids)}}
    for t in ids:
        reason = out["tracks"][t]["source_audio"]["reason"]
        assert reason.startswith(f"track '{t}': ") and len(reason) < 200, reason
        assert not [o for o in ids if o != t and o in reason]  # names no other track


def test_bookkeeping_storage_failures_end_the_run_with_one_line_and_status_follows(tmp_path):
    """A full disk, a read-only mount, a storage setting naming a file, an unknown runner:
    the run ends with one line naming the problem, each track's reason is short and its own,
    and ``status`` shows the latest run's reasons, not those of the run before."""
    library = tmp_path / "library"
    ids = _library(library, "t", 2, noise=False)
    (library / "broken.wav").write_text("not audio at all")
    ids.append("broken")
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount(str(disk)):
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN); not available here")
    home = str(tmp_path / "home")
    env = {"KLIO_ASSETS_STORAGE": str(disk)}
    run_cli("add", str(library), home=home, env=env, check=True)
    command = ("run", "source_audio", "--force", *_tracks(ids))
    with _unmounted_at_exit(str(disk)):
        first, _ = cli_json(*command, home=home, env=env, expect_code=1)
        assert first["assets"]["source_audio"] == {"computed": 2, "failed": 1}
        status, _ = cli_json("status", home=home, env=env, expect_code=None)
        assert "not audio" in status["assets"]["source_audio"]["failed"]["broken"]

        unknown = {**env, "KLIO_ASSETS_BEAM_OPTIONS": "--runner=NoSuchRunner"}
        out, _ = cli_json(*command, home=home, env=unknown, expect_code=1)
        _bookkeeping_failure(out, "Unexpected pipeline runner: NoSuchRunner", ids, library)
        status, _ = cli_json("status", home=home, env=env, expect_code=None)
        assert set(status["assets"]["source_audio"]["failed"]) == set(ids)
        assert "Beam job failed" in status["assets"]["source_audio"]["failed"]["broken"]

        afile = tmp_path / "afile"
        afile.write_text("")
        out, _ = cli_json(*command, home=home, env={"KLIO_ASSETS_STORAGE": str(afile)},
                          expect_code=1)  # fmt: skip
        _bookkeeping_failure(out, "Not a directory", ids, library)

        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        try:
            out, _ = cli_json(*command, home=home, env=env, expect_code=1)
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        _bookkeeping_failure(out, "Read-only file system", ids, library)

        filler = disk / "filler"
        with open(filler, "wb") as fh:  # 100 % full
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * (1 << 16))
        out, _ = cli_json(*command, home=home, env=env, expect_code=1)
        _bookkeeping_failure(out, "No space left on device", ids, library)
        assert not [p for p in _snapshot(str(disk)) if ".tmp-" in p]
        filler.unlink()

        # Full during the run: one page left takes the run's plan, not the tracks' results.
        with open(filler, "wb") as fh:
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            fh.write(b"\0" * (free - 4096))
        out, _ = cli_json(*command, home=home, env=env, expect_code=1)
        _bookkeeping_failure(out, "No space left on device", ids, library)
        assert "the worker process exited with status 1" in out["errors"][0]
        filler.unlink()
        again, _ = cli_json(*command, home=home, env=env, expect_code=1)
        assert again["assets"]["source_audio"] == {"computed": 2, "failed": 1}
