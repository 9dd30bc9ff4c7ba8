"""Packaging: the wheel's top-level names, the editable install, the code location."""

import glob
import os
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
