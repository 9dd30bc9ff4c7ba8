"""The landing sensor names same-stem files the way ``klio-assets add`` does."""

import time

from klio_assets.catalog.database import get_catalog
from klio_assets.settings import Settings
from klio_assets_tests.automation.test_sensors import drop, evaluate, landing, registered

__all__ = ["landing"]  # the fixture, used by name


def test_landing_sensor_registers_same_stem_files_under_distinct_ids(landing):
    drop(landing, "hello.wav")
    time.sleep(0.01)
    drop(landing, "hello.flac", freq=330.0)
    result, instance = evaluate("landing_sensor")
    assert registered(instance) == ["hello", "hello-flac"]
    uris = get_catalog(Settings.from_env().catalog_url).resolve(["hello", "hello-flac"])
    assert uris["hello"].endswith("/hello.wav")
    assert uris["hello-flac"].endswith("/hello.flac")
    assert len(result.run_requests) == 1  # both in the tick's one run

    # a later tick: a third format finds `hello` taken in the catalog and takes its alternate
    drop(landing, "hello.ogg", freq=220.0)
    _, instance = evaluate("landing_sensor", result.cursor)
    assert registered(instance) == ["hello", "hello-flac", "hello-ogg"]
