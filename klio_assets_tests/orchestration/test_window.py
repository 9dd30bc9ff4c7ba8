"""The window's building blocks on real databases: admission under the cap, catalog range
keys (untrusted: they come from the UI too), and the SQL that finds work outside the window."""

import dagster as dg
import pytest

from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.work import current_in_ledger, needs_in_range, pending_page
from klio_assets.errors import ParameterError
from klio_assets.orchestration.catalog_ranges import parse_range_key, range_key
from klio_assets.orchestration.partitions import TRACKS
from klio_assets.orchestration.window import admit, in_window, leave, window_size


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def test_admission_stops_at_the_cap_and_keeps_what_is_in(instance):
    assert admit(instance, ["a", "b"], cap=3) == ["a", "b"]
    # "a" is in already: it takes no room; "c" takes the last place, "d" and "e" stay out
    assert admit(instance, ["a", "c", "d", "e"], cap=3) == ["c"]
    assert list(instance.get_dynamic_partitions(TRACKS)) == ["a", "b", "c"]
    assert window_size(instance) == 3 and in_window(instance, ["c", "d"]) == {"c"}
    assert admit(instance, ["f"], cap=3) == []  # full: nothing checked, nothing added
    leave(instance, ["b"])
    assert admit(instance, ["f", "g"], cap=3) == ["f"]
    assert admit(instance, ["x", "y"], cap=None) == ["x", "y"]  # asked for: no cap
    assert list(instance.get_dynamic_partitions(TRACKS)) == ["a", "c", "f", "x", "y"]


def test_range_keys_round_trip_and_refuse_anything_else():
    assert range_key(1, 5000) == "0000000001-0000005000"
    assert parse_range_key(range_key(42, 4242)) == (42, 4242)
    for bad in ("1-5", "0000000005-0000000001", "../0000000001-0000000002", "x" * 21, ""):
        with pytest.raises(ParameterError, match="not a catalog range"):
            parse_range_key(bad)


def test_work_outside_the_window_is_read_a_page_at_a_time(tmp_path):
    catalog = TrackCatalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    ids = [f"t{i:02d}" for i in range(10)]
    catalog.register([(t, f"/music/{t}.wav") for t in ids])
    seq = {t: catalog.seq_of(t) for t in ids}
    versions = {"a": "2", "b": "1"}
    # t00-t04 done for both; t05 has a's old version; t06 failed a at the current version;
    # t07 failed a at an old version (to try again); t08, t09 never ran
    catalog.mark_materialized("a", version="2", run_id="r", track_ids=ids[:5])
    catalog.mark_materialized("b", version="1", run_id="r", track_ids=ids[:8])
    catalog.mark_materialized("a", version="1", run_id="r", track_ids=["t05"])
    catalog.record_outcomes("a", version="2", run_id="r", failed={"t06": "broken"}, succeeded=[])
    catalog.record_outcomes("a", version="1", run_id="r", failed={"t07": "broken"}, succeeded=[])
    first = pending_page(catalog, versions, after_seq=0, limit=2)
    assert [t for _, t in first] == ["t05", "t07"]
    rest = pending_page(catalog, versions, after_seq=first[-1][0], limit=10)
    assert [t for _, t in rest] == ["t08", "t09"]
    bounded = pending_page(catalog, versions, after_seq=0, limit=10, last_seq=seq["t08"])
    assert [t for _, t in bounded] == ["t05", "t07", "t08"]
    needs = needs_in_range(catalog, versions, first_seq=seq["t04"], last_seq=seq["t09"])
    assert needs == {"a": ["t05", "t07", "t08", "t09"], "b": ["t08", "t09"]}
    assert current_in_ledger(catalog, ["t04", "t05", "t09"], versions) == {
        "a": {"t04"},
        "b": {"t04", "t05"},
    }


def test_the_retention_is_told_in_words(capsys):
    from klio_assets.cli.render import print_automation

    window = {
        "size": 4,
        "max_tracks": 50000,
        "checked": 4,
        "leave": ["a", "b", "c"],
        "leave_failed": 1,
        "working": 1,
        "young": 0,
        "in_flight": 0,
        "runs_deleted": ["r1"],
    }
    print_automation("retention", {"window": window, "requests": []}, dry_run=True)
    assert capsys.readouterr().out.splitlines() == [
        "retention (dry run: nothing changed)",
        "  window 4 of at most 50000 tracks; 4 checked: 3 would leave it (1 failed for good), "
        "kept 1 with work to do, 0 too recent, 0 in runs; 1 old run would be deleted",
    ]
