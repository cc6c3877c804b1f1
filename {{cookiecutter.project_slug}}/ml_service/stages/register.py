"""register: add the gated model to the registry, tagged with its lineage."""
import logging

import mlflow

from ml_service import report, tracking

HELP = "register the evaluated model if the gate passed"
log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument("--run-id", help="pipeline run to register (default: the newest)")


def register(settings, run_id=None):
    """Register the lineage's model; return its version, or None if the gate rejected it.

    Idempotent: a pipeline run registers at most one version.
    """
    client, experiment_id = tracking.connect(settings)
    lineage = tracking.find_lineage(client, experiment_id, run_id)
    lineage_id = lineage.info.run_id
    tags = lineage.data.tags
    gate = tracking.require_tag(lineage, tracking.GATE, "evaluate")
    if gate != "passed":
        report.publish("register", f"skipped, the gate rejected pipeline run {lineage_id}: "
                       f"{tags[tracking.GATE_REASON]}", {"model_version": None})
        return None
    if tracking.REGISTERED_VERSION in tags:
        version = tags[tracking.REGISTERED_VERSION]
        report.publish("register", f"pipeline run {lineage_id} is already registered as "
                       f"{settings.model.name} version {version}", {"model_version": version})
        return version
    train_run = client.get_run(tags[tracking.TRAIN_RUN_ID])
    version_tags = {
        "git_commit": tracking.git_commit(settings.project_root),
        "pipeline_run_id": lineage_id,
        "run_id": train_run.info.run_id,
        "data_fingerprint": tags[tracking.DATA_FINGERPRINT],
        "gate_reason": tags[tracking.GATE_REASON],
        **{name: str(value) for name, value in train_run.data.metrics.items()},
    }
    with tracking.stage_run(lineage_id, "register"):
        # Tags go in with the version itself, so no version exists without its lineage.
        version = mlflow.register_model(tags[tracking.MODEL_URI], settings.model.name,
                                        tags=version_tags).version
        mlflow.log_param("registered_version", version)
        log.info("Registered %s version %s", settings.model.name, version)
    client.set_tag(lineage_id, tracking.REGISTERED_VERSION, version)
    report.publish("register", f"{settings.model.name} version {version} "
                   f"(git {version_tags['git_commit'][:12]})", {"model_version": version})
    return str(version)


def run(settings, args):
    if settings.pipeline.backend == "azureml":
        # On Azure ML registration ran as a pipeline step; this reads its result.
        from ml_service.azure import pipeline_job
        pipeline_job.registration_result(settings, args.run_id)
    else:
        register(settings, args.run_id)
    return 0
