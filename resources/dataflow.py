"""Google Cloud Dataflow: where and how a run's Beam job runs there, and GCP's label rules.

Dataflow is configured by :class:`DataflowConfig` (``KLIO_ASSETS_DATAFLOW``): project, region,
staging, worker image, machine type, autoscaling, identity, network, and labels carrying the
Dagster run ID, the assets and the batch size (sanitized to GCP's label rules).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from klio_assets.errors import ParameterError

DATAFLOW_RUNNER = "DataflowRunner"
#: GCP label limits: at most 64 labels; keys and values at most 63 characters.
_MAX_LABELS = 64
_LABEL_LEN = 63


def gcp_label(value: str, *, key: bool = False) -> str:
    """``value`` made acceptable as a GCP label key or value.

    GCP labels allow lowercase letters, digits, ``_`` and ``-``, at most 63 characters; keys
    must start with a letter. Other characters become ``-``; a value cut to length keeps a
    short digest of the whole so that distinct long values stay distinct.

    Parameters
    ----------
    value : str
    key : bool
        Apply the key rules (non-empty, starts with a letter).
    """
    cleaned = re.sub(r"[^a-z0-9_-]", "-", value.lower())
    if len(cleaned) > _LABEL_LEN:
        digest = hashlib.sha1(value.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[: _LABEL_LEN - 9]}-{digest}"
    if key and not re.match(r"[a-z]", cleaned):
        cleaned = f"k{cleaned}"[:_LABEL_LEN]
    return cleaned


def gcp_labels(labels: Mapping[str, Any]) -> dict[str, str]:
    """Every key and value of ``labels`` sanitized with :func:`gcp_label`.

    Raises
    ------
    ParameterError
        More labels than GCP accepts (64).
    """
    if len(labels) > _MAX_LABELS:
        raise ParameterError(f"{len(labels)} labels given; GCP accepts at most {_MAX_LABELS}")
    return {gcp_label(str(k), key=True): gcp_label(str(v)) for k, v in labels.items()}


def console_url(*, project: str, region: str, job_id: str) -> str:
    """The Cloud Console page of a Dataflow job."""
    return f"https://console.cloud.google.com/dataflow/jobs/{region}/{job_id}?project={project}"


class DataflowConfig(dg.Config):
    """Where and how a batch runs on Google Cloud Dataflow (every field is a Beam option).

    The cost levers are ``machine_type`` and ``max_num_workers`` here, and the batch size per
    run (``KLIO_ASSETS_BATCH_SIZE``): one Dagster run is one Dataflow job, whose start-up
    (about 3-5 minutes of worker provisioning) is paid once per batch.
    """

    project: str = Field(description="Google Cloud project that runs and pays for the job.")
    region: str = Field(description="Dataflow regional endpoint, e.g. europe-west1.")
    temp_location: str = Field(description="gs:// folder for temporary files of the job.")
    staging_location: str | None = Field(
        default=None, description="gs:// folder for staged packages (default: temp_location)."
    )
    sdk_container_image: str | None = Field(
        default=None,
        description="Worker image with ffmpeg and klio-assets installed "
        "(docker/beam-worker.Dockerfile); without it workers lack the package.",
    )
    machine_type: str | None = Field(
        default=None,
        description="Worker machine type, e.g. n2-standard-4 (Dataflow's default if unset).",
    )
    max_num_workers: int | None = Field(
        default=None, gt=0, description="Upper bound of autoscaling: the cost ceiling of one batch."
    )
    num_workers: int | None = Field(default=None, gt=0, description="Workers at start.")
    autoscaling_algorithm: Literal["", "THROUGHPUT_BASED", "NONE"] = Field(
        default="",
        description="THROUGHPUT_BASED scales between num_workers and max_num_workers; NONE "
        "keeps num_workers; empty leaves Dataflow's default (THROUGHPUT_BASED).",
    )
    service_account_email: str | None = Field(
        default=None,
        description="Identity of the workers (needs read/write on the storage buckets).",
    )
    network: str | None = Field(default=None, description="VPC network of the workers.")
    subnetwork: str | None = Field(
        default=None, description="Subnetwork, e.g. regions/europe-west1/subnetworks/beam."
    )
    use_public_ips: bool | None = Field(
        default=None,
        description="False keeps workers off public IPs (needs Private Google Access).",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels (billing, team); sanitized to GCP's label rules.",
    )

    def args(self) -> list[str]:
        """These settings as Beam pipeline arguments (labels excluded)."""
        args = [
            f"--runner={DATAFLOW_RUNNER}",
            f"--project={self.project}",
            f"--region={self.region}",
            f"--temp_location={self.temp_location}",
        ]
        for name in (
            "staging_location",
            "sdk_container_image",
            "machine_type",
            "max_num_workers",
            "num_workers",
            "autoscaling_algorithm",
            "service_account_email",
            "network",
            "subnetwork",
        ):
            value = getattr(self, name)
            if value not in (None, ""):
                args.append(f"--{name}={value}")
        if self.use_public_ips is not None:
            args.append("--use_public_ips" if self.use_public_ips else "--no_use_public_ips")
        return args
