"""Deployment settings, read from the environment in one place.

=============================  ================================================================
``KLIO_ASSETS_HOME``           Dagster instance folder (its ``dagster.yaml`` is honoured, e.g.
                               for PostgreSQL) and default home of everything else.
                               Default ``./.klio-assets``.
``KLIO_ASSETS_STORAGE``        Output root URI: a folder, ``gs://bucket/prefix`` or
                               ``s3://bucket/prefix``. Default ``$KLIO_ASSETS_HOME/outputs``.
``KLIO_ASSETS_BEAM_OPTIONS``   Beam pipeline options passed through, e.g.
                               ``--runner=PortableRunner --job_endpoint=localhost:8099``.
``KLIO_ASSETS_BATCH_SIZE``     Most tracks per run (one Beam job). Default 1000.
``KLIO_ASSETS_CATALOG``        SQLAlchemy URL of the track catalog. Default SQLite in the home.
``KLIO_ASSETS_ANALYSES``       Extra modules defining analyses, comma separated.
``KLIO_ASSETS_PARAMS``         JSON ``{analysis: {parameter: value}}`` overriding defaults.
``KLIO_ASSETS_EMBED_IMAGES``   Largest plot (bytes) embedded in a track's Dagster metadata;
                               0 links plots by URI only. Default 98304 (96 KiB).
``KLIO_ASSETS_TRACK_TIMEOUT``  Seconds a probe or decode of one track may take before the
                               decoder is killed and the track fails. Default 900.
``KLIO_ASSETS_MAX_DURATION``   Longest source accepted, in seconds (checked on the header
                               before decoding, and while decoding). Default 86400.
``KLIO_ASSETS_MAX_CHANNELS``   Most channels accepted. Default 32.
``KLIO_ASSETS_DATAFLOW``       JSON of :class:`~klio_assets.resources.beam.DataflowConfig` fields
                               (project, region, temp_location, sdk_container_image, ...):
                               run every batch on Google Cloud Dataflow.
=============================  ================================================================

The three limits reach the Beam workers as pipeline options (``--track_timeout_s``,
``--max_duration_s``, ``--max_channels``, see
:class:`klio_assets.worker.pipeline.TrackLimitsOptions`), appended to the Beam options.

Automation (sensors and schedules, :mod:`klio_assets.sensors`):

====================================  ========================================================
``KLIO_ASSETS_AUTOMATION``            ``running``: sensors and schedule start with the daemon;
                                      ``stopped`` (default): start them in the UI.
``KLIO_ASSETS_LANDING``               Folder or ``gs://`` prefix watched for new audio
                                      (``none``: Pub/Sub only). Default ``$KLIO_ASSETS_HOME/landing``.
``KLIO_ASSETS_LANDING_SUBSCRIPTION``  Pub/Sub subscription (``projects/P/subscriptions/S``)
                                      carrying track IDs or object URIs. Default none.
``KLIO_ASSETS_LANDING_ROOTS``         Folders (comma separated) whose files Pub/Sub messages
                                      may name, besides a local landing folder. Default none.
``KLIO_ASSETS_LANDING_MAX_TRACKS``    Most new tracks registered per sensor tick. Default
                                      ``KLIO_ASSETS_BATCH_SIZE``.
``KLIO_ASSETS_LANDING_SETTLE_S``      A file must be this old (seconds) to be taken. Default 2
                                      (30 for ``gs://``: the server's clock is not ours).
``KLIO_ASSETS_SENSOR_INTERVAL_S``     Seconds between sensor ticks. Default 30.
``KLIO_ASSETS_AUTO_ANALYSES``         Analyses run for new tracks, comma separated. Default all.
``KLIO_ASSETS_BACKFILL_CRON``         Cron of the catalog backfill schedule. Default
                                      ``0 3 * * *`` (daily, 03:00 UTC).
``KLIO_ASSETS_BACKFILL_MAX_RUNS``     Most runs one backfill tick launches. Default 50.
``KLIO_ASSETS_CATALOG_TABLES_CRON``   Cron of the ``catalog_tables_schedule`` (duplicate groups,
                                      track features; incremental). Default ``*/30 * * * *``.
====================================  ========================================================
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from klio_assets.errors import ParameterError

DEFAULT_HOME = "./.klio-assets"
DEFAULT_BATCH_SIZE = 1000
DEFAULT_EMBED_IMAGE_BYTES = 96 * 1024
#: Environment variables of the per-track limits, and the Beam pipeline option each sets.
LIMIT_VARIABLES = {
    "KLIO_ASSETS_TRACK_TIMEOUT": "track_timeout_s",
    "KLIO_ASSETS_MAX_DURATION": "max_duration_s",
    "KLIO_ASSETS_MAX_CHANNELS": "max_channels",
}
DEFAULT_BACKFILL_CRON = "0 3 * * *"
#: The catalog tables cost what changed since their last update: every half hour is cheap.
DEFAULT_CATALOG_TABLES_CRON = "*/30 * * * *"
DEFAULT_BACKFILL_MAX_RUNS = 50
DEFAULT_SENSOR_INTERVAL_S = 30


class Settings(BaseModel):
    """klio-assets settings for one deployment (see the module docstring for the variables)."""

    home: str = Field(description="Dagster instance folder (DAGSTER_HOME), absolute.")
    storage: str = Field(description="Root URI of analysis outputs.")
    beam_options: list[str] = Field(
        default_factory=list, description="Extra Beam pipeline options."
    )
    batch_size: int = Field(
        DEFAULT_BATCH_SIZE, ge=1, le=100_000, description="Most tracks per run."
    )
    catalog_url: str = Field(description="SQLAlchemy URL of the track catalog.")
    analysis_modules: list[str] = Field(
        default_factory=list, description="Modules with extra analyses."
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Parameter overrides."
    )
    embed_image_bytes: int = Field(
        DEFAULT_EMBED_IMAGE_BYTES,
        ge=0,
        description="Largest plot embedded in Dagster metadata (0: none).",
    )
    dataflow: dict[str, Any] = Field(
        default_factory=dict, description="Dataflow settings (empty: no Dataflow)."
    )

    automation: Literal["running", "stopped"] = Field(
        "stopped", description="Whether sensors and schedules start running with the daemon."
    )
    landing: str = Field("", description="Folder or gs:// prefix watched for new audio.")
    landing_subscription: str = Field("", description="Pub/Sub subscription carrying new tracks.")
    landing_roots: list[str] = Field(
        default_factory=list,
        description="Folders whose files Pub/Sub messages may name, besides a local landing folder.",
    )
    landing_max_tracks: int = Field(
        DEFAULT_BATCH_SIZE, ge=1, le=100_000, description="Most new tracks registered per tick."
    )
    landing_settle_s: float = Field(2.0, ge=0, description="Minimum age of a landed file, seconds.")
    sensor_interval_s: int = Field(
        DEFAULT_SENSOR_INTERVAL_S, ge=1, description="Seconds between ticks."
    )
    auto_analyses: list[str] = Field(
        default_factory=list, description="Analyses run for new tracks (all)."
    )
    backfill_cron: str = Field(
        DEFAULT_BACKFILL_CRON, description="Cron of the catalog backfill schedule."
    )
    catalog_tables_cron: str = Field(
        DEFAULT_CATALOG_TABLES_CRON, description="Cron of the catalog tables' (incremental) update."
    )
    backfill_max_runs: int = Field(
        DEFAULT_BACKFILL_MAX_RUNS, ge=1, description="Most runs per backfill tick."
    )

    @field_validator("analysis_modules")
    @classmethod
    def _modules_are_dotted_names(cls, value: list[str]) -> list[str]:
        for module in value:
            if not all(part.isidentifier() for part in module.split(".")):
                raise ValueError(f"{module!r} is not a module name")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: ``os.environ``).

        Raises
        ------
        ParameterError
            A variable has a value that cannot be used, named in the message.
        """
        env = os.environ if environ is None else environ
        home = os.path.abspath(os.path.expanduser(env.get("KLIO_ASSETS_HOME") or DEFAULT_HOME))
        storage = env.get("KLIO_ASSETS_STORAGE") or os.path.join(home, "outputs")
        if "://" not in storage:
            storage = os.path.abspath(os.path.expanduser(storage))
        try:
            beam_options = shlex.split(env.get("KLIO_ASSETS_BEAM_OPTIONS", ""))
        except ValueError as exc:
            raise ParameterError(f"KLIO_ASSETS_BEAM_OPTIONS cannot be parsed: {exc}") from exc
        beam_options += _limit_options(env)
        raw_batch = env.get("KLIO_ASSETS_BATCH_SIZE") or str(DEFAULT_BATCH_SIZE)
        try:
            batch_size = int(raw_batch)
        except ValueError as exc:
            raise ParameterError(f"KLIO_ASSETS_BATCH_SIZE={raw_batch!r} is not an integer") from exc
        raw_params = env.get("KLIO_ASSETS_PARAMS") or "{}"
        try:
            params = json.loads(raw_params)
        except json.JSONDecodeError as exc:
            raise ParameterError(f"KLIO_ASSETS_PARAMS is not valid JSON: {exc}") from exc
        raw_dataflow = env.get("KLIO_ASSETS_DATAFLOW") or "{}"
        try:
            dataflow = json.loads(raw_dataflow)
        except json.JSONDecodeError as exc:
            raise ParameterError(f"KLIO_ASSETS_DATAFLOW is not valid JSON: {exc}") from exc
        if not isinstance(dataflow, dict):
            raise ParameterError("KLIO_ASSETS_DATAFLOW must be a JSON object of Dataflow settings")
        modules = [m.strip() for m in env.get("KLIO_ASSETS_ANALYSES", "").split(",") if m.strip()]
        raw_embed = env.get("KLIO_ASSETS_EMBED_IMAGES") or str(DEFAULT_EMBED_IMAGE_BYTES)
        try:
            embed_image_bytes = int(raw_embed)
        except ValueError as exc:
            raise ParameterError(
                f"KLIO_ASSETS_EMBED_IMAGES={raw_embed!r} is not an integer"
            ) from exc
        catalog = env.get("KLIO_ASSETS_CATALOG") or f"sqlite:///{os.path.join(home, 'catalog.db')}"
        landing = env.get("KLIO_ASSETS_LANDING") or os.path.join(home, "landing")
        if landing == "none":  # Pub/Sub only
            landing = ""
        elif "://" not in landing:
            landing = os.path.abspath(os.path.expanduser(landing))
        max_tracks = _number(env, "KLIO_ASSETS_LANDING_MAX_TRACKS", batch_size, int)
        try:
            return cls(
                automation=env.get("KLIO_ASSETS_AUTOMATION") or "stopped",
                landing=landing,
                landing_subscription=env.get("KLIO_ASSETS_LANDING_SUBSCRIPTION", ""),
                landing_roots=[
                    os.path.abspath(os.path.expanduser(r.strip()))
                    for r in env.get("KLIO_ASSETS_LANDING_ROOTS", "").split(",")
                    if r.strip()
                ],
                landing_max_tracks=max_tracks,
                landing_settle_s=_number(
                    env,
                    "KLIO_ASSETS_LANDING_SETTLE_S",
                    30.0 if landing.startswith("gs://") else 2.0,
                    float,
                ),
                sensor_interval_s=_number(
                    env, "KLIO_ASSETS_SENSOR_INTERVAL_S", DEFAULT_SENSOR_INTERVAL_S, int
                ),
                auto_analyses=[
                    a.strip()
                    for a in env.get("KLIO_ASSETS_AUTO_ANALYSES", "").split(",")
                    if a.strip()
                ],
                backfill_cron=env.get("KLIO_ASSETS_BACKFILL_CRON") or DEFAULT_BACKFILL_CRON,
                catalog_tables_cron=env.get("KLIO_ASSETS_CATALOG_TABLES_CRON")
                or DEFAULT_CATALOG_TABLES_CRON,
                backfill_max_runs=_number(
                    env, "KLIO_ASSETS_BACKFILL_MAX_RUNS", DEFAULT_BACKFILL_MAX_RUNS, int
                ),
                home=home,
                storage=storage,
                beam_options=beam_options,
                batch_size=batch_size,
                catalog_url=catalog,
                analysis_modules=modules,
                params=params,
                embed_image_bytes=embed_image_bytes,
                dataflow=dataflow,
            )
        except ValidationError as exc:
            raise ParameterError(f"invalid klio-assets settings: {exc}") from exc


def _limit_options(env: Mapping[str, str]) -> list[str]:
    """Beam options for the per-track limits set in the environment, checked here."""
    options = []
    for variable, option in LIMIT_VARIABLES.items():
        raw = (env.get(variable) or "").strip()
        if not raw:
            continue
        try:
            value = int(raw) if option == "max_channels" else float(raw)
        except ValueError as exc:
            raise ParameterError(f"{variable}={raw!r} is not a number") from exc
        if not value > 0 or value != value or value == float("inf"):
            raise ParameterError(f"{variable}={raw!r} must be a positive, finite number")
        options.append(f"--{option}={value}")
    return options


def _number(env: Mapping[str, str], name: str, default: float, kind: type) -> Any:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        raise ParameterError(
            f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}"
        ) from exc
