"""The local backend: train, gate and register in this process.

Runs and models go to the MLflow store of mlops.toml. One pipeline execution is one
lineage run with a nested run per stage (ml_service/tracking.py); stages run as
separate processes in CI, so each finds its lineage run by id (or the newest) and
reads what the earlier stages recorded in its tags.
"""
import logging
import time

import mlflow
from mlflow.exceptions import MlflowException

from ml_service import data_assets, desired_state, git, report, tracking
from ml_service.backends.base import publish_gate, publish_rejection
from ml_service.errors import MlopsError
from training import evaluation_report, gate, lineage, reference
from training.data import fingerprint, split_dataset
from training.model import regression_metrics, train_model

log = logging.getLogger(__name__)


class LocalBackend:
    def __init__(self, settings):
        self.settings = settings

    def train(self, dry_run=False):
        """Train on the configured data; return the new lineage run id. (dry_run changes
        nothing: a local run sends nothing anywhere.)"""
        settings = self.settings
        data_source = data_assets.resolve(settings)
        features, target = data_assets.load(settings, data_source)
        data_assets.check_sample_request(settings)
        client, experiment_id = tracking.connect(settings)
        data_fingerprint = fingerprint(features, target)
        x_train, x_test, y_train, y_test = split_dataset(
            features, target, settings.training.test_size, settings.training.random_seed)
        lineage_id = tracking.start_lineage(client, experiment_id,
                                            time.strftime("pipeline-%Y%m%d-%H%M%S"))
        with tracking.stage_run(lineage_id, "train") as run:
            log.info("Training Ridge(alpha=%s) on %d rows", settings.training.alpha,
                     len(x_train))
            mlflow.log_params({
                "alpha": settings.training.alpha,
                "test_size": settings.training.test_size,
                "random_seed": settings.training.random_seed,
                "train_rows": len(x_train),
                "test_rows": len(x_test),
                "data_fingerprint": data_fingerprint,
            })
            mlflow.set_tags(data_source.tags())
            model = train_model(x_train, y_train, settings.training.alpha)
            metrics = regression_metrics(model, x_test, y_test)
            mlflow.log_metrics(metrics)
            log.info("Held-out metrics: %s", metrics)
            model_info = lineage.log_model(model, x_train)
            reference.log_reference(model, x_train)
            train_run_id = run.info.run_id
        for tag, value in {
            tracking.TRAIN_RUN_ID: train_run_id,
            tracking.MODEL_URI: model_info.model_uri,
            tracking.DATA_FINGERPRINT: data_fingerprint,
            **data_source.tags(),
        }.items():
            client.set_tag(lineage_id, tag, value)
        report.publish("train", f"pipeline run {lineage_id}; held-out " + ", ".join(
            f"{name}={value:.4f}" for name, value in metrics.items()),
            {"run_id": lineage_id, **metrics})
        return lineage_id

    def evaluate(self, run_id=None):
        """Score challenger and champion; record and return the GateDecision."""
        settings = self.settings
        client, experiment_id = tracking.connect(settings)
        lineage_run = tracking.find_lineage(client, experiment_id, run_id)
        lineage_id = lineage_run.info.run_id
        model_uri = tracking.require_tag(lineage_run, tracking.MODEL_URI, "train")
        features, target = data_assets.load(settings)
        if fingerprint(features, target) != lineage_run.data.tags[tracking.DATA_FINGERPRINT]:
            raise MlopsError(
                f"The data ([data] source {settings.data.source}) changed since pipeline run "
                f"{lineage_id} was trained.",
                "Run `python -m ml_service train` again so both models are scored on the "
                "same data.")
        _, x_test, _, y_test = split_dataset(
            features, target, settings.training.test_size, settings.training.random_seed)
        with tracking.stage_run(lineage_id, "evaluate") as evaluate_run:
            evaluation = self._evaluate(model_uri, x_test, y_test)
            gate.log(evaluation)
            gate_report = evaluation_report.log(
                evaluation, lineage_run.data.tags[tracking.DATA_FINGERPRINT])
            decision = evaluation.decision
            log.info("Gate decision (passed=%s): %s", decision.passed, decision.reason)
        client.set_tag(lineage_id, tracking.GATE, decision.verdict)
        client.set_tag(lineage_id, tracking.GATE_REASON, decision.reason)
        client.set_tag(lineage_id, tracking.EVALUATE_RUN_ID, evaluate_run.info.run_id)
        publish_gate(settings, lineage_id, decision, gate_report)
        return decision

    def _evaluate(self, model_uri, x_test, y_test):
        """The gate against the version production's git desired state names."""
        settings = self.settings
        production = desired_state.read(settings, "production")
        try:
            return gate.evaluate(model_uri, settings.model.name,
                                 production.model_version if production.is_set else None,
                                 x_test, y_test, settings.gate.min_r2,
                                 settings.gate.min_improvement)
        except gate.ChampionUnavailable as error:
            raise MlopsError(
                f"The gate cannot judge the new model: {error}",
                f"Point [tracking] uri (or MLFLOW_TRACKING_URI) at the registry production "
                f"was promoted from ({settings.tracking.uri} now), or fix "
                "deploy/overlays/production/kustomization.yaml if it names a version "
                "that was never registered.") from error

    def register(self, run_id=None):
        """Register the lineage's model; return its version, or None if the gate rejected it.

        Idempotent: a pipeline run registers at most one version.
        """
        settings = self.settings
        client, experiment_id = tracking.connect(settings)
        lineage_run = tracking.find_lineage(client, experiment_id, run_id)
        lineage_id = lineage_run.info.run_id
        tags = lineage_run.data.tags
        verdict = tracking.require_tag(lineage_run, tracking.GATE, "evaluate")
        if verdict != "passed":
            publish_rejection(f"pipeline run {lineage_id}", tags[tracking.GATE_REASON])
            return None
        if tracking.REGISTERED_VERSION in tags:
            version = tags[tracking.REGISTERED_VERSION]
            report.publish("register", f"pipeline run {lineage_id} is already registered as "
                           f"{settings.model.name} version {version}",
                           {"model_version": version})
            return version
        train_run = client.get_run(tags[tracking.TRAIN_RUN_ID])
        version_tags = lineage.version_tags(
            git_commit=git.head(settings.project_root), pipeline_run_id=lineage_id,
            train_run_id=train_run.info.run_id,
            data_fingerprint=tags[tracking.DATA_FINGERPRINT],
            gate_reason=tags[tracking.GATE_REASON], metrics=train_run.data.metrics,
            # Runs trained before [data] source existed trained on the sample.
            data_source=tags.get("data_source", "sample"))
        # The version page links back to the run whose plots and report judged it.
        version_tags["evaluate_run_id"] = tags.get(tracking.EVALUATE_RUN_ID, "unknown")
        version_tags[lineage.SAMPLE_PREDICTIONS_TAG] = lineage.sample_predictions(
            tags[tracking.MODEL_URI], data_assets.sample_request_path(settings.project_root))
        with tracking.stage_run(lineage_id, "register"):
            version = lineage.register(tags[tracking.MODEL_URI], settings.model.name,
                                       version_tags, description=_gate_report(lineage_run))
            mlflow.log_param("registered_version", version)
            log.info("Registered %s version %s", settings.model.name, version)
        client.set_tag(lineage_id, tracking.REGISTERED_VERSION, version)
        report.publish("register", f"{settings.model.name} version {version} "
                       f"(git {version_tags['git_commit'][:12]})", {"model_version": version})
        return version

    def train_gate_register(self, dry_run=False):
        if dry_run:
            return None
        lineage_id = self.train()
        self.evaluate(lineage_id)
        return self.register(lineage_id)


def _gate_report(lineage_run):
    """The version's description: the gate report evaluate put on the pipeline run (or
    the gate's reason for a run evaluated before it was put there), then a link to the
    evaluate run with the plots (MLflow's "Source run" is the train run)."""
    try:
        report_text = mlflow.artifacts.load_text(
            f"runs:/{lineage_run.info.run_id}/{evaluation_report.REPORT_FILE}")
    except (MlflowException, OSError):
        report_text = lineage_run.data.tags[tracking.GATE_REASON] + "\n"
    evaluate_run_id = lineage_run.data.tags.get(tracking.EVALUATE_RUN_ID)
    if evaluate_run_id is None:
        return report_text
    return (f"{report_text}\n[The evaluate run: plots and report](#/experiments/"
            f"{lineage_run.info.experiment_id}/runs/{evaluate_run_id})\n")
