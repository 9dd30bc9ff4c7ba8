"""Contracts with Dagster's private API (``klio_assets.orchestration.dagster_internals``).

Each private path must give the answer Dagster's public API gives, on a real instance, and
each fallback must give the same answer when the private path is unavailable. A Dagster
upgrade that moves a table, renames a column or changes an event constructor fails here.
"""

import itertools
import sys

import dagster as dg
import pytest

from klio_assets.orchestration import partitions, ranges
from klio_assets.orchestration.dagster_internals import dynamic_partitions, events, instigators
from klio_assets.orchestration.dagster_internals.loading_context import loading_instance
from klio_assets.orchestration.partitions import TRACKS, tracks_partitions
from klio_assets_tests.support.postgres import postgres_dagster_home, running_postgres

OTHER = "other_definition"
#: ``tracks`` keys in registration order, with keys of another definition registered between.
ORDER = ["k5", "k1", "k9", "k2", "k7", "k3", "k8"]


@pytest.fixture
def instance(tmp_path):
    """A real SQLite instance (Dagster's default storage) with interleaved registrations."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions(TRACKS, ORDER[:3])
        instance.add_dynamic_partitions(OTHER, ["x1", "x2"])  # rows between k9 and k2
        instance.add_dynamic_partitions(TRACKS, ORDER[3:5])
        instance.add_dynamic_partitions(OTHER, ["x3"])
        instance.add_dynamic_partitions(TRACKS, ORDER[5:])
        yield instance


@pytest.fixture
def postgres_instance(postgres, tmp_path, monkeypatch):
    """The same registrations on PostgreSQL (where key lookups take another query)."""
    postgres_dagster_home(postgres, tmp_path, monkeypatch)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(TRACKS, ORDER[:3])
        instance.add_dynamic_partitions(OTHER, ["x1", "x2"])
        instance.add_dynamic_partitions(TRACKS, ORDER[3:5])
        instance.add_dynamic_partitions(OTHER, ["x3"])
        instance.add_dynamic_partitions(TRACKS, ORDER[5:])
        yield instance


@pytest.fixture
def no_private_path(monkeypatch):
    """Dagster without the table (another storage, or a Dagster that moved it)."""
    monkeypatch.setattr(dynamic_partitions, "_table_access", lambda _instance: None)


def test_the_table_and_columns_relied_on_exist():
    from dagster._core.storage.event_log.schema import DynamicPartitionsTable

    assert {"id", "partitions_def_name", "partition", "create_timestamp"} <= set(
        DynamicPartitionsTable.c.keys()
    )


def test_ordered_keys_are_dagsters_in_insertion_order(instance):
    assert dynamic_partitions._table_access(instance) is not None  # the private path is taken
    public = list(instance.get_dynamic_partitions(TRACKS))
    assert public == ORDER
    assert dynamic_partitions.ordered_keys(instance, TRACKS) == public
    assert dynamic_partitions.ordered_keys(instance, OTHER) == ["x1", "x2", "x3"]
    assert partitions.ordered_keys(instance) == public


def test_ordered_keys_fall_back_to_the_public_listing(instance, no_private_path):
    assert dynamic_partitions.ordered_keys(instance, TRACKS) == ORDER
    assert partitions.ordered_keys(instance) == ORDER


def test_keys_in_range_agree_with_the_public_listing_for_every_pair(instance):
    for start, end in itertools.product([*ORDER, "unknown"], repeat=2):
        private = dynamic_partitions.keys_in_range(instance, TRACKS, start, end)
        public = dynamic_partitions.public_keys_in_range(instance, TRACKS, start, end)
        assert private == public, (start, end)
    assert dynamic_partitions.keys_in_range(instance, TRACKS, "k9", "k3") == [
        "k9",
        "k2",
        "k7",
        "k3",
    ]
    assert dynamic_partitions.keys_in_range(instance, TRACKS, "k3", "k9") is None  # reversed


def test_keys_in_range_leave_the_answer_to_the_caller_without_the_private_path(
    instance, no_private_path
):
    assert partitions.keys_in_range(instance, "k1", "k2") is None
    assert dynamic_partitions.public_keys_in_range(instance, TRACKS, "k1", "k2") == [
        "k1",
        "k9",
        "k2",
    ]


@pytest.mark.parametrize(
    ("wanted", "max_size"),
    [
        (ORDER, 100),
        (ORDER, 2),
        (["k1", "k2", "k3"], 10),
        (["k8", "k5", "k9", "k7"], 10),  # out of order: ranges follow registration
        (["k9", "k2"], 10),  # other definitions' rows between: still one range
        (["k9", "k2", "k7", "unknown"], 2),
        ([], 5),
    ],
)
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_key_ranges_agree_with_cutting_the_public_listing(request, backend, wanted, max_size):
    instance = request.getfixturevalue("instance" if backend == "sqlite" else "postgres_instance")
    public = ranges.contiguous_ranges(
        list(instance.get_dynamic_partitions(TRACKS)), wanted, max_size
    )
    assert dynamic_partitions.key_ranges(instance, TRACKS, wanted, max_size) == public
    assert ranges.partition_ranges(instance, wanted, max_size) == public


def test_partition_ranges_fall_back_to_the_public_listing(instance, no_private_path):
    assert dynamic_partitions.key_ranges(instance, TRACKS, ["k1"], 5) is None
    assert ranges.partition_ranges(instance, ["k1", "k9", "k3", "k8"], 5) == [
        ["k1", "k9"],
        ["k3", "k8"],
    ]


def test_the_loading_context_gives_its_instance(instance):
    from dagster._core.instance.types import CachingDynamicPartitionsLoader

    assert loading_instance() is None  # no context: Dagster's own implementation
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        assert loading_instance() is instance
    with dg.partition_loading_context(
        dynamic_partitions_store=CachingDynamicPartitionsLoader(instance)
    ):
        assert loading_instance() is instance


def test_range_keys_through_the_partitions_definition_match_dagsters(instance, monkeypatch):
    plain = dg.DynamicPartitionsDefinition(name=TRACKS)
    key_range = dg.PartitionKeyRange("k1", "k7")
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        expected = list(plain.get_partition_keys_in_range(key_range))
        assert expected == ["k1", "k9", "k2", "k7"]

        def listing(*_args):
            raise AssertionError("every key listed")

        monkeypatch.setattr(dg.DagsterInstance, "get_dynamic_partitions", listing)
        assert tracks_partitions.get_partition_keys_in_range(key_range) == expected


def test_range_keys_fall_back_to_dagsters_implementation(instance, no_private_path):
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        assert tracks_partitions.get_partition_keys_in_range(dg.PartitionKeyRange("k1", "k7")) == [
            "k1",
            "k9",
            "k2",
            "k7",
        ]


def test_registration_without_bulk_insert_uses_dagsters_insert(instance):
    assert dynamic_partitions.postgres_bulk_insert(instance, TRACKS) is None  # SQLite
    partitions.add_track_partitions(instance, ["n2", "k1", "n1", "n2"])
    assert list(instance.get_dynamic_partitions(TRACKS)) == [*ORDER, "n2", "n1"]


@pytest.mark.postgres
def test_bulk_insert_writes_the_rows_dagster_writes(tmp_path, monkeypatch):
    with running_postgres(tmp_path / "pg") as server:
        server.create_database("internals")
        home = tmp_path / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(server.dagster_yaml("internals"))
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        instance = dg.DagsterInstance.get()
        try:
            insert = dynamic_partitions.postgres_bulk_insert(instance, TRACKS)
            assert insert is not None
            keys = ["b", "a", "c", "e", "d"]
            insert(keys[:3])
            insert(keys[1:])  # again, overlapping: nothing twice, order kept
            instance.add_dynamic_partitions(OTHER, keys[:3])
            instance.add_dynamic_partitions(OTHER, keys[1:])
            assert list(instance.get_dynamic_partitions(TRACKS)) == keys
            assert list(instance.get_dynamic_partitions(OTHER)) == keys
            assert dynamic_partitions.ordered_keys(instance, TRACKS) == keys
            assert instance.has_dynamic_partition(TRACKS, "e")
            assert dynamic_partitions.keys_in_range(instance, TRACKS, "a", "d") == keys[1:]
            access = dynamic_partitions._table_access(instance)
            table = access.table
            with access.connect() as conn:
                stamps = conn.execute(
                    access.sa.select(table.c.partitions_def_name, table.c.create_timestamp)
                ).all()
            assert {name for name, _ in stamps} == {TRACKS, OTHER}
            assert all(stamp is not None for _, stamp in stamps)
        finally:
            instance.dispose()


def _materializations(asset: str, keys):
    return [dg.AssetMaterialization(asset_key=asset, partition=k) for k in keys]


def _logging_job(result: dict, batch_size: int):
    @dg.op
    def log_them(context: dg.OpExecutionContext):
        step_context = context.get_step_execution_context()
        result["logged"] = events.log_batched_materializations(
            step_context,
            [
                *_materializations("probe_a", ["p1", "p2", "p3"]),
                *_materializations("probe_b", ["q"]),
            ],
            batch_size=batch_size,
        )

    @dg.job
    def logging_job():
        log_them()

    return logging_job


def test_batched_materializations_are_recorded_like_yielded_ones(instance, monkeypatch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "2")
    result: dict = {}
    run = _logging_job(result, batch_size=2).execute_in_process(instance=instance)
    assert run.success and result["logged"] is True
    assert instance.get_materialized_partitions(dg.AssetKey("probe_a")) == {"p1", "p2", "p3"}
    assert instance.get_materialized_partitions(dg.AssetKey("probe_b")) == {"q"}
    records = instance.fetch_materializations(dg.AssetKey("probe_a"), limit=10).records
    assert sorted(r.asset_materialization.partition for r in records) == ["p1", "p2", "p3"]
    assert all(r.run_id == run.run_id for r in records)
    latest = instance.get_latest_materialization_event(dg.AssetKey("probe_a"))
    assert latest.asset_materialization.partition == "p3"


def test_batched_materializations_report_when_unavailable(instance, monkeypatch):
    monkeypatch.setattr(events, "_private_api", lambda: None)
    result: dict = {}
    run = _logging_job(result, batch_size=2).execute_in_process(instance=instance)
    assert run.success and result["logged"] is False
    assert instance.get_materialized_partitions(dg.AssetKey("probe_a")) == set()


def test_the_instigator_state_listing_relied_on_exists(instance):
    """The dry runs read a sensor's stored cursor through the daemon's own storage call."""
    from dagster._core.definitions.run_request import InstigatorType

    assert instance.all_instigator_state(instigator_type=InstigatorType.SENSOR) == []
    assert instigators.stored_cursor(instance, "landing_sensor") is None


def test_the_stored_cursor_is_none_without_the_private_api(instance, monkeypatch):
    monkeypatch.setitem(sys.modules, "dagster._core.definitions.run_request", None)
    assert instigators.stored_cursor(instance, "landing_sensor") is None


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_window_primitives_agree_with_dagsters_public_api(request, backend):
    """Count, page (with entry times) and bulk delete of ``tracks`` keys, private and public."""
    import time

    instance = request.getfixturevalue("instance" if backend == "sqlite" else "postgres_instance")
    assert dynamic_partitions.count_keys(instance, TRACKS) == len(ORDER)
    assert dynamic_partitions.count_keys(instance, OTHER) == 3
    first = dynamic_partitions.keys_page(instance, TRACKS, after_id=0, limit=4)
    rest = dynamic_partitions.keys_page(instance, TRACKS, after_id=first[-1][0], limit=10)
    assert [k for _, k, _ in first + rest] == ORDER  # insertion order, other definitions skipped
    assert all(abs(added - time.time()) < 300 for _, _, added in first + rest)  # UTC epochs
    dynamic_partitions.delete_keys(instance, TRACKS, ["k1", "k7", "unknown"])
    remaining = [k for k in ORDER if k not in ("k1", "k7")]
    assert list(instance.get_dynamic_partitions(TRACKS)) == remaining
    assert list(instance.get_dynamic_partitions(OTHER)) == ["x1", "x2", "x3"]
    assert dynamic_partitions.count_keys(instance, TRACKS) == len(remaining)


def test_the_window_primitives_fall_back_to_the_public_api(instance, no_private_path):
    assert dynamic_partitions.count_keys(instance, TRACKS) == len(ORDER)
    assert dynamic_partitions.keys_page(instance, TRACKS, after_id=0, limit=4) is None
    dynamic_partitions.delete_keys(instance, TRACKS, ["k9"])
    assert "k9" not in instance.get_dynamic_partitions(TRACKS)


def test_a_runs_partitions_from_the_event_log_match_its_events(instance, monkeypatch):
    """What the retention reads to know whether a run still has a track in the window."""

    @dg.asset(partitions_def=tracks_partitions)
    def analysis(context: dg.AssetExecutionContext) -> None:
        return None

    result = dg.materialize([analysis], instance=instance, partition_key="k9")
    assert result.success
    assert events.run_partitions(instance, result.run_id) == {"k9"}
    # a Dagster that moved the table: the run's events, read the public way
    monkeypatch.setitem(sys.modules, "dagster._core.storage.event_log.schema", None)
    assert events.run_partitions(instance, result.run_id) == {"k9"}
