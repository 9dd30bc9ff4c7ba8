"""Packaging: the wheel's top-level names, the editable install, the code location."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the committed tree (the build leaves nothing in the repo)."""
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if os.path.isfile(os.path.join(REPO, name)):
            os.makedirs(src / os.path.dirname(name), exist_ok=True)
            shutil.copy2(os.path.join(REPO, name), src / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
    )
    (path,) = glob.glob(str(out / "klio_assets-*.whl"))
    return path


def test_wheel_installs_no_generic_top_level_packages(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"klio_assets", next(t for t in top if t.endswith(".dist-info"))}
    assert "klio_assets/resources/beam.py" in names
    assert "klio_assets/sensors/__init__.py" in names
    top_level = next(n for n in names if n.endswith("top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["klio_assets"]


def test_wheel_holds_every_module_of_the_package(wheel):
    """setup.cfg lists the packages: a new subpackage left out of it would be missing from installs."""
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = [
        os.path.relpath(os.path.join(root, f), REPO)
        for root, _, files in os.walk(os.path.join(REPO, "klio_assets"))
        for f in files
        if f.endswith(".py")
    ]
    assert "klio_assets/profiling/measure.py" in modules
    assert sorted(m for m in modules if m not in names) == []


def test_editable_install_imports_every_module_from_the_repo():
    code = (
        "import importlib, pkgutil, klio_assets, klio_assets.resources, klio_assets.sensors\n"
        "mods = [m.name for m in pkgutil.walk_packages(klio_assets.__path__, 'klio_assets.')]\n"
        "for m in mods: importlib.import_module(m)\n"
        "print(klio_assets.resources.__file__); print(klio_assets.sensors.__file__); print(len(mods))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    resources, sensors, count = out.stdout.split()
    assert resources == os.path.join(REPO, "resources", "__init__.py")
    assert sensors == os.path.join(REPO, "sensors", "__init__.py")
    assert int(count) >= 20


def test_dagster_validates_the_code_location(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "KLIO_ASSETS_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    done = subprocess.run(
        [dagster, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "All code locations passed validation" in done.stderr + done.stdout


#: What only the Dagster side needs: none of it may reach a Beam worker.
DAGSTER_SIDE = ("dagster", "dagster-webserver", "dagster-gcp", "dagster-k8s", "dagster-postgres",
                "click", "rich", "sqlalchemy", "pydantic-settings")  # fmt: skip


def _requirements(wheel: str) -> dict[str, set[str]]:
    """The wheel's requirements by extra ('' for the core), as lowercase project names."""
    archive = zipfile.ZipFile(wheel)
    metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA")))
    out: dict[str, set[str]] = {}
    for line in metadata.decode().splitlines():
        if not line.startswith("Requires-Dist: "):
            continue
        spec, _, marker = line[len("Requires-Dist: ") :].partition(";")
        name = re.split(r"[\s\[<>=!~]", spec.strip(), maxsplit=1)[0].lower()
        extra = re.search(r"extra == ['\"]([\w-]+)['\"]", marker)
        out.setdefault(extra.group(1) if extra else "", set()).add(name)
    return out


def test_the_worker_install_carries_no_dagster(wheel):
    """A Beam worker installs the core plus `gcs` and `models` (docker/beam-worker.Dockerfile):
    no Dagster."""
    requirements = _requirements(wheel)
    worker = requirements[""] | requirements["gcs"] | requirements["models"]
    assert "apache-beam" in worker and "soundfile" in worker
    assert sorted(worker & set(DAGSTER_SIDE)) == []
    assert "klio-assets" not in worker  # no extra pulling the Dagster side in
    assert {"dagster", "click", "sqlalchemy"} <= requirements["dagster"]
    text = open(os.path.join(REPO, "docker", "beam-worker.Dockerfile")).read()
    (install,) = re.findall(r"klio_assets-\*\.whl\)(\[[\w,]*\])", text)
    assert install == "[gcs,models]"
    assert "onnxruntime" in requirements["models"]


def test_a_worker_runs_a_pipeline_with_dagster_unimportable(tmp_path, catalog_tracks):
    """The standalone worker entry point (what Dataflow runs) with every Dagster-side package
    made unimportable: it decodes, analyses and writes results."""
    track = catalog_tracks["wav44"]
    tracks = tmp_path / "tracks.jsonl"
    tracks.write_text(json.dumps({"track_id": track.track_id, "uri": track.path}) + "\n")
    code = (
        "import sys\n"
        f"for name in {[n.replace('-', '_') for n in DAGSTER_SIDE]!r}: sys.modules[name] = None\n"
        "from klio_assets.analyses import downsampled_audio, source_audio\n"
        "from klio_assets.worker.plan import RunPlan, plan_analyses\n"
        "from klio_assets.worker.pipeline import run\n"
        f"plan = RunPlan(run_id='w', storage_root={str(tmp_path / 'out')!r},\n"
        "    analyses=plan_analyses([source_audio, downsampled_audio]),\n"
        "    selected=['source_audio', 'downsampled_audio'], lanes=1)\n"
        f"open({str(tmp_path / 'plan.json')!r}, 'w').write(plan.to_json())\n"
        f"run(['--plan', {str(tmp_path / 'plan.json')!r}, '--tracks', {str(tracks)!r},\n"
        "     '--runner=FnApiRunner'])\n"
        "assert not any(m.startswith('dagster') for m in sys.modules if sys.modules[m] is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    flacs = list((tmp_path / "out" / "downsampled_audio").rglob(f"{track.track_id}.flac"))
    assert len(flacs) == 1 and flacs[0].stat().st_size > 0
