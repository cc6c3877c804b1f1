"""evaluate: the champion/challenger gate.

The challenger is the model trained in the pipeline run; the champion is the
registered version holding the `production` alias, if any. Both are scored on
the same held-out rows and the decision is recorded on the pipeline run, where
`register` reads it: the gate's decision is the one acted on.
"""
import dataclasses
import logging

import mlflow
import mlflow.sklearn
from mlflow.exceptions import MlflowException

from ml_service import report, tracking
from ml_service.errors import MlopsError
from training.data import fingerprint, load_dataset, split_dataset
from training.model import regression_metrics

HELP = "compare the trained model with the production model (the gate)"
CHAMPION_ALIAS = "production"
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str


def decide(challenger, champion, gate):
    """Apply the gate to metric dicts; `champion` is None when nothing is in production."""
    if challenger["r2"] < gate.min_r2:
        return GateDecision(False, f"challenger R2 {challenger['r2']:.4f} is below the "
                                   f"floor min_r2={gate.min_r2}")
    if champion is None:
        return GateDecision(True, "no model holds the production alias yet and the "
                                  f"challenger R2 {challenger['r2']:.4f} meets the floor")
    improvement = (champion["rmse"] - challenger["rmse"]) / champion["rmse"]
    verdict = (f"challenger RMSE {challenger['rmse']:.4f} vs champion RMSE "
               f"{champion['rmse']:.4f}: improvement {improvement:.2%}")
    if improvement >= gate.min_improvement and challenger["rmse"] < champion["rmse"]:
        return GateDecision(True, f"{verdict} >= required {gate.min_improvement:.2%}")
    return GateDecision(False, f"{verdict} < required {gate.min_improvement:.2%} "
                               "(expected when neither data nor code changed)")


def add_arguments(parser):
    parser.add_argument("--run-id", help="pipeline run to evaluate (default: the newest)")


def champion_version(client, model_name):
    """The model version holding the production alias, or None."""
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(error).lower():
            return None
        raise


def evaluate(settings, run_id=None):
    """Score challenger and champion; record and return the GateDecision."""
    client, experiment_id = tracking.connect(settings)
    lineage = tracking.find_lineage(client, experiment_id, run_id)
    lineage_id = lineage.info.run_id
    model_uri = tracking.require_tag(lineage, tracking.MODEL_URI, "train")
    features, target = load_dataset()
    if fingerprint(features, target) != lineage.data.tags[tracking.DATA_FINGERPRINT]:
        raise MlopsError(
            f"The data changed since pipeline run {lineage_id} was trained.",
            "Run `python -m ml_service train` again so both models are scored on the same data.")
    _, x_test, _, y_test = split_dataset(
        features, target, settings.training.test_size, settings.training.random_seed)
    with tracking.stage_run(lineage_id, "evaluate"):
        challenger = regression_metrics(mlflow.sklearn.load_model(model_uri), x_test, y_test)
        champion_mv = champion_version(client, settings.model.name)
        champion = None
        if champion_mv is not None:
            champion_model = mlflow.sklearn.load_model(
                f"models:/{settings.model.name}/{champion_mv.version}")
            champion = regression_metrics(champion_model, x_test, y_test)
            mlflow.log_metrics({f"champion_{k}": v for k, v in champion.items()})
            mlflow.set_tag("champion_version", champion_mv.version)
        mlflow.log_metrics({f"challenger_{k}": v for k, v in challenger.items()})
        decision = decide(challenger, champion, settings.gate)
        mlflow.log_metric("gate_passed", int(decision.passed))
        mlflow.set_tag("gate_reason", decision.reason)
        log.info("Gate decision (passed=%s): %s", decision.passed, decision.reason)
    gate = "passed" if decision.passed else "rejected"
    client.set_tag(lineage_id, tracking.GATE, gate)
    client.set_tag(lineage_id, tracking.GATE_REASON, decision.reason)
    report.publish("evaluate", f"gate {gate.upper()} - {decision.reason}",
                   {"run_id": lineage_id, "gate": gate, "gate_reason": decision.reason})
    return decision


def run(settings, args):
    if settings.pipeline.backend == "azureml":
        # On Azure ML the gate ran as a pipeline step; this reads its decision.
        from ml_service.azure import pipeline_job
        pipeline_job.gate_result(settings, args.run_id)
    else:
        evaluate(settings, args.run_id)
    return 0
