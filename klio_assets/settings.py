"""Deployment settings: one typed field per ``KLIO_ASSETS_*`` variable, read in one place.

:meth:`Settings.from_env` is the only reader of these variables in the package. Each field's
``description`` is the documentation: the README's settings tables
(:func:`settings_table_markdown`, rewritten by ``scripts/settings_table.py``) and the CLI's
``--help`` (:func:`settings_help`) are generated from it, and a test fails when the README
and the model differ.

A bad value is refused with a one-line :class:`~klio_assets.errors.ParameterError` that names
the variable as it was set, its value and what is wanted::

    KLIO_ASSETS_BATCH_SIZE='0': wanted an integer from 1 to 100000

The three per-track limits (``KLIO_ASSETS_TRACK_TIMEOUT``, ``KLIO_ASSETS_MAX_DURATION``,
``KLIO_ASSETS_MAX_CHANNELS``) reach the Beam workers as pipeline options
(``--track_timeout_s``, ``--max_duration_s``, ``--max_channels``, see
:class:`klio_assets.worker.pipeline.TrackLimitsOptions`), appended to
:attr:`Settings.beam_options`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import types
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from klio_assets.errors import ParameterError

PREFIX = "KLIO_ASSETS_"
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
DEFAULT_SOURCE_CHECKS_PER_TICK = 1000
#: Dagster's UI slows past ~40k partitions of one asset; its docs advise at most ~100k.
DEFAULT_WINDOW_MAX_TRACKS = 50_000
#: A day of new tracks at the seed's 40,000 a day stays in the window.
DEFAULT_WINDOW_RETAIN_S = 86_400.0
DEFAULT_WINDOW_CHECKS_PER_TICK = 5000
DEFAULT_RANGE_SIZE = 5000
DEFAULT_SENSOR_INTERVAL_S = 30
#: Later runs that retry a track after a transient failure (storage, timeout, lost worker).
DEFAULT_MAX_TRANSIENT_RETRIES = 3
#: Seconds before the first retry of a transient failure; doubled after each failed retry.
DEFAULT_TRANSIENT_RETRY_BACKOFF_S = 60.0
#: Documented defaults of the per-track limits: the worker's own (``worker.audio.DecodeLimits``;
#: a test keeps the two equal), which apply while the variable is unset.
LIMIT_DEFAULTS = {"track_timeout": "900", "max_duration": "86400", "max_channels": "32"}

#: The groups of settings, each one table in the README.
GROUPS = ("deployment", "automation")


def _doc(group: str = "deployment", *, default: str | None = None) -> dict[str, Any]:
    """Documentation metadata of a field: its README table and, where the value shown is not
    the field's literal default (derived from another setting), the default as documented."""
    extra: dict[str, Any] = {"group": group}
    if default is not None:
        extra["default_doc"] = default
    return extra


def _home(data: Mapping[str, Any]) -> str:
    return str(data.get("home") or os.path.abspath(DEFAULT_HOME))


def _local_or_uri(value: str) -> str:
    """A URI as given; a local path made absolute (``~`` expanded)."""
    return value if "://" in value else os.path.abspath(os.path.expanduser(value))


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _json_object(value: Any, wanted: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc}); wanted {wanted}") from exc
    if not isinstance(parsed, dict):
        raise ValueError(f"wanted {wanted}")
    return parsed


class Settings(BaseSettings):
    """klio-assets settings for one deployment, one field per ``KLIO_ASSETS_*`` variable.

    Read them with :meth:`from_env`; ``Settings()`` alone gives the defaults and reads no
    environment (the package reads it in one place).
    """

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        # an empty variable means "unset": ``KLIO_ASSETS_STORAGE=`` keeps the default
        env_ignore_empty=True,
        extra="ignore",
    )

    # Fields are validated in this order: a default derived from another setting
    # (``default_factory`` taking the fields validated so far) comes after that setting.
    home: str = Field(
        DEFAULT_HOME,
        validate_default=True,
        description="Dagster instance folder (`DAGSTER_HOME`) and home of the defaults below; "
        "its `dagster.yaml` is honoured (e.g. for PostgreSQL).",
        json_schema_extra=_doc(),
    )
    storage: str = Field(
        default_factory=lambda data: os.path.join(_home(data), "outputs"),
        description="Output root: a folder, `gs://bucket/prefix` or `s3://bucket/prefix`.",
        json_schema_extra=_doc(default="`$KLIO_ASSETS_HOME/outputs`"),
    )
    beam_options: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Beam pipeline options passed through (shell words), e.g. "
        "`--runner=PortableRunner --job_endpoint=localhost:8099`.",
        json_schema_extra=_doc(default="local FnApiRunner, multi-threaded, every core"),
    )
    batch_size: int = Field(
        DEFAULT_BATCH_SIZE,
        ge=1,
        le=100_000,
        description="Most tracks per run (one Dagster run, one Beam job).",
        json_schema_extra=_doc(),
    )
    catalog_url: str = Field(
        default_factory=lambda data: f"sqlite:///{os.path.join(_home(data), 'catalog.db')}",
        validation_alias="KLIO_ASSETS_CATALOG",
        description="SQLAlchemy URL of the track catalog.",
        json_schema_extra=_doc(default="SQLite in the home"),
    )
    analysis_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias="KLIO_ASSETS_ANALYSES",
        description="Extra modules defining analyses, comma separated; they must be installed "
        "on the Beam workers too.",
        json_schema_extra=_doc(),
    )
    params: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(
        default_factory=dict,
        description="JSON parameter overrides `{analysis: {parameter: value}}`, e.g. "
        '`{"downsampled_audio": {"sample_rate": 16000}}`.',
        json_schema_extra=_doc(),
    )
    embed_image_bytes: int = Field(
        DEFAULT_EMBED_IMAGE_BYTES,
        ge=0,
        validation_alias="KLIO_ASSETS_EMBED_IMAGES",
        description="Largest plot (bytes) embedded in a track's Dagster metadata; 0 links "
        "plots by URI only.",
        json_schema_extra=_doc(),
    )
    track_timeout: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Seconds a probe or a decode of one track may take; a decoder still "
        "running is killed (ffmpeg with its process group) and the track fails.",
        json_schema_extra=_doc(default=LIMIT_DEFAULTS["track_timeout"]),
    )
    max_duration: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Longest source accepted, in seconds; checked on the header before "
        "decoding, and while decoding.",
        json_schema_extra=_doc(default=LIMIT_DEFAULTS["max_duration"]),
    )
    max_channels: int | None = Field(
        None,
        gt=0,
        description="Most channels accepted in a source.",
        json_schema_extra=_doc(default=LIMIT_DEFAULTS["max_channels"]),
    )
    dataflow: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="Run every batch on Google Cloud Dataflow with these settings, a JSON "
        "object; its fields (`project`, `region`, `temp_location`, `sdk_container_image`, ...) "
        "are those of `DataflowConfig`.",
        json_schema_extra=_doc(default="none (local Beam)"),
    )
    model_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where model-based analyses run: `cpu`, `cuda` (an error where onnxruntime "
        "has no CUDA provider) or `auto` (CUDA where available); on Dataflow, `cuda` also "
        "asks for the models' accelerators (resource hints). Reaches workers as `--model_device`.",
        json_schema_extra=_doc(),
    )

    automation: Literal["running", "stopped"] = Field(
        "stopped",
        description="`running`: sensors and schedules start with the daemon; `stopped`: start "
        "them in the UI.",
        json_schema_extra=_doc("automation"),
    )
    landing: str = Field(
        default_factory=lambda data: os.path.join(_home(data), "landing"),
        description="Landing folder or `gs://` prefix watched for new audio (`none`: Pub/Sub "
        "only).",
        json_schema_extra=_doc("automation", default="`$KLIO_ASSETS_HOME/landing`"),
    )
    landing_subscription: str = Field(
        "",
        description="Pub/Sub subscription (`projects/P/subscriptions/S`) carrying track IDs "
        "or object URIs; needs `klio-assets[gcp]`.",
        json_schema_extra=_doc("automation"),
    )
    landing_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Folders (comma separated) whose files Pub/Sub messages may name, besides "
        "a local landing folder; other local paths in messages are refused.",
        json_schema_extra=_doc("automation", default="none"),
    )
    landing_max_tracks: int = Field(
        default_factory=lambda data: data.get("batch_size", DEFAULT_BATCH_SIZE),
        ge=1,
        le=100_000,
        description="Most new tracks registered per sensor tick.",
        json_schema_extra=_doc("automation", default="`KLIO_ASSETS_BATCH_SIZE`"),
    )
    landing_settle_s: float = Field(
        default_factory=lambda data: 30.0 if str(data.get("landing")).startswith("gs://") else 2.0,
        ge=0,
        allow_inf_nan=False,
        description="Minimum age of a landed file, in seconds; on `gs://` the server's clock "
        "is not ours.",
        json_schema_extra=_doc("automation", default="2 (30 on `gs://`)"),
    )
    sensor_interval_s: int = Field(
        DEFAULT_SENSOR_INTERVAL_S,
        ge=1,
        description="Seconds between sensor ticks.",
        json_schema_extra=_doc("automation"),
    )
    auto_analyses: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Analyses the automation runs (plus their upstreams), comma separated.",
        json_schema_extra=_doc("automation", default="all"),
    )
    backfill_cron: str = Field(
        DEFAULT_BACKFILL_CRON,
        description="Cron of the catalog backfill schedule (UTC).",
        json_schema_extra=_doc("automation"),
    )
    catalog_tables_cron: str = Field(
        DEFAULT_CATALOG_TABLES_CRON,
        description="Cron of the `catalog_tables_schedule` (duplicate groups, track "
        "features; incremental).",
        json_schema_extra=_doc("automation"),
    )
    source_checks_per_tick: int = Field(
        DEFAULT_SOURCE_CHECKS_PER_TICK,
        ge=1,
        le=1_000_000,
        description="Registered tracks whose source file `source_changes_sensor` stats per "
        "tick (it sweeps the catalog in registration order, then starts again).",
        json_schema_extra=_doc("automation"),
    )
    backfill_max_runs: int = Field(
        DEFAULT_BACKFILL_MAX_RUNS,
        ge=1,
        description="Most runs one backfill tick launches (and catalog ranges one "
        "`catalog_ranges_sensor` tick requests).",
        json_schema_extra=_doc("automation"),
    )
    window_max_tracks: int = Field(
        DEFAULT_WINDOW_MAX_TRACKS,
        ge=1,
        le=1_000_000,
        description="Most tracks in Dagster's window (the `tracks` partitions): new tracks and "
        "tracks with work to do enter it while it has room; the others are registered in the "
        "catalog only and run as catalog ranges (`catalog_ranges` asset).",
        json_schema_extra=_doc("automation"),
    )
    window_retain_s: float = Field(
        DEFAULT_WINDOW_RETAIN_S,
        ge=0,
        description="Seconds a track stays in the window after entering it; then, once settled "
        "for every analysis the automation runs (done at the current version, or failed for "
        "good), `window_retention_sensor` takes it out (its partition, and the runs of tracks "
        "all out of the window). The catalog keeps it.",
        json_schema_extra=_doc("automation"),
    )
    window_checks_per_tick: int = Field(
        DEFAULT_WINDOW_CHECKS_PER_TICK,
        ge=1,
        le=100_000,
        description="Window tracks `window_retention_sensor` checks per tick (it goes through "
        "the window in order, then starts again).",
        json_schema_extra=_doc("automation"),
    )
    range_size: int = Field(
        DEFAULT_RANGE_SIZE,
        ge=1,
        le=50_000,
        description="Tracks with work to do per catalog range: one Beam job, recorded as one "
        "materialization of the `catalog_ranges` asset (5,000-50,000 at scale).",
        json_schema_extra=_doc("automation"),
    )

    max_transient_retries: int = Field(
        DEFAULT_MAX_TRANSIENT_RETRIES,
        ge=0,
        description="Runs that try a track again after a transient failure (storage, timeout, "
        "a lost worker); then it counts as failed until `run --retry-failed`. Permanent "
        "failures (not audio, truncated, over a limit) are not retried until the file or the "
        "analysis' version changes.",
        json_schema_extra=_doc(),
    )
    transient_retry_backoff_s: float = Field(
        DEFAULT_TRANSIENT_RETRY_BACKOFF_S,
        ge=0,
        description="Seconds after a transient failure before the sensors and the backfill "
        "schedule try the track again; doubled after each failed retry (`klio-assets run` "
        "tries it at once).",
        json_schema_extra=_doc(),
    )

    # -- the special forms ---------------------------------------------------------------

    @field_validator("home", "storage", mode="after")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _local_or_uri(value)

    @field_validator("landing", mode="after")
    @classmethod
    def _landing(cls, value: str) -> str:
        return "" if value == "none" else _local_or_uri(value)  # "none": Pub/Sub only

    @field_validator("beam_options", mode="before")
    @classmethod
    def _shell_words(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split into shell words ({exc})") from exc

    @field_validator("analysis_modules", "auto_analyses", "landing_roots", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("landing_roots", mode="after")
    @classmethod
    def _absolute_roots(cls, value: list[str]) -> list[str]:
        return [os.path.abspath(os.path.expanduser(root)) for root in value]

    @field_validator("analysis_modules", mode="after")
    @classmethod
    def _modules_are_dotted_names(cls, value: list[str]) -> list[str]:
        for module in value:
            if not all(part.isidentifier() for part in module.split(".")):
                raise ValueError(f"{module!r} is not a module name; wanted dotted module names")
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _params_json(cls, value: Any) -> Any:
        wanted = "a JSON object {analysis: {parameter: value}}"
        parsed = _json_object(value, wanted)
        if isinstance(parsed, dict) and not all(isinstance(v, dict) for v in parsed.values()):
            raise ValueError(f"wanted {wanted}")
        return parsed

    @field_validator("dataflow", mode="before")
    @classmethod
    def _dataflow_json(cls, value: Any) -> Any:
        return _json_object(value, "a JSON object of Dataflow settings")

    @model_validator(mode="after")
    def _limits_become_beam_options(self) -> Settings:
        for field, option in zip(("track_timeout", "max_duration", "max_channels"),
                                 LIMIT_VARIABLES.values(), strict=True):  # fmt: skip
            value = getattr(self, field)
            flag = f"--{option}={value}"
            if value is not None and flag not in self.beam_options:
                self.beam_options.append(flag)
        device_flag = f"--model_device={self.model_device}"
        if self.model_device != "auto" and device_flag not in self.beam_options:
            self.beam_options.append(device_flag)
        return self

    # -- reading -------------------------------------------------------------------------

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values given: the environment is read by :meth:`from_env` alone."""
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: ``os.environ``).

        Parameters
        ----------
        environ : mapping, optional
            Variables to read instead of the process environment; variables not in it are
            unset (the process environment is not consulted).

        Raises
        ------
        ParameterError
            A variable has a value that cannot be used: one line naming the variable, its
            value and what is wanted.
        """
        values = _EnvironSource(cls, os.environ if environ is None else environ)()
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ParameterError(_one_line(exc, values)) from None


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            name if self.case_sensitive else name.lower(): value
            for name, value in self._environ.items()
            if not (self.env_ignore_empty and value == "")
        }


# -- names, messages and documentation generated from the model ------------------------------


def _fields() -> Iterator[tuple[str, str, FieldInfo]]:
    """``(field name, variable, field)`` of every setting, in declaration order."""
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        yield name, alias if isinstance(alias, str) else PREFIX + name.upper(), field


def variable_names() -> tuple[str, ...]:
    """Every ``KLIO_ASSETS_*`` variable the settings read (tests clear them all)."""
    return tuple(variable for _, variable, _ in _fields())


def _wanted(field: FieldInfo) -> str:
    """What a field accepts, in words: ``an integer from 1 to 100000``."""
    kind = field.annotation
    if get_origin(kind) in (Union, types.UnionType):  # ``float | None``: None is "unset"
        kind = next(a for a in get_args(kind) if a is not type(None))
    noun = "integer" if kind is int else "finite number" if kind is float else None
    if noun is None:
        return "a valid value"
    bounds = {a: getattr(m, a) for m in field.metadata for a in ("gt", "ge", "le") if hasattr(m, a)}
    if bounds.get("gt") == 0:
        return f"a positive {noun}"
    wanted = f"{'an' if noun == 'integer' else 'a'} {noun}"
    if "ge" in bounds and "le" in bounds:
        return f"{wanted} from {bounds['ge']} to {bounds['le']}"
    if "ge" in bounds:
        return f"{wanted} of at least {bounds['ge']}"
    return wanted


def _problem(error: ErrorDetails, field: FieldInfo | None) -> str:
    if error["type"] == "value_error":
        return str((error.get("ctx") or {}).get("error", error["msg"]))
    if error["type"] == "literal_error":
        return f"wanted one of {(error.get('ctx') or {}).get('expected')}"
    return f"wanted {_wanted(field)}" if field is not None else error["msg"]


def _one_line(exc: ValidationError, values: Mapping[str, Any]) -> str:
    """The validation errors as one line, each naming the variable as set and its value."""
    by_key: dict[str, tuple[str, FieldInfo | None]] = {
        str(field.validation_alias or name): (variable, field)
        for name, variable, field in _fields()
    }
    problems = []
    for error in exc.errors():
        if error["type"] == "default_factory_not_called":
            continue  # a default derived from a setting refused above: not the user's doing
        key = str(error["loc"][0]) if error["loc"] else ""
        variable, field = by_key.get(key, (key, None))
        raw = values.get(key, error["input"])
        shown = repr(raw) if len(repr(raw)) <= 80 else repr(raw)[:77] + "..."
        problems.append(f"{variable}={shown}: {_problem(error, field)}")
    return "; ".join(dict.fromkeys(problems))


def _plain(text: str) -> str:
    return text.replace("`", "")


def _first_clause(text: str) -> str:
    """``text`` up to its first ``;``, ``. `` or ``, e.g.`` outside parentheses."""
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and (char == ";" or text.startswith(". ", i) or text.startswith(", e.g.", i)):
            return text[:i]
    return text.rstrip(".")


def _default_text(name: str, field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "default_doc" in extra:
        return str(extra["default_doc"])
    if field.default_factory is not None:  # the empty list or mapping: documented otherwise
        return "none"
    default = field.get_default()
    if default in (None, ""):
        return "none"
    return f"`{default}`" if isinstance(default, str) else str(default)


def _group_fields(group: str) -> list[tuple[str, str, FieldInfo]]:
    if group not in GROUPS:
        raise ParameterError(f"group={group!r}: wanted one of {', '.join(GROUPS)}")
    return [(n, v, f) for n, v, f in _fields()
            if isinstance(f.json_schema_extra, dict) and f.json_schema_extra["group"] == group]  # fmt: skip


def settings_table_markdown(group: str = "deployment") -> str:
    """The README's Markdown table of one group of settings.

    Parameters
    ----------
    group : {"deployment", "automation"}
        Which settings.

    Returns
    -------
    str
        ``| Variable | Meaning | Default |`` and one row per variable, newline-terminated.
    """
    rows = ["| Variable | Meaning | Default |", "| --- | --- | --- |"]
    for name, variable, field in _group_fields(group):
        rows.append(f"| `{variable}` | {field.description} | {_default_text(name, field)} |")
    return "\n".join(rows) + "\n"


def settings_help() -> str:
    """Every setting in plain text for a ``--help`` epilog: variable, default, meaning.

    Returns
    -------
    str
        One line per variable (the first clause of its description), aligned, no blank line:
        click rewraps an epilog unless it starts with a ``\\b`` line, e.g.
        ``epilog="\\b\\n" + settings_help()``.
    """
    lines = ["Settings (environment variables):"]
    width = max(len(v) for v in variable_names())
    for group in GROUPS:
        for name, variable, field in _group_fields(group):
            meaning = _first_clause(_plain(field.description or ""))
            lines.append(
                f"  {variable:<{width}}  {meaning} [default: {_plain(_default_text(name, field))}]"
            )
    return "\n".join(lines)


_TABLE = re.compile(
    r"(<!-- settings-table:start (?P<group>\w+) -->\n)(?P<body>.*?)(<!-- settings-table:end -->)",
    re.DOTALL,
)


def update_settings_tables(markdown: str) -> str:
    """``markdown`` with each generated settings table replaced by the model's.

    A table sits between ``<!-- settings-table:start GROUP -->`` and
    ``<!-- settings-table:end -->``; everything else is kept as it is.

    Raises
    ------
    ParameterError
        ``markdown`` has no settings table, or names an unknown group.
    """
    if not _TABLE.search(markdown):
        raise ParameterError("no <!-- settings-table:start GROUP --> marker in the document")
    return _TABLE.sub(
        lambda m: m.group(1) + settings_table_markdown(m.group("group")) + m.group(4), markdown
    )
