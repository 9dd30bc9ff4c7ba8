"""Bring your own model: the README's example, run exactly as written through ``klio-assets run``
with a small ONNX model the test builds (no torch)."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from klio_assets_tests.conftest import cli_json, run_cli
from klio_assets_tests.worker.test_models import write_linear_onnx

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def readme_example() -> str:
    text = open(os.path.join(REPO, "README.md")).read()
    (block,) = re.findall(
        r"<!-- byom:start -->\n```python\n(.*?)```\n<!-- byom:end -->", text, re.S
    )
    return block


def test_readme_example_runs_a_users_onnx_model(tmp_path, catalog_tracks):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 25  # "about 20 lines"
    package = tmp_path / "site" / "my_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(code)
    weights = np.random.default_rng(5).standard_normal((16000, 8)).astype(np.float32) * 0.01
    write_linear_onnx(package / "embedder.onnx", weights)
    library = tmp_path / "library"
    library.mkdir()
    for key in ("wav44", "flac48"):
        shutil.copyfile(
            catalog_tracks[key].path, library / os.path.basename(catalog_tracks[key].path)
        )
    home = str(tmp_path / "home")
    env = {"KLIO_ASSETS_ANALYSES": "my_models", "PYTHONPATH": str(tmp_path / "site")}
    run_cli("add", str(library), home=home, env=env, check=True)
    done, _ = cli_json("run", "track_embedding", home=home, env=env)
    assert done["assets"] == {"track_embedding": {"computed": 2}}, done
    for track_id, record in done["tracks"].items():
        out = record["track_embedding"]
        with open(out["uri"]) as fh:
            result = json.load(fh)
        assert len(result["embedding"]) == 8 and result["windows"] >= 2, track_id
    # the same weights never recompute; new weights do (their hash is in the output version)
    again, _ = cli_json("run", "track_embedding", home=home, env=env)
    assert again["assets"]["track_embedding"].get("computed", 0) == 0, again
    write_linear_onnx(package / "embedder.onnx", weights * 2)
    retrained, _ = cli_json("run", "track_embedding", home=home, env=env)
    assert retrained["assets"] == {"track_embedding": {"computed": 2}}, retrained
