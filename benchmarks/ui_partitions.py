"""The UI's asset page at the window's size: the GraphQL it sends for one analysis asset.

Dagster's ``tracks`` partitions hold a window of at most ``KLIO_ASSETS_WINDOW_MAX_TRACKS``
(default 50,000) tracks while the catalog holds millions, so the figure "the UI's partition
query for an analysis <= 2 s" is measured on an instance whose ``tracks`` definition has that
many partitions, most of them materialized:

1. a fresh ``KLIO_ASSETS_HOME`` (PostgreSQL by default: a throwaway server from
   ``klio_assets_tests.support.postgres``);
2. :func:`populate`: ``--partitions`` keys in ``tracks`` (bulk insert) and an
   ``ASSET_MATERIALIZATION`` for 90 % of them per asset, written through Dagster's batched
   event path (one write per 1000 events) with per-track metadata and provenance tags like
   klio's own;
3. :func:`serve`: ``klio-assets dev`` on that home (webserver and daemon, automation stopped);
4. :func:`time_asset_page`: every query of :data:`ASSET_PAGE_QUERIES` (those the asset page
   sends when opened on its Partitions tab, copied from the Dagster 1.13 UI bundle) posted to
   ``/graphql``: the first (cold) time and the median of ``--repeat`` more, per query and in
   total, after checking the answers are not errors and count what was populated.

With ``--compare`` (default 5000) the same is measured first at that size. ``--screenshot
PATH`` also renders the Partitions tab in headless Chromium (Debian's ``chromium``).

Usage, from the repository root::

    python benchmarks/ui_partitions.py [--partitions 50000] [--backend postgres]
        [--asset loudness] [--compare 5000] [--repeat 3] [--screenshot PATH] [--keep]

Human-readable figures go to stdout; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import dagster as dg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# klio_assets_tests is not installed: import it from this checkout.
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from common import KLIO_VARS, fresh_home

from klio_assets.orchestration import reporting
from klio_assets.orchestration.partitions import add_track_partitions
from klio_assets.orchestration.provenance import CODE_VERSION_TAG, DATA_VERSION_TAG
from klio_assets_tests.support.postgres import running_postgres
from klio_assets_tests.support.services import stop_process_group

#: The figure's target (issue: "the UI's partition query for an analysis <= 2 s").
TARGET_S = 2.0
#: Tracks per run, and events per batched write (klio's default batch size).
EVENT_BATCH = 1000
#: The step klio's runs materialize every analysis in (one multi-asset).
STEP_KEY = "audio_analyses"
#: Dagster's tags of a run over a range of partitions.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
#: Seconds :func:`serve` waits for the webserver's GraphQL to answer.
SERVE_TIMEOUT_S = 180
#: Seconds one GraphQL request may take before it counts as failed.
REQUEST_TIMEOUT_S = 300
#: Where dagster-webserver keeps the UI's JavaScript (the queries' text is in it).
UI_CHUNKS = os.path.join(
    os.path.dirname(importlib.util.find_spec("dagster_webserver").origin or ""),
    "webapp",
    "build",
    "_next",
    "static",
    "chunks",
)


#: Answers that mean the page could not be shown.
FATAL_TYPENAMES = frozenset({"PythonError", "AssetNotFoundError", "UnauthorizedError"})


class PageQuery(NamedTuple):
    """One GraphQL query of the asset page, as the UI sends it."""

    #: When the page sends it (and the UI hook that does).
    sent_when: str
    #: Its variables: ``assetKey`` (``{"path": [...]}``), ``assetKeys`` (a list of one) or
    #: ``partitionKey``.
    variables: tuple[str, ...]
    #: The query text (whitespace collapsed; GraphQL ignores it).
    text: str


#: The queries the Dagster 1.13 UI sends for the page of one partitioned asset
#: (``/assets/<key>?view=partitions``, then a partition selected, then the Overview tab), as
#: captured from the bodies Chromium posted to ``/graphql`` (Apollo's printed documents, every
#: fragment included), in the order the page sends them. The page also sends queries about
#: the whole workspace (``LocationWorkspaceQuery``, ``AssetRecordsQuery``, ``PermissionsQuery``,
#: ``InstanceWarningQuery``, ...) that do not depend on the asset or its partitions; they are
#: left out. :func:`missing_from_bundle` checks that the installed UI still has these names.

ASSET_PAGE_QUERIES: dict[str, PageQuery] = {
    "AssetViewDefinitionQuery": PageQuery(
        "every tab: the definition and the latest materialization (useAssetDefinition)",
        ("assetKey",),
        """
query AssetViewDefinitionQuery($assetKey: AssetKeyInput!) { assetOrError(assetKey: $assetKey) {
... on Asset { id key { path __typename } hasDefinitionOrRecord assetMaterializations(limit: 1)
{ timestamp runId __typename } definition { id ...AssetViewDefinitionNode __typename }
__typename } __typename } } fragment AssetViewDefinitionNode on AssetNode { id pools opVersion
groupName isExecutable automationCondition { label expandedLabel __typename }
partitionDefinition { description dimensionTypes { type dynamicPartitionsDefinitionName
__typename } __typename } partitionKeysByDimension { name __typename } owners { ... on
TeamAssetOwner { team __typename } ... on UserAssetOwner { email __typename } __typename }
autoMaterializePolicy { rules { className description decisionType __typename } __typename }
freshnessPolicy { maximumLagMinutes cronSchedule cronScheduleTimezone __typename }
internalFreshnessPolicy { ... on TimeWindowFreshnessPolicy { failWindowSeconds warnWindowSeconds
__typename } ... on CronFreshnessPolicy { deadlineCron lowerBoundDeltaSeconds timezone
__typename } __typename } backfillPolicy { description __typename } opTags { key value
__typename } requiredResources { resourceKey __typename } repository { id name location { id
name __typename } __typename } hasReportRunlessAssetEventPermission ...AssetNodeFragment
...AssetNodeConfigFragment ...AssetNodeInstigatorsFragment ...UnderlyingOpsAssetNodeFragment
...AssetNodeOpMetadataFragment __typename } fragment AssetNodeFragment on AssetNode { id
graphName hasMaterializePermission hasWipePermission jobNames changedReasons opNames description
computeKind isPartitioned isObservable isMaterializable isAutoCreatedStub owners { ... on
TeamAssetOwner { team __typename } ... on UserAssetOwner { email __typename } __typename }
assetKey { ...AssetNodeKey __typename } tags { key value __typename } kinds __typename }
fragment AssetNodeKey on AssetKey { path __typename } fragment AssetNodeConfigFragment on
AssetNode { id configField { name isRequired configType { ...ConfigTypeSchemaFragment
recursiveConfigTypes { ...ConfigTypeSchemaFragment __typename } __typename } __typename }
__typename } fragment ConfigTypeSchemaFragment on ConfigType { ... on EnumConfigType { givenName
values { value description __typename } __typename } ... on RegularConfigType { givenName
__typename } key description isSelector typeParamKeys ... on CompositeConfigType { fields { name
description isRequired configTypeKey defaultValueAsJson __typename } __typename } ... on
ScalarUnionConfigType { scalarTypeKey nonScalarTypeKey __typename } ... on MapConfigType {
keyLabelName __typename } __typename } fragment AssetNodeInstigatorsFragment on AssetNode { id
targetingInstigators { ... on Schedule { ...ScheduleSwitchFragment __typename } ... on Sensor {
...SensorSwitchFragment __typename } __typename } __typename } fragment ScheduleSwitchFragment
on Schedule { id name cronSchedule executionTimezone scheduleState { id selectorId status
hasStartPermission hasStopPermission __typename } __typename } fragment SensorSwitchFragment on
Sensor { id name sensorState { id selectorId status typeSpecificData { ... on SensorData {
lastCursor __typename } __typename } hasStartPermission hasStopPermission __typename }
sensorType __typename } fragment AssetNodeOpMetadataFragment on AssetNode { id metadataEntries {
...MetadataEntryFragment __typename } type { ...DagsterTypeFragment __typename } __typename }
fragment MetadataEntryFragment on MetadataEntry { label description ... on PathMetadataEntry {
path __typename } ... on NotebookMetadataEntry { path __typename } ... on JsonMetadataEntry {
jsonString __typename } ... on UrlMetadataEntry { url __typename } ... on TextMetadataEntry {
text __typename } ... on MarkdownMetadataEntry { mdStr __typename } ... on
PythonArtifactMetadataEntry { module name __typename } ... on FloatMetadataEntry { floatValue
__typename } ... on TimestampMetadataEntry { timestamp __typename } ... on IntMetadataEntry {
intValue intRepr __typename } ... on BoolMetadataEntry { boolValue __typename } ... on
PipelineRunMetadataEntry { runId __typename } ... on AssetMetadataEntry { assetKey { path
__typename } __typename } ... on JobMetadataEntry { jobName repositoryName locationName
__typename } ... on TableColumnLineageMetadataEntry { lineage { columnName columnDeps { assetKey
{ path __typename } columnName __typename } __typename } __typename } ... on TableMetadataEntry
{ ...TableMetadataEntryFragment __typename } ... on TableSchemaMetadataEntry {
...TableSchemaForMetadataEntry __typename } ... on CodeReferencesMetadataEntry { codeReferences
{ __typename ... on LocalFileCodeReference { filePath lineNumber label __typename } ... on
UrlCodeReference { url label __typename } } __typename } ... on PoolMetadataEntry { pool
__typename } __typename } fragment TableMetadataEntryFragment on TableMetadataEntry { label
table { records schema { ...TableSchemaFragment __typename } __typename } __typename } fragment
TableSchemaForMetadataEntry on TableSchemaMetadataEntry { schema { ...TableSchemaFragment
__typename } __typename } fragment TableSchemaFragment on TableSchema { columns { name
description type tags { key value __typename } constraints { ...ConstraintsForTableColumn
__typename } __typename } constraints { other __typename } __typename } fragment
ConstraintsForTableColumn on TableColumnConstraints { nullable unique other __typename }
fragment DagsterTypeFragment on DagsterType { ...InnerDagsterTypeFragment innerTypes {
...InnerDagsterTypeFragment __typename } __typename } fragment InnerDagsterTypeFragment on
DagsterType { __typename key name displayName description isNullable isList isBuiltin isNothing
metadataEntries { ...MetadataEntryFragment __typename } inputSchemaType {
...ConfigTypeSchemaFragment recursiveConfigTypes { ...ConfigTypeSchemaFragment __typename }
__typename } outputSchemaType { ...ConfigTypeSchemaFragment recursiveConfigTypes {
...ConfigTypeSchemaFragment __typename } __typename } } fragment UnderlyingOpsAssetNodeFragment
on AssetNode { id assetKey { path __typename } graphName opNames jobNames __typename }
""",
    ),
    "AssetGraphLiveQuery": PageQuery(
        "every tab, then polled: latest events and partition counts (useAssetLiveData)",
        ("assetKeys",),
        """
query AssetGraphLiveQuery($assetKeys: [AssetKeyInput!]!) { assetNodes(assetKeys: $assetKeys,
loadMaterializations: true) { id ...AssetNodeLiveFragment __typename }
assetsLatestInfo(assetKeys: $assetKeys) { id ...AssetLatestInfoFragment __typename } } fragment
AssetNodeLiveFragment on AssetNode { id opNames repository { id __typename } assetKey { path
__typename } assetMaterializations(limit: 1) { ...AssetNodeLiveMaterialization __typename }
assetObservations(limit: 1) { ...AssetNodeLiveObservation __typename } assetChecksOrError { ...
on AssetChecks { checks { ...AssetCheckLiveFragment __typename } __typename } __typename }
partitionStats { numMaterialized numMaterializing numPartitions numFailed __typename }
__typename } fragment AssetNodeLiveMaterialization on MaterializationEvent { timestamp runId
stepKey __typename } fragment AssetNodeLiveObservation on ObservationEvent { timestamp runId
stepKey __typename } fragment AssetCheckLiveFragment on AssetCheck { name canExecuteIndividually
executionForLatestMaterialization { id runId status timestamp stepKey evaluation { severity
__typename } __typename } partitionDefinition { name description __typename } partitionStatuses
{ ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions
inProgressPartitions skippedPartitions executionFailedPartitions __typename } ... on
AssetCheckTimePartitionStatuses { ranges { startKey endKey status __typename } __typename } ...
on AssetCheckMultiPartitionStatuses { primaryDimensionName ranges { primaryDimStartKey
primaryDimEndKey secondaryDim { ... on AssetCheckDefaultPartitionStatuses { succeededPartitions
failedPartitions inProgressPartitions skippedPartitions executionFailedPartitions __typename }
... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status __typename } __typename
} __typename } __typename } __typename } __typename } __typename } fragment
AssetLatestInfoFragment on AssetLatestInfo { id assetKey { path __typename } unstartedRunIds
inProgressRunIds latestRun { id ...AssetLatestInfoRun __typename } __typename } fragment
AssetLatestInfoRun on Run { status startTime endTime id __typename }
""",
    ),
    "AssetStaleStatusDataQuery": PageQuery(
        "every tab, then polled: the stale status (useAssetLiveData)",
        ("assetKeys",),
        """
fragment AssetStaleDataFragment on AssetNode { id assetKey { path __typename } staleStatus
staleCauses { key { path __typename } reason category dependency { path __typename } __typename
} __typename } query AssetStaleStatusDataQuery($assetKeys: [AssetKeyInput!]!) {
assetNodes(assetKeys: $assetKeys) { id ...AssetStaleDataFragment __typename } }
""",
    ),
    "AssetsFreshnessInfoQuery": PageQuery(
        "every tab, then polled: freshness (useAssetLiveData)",
        ("assetKeys",),
        """
query AssetsFreshnessInfoQuery($assetKeys: [AssetKeyInput!]!) { assetNodes(assetKeys:
$assetKeys) { id assetKey { path __typename } freshnessInfo {
...AssetNodeLiveFreshnessInfoFragment __typename } __typename } } fragment
AssetNodeLiveFreshnessInfoFragment on AssetFreshnessInfo { currentMinutesLate __typename }
""",
    ),
    "PartitionHealthQuery": PageQuery(
        "Partitions tab: every key, and the materialized, failed and materializing ones",
        ("assetKey",),
        """
query PartitionHealthQuery($assetKey: AssetKeyInput!) { assetNodeOrError(assetKey: $assetKey) {
... on AssetNode { id partitionKeysByDimension { name type partitionKeys __typename }
assetPartitionStatuses { ... on TimePartitionStatuses { ranges { status startTime endTime
startKey endKey __typename } __typename } ... on DefaultPartitionStatuses {
materializedPartitions materializingPartitions failedPartitions __typename } ... on
MultiPartitionStatuses { primaryDimensionName ranges { primaryDimStartKey primaryDimEndKey
primaryDimStartTime primaryDimEndTime secondaryDim { ... on TimePartitionStatuses { ranges {
status startTime endTime startKey endKey __typename } __typename } ... on
DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions
__typename } __typename } __typename } __typename } __typename } __typename } __typename } }
""",
    ),
    "AssetPartitionDetailQuery": PageQuery(
        "Partitions tab, a partition selected: its events and latest run",
        ("assetKey", "partitionKey"),
        """
query AssetPartitionDetailQuery($assetKey: AssetKeyInput!, $partitionKey: String!) {
assetOrError(assetKey: $assetKey) { ... on Asset { id definition { id opNames
latestRunForPartition(partition: $partitionKey) { id ...AssetPartitionLatestRunFragment
__typename } __typename } assetEventHistory( partitions: [$partitionKey] limit: 1000
eventTypeSelectors: [MATERIALIZATION, OBSERVATION, FAILED_TO_MATERIALIZE] ) { results { ... on
MaterializationEvent { runId ...AssetSuccessfulMaterializationFragment __typename } ... on
ObservationEvent { runId ...AssetObservationFragment __typename } ... on
FailedToMaterializeEvent { runId ...AssetFailedToMaterializeFragment __typename } __typename }
__typename } __typename } __typename } } fragment AssetPartitionLatestRunFragment on Run { id
status endTime __typename } fragment AssetSuccessfulMaterializationFragment on
MaterializationEvent { partition tags { key value __typename } runOrError { ... on PipelineRun {
id mode repositoryOrigin { id repositoryName repositoryLocationName __typename } status
pipelineName pipelineSnapshotId __typename } __typename } runId timestamp stepKey label
description metadataEntries { ...MetadataEntryFragment __typename } assetLineage {
...AssetLineageFragment __typename } __typename } fragment MetadataEntryFragment on
MetadataEntry { label description ... on PathMetadataEntry { path __typename } ... on
NotebookMetadataEntry { path __typename } ... on JsonMetadataEntry { jsonString __typename } ...
on UrlMetadataEntry { url __typename } ... on TextMetadataEntry { text __typename } ... on
MarkdownMetadataEntry { mdStr __typename } ... on PythonArtifactMetadataEntry { module name
__typename } ... on FloatMetadataEntry { floatValue __typename } ... on TimestampMetadataEntry {
timestamp __typename } ... on IntMetadataEntry { intValue intRepr __typename } ... on
BoolMetadataEntry { boolValue __typename } ... on PipelineRunMetadataEntry { runId __typename }
... on AssetMetadataEntry { assetKey { path __typename } __typename } ... on JobMetadataEntry {
jobName repositoryName locationName __typename } ... on TableColumnLineageMetadataEntry {
lineage { columnName columnDeps { assetKey { path __typename } columnName __typename }
__typename } __typename } ... on TableMetadataEntry { ...TableMetadataEntryFragment __typename }
... on TableSchemaMetadataEntry { ...TableSchemaForMetadataEntry __typename } ... on
CodeReferencesMetadataEntry { codeReferences { __typename ... on LocalFileCodeReference {
filePath lineNumber label __typename } ... on UrlCodeReference { url label __typename } }
__typename } ... on PoolMetadataEntry { pool __typename } __typename } fragment
TableMetadataEntryFragment on TableMetadataEntry { label table { records schema {
...TableSchemaFragment __typename } __typename } __typename } fragment
TableSchemaForMetadataEntry on TableSchemaMetadataEntry { schema { ...TableSchemaFragment
__typename } __typename } fragment TableSchemaFragment on TableSchema { columns { name
description type tags { key value __typename } constraints { ...ConstraintsForTableColumn
__typename } __typename } constraints { other __typename } __typename } fragment
ConstraintsForTableColumn on TableColumnConstraints { nullable unique other __typename }
fragment AssetLineageFragment on AssetLineageInfo { assetKey { path __typename } partitions
__typename } fragment AssetObservationFragment on ObservationEvent { partition tags { key value
__typename } runOrError { ... on PipelineRun { id mode repositoryOrigin { id repositoryName
repositoryLocationName __typename } status pipelineName pipelineSnapshotId __typename }
__typename } runId timestamp stepKey label description metadataEntries {
...MetadataEntryFragment __typename } __typename } fragment AssetFailedToMaterializeFragment on
FailedToMaterializeEvent { tags { key value __typename } runOrError { ... on PipelineRun { id
mode repositoryOrigin { id repositoryName repositoryLocationName __typename } status
pipelineName pipelineSnapshotId __typename } __typename } runId timestamp stepKey label
description assetKey { path __typename } partition metadataEntries { ...MetadataEntryFragment
__typename } materializationFailureType __typename }
""",
    ),
    "AssetPartitionStaleQuery": PageQuery(
        "Partitions tab, a partition selected: its stale status",
        ("assetKey", "partitionKey"),
        """
query AssetPartitionStaleQuery($assetKey: AssetKeyInput!, $partitionKey: String!) {
assetNodeOrError(assetKey: $assetKey) { ... on AssetNode { id staleStatus(partition:
$partitionKey) staleCauses(partition: $partitionKey) { key { path __typename } reason category
dependency { path __typename } __typename } __typename } __typename } }
""",
    ),
    "AssetOverviewMetadataEventsQuery": PageQuery(
        "Overview tab: the latest materialization and its metadata",
        ("assetKey",),
        """
query AssetOverviewMetadataEventsQuery($assetKey: AssetKeyInput!) { assetOrError(assetKey:
$assetKey) { ... on Asset { id assetMaterializations(limit: 1) { timestamp runId partition
metadataEntries { ...MetadataEntryFragment __typename } __typename } assetObservations(limit: 1)
{ timestamp runId partition metadataEntries { ...MetadataEntryFragment __typename } __typename }
__typename } __typename } } fragment MetadataEntryFragment on MetadataEntry { label description
... on PathMetadataEntry { path __typename } ... on NotebookMetadataEntry { path __typename }
... on JsonMetadataEntry { jsonString __typename } ... on UrlMetadataEntry { url __typename }
... on TextMetadataEntry { text __typename } ... on MarkdownMetadataEntry { mdStr __typename }
... on PythonArtifactMetadataEntry { module name __typename } ... on FloatMetadataEntry {
floatValue __typename } ... on TimestampMetadataEntry { timestamp __typename } ... on
IntMetadataEntry { intValue intRepr __typename } ... on BoolMetadataEntry { boolValue __typename
} ... on PipelineRunMetadataEntry { runId __typename } ... on AssetMetadataEntry { assetKey {
path __typename } __typename } ... on JobMetadataEntry { jobName repositoryName locationName
__typename } ... on TableColumnLineageMetadataEntry { lineage { columnName columnDeps { assetKey
{ path __typename } columnName __typename } __typename } __typename } ... on TableMetadataEntry
{ ...TableMetadataEntryFragment __typename } ... on TableSchemaMetadataEntry {
...TableSchemaForMetadataEntry __typename } ... on CodeReferencesMetadataEntry { codeReferences
{ __typename ... on LocalFileCodeReference { filePath lineNumber label __typename } ... on
UrlCodeReference { url label __typename } } __typename } ... on PoolMetadataEntry { pool
__typename } __typename } fragment TableMetadataEntryFragment on TableMetadataEntry { label
table { records schema { ...TableSchemaFragment __typename } __typename } __typename } fragment
TableSchemaForMetadataEntry on TableSchemaMetadataEntry { schema { ...TableSchemaFragment
__typename } __typename } fragment TableSchemaFragment on TableSchema { columns { name
description type tags { key value __typename } constraints { ...ConstraintsForTableColumn
__typename } __typename } constraints { other __typename } __typename } fragment
ConstraintsForTableColumn on TableColumnConstraints { nullable unique other __typename }
""",
    ),
}


def track_keys(n: int) -> list[str]:
    """``n`` track IDs in registration order (``bench-0000000`` ...)."""
    return [f"bench-{i:07d}" for i in range(n)]


def materialized_subset(keys: Sequence[str], fraction: float) -> list[str]:
    """``floor(len(keys) * fraction)`` of ``keys``, spread evenly over them (in order)."""
    return [k for i, k in enumerate(keys) if int((i + 1) * fraction) > int(i * fraction)]


def _materialization(asset: str, key: str, code_version: str, i: int) -> dg.AssetMaterialization:
    """One track's materialization, with metadata and tags like klio's (``track_metadata``)."""
    data_version = hashlib.sha256(f"{code_version}/{asset}/{key}".encode()).hexdigest()
    return dg.AssetMaterialization(
        asset_key=asset,
        partition=key,
        metadata={
            "status": "computed",
            "uri": dg.MetadataValue.path(f"gs://klio-bench/{asset}/{key}.json"),
            "code_version": code_version,
            "duration_s": 180.0 + (i % 240),
            "sample_rate": 44_100,
            "channels": 2,
            "seconds": 0.25 + (i % 7) / 10,
            "value_mean": -14.0 - (i % 11) / 3,
            "value_range": 5.0 + (i % 13) / 4,
            "value_peak": -1.0 - (i % 5) / 10,
        },
        tags={CODE_VERSION_TAG: code_version, DATA_VERSION_TAG: data_version},
    )


def populate(
    instance: dg.DagsterInstance,
    asset_names: Sequence[str],
    n_partitions: int,
    materialized_fraction: float = 0.9,
    *,
    batch: int = EVENT_BATCH,
    code_versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Fill ``instance``: ``n_partitions`` ``tracks`` keys and materializations of a fraction.

    Keys come from :func:`track_keys` and are added with ``add_track_partitions`` (one bulk
    insert on PostgreSQL). Then, like klio's runs, one successful run of ``JOB_NAME`` per
    ``batch`` consecutive keys (range tags, start and success events) materializes the keys
    of :func:`materialized_subset` in its range, for each asset: one ``ASSET_MATERIALIZATION``
    per key, handed to ``instance.report_dagster_event`` with Dagster's batch metadata so
    that the event log stores each run's events of one asset in one write (the path klio's
    runs take, :mod:`klio_assets.orchestration.reporting`).

    Parameters
    ----------
    instance : dg.DagsterInstance
        Usually a fresh one; keys already there are kept (the insert is idempotent), runs
        and events are added again.
    asset_names : sequence of str
        Asset keys (components joined by ``/``) to materialize.
    n_partitions : int
        Keys in ``tracks``.
    materialized_fraction : float
        Fraction of the keys materialized per asset, 0 to 1.
    batch : int
        Keys per run, and so at most events per batched write.
    code_versions : mapping, optional
        Asset name to the code version its materializations carry (``dagster/code_version``);
        default ``"bench"``. Pass the definitions' versions for partitions that are not stale.

    Returns
    -------
    dict
        ``partitions``, ``runs``, ``materialized`` (per asset), and seconds:
        ``partitions_s``, ``events_s``.
    """
    if n_partitions < 0:
        raise ValueError(f"n_partitions={n_partitions} must be >= 0")
    if not 0.0 <= materialized_fraction <= 1.0:
        raise ValueError(f"materialized_fraction={materialized_fraction} must be in [0, 1]")
    if batch < 1:
        raise ValueError(f"batch={batch} must be positive")
    # Private API: Dagster's batched event path (what klio's runs use, reporting.py).
    from dagster._core.events import (
        DagsterEvent,
        DagsterEventBatchMetadata,
        DagsterEventType,
        StepMaterializationData,
        generate_event_batch_id,
    )

    from klio_assets.definitions import JOB_NAME

    keys = track_keys(n_partitions)
    started = time.perf_counter()
    add_track_partitions(instance, keys)
    partitions_s = time.perf_counter() - started
    done = set(materialized_subset(keys, materialized_fraction))
    started = time.perf_counter()
    runs = 0
    with reporting.event_batching(batch):
        for start in range(0, len(keys), batch):
            in_run = keys[start : start + batch]
            run_id = str(uuid.uuid4())
            instance.add_run(
                dg.DagsterRun(
                    job_name=JOB_NAME,
                    run_id=run_id,
                    status=dg.DagsterRunStatus.STARTING,
                    tags={RANGE_START_TAG: in_run[0], RANGE_END_TAG: in_run[-1]},
                )
            )
            instance.report_dagster_event(
                DagsterEvent(DagsterEventType.RUN_START.value, job_name=JOB_NAME), run_id=run_id
            )
            runs += 1
            chunk = [(i, k) for i, k in enumerate(in_run, start) if k in done]
            for asset in asset_names:
                version = (code_versions or {}).get(asset, "bench")
                batch_id = generate_event_batch_id()
                for j, (i, key) in enumerate(chunk):
                    event = DagsterEvent(
                        DagsterEventType.ASSET_MATERIALIZATION.value,
                        job_name=JOB_NAME,
                        step_key=STEP_KEY,
                        event_specific_data=StepMaterializationData(
                            _materialization(asset, key, version, i)
                        ),
                    )
                    instance.report_dagster_event(
                        event,
                        run_id=run_id,
                        batch_metadata=DagsterEventBatchMetadata(batch_id, j == len(chunk) - 1),
                    )
            instance.report_dagster_event(
                DagsterEvent(DagsterEventType.RUN_SUCCESS.value, job_name=JOB_NAME), run_id=run_id
            )
    return {
        "partitions": n_partitions,
        "runs": runs,
        "materialized": {asset: len(done) for asset in asset_names},
        "partitions_s": round(partitions_s, 3),
        "events_s": round(time.perf_counter() - started, 3),
    }


def graphql(port: int, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON answer of one POST to ``http://127.0.0.1:<port>/graphql``."""
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        return json.loads(response.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(
    home_env: Mapping[str, str], *, log_path: str | None = None, timeout_s: float = SERVE_TIMEOUT_S
) -> Iterator[int]:
    """``klio-assets dev`` on a home, on a free port, once its GraphQL answers; yields the port.

    Parameters
    ----------
    home_env : mapping
        The home's variables (``KLIO_ASSETS_HOME``, ``KLIO_ASSETS_CATALOG``, ...): the server
        gets this process' environment without any ``KLIO_ASSETS_*`` or ``DAGSTER_*``, plus
        these.
    log_path : str, optional
        Where the server's output goes (default: discarded).
    timeout_s : float
        Seconds to wait for GraphQL to list the assets.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLIO_ASSETS_", "DAGSTER_"))}
    env.update(home_env)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(log_path or os.devnull, "wb"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "klio_assets.cli", "dev", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(stop_process_group, proc)
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                if graphql(port, "{ assetNodes { id } }")["data"]["assetNodes"]:
                    break
            if proc.poll() is not None:
                raise SystemExit(f"klio-assets dev exited with {proc.returncode} (log: {log_path})")
            if time.monotonic() > deadline:
                raise SystemExit(f"klio-assets dev did not answer in {timeout_s:.0f} s")
            time.sleep(1)
        yield port


def missing_from_bundle(names: Sequence[str] = tuple(ASSET_PAGE_QUERIES)) -> list[str]:
    """The query names not defined (``query <Name>(``) in the installed UI's JavaScript."""
    wanted = {name: f"query {name}(".encode() for name in names}
    found: set[str] = set()
    for entry in os.scandir(UI_CHUNKS) if os.path.isdir(UI_CHUNKS) else ():
        if entry.name.endswith(".js"):
            with open(entry.path, "rb") as fh:
                text = fh.read()
            found.update(name for name, needle in wanted.items() if needle in text)
    return [name for name in names if name not in found]


def _variables(query: PageQuery, asset: str, partition_key: str | None) -> dict[str, Any]:
    path = asset.split("/")
    values = {"assetKey": {"path": path}, "assetKeys": [{"path": path}]}
    out = {}
    for name in query.variables:
        if name == "partitionKey":
            if partition_key is None:
                raise SystemExit("no materialized partition to select: is the asset populated?")
            out[name] = partition_key
        else:
            out[name] = values[name]
    return out


def _error(answer: Any) -> str | None:
    """The first error of a GraphQL answer: ``errors``, or one of :data:`FATAL_TYPENAMES`
    anywhere in ``data`` (other ``...Error`` types are answers, e.g. ``RunNotFoundError``)."""
    if isinstance(answer, dict):
        if answer.get("errors"):
            return json.dumps(answer["errors"])[:2000]
        if answer.get("__typename") in FATAL_TYPENAMES:
            return json.dumps(answer)[:2000]
        values: Any = answer.values()
    elif isinstance(answer, list):
        values = answer
    else:
        return None
    return next((e for e in map(_error, values) if e), None)


def _post(port: int, name: str, variables: Mapping[str, Any]) -> tuple[float, dict[str, Any], int]:
    """Seconds, answer and size in bytes of one query of :data:`ASSET_PAGE_QUERIES`."""
    body = json.dumps(
        {"operationName": name, "query": ASSET_PAGE_QUERIES[name].text, "variables": variables}
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql?op={name}", body, {"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            data = response.read()
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{name}: HTTP {exc.code}: {exc.read()[:2000]!r}") from exc
    seconds = time.perf_counter() - started
    answer = json.loads(data)
    if error := _error(answer):
        raise SystemExit(f"{name} answered an error: {error}")
    return seconds, answer, len(data)


def _check_counts(
    name: str, answer: dict[str, Any], asset: str, expected: Mapping[str, int]
) -> None:
    """Raise SystemExit unless the partition counts in ``answer`` are ``expected``'s."""
    n, m = expected["partitions"], expected["materialized"]
    data = answer["data"]
    if name == "PartitionHealthQuery":
        node = data["assetNodeOrError"]
        keys = node["partitionKeysByDimension"][0]["partitionKeys"]
        statuses = node["assetPartitionStatuses"]
        got = (
            len(keys),
            len(statuses["materializedPartitions"]),
            len(statuses["failedPartitions"]),
        )
        if got != (n, m, 0):
            raise SystemExit(f"{name}: (keys, materialized, failed) = {got}, expected {(n, m, 0)}")
    elif name == "AssetGraphLiveQuery":
        node = next(a for a in data["assetNodes"] if a["assetKey"]["path"] == asset.split("/"))
        stats = node["partitionStats"]
        got = (stats["numPartitions"], stats["numMaterialized"], stats["numFailed"])
        if got != (n, m, 0):
            raise SystemExit(f"{name}: partitionStats {got}, expected {(n, m, 0)}")
    elif name == "AssetPartitionDetailQuery" and m:
        if not data["assetOrError"]["assetEventHistory"]["results"]:
            raise SystemExit(f"{name}: no event for a materialized partition")
    elif name == "AssetOverviewMetadataEventsQuery" and m:
        if not data["assetOrError"]["assetMaterializations"]:
            raise SystemExit(f"{name}: no latest materialization")


def _selected_partition(answer: dict[str, Any]) -> str | None:
    """The last registered key that is materialized (the partition a user would open)."""
    node = answer["data"]["assetNodeOrError"]
    done = set(node["assetPartitionStatuses"]["materializedPartitions"])
    keys = node["partitionKeysByDimension"][0]["partitionKeys"]
    return next((k for k in reversed(keys) if k in done), keys[-1] if keys else None)


def time_asset_page(
    port: int, asset: str, repeat: int = 3, *, expected: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Time every query of :data:`ASSET_PAGE_QUERIES` for ``asset`` on a running webserver.

    Each query is posted once (``first_s``: after new events, Dagster updates its cached
    partition status on this read), then ``repeat`` more times (``median_s``), one at a time,
    in the page's order. The partition-detail queries ask for the last materialized key of
    ``PartitionHealthQuery``'s answer.

    Parameters
    ----------
    port : int
        The webserver's port on 127.0.0.1.
    asset : str
        Asset key, components joined by ``/``.
    repeat : int
        Timed posts per query after the first.
    expected : mapping, optional
        ``{"partitions": n, "materialized": m}``: the answers must count exactly these
        (partition keys, materialized, none failed).

    Returns
    -------
    dict
        ``queries``: per name ``first_s``, ``median_s``, ``bytes``; ``total_first_s`` and
        ``total_median_s`` (sums); ``partition_key`` selected.

    Raises
    ------
    SystemExit
        A query answered an error, or counts other than ``expected``.
    """
    if repeat < 1:
        raise ValueError(f"repeat={repeat} must be positive")
    queries: dict[str, dict[str, float | int]] = {}
    partition_key: str | None = None
    for name, query in ASSET_PAGE_QUERIES.items():
        variables = _variables(query, asset, partition_key)
        first, answer, size = _post(port, name, variables)
        if expected is not None:
            _check_counts(name, answer, asset, expected)
        if name == "PartitionHealthQuery":
            partition_key = _selected_partition(answer)
        seconds = [_post(port, name, variables)[0] for _ in range(repeat)]
        queries[name] = {
            "first_s": round(first, 3),
            "median_s": round(statistics.median(seconds), 3),
            "bytes": size,
        }
    return {
        "asset": asset,
        "partition_key": partition_key,
        "queries": queries,
        "total_first_s": round(sum(float(q["first_s"]) for q in queries.values()), 3),
        "total_median_s": round(sum(float(q["median_s"]) for q in queries.values()), 3),
    }


def screenshot(port: int, asset: str, path: str, *, profile_dir: str) -> float:
    """Seconds headless Chromium takes to render the asset's Partitions tab into ``path``.

    The "join the community" dialog shown on a new instance is dismissed first
    (``setNuxSeen``), so that it does not hide the page.
    """
    graphql(port, "mutation { setNuxSeen }")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    started = time.perf_counter()
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            f"--user-data-dir={profile_dir}",
            "--virtual-time-budget=20000",
            "--window-size=1400,1000",
            f"--screenshot={path}",
            f"http://127.0.0.1:{port}/assets/{asset}?view=partitions",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return round(time.perf_counter() - started, 1)


def code_versions(asset_names: Sequence[str]) -> dict[str, str]:
    """The code versions of ``asset_names`` in this deployment's definitions."""
    from klio_assets.definitions import build_definitions
    from klio_assets.settings import Settings

    graph = build_definitions(Settings.from_env()).resolve_asset_graph()
    return {a: graph.get(dg.AssetKey(a.split("/"))).code_version or "" for a in asset_names}


def bench_size(
    backend: str, workdir: str, n: int, args: argparse.Namespace, *, postgres: Any
) -> dict[str, Any]:
    """A fresh home with ``n`` partitions, populated, served, and its asset page timed."""
    fresh_home(backend, workdir, postgres=postgres, name=f"ui-{n}")
    assets = args.assets.split(",")
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        filled = populate(instance, assets, n, args.fraction, code_versions=code_versions(assets))
    filled["populate_s"] = round(time.perf_counter() - started, 3)
    print(
        f"[{n}] populated {n} partitions, {sum(filled['materialized'].values())} events in "
        f"{filled['populate_s']:.1f} s",
        flush=True,
    )
    home_env = {k: v for k, v in os.environ.items() if k.startswith("KLIO_ASSETS_")}
    expected = {"partitions": n, "materialized": filled["materialized"][assets[0]]}
    with serve(home_env, log_path=os.path.join(workdir, f"dev-{n}.log")) as port:
        figures = time_asset_page(port, assets[0], args.repeat, expected=expected)
        if args.screenshot and n == args.partitions:
            figures["screenshot_s"] = screenshot(
                port, assets[0], args.screenshot, profile_dir=os.path.join(workdir, "chromium")
            )
            figures["screenshot"] = args.screenshot
    return {"populate": filled, **figures, "load": [round(x, 2) for x in os.getloadavg()]}


def print_report(results: dict[str, Any]) -> None:
    print(f"\nThe asset page of {results['asset']} ({results['backend']}; target {TARGET_S} s)")
    sizes = list(results["sizes"])
    print(f"{'query':34}" + "".join(f"{f'{n} first':>14}{f'{n} median':>14}" for n in sizes))
    for name in ASSET_PAGE_QUERIES:
        row = "".join(
            f"{r['queries'][name]['first_s']:>14.3f}{r['queries'][name]['median_s']:>14.3f}"
            for r in results["sizes"].values()
        )
        print(f"{name:34}{row}")
    row = "".join(
        f"{r['total_first_s']:>14.3f}{r['total_median_s']:>14.3f}"
        for r in results["sizes"].values()
    )
    print(f"{'total (one after another)':34}{row}")
    for n, r in results["sizes"].items():
        verdict = "met" if r["met"] else "not met"
        print(
            f"{n} partitions: total {r['total_median_s']:.3f} s (median; first "
            f"{r['total_first_s']:.3f} s), target {TARGET_S} s: {verdict}; populated in "
            f"{r['populate']['populate_s']:.1f} s"
        )
        if "screenshot" in r:
            print(f"  screenshot {r['screenshot']} rendered in {r['screenshot_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=50_000, help="keys in tracks")
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--assets",
        default="loudness,downsampled_audio",
        help="assets to materialize, comma-separated; the first one's page is timed",
    )
    parser.add_argument("--fraction", type=float, default=0.9, help="materialized fraction")
    parser.add_argument(
        "--compare", type=int, default=5000, help="time this size first (0: do not)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed posts per query (median)")
    parser.add_argument("--screenshot", metavar="PNG", help="render the Partitions tab here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.partitions < 1 or not 0 < args.fraction <= 1 or args.repeat < 1:
        parser.error("need --partitions >= 1, 0 < --fraction <= 1 and --repeat >= 1")
    if missing := missing_from_bundle():
        print(f"warning: the installed UI does not define {missing}", file=sys.stderr)

    saved = {k: os.environ.get(k) for k in KLIO_VARS}
    workdir = tempfile.mkdtemp(prefix="klio-ui-", dir=os.environ.get("TMPDIR", "/tmp"))
    sizes = [n for n in (args.compare, args.partitions) if 0 < n < args.partitions]
    sizes.append(args.partitions)
    results: dict[str, Any] = {
        "asset": args.assets.split(",")[0],
        "backend": args.backend,
        "dagster": dg.__version__,
        "target_s": TARGET_S,
        "missing_from_bundle": missing,
        "sizes": {},
    }
    try:
        with contextlib.ExitStack() as stack:
            postgres = (
                stack.enter_context(running_postgres(workdir))
                if args.backend == "postgres"
                else None
            )
            for n in sizes:
                figures = bench_size(args.backend, workdir, n, args, postgres=postgres)
                figures["met"] = figures["total_median_s"] <= TARGET_S
                results["sizes"][n] = figures
                print(json.dumps({"partial": n, **figures}, sort_keys=True), flush=True)
    finally:
        for k, v in saved.items():  # a caller's environment as it was
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(results)
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
