"""MLflow: connection, the pipeline lineage run and nested stage runs.

One pipeline execution is one *lineage run* (a parent MLflow run); each stage
logs into a nested run under it. Stages run as separate processes in CI, so a
stage finds its lineage by run id (or the newest one) and hands results on
through the lineage run's tags, which are the single record of the execution.
"""
import contextlib
import logging
import os
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ml_service import desired_state
from ml_service.config import DEPLOY_TARGETS
from ml_service.errors import MlopsError

log = logging.getLogger(__name__)

LINEAGE_TAG = "mlops.lineage"
# Tags on the lineage run through which stages hand over their results.
TRAIN_RUN_ID = "mlops.train_run_id"
MODEL_URI = "mlops.model_uri"
DATA_FINGERPRINT = "mlops.data_fingerprint"
GATE = "mlops.gate"
GATE_REASON = "mlops.gate_reason"
EVALUATE_RUN_ID = "mlops.evaluate_run_id"
REGISTERED_VERSION = "mlops.registered_version"


def connect(settings):
    """Point MLflow at the configured store; return (client, experiment id).

    Any failure here means the store is unreachable or unreadable, so it is
    reported as such instead of as a driver traceback.
    """
    uri = settings.tracking.uri
    local = uri.startswith("sqlite:///")
    if settings.pipeline.backend == "azureml" and local:
        # On Azure the registry is the workspace's MLflow endpoint (needs azureml-mlflow).
        from ml_service.azure.workspace import ml_client, tracking_uri
        uri, local = tracking_uri(ml_client(settings)), False
    if local:
        _check_local_store(settings, Path(uri[len("sqlite:///"):]))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = settings.model.experiment
    try:
        client = MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is None and local:
            artifacts = Path(settings.tracking.artifact_root)
            artifacts.mkdir(parents=True, exist_ok=True)
            experiment_id = client.create_experiment(name, artifact_location=artifacts.as_uri())
        elif experiment is None:
            experiment_id = client.create_experiment(name)
        else:
            experiment_id = experiment.experiment_id
    except Exception as error:  # the driver's own errors vary by store type
        summary = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise MlopsError(
            f"Cannot use the MLflow tracking store at {uri} ({type(error).__name__}: {summary}).",
            "Check MLFLOW_TRACKING_URI or [tracking] uri in mlops.toml. For the local store, "
            "an unreadable database can be moved aside (e.g. `mv mlruns mlruns.broken`) and "
            "the pipeline run again; on Azure, check `az login` and the workspace name.",
        ) from error
    mlflow.set_experiment(experiment_id=experiment_id)
    return client, experiment_id


def _check_local_store(settings, database):
    """Refuse a local store that cannot work: a missing one while git's desired state
    deploys versions from it (a new, empty store would number versions from 1 again,
    clashing with that history), or a read-only one (it fails at the first write)."""
    if not database.exists():
        deployed = {target: desired_state.read(settings, target).model_version
                    for target in DEPLOY_TARGETS}
        deployed = {target: version for target, version in deployed.items()
                    if version != desired_state.UNSET_VERSION}
        if deployed:
            raise MlopsError(
                f"The MLflow store {database} does not exist, but the desired state in git "
                "deploys versions registered in it ("
                + ", ".join(f"{target}: version {version}" for target, version in deployed.items())
                + "); a new empty store would number versions from 1 again.",
                f"Restore {database} (or point [tracking] uri / MLFLOW_TRACKING_URI at the "
                "store), or, to start over on purpose, set MODEL_VERSION to none in "
                "deploy/overlays/*/kustomization.yaml (and delete deploy/edge/deployment.json) "
                "and commit that.")
        database.parent.mkdir(parents=True, exist_ok=True)
    elif not (os.access(database, os.W_OK) and os.access(database.parent, os.W_OK)):
        raise MlopsError(
            f"The MLflow store {database} is read-only (SQLite needs the file and its folder "
            "writable).",
            f"Make them writable (`chmod u+w {database} {database.parent}`) or point "
            "[tracking] uri / MLFLOW_TRACKING_URI at a writable copy.")


def start_lineage(client, experiment_id, run_name):
    """Create the parent run of a new pipeline execution and return its id."""
    run = client.create_run(experiment_id, run_name=run_name, tags={LINEAGE_TAG: "true"})
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def find_lineage(client, experiment_id, run_id=None):
    """Return the lineage run `run_id`, or the newest one."""
    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise MlopsError(f"Pipeline run {run_id} does not exist in the tracking store.",
                             "Pass the run id printed by `python -m ml_service train`.") from None
        if run.data.tags.get(LINEAGE_TAG) != "true":
            raise MlopsError(f"Run {run_id} is not a pipeline run (it may be a stage run).",
                             "Pass the pipeline run id printed by `python -m ml_service train`.")
        return run
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{LINEAGE_TAG}` = 'true'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise MlopsError("No trained model found in the tracking store.",
                         "Run `python -m ml_service train` first.")
    return runs[0]


def require_tag(run, tag, stage_needed):
    """Return a lineage tag that an earlier stage must have set."""
    value = run.data.tags.get(tag)
    if value is None:
        raise MlopsError(
            f"Pipeline run {run.info.run_id} has not been through `{stage_needed}` yet.",
            f"Run `python -m ml_service {stage_needed}` first.",
        )
    return value


@contextlib.contextmanager
def stage_run(lineage_id, stage):
    """Run a stage as a nested MLflow run under the lineage run.

    The stage's log lines are captured and stored as the artifact logs/<stage>.log.
    """
    with mlflow.start_run(run_id=lineage_id), mlflow.start_run(run_name=stage, nested=True) as run:
        with tempfile.TemporaryDirectory() as folder:
            log_file = Path(folder) / f"{stage}.log"
            handler = logging.FileHandler(log_file)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            package_logger = logging.getLogger("ml_service")
            package_logger.addHandler(handler)
            try:
                yield run
            finally:
                package_logger.removeHandler(handler)
                handler.close()
                mlflow.log_artifact(str(log_file), artifact_path="logs")
