"""Deployment files: the Helm values give run pods what they need (built by dagster-k8s' own
K8sRunLauncher), and the two images pin the Beam and Python versions of setup.cfg.

No Kubernetes cluster and no Docker engine run here: the launcher is real up to the Kubernetes
API call (a fake batch API records the Job it would create), and the Dockerfiles are checked
as text.
"""

from __future__ import annotations

import configparser
import re
import uuid
from pathlib import Path

import apache_beam
import dagster as dg
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
VALUES = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
CODE_IMAGE = "europe-docker.pkg.dev/PROJECT_ID/klio/klio-assets:0.1.0"


# -- images ------------------------------------------------------------------------------------


def _setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return parser


def _beam_spec() -> SpecifierSet:
    requires = _setup_cfg()["options"]["install_requires"].split("\n")
    (line,) = [r.strip() for r in requires if r.strip().startswith("apache-beam")]
    return SpecifierSet(line[len("apache-beam") :])


def _python_version() -> str:
    classifiers = _setup_cfg()["metadata"]["classifiers"]
    (version,) = re.findall(r"Programming Language :: Python :: (3\.\d+)", classifiers)
    return version


def _arg(dockerfile: str, name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(\S+)$", dockerfile, flags=re.M)
    return value


@pytest.mark.parametrize("name", ["Dockerfile", "beam-worker.Dockerfile"])
def test_images_pin_the_beam_and_python_of_setup_cfg(name):
    text = (REPO / "docker" / name).read_text()
    beam, python = _arg(text, "BEAM_VERSION"), _arg(text, "PYTHON_VERSION")
    assert python == _python_version()
    assert Version(f"{python}.0") in SpecifierSet(_setup_cfg()["options"]["python_requires"])
    assert beam in _beam_spec(), f"Beam {beam} is outside setup.cfg's {_beam_spec()}"
    assert beam == apache_beam.__version__, "images must run the Beam the tests run"
    bases = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert bases, "no FROM line"
    for base in bases:
        # every base names the pinned versions literally (ARGs before FROM are easy to miss)
        if base.startswith("apache/beam_python"):
            assert base == f"apache/beam_python{python}_sdk:{beam}"
        else:
            assert base.startswith(f"python:{python}-")
    assert "apache-beam==${BEAM_VERSION}" in text  # installing the package cannot move Beam
    assert "ffmpeg" in text and "NUMBA_CACHE_DIR" in text and "warm_numba.py" in text


def test_worker_image_is_beams_sdk_image():
    text = (REPO / "docker" / "beam-worker.Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)$", text, flags=re.M)[-1].startswith("apache/beam_python")
    assert "ENTRYPOINT" not in text.replace("# ENTRYPOINT", "")  # Beam's boot stays the entrypoint


# -- Kubernetes ----------------------------------------------------------------------------------


def _k8s_launcher_config(values: dict) -> dict:
    """The run launcher config the chart writes into the instance's dagster.yaml, from values
    (as helm/dagster/templates/helpers/instance/_run-launcher.tpl maps them)."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    return {
        "load_incluster_config": False,  # the chart: true; here a kubeconfig instead
        "job_namespace": k8s["jobNamespace"],
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": values["global"]["serviceAccountName"],
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": "dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "env_config_maps": ["dagster-pipeline-env", *(m["name"] for m in k8s["envConfigMaps"])],
        "env_secrets": [s["name"] for s in k8s["envSecrets"]],
        "env_vars": k8s["envVars"],
        "resources": k8s["resources"],
        "run_k8s_config": {
            "pod_spec_config": {
                "restart_policy": k8s["runK8sConfig"]["podSpecConfig"]["restartPolicy"]
            },
            "job_spec_config": {
                "ttl_seconds_after_finished": k8s["runK8sConfig"]["jobSpecConfig"][
                    "ttlSecondsAfterFinished"
                ],
                "backoff_limit": k8s["runK8sConfig"]["jobSpecConfig"]["backoffLimit"],
            },
        },
        "fail_pod_on_run_failure": k8s["failPodOnRunFailure"],
    }


class FakeBatchApi:
    """Records the Jobs the launcher would create."""

    def __init__(self):
        self.created = []

    def create_namespaced_job(self, body, namespace, **_):
        self.created.append((namespace, body))
        return body


@pytest.fixture
def kubeconfig(tmp_path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "test", "user": {"token": "unused"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            }
        )
    )
    return str(path)


def test_run_pod_job_spec_from_the_helm_values(home, kubeconfig):
    from dagster._config import process_config
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster_k8s import K8sRunLauncher

    config = _k8s_launcher_config(VALUES)
    validated = process_config(K8sRunLauncher.config_type(), config)
    assert validated.success, validated.errors  # the values are valid K8sRunLauncher config
    batch = FakeBatchApi()
    launcher = K8sRunLauncher(
        **{**config, "kubeconfig_file": kubeconfig}, k8s_client_batch_api=batch
    )

    deployment = VALUES["dagster-user-deployments"]["deployments"][0]
    assert f"{deployment['image']['repository']}:{deployment['image']['tag']}" == CODE_IMAGE
    origin = JobPythonOrigin(
        "audio_analyses_job",
        RepositoryPythonOrigin(
            executable_path="/usr/local/bin/python",
            code_pointer=ModuleCodePointer(
                "klio_assets.definitions", "defs", working_directory="/opt/dagster/app"
            ),
            container_image=CODE_IMAGE,  # what the code server reports (DAGSTER_CURRENT_IMAGE)
        ),
    )
    instance = dg.DagsterInstance.get()
    try:
        launcher.register_instance(instance)
        run = instance.add_run(
            dg.DagsterRun(
                job_name="audio_analyses_job",
                run_id=str(uuid.uuid4()),
                job_code_origin=origin,
                status=dg.DagsterRunStatus.NOT_STARTED,
            )
        )
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    finally:
        instance.dispose()

    ((namespace, job),) = batch.created
    assert namespace == "klio"
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == CODE_IMAGE
    env = {e.name: e.value for e in container.env}
    assert env["DAGSTER_EVENT_BATCH_SIZE"] == "1000"
    assert env["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] == "1"
    assert env["NUMBA_CACHE_DIR"] == "/opt/numba-cache"
    assert env["DAGSTER_RUN_JOB_NAME"] == "audio_analyses_job"
    secret_envs = {e.name: e.value_from.secret_key_ref.name for e in container.env if e.value_from}
    assert secret_envs["DAGSTER_PG_PASSWORD"] == "klio-assets-postgresql"
    env_from = {
        (
            s.config_map_ref.name if s.config_map_ref else None,
            s.secret_ref.name if s.secret_ref else None,
        )
        for s in container.env_from
    }
    assert (None, "klio-assets-secrets") in env_from  # KLIO_ASSETS_CATALOG with its password
    assert ("klio-assets-settings", None) in env_from  # storage root, Dataflow settings, batch size
    assert container.resources.requests == {"cpu": "500m", "memory": "1Gi"}
    assert container.resources.limits == {"memory": "2Gi"}
    assert pod.service_account_name == "klio-assets"
    assert pod.restart_policy == "Never"
    assert job.spec.backoff_limit == 0 and job.spec.ttl_seconds_after_finished == 86400
    command = [*(container.command or []), *container.args]
    assert command[:5] == ["/usr/local/bin/python", "-m", "dagster", "api", "execute_run"]
    assert run.run_id in command[5]
    assert job.metadata.labels["dagster/run-id"] == run.run_id


def test_settings_config_map_holds_valid_dataflow_settings():
    from klio_assets.resources.beam import BeamRunnerResource, DataflowConfig

    from klio_assets.settings import Settings

    data = yaml.safe_load((REPO / "deploy" / "helm" / "klio-assets-settings.yaml").read_text())[
        "data"
    ]
    settings = Settings.from_env(data)
    resource = BeamRunnerResource(dataflow=DataflowConfig(**settings.dataflow))
    args = resource.pipeline_options_args(job_name="klio-x")
    assert "--runner=DataflowRunner" in args and "--max_num_workers=50" in args
    assert settings.storage.startswith("gs://") and settings.batch_size == 5000
