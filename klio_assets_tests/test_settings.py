"""Deployment settings: one typed field per KLIO_ASSETS_* variable, read in one place, refused in
one line naming the variable set; the README's tables and the CLI's help come from the model."""

from __future__ import annotations

import os
import pathlib
import re

import pytest

from klio_assets.errors import ParameterError
from klio_assets.settings import (
    LIMIT_DEFAULTS,
    Settings,
    settings_help,
    settings_table_markdown,
    update_settings_tables,
    variable_names,
)
from klio_assets_tests.conftest import run_cli

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_defaults_derive_from_the_home(tmp_path):
    home = str(tmp_path / "h")
    settings = Settings.from_env({"KLIO_ASSETS_HOME": home})
    assert settings.home == home
    assert settings.storage == os.path.join(home, "outputs")
    assert settings.catalog_url == f"sqlite:///{os.path.join(home, 'catalog.db')}"
    assert settings.landing == os.path.join(home, "landing")
    assert (settings.batch_size, settings.landing_max_tracks, settings.landing_settle_s) == (
        1000,
        1000,
        2.0,
    )
    assert settings.beam_options == settings.analysis_modules == settings.auto_analyses == []
    assert settings.params == settings.dataflow == {}
    assert (settings.automation, settings.landing_subscription) == ("stopped", "")
    assert (settings.backfill_cron, settings.catalog_tables_cron) == ("0 3 * * *", "*/30 * * * *")
    assert (settings.embed_image_bytes, settings.backfill_max_runs) == (98304, 50)
    assert settings.sensor_interval_s == 30


def test_special_forms_are_parsed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({
        "KLIO_ASSETS_HOME": "home", "KLIO_ASSETS_STORAGE": "gs://b/out",
        "KLIO_ASSETS_BEAM_OPTIONS": "--runner=PortableRunner '--job_endpoint=localhost:8099'",
        "KLIO_ASSETS_BATCH_SIZE": "7", "KLIO_ASSETS_ANALYSES": " my_pkg.a , other ,",
        "KLIO_ASSETS_PARAMS": '{"downsampled_audio": {"sample_rate": 16000}}',
        "KLIO_ASSETS_DATAFLOW": '{"project": "p"}', "KLIO_ASSETS_LANDING": "gs://b/in",
        "KLIO_ASSETS_AUTO_ANALYSES": "loudness,beats", "KLIO_ASSETS_AUTOMATION": "running",
        "KLIO_ASSETS_CATALOG": "postgresql://db/klio", "KLIO_ASSETS_EMBED_IMAGES": "0",
    })  # fmt: skip
    assert settings.home == str(tmp_path / "home")  # absolute
    assert settings.storage == "gs://b/out"
    assert settings.catalog_url == "postgresql://db/klio"
    assert settings.beam_options == ["--runner=PortableRunner", "--job_endpoint=localhost:8099"]
    assert settings.analysis_modules == ["my_pkg.a", "other"]
    assert settings.auto_analyses == ["loudness", "beats"]
    assert settings.params == {"downsampled_audio": {"sample_rate": 16000}}
    assert settings.dataflow == {"project": "p"}
    # derived defaults follow the settings they derive from
    assert (settings.landing_max_tracks, settings.landing_settle_s) == (7, 30.0)
    assert (settings.automation, settings.embed_image_bytes) == ("running", 0)


def test_landing_none_means_pubsub_only_and_empty_values_mean_unset(tmp_path):
    settings = Settings.from_env({
        "KLIO_ASSETS_HOME": str(tmp_path), "KLIO_ASSETS_LANDING": "none",
        "KLIO_ASSETS_STORAGE": "", "KLIO_ASSETS_BATCH_SIZE": "",
    })  # fmt: skip
    assert settings.landing == ""
    assert settings.storage == os.path.join(str(tmp_path), "outputs")
    assert settings.batch_size == 1000


def test_a_given_mapping_is_read_and_the_process_environment_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("KLIO_ASSETS_HOME", str(tmp_path))
    monkeypatch.setenv("KLIO_ASSETS_BATCH_SIZE", "7")
    assert Settings.from_env().batch_size == 7
    assert Settings.from_env({"KLIO_ASSETS_HOME": str(tmp_path)}).batch_size == 1000
    assert Settings().batch_size == 1000  # the model alone reads no environment


@pytest.mark.parametrize(
    ("variable", "value", "wanted"),
    [
        ("KLIO_ASSETS_BATCH_SIZE", "0", "an integer from 1 to 100000"),
        ("KLIO_ASSETS_BATCH_SIZE", "abc", "an integer from 1 to 100000"),
        ("KLIO_ASSETS_PARAMS", "{bad", "not valid JSON"),
        ("KLIO_ASSETS_PARAMS", '{"loudness": 3}', "a JSON object {analysis: {parameter: value}}"),
        ("KLIO_ASSETS_DATAFLOW", "[1]", "a JSON object"),
        ("KLIO_ASSETS_BEAM_OPTIONS", "--a='b", "shell words"),
        ("KLIO_ASSETS_ANALYSES", "pkg.mod,not-a-module", "'not-a-module' is not a module name"),
        ("KLIO_ASSETS_AUTOMATION", "yes", "'running' or 'stopped'"),
        ("KLIO_ASSETS_TRACK_TIMEOUT", "inf", "a positive finite number"),
        ("KLIO_ASSETS_LANDING_SETTLE_S", "-1", "a finite number of at least 0"),
        ("KLIO_ASSETS_LANDING_MAX_TRACKS", "100001", "an integer from 1 to 100000"),
        ("KLIO_ASSETS_SENSOR_INTERVAL_S", "0.5", "an integer of at least 1"),
        ("KLIO_ASSETS_EMBED_IMAGES", "-1", "an integer of at least 0"),
        ("KLIO_ASSETS_BACKFILL_MAX_RUNS", "0", "an integer of at least 1"),
    ],
)
def test_a_bad_value_is_refused_in_one_line_naming_only_the_variable_set(
    tmp_path, variable, value, wanted
):
    with pytest.raises(ParameterError) as caught:
        Settings.from_env({"KLIO_ASSETS_HOME": str(tmp_path), variable: value})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{variable}={value!r}: ")
    assert wanted in message
    # settings derived from the bad one (LANDING_MAX_TRACKS from BATCH_SIZE...) are not blamed
    assert re.findall(r"KLIO_ASSETS_[A-Z_]+", message) == [variable]
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_several_bad_values_are_all_named_on_one_line(tmp_path):
    with pytest.raises(ParameterError) as caught:
        Settings.from_env({
            "KLIO_ASSETS_HOME": str(tmp_path), "KLIO_ASSETS_BATCH_SIZE": "0",
            "KLIO_ASSETS_PARAMS": "{bad",
        })  # fmt: skip
    message = str(caught.value)
    assert "\n" not in message
    assert re.findall(r"KLIO_ASSETS_[A-Z_]+", message) == [
        "KLIO_ASSETS_BATCH_SIZE",
        "KLIO_ASSETS_PARAMS",
    ]


def test_an_unknown_parameter_of_a_known_analysis_is_refused(tmp_path):
    from klio_assets.analyses import downsampled_audio, source_audio
    from klio_assets.worker.plan import plan_analyses

    settings = Settings.from_env({
        "KLIO_ASSETS_HOME": str(tmp_path),
        "KLIO_ASSETS_PARAMS": '{"downsampled_audio": {"samplerate": 16000}}',
    })  # fmt: skip
    with pytest.raises(ParameterError, match=r"'downsampled_audio' has no parameter 'samplerate'"):
        plan_analyses([source_audio, downsampled_audio], settings.params)
    with pytest.raises(ParameterError, match=r"its parameters: sample_rate"):
        plan_analyses([source_audio, downsampled_audio], settings.params)
    planned = plan_analyses(
        [source_audio, downsampled_audio], {"downsampled_audio": {"sample_rate": 16000}}
    )
    assert planned["downsampled_audio"].params == {"sample_rate": 16000}


@pytest.mark.parametrize(
    ("command", "env", "said"),
    [
        ("status", {"KLIO_ASSETS_BATCH_SIZE": "abc"}, "KLIO_ASSETS_BATCH_SIZE='abc'"),
        ("status", {"KLIO_ASSETS_BATCH_SIZE": "0"}, "KLIO_ASSETS_BATCH_SIZE='0'"),
        ("status", {"KLIO_ASSETS_PARAMS": "{bad"}, "KLIO_ASSETS_PARAMS='{bad'"),
        (
            "run",
            {"KLIO_ASSETS_PARAMS": '{"downsampled_audio": {"samplerate": 16000}}'},
            "'downsampled_audio' has no parameter 'samplerate'",
        ),
    ],
)
def test_the_cli_refuses_a_bad_setting_in_one_line_without_a_traceback(
    tmp_path, command, env, said
):
    """Issue 17, items 7 and 13: a misspelled parameter once ran with the default (exit 0), a
    bad value gave a 28-51-line traceback naming a setting the user never set."""
    done = run_cli(command, home=str(tmp_path / "home"), env=env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and said in lines[0], done.stderr
    assert not (tmp_path / "home" / "outputs").exists()  # nothing was computed


def test_the_readme_tables_are_generated_from_the_model():
    readme = (REPO / "README.md").read_text()
    assert update_settings_tables(readme) == readme, (
        "README settings tables differ from klio_assets.settings: "
        "run python scripts/settings_table.py"
    )
    # no page names a variable the settings do not read
    pages = [readme, *(p.read_text() for p in [*(REPO / "docs").rglob("*.md"),
                                                *(REPO / "deploy").rglob("*.yaml")])]  # fmt: skip
    documented = set(re.findall(r"KLIO_ASSETS_[A-Z_]*[A-Z]", "\n".join(pages)))
    assert documented <= set(variable_names()), documented - set(variable_names())
    tables = settings_table_markdown("deployment") + settings_table_markdown("automation")
    for variable in variable_names():
        assert tables.count(f"\n| `{variable}` |") == 1


def test_help_lists_every_setting_on_one_line_in_plain_text():
    text = settings_help()
    assert "`" not in text
    for variable in variable_names():
        (line,) = [line for line in text.splitlines() if line.split()[:1] == [variable]]
        assert "[default: " in line
    assert "KLIO_ASSETS_BATCH_SIZE" in text and "[default: 1000]" in text


def test_documented_limit_defaults_are_the_workers():
    from klio_assets.worker.audio import DecodeLimits

    limits = DecodeLimits()
    assert float(LIMIT_DEFAULTS["track_timeout"]) == limits.timeout_s
    assert float(LIMIT_DEFAULTS["max_duration"]) == limits.max_duration_s
    assert int(LIMIT_DEFAULTS["max_channels"]) == limits.max_channels


#: Modules that read a KLIO_ASSETS_* variable themselves, with the reason.
_OWN_READERS = {
    # the Beam worker side may not import the settings; its numba cache falls back to the home
    "klio_assets/analyses/_librosa.py",
}


def test_no_module_but_the_settings_reads_a_klio_assets_variable():
    read = re.compile(r"""(environ|env|getenv)\s*(\.get\(|\[|\()\s*["']KLIO_ASSETS_""")
    readers = set()
    for root in ("klio_assets", "resources", "sensors"):
        for path in (REPO / root).rglob("*.py"):
            if read.search(path.read_text()):
                readers.add(str(path.relative_to(REPO)))
    assert readers <= _OWN_READERS, f"read KLIO_ASSETS_* through klio_assets.settings: {readers}"
    assert readers == _OWN_READERS  # the pattern finds the known reader (drop it when it goes)


def test_the_home_fixture_and_run_cli_clear_every_setting(monkeypatch, request, tmp_path):
    for variable in variable_names():
        monkeypatch.setenv(variable, "bogus")
    monkeypatch.setenv("klio_assets_batch_size", "bogus")  # read too: names match in any case
    home = request.getfixturevalue("home")
    assert Settings.from_env().home == home  # nothing else left over: no refusal
    monkeypatch.setenv("KLIO_ASSETS_LANDING_MAX_TRACKS", "bogus")
    done = run_cli("status", "--json", home=home)
    assert done.returncode == 0, done.stderr


def test_cli_help_lists_every_setting_the_model_reads():
    from click.testing import CliRunner

    from klio_assets.cli import main
    from klio_assets.settings import variable_names

    shown = CliRunner().invoke(main, ["--help"]).output
    missing = [name for name in variable_names() if name not in shown]
    assert missing == []
