"""Two ``klio-assets run`` processes at once over overlapping tracks, on PostgreSQL (Dagster's
storage and the track catalog), as in production: no corrupt output, every track's output
valid, bookkeeping consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import dagster as dg
import pytest
import soundfile as sf

from klio_assets.worker.audio import exact_length
from klio_assets_tests.conftest import _ENV_VARS, cli_json, run_cli
from klio_assets_tests.support import synth
from klio_assets_tests.support.postgres import running_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
N_TRACKS = 18
SECONDS = 10.0
RATE = 48000
ANALYSES = ("source_audio", "downsampled_audio")


def test_two_runs_over_overlapping_tracks_at_once_on_postgres(tmp_path):
    library = tmp_path / "library"
    for i in range(N_TRACKS):
        synth.write(str(library / f"t{i:03d}.flac"), synth.sine(300 + 11 * i, SECONDS, RATE), RATE)
    synth.write(str(library / "t999-broken.flac"), synth.sine(100, 0.5, RATE), RATE)
    with open(library / "t999-broken.flac", "r+b") as fh:
        fh.truncate(2000)  # one track failing in both runs: both record its reason
    ids = [f"t{i:03d}" for i in range(N_TRACKS)]
    first, second = ids[: 2 * N_TRACKS // 3], ids[N_TRACKS // 3 :]  # a third in both
    with running_postgres(tmp_path / "pg") as pg:
        pg.create_database("dagster_conc")
        home = tmp_path / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(pg.dagster_yaml("dagster_conc"))
        env = {"KLIO_ASSETS_CATALOG": pg.create_database("catalog_conc")}
        run_cli("add", str(library), home=str(home), env=env, check=True)

        full_env = {k: v for k, v in os.environ.items() if k not in _ENV_VARS}
        full_env.update(env, KLIO_ASSETS_HOME=str(home))
        procs = []
        for picked in (first, second):
            args = [a for t in [*picked, "t999-broken"] for a in ("--tracks", t)]
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "klio_assets.cli", "run", *ANALYSES, *args, "--json"],
                env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))  # fmt: skip
        started = time.monotonic()
        outs = [p.communicate(timeout=600) for p in procs]
        wall = time.monotonic() - started
        results = []
        for proc, (stdout, stderr) in zip(procs, outs, strict=True):
            assert proc.returncode == 1, stderr  # only the broken track failed
            results.append(json.loads(stdout))
        for result, picked in zip(results, (first, second), strict=True):
            assert result["errors"] == []
            assert set(result["failed"]) == {f"{n}/t999-broken" for n in ANALYSES}
            for t in picked:
                for name in ANALYSES:
                    assert result["tracks"][t][name]["status"] in ("computed", "skipped"), result[
                        "tracks"
                    ][t]

        storage_root = home / "outputs"
        for t in ids:  # every output whole and right, whichever run wrote it last
            uris = {
                name: results[0]["tracks"].get(t, results[1]["tracks"].get(t))[name]["uri"]
                for name in ANALYSES
            }
            y, rate = sf.read(uris["downsampled_audio"], dtype="float32")
            assert rate == 22050 and len(y) == exact_length(int(SECONDS * RATE), RATE, 22050)
            with open(uris["source_audio"]) as fh:
                assert json.load(fh)["frames"] == int(SECONDS * RATE)
        temporaries = [
            os.path.join(d, f)
            for d, _, files in os.walk(storage_root)
            for f in files
            if ".tmp-" in f
        ]
        assert temporaries == []

        status, _ = cli_json("status", home=str(home), env=env, expect_code=0)
        for name in ANALYSES:
            state = status["assets"][name]
            assert state["materialized"] == N_TRACKS and state["missing"] == 0
            assert list(state["failed"]) == ["t999-broken"]
            assert "cannot decode" in state["failed"]["t999-broken"]
        os.environ["DAGSTER_HOME"] = str(home)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            records = {r.dagster_run.run_id: r for r in instance.get_run_records()}
            assert set(records) == {run_id for result in results for run_id in result["runs"]}
            # the ranges holding the shared tracks ran at the same time
            a, b = records[results[0]["runs"][0]], records[results[1]["runs"][0]]
            assert a.start_time < b.end_time and b.start_time < a.end_time, (
                "the runs did not overlap"
            )
            for name in ANALYSES:
                assert set(instance.get_materialized_partitions(dg.AssetKey(name))) == set(ids)
        rerun, _ = cli_json(
            "run", *ANALYSES, *[a for t in ids for a in ("--tracks", t)], home=str(home), env=env
        )
        assert rerun["runs"] == []  # nothing left to do for the good tracks
    print(f"\ntwo overlapping runs on PostgreSQL in {wall:.1f} s, {N_TRACKS} tracks all valid")
