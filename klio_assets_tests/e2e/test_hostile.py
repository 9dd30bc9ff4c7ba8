"""Hostile and odd inputs in one real mixed batch: ``klio-assets add`` and ``klio-assets run``,
each in its own process, over the generated corpus of :mod:`klio_assets_tests.support.hostile`.

Every input gets either a correct result or one failure line naming the track, the file and the
problem; every good track of the batch is computed; a decoder that hangs is killed by the
per-track timeout, with the processes it started.
"""

from __future__ import annotations

import os
import time

import pytest

from klio_assets_tests.conftest import cli_json, run_cli
from klio_assets_tests.support import hostile

pytestmark = pytest.mark.e2e
ANALYSES = ("source_audio", "downsampled_audio")


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    folder = str(base / "library")
    cases = hostile.make_corpus(folder, outside=str(base / "outside"))
    bin_dir = hostile.hanging_ffmpeg(str(base / "bin"))
    env = {
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
        "KLIO_ASSETS_TRACK_TIMEOUT": str(hostile.TRACK_TIMEOUT_S),
        "KLIO_ASSETS_MAX_DURATION": str(hostile.MAX_DURATION_S),
    }
    home = str(base / "home")
    added = run_cli("add", folder, home=home, env=env)
    started = time.monotonic()
    run, _ = cli_json("run", *ANALYSES, home=home, env=env, expect_code=1)
    wall = time.monotonic() - started
    outcomes = hostile.judge(
        cases, folder=folder, add_stderr=added.stderr, run=run, analyses=ANALYSES
    )
    print("\n" + hostile.markdown_table(outcomes))
    return {
        "cases": cases,
        "added": added,
        "run": run,
        "outcomes": outcomes,
        "bin": bin_dir,
        "home": home,
        "env": env,
        "wall": wall,
    }


def test_every_hostile_input_gets_a_correct_result_or_a_plain_reason(corpus_run):
    wrong = {o.case.label: o.problems for o in corpus_run["outcomes"] if not o.ok}
    assert not wrong, hostile.markdown_table(corpus_run["outcomes"])
    assert len(corpus_run["outcomes"]) >= 30


def test_no_good_track_of_the_mixed_batch_is_lost(corpus_run):
    good = [c.track_id for c in corpus_run["cases"] if c.expect == "computed"]
    counts = corpus_run["run"]["assets"]
    expected_failed = sum(c.expect == "failed" for c in corpus_run["cases"])
    for name in ANALYSES:
        assert counts[name] == {"computed": len(good), "failed": expected_failed}
    lost = [
        t
        for t in good
        for n in ANALYSES
        if corpus_run["run"]["tracks"][t][n]["status"] != "computed"
    ]
    assert lost == []


def test_symlink_out_of_the_catalog_is_refused_and_the_rest_registered(corpus_run):
    added = corpus_run["added"]
    registrable = sum(c.expect != "refused" for c in corpus_run["cases"])
    assert added.returncode == 1  # something was refused
    assert f"registered {registrable} new tracks" in added.stdout


def test_stalled_decoder_is_killed_with_its_children_at_the_timeout(corpus_run):
    hung = next(c for c in corpus_run["cases"] if hostile.HANG_MARKER in c.name)
    assert corpus_run["run"]["tracks"][hung.track_id]["source_audio"]["status"] == "failed"
    with open(os.path.join(corpus_run["bin"], hostile.STALLED_PIDS)) as fh:
        pids = [int(line) for line in fh if line.strip()]
    assert len(pids) == 1  # one shared decode for both analyses; no fallback retry of a timeout
    for pid in pids:
        assert not _alive(pid), f"the stalled decoder's child {pid} outlived the run"
    # the whole batch waited for the one stalled track only as long as the timeout
    assert corpus_run["wall"] < 120


def test_rerun_retries_only_the_transient_failures_and_keeps_the_rest(corpus_run):
    run, _ = cli_json(
        "run", *ANALYSES, home=corpus_run["home"], env=corpus_run["env"], expect_code=None
    )
    failed = sorted(c.track_id for c in corpus_run["cases"] if c.expect == "failed")
    # A broken file fails the same way again: held (failed earlier). A decoder that timed out
    # may do better next time: tried again.
    held = {key.split("/", 1)[1] for key in run["failed_earlier"]}
    tried = set(run["tracks"])
    assert sorted(held | tried) == failed and not held & tried
    hung = next(c for c in corpus_run["cases"] if hostile.HANG_MARKER in c.name)
    assert hung.track_id in tried and len(held) >= len(failed) - 2
    good = sum(c.expect == "computed" for c in corpus_run["cases"])
    assert all(len(v) == good for v in run["already_materialized"].values())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False
