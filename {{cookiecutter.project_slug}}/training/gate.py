"""The champion/challenger gate: one decision, one message, one record in MLflow.

The challenger is a newly trained model; the champion is the registered version
holding the `production` alias, if any. Both are scored on the same held-out rows.
The local `evaluate` stage (ml_service/backends/local.py) and the Azure ML step
(components/evaluate.py) both call `evaluate` and `log` here, so a model is judged
and recorded the same way wherever it was trained.
"""
import dataclasses

import mlflow
import mlflow.sklearn
from mlflow.exceptions import MlflowException

from training.model import regression_metrics

CHAMPION_ALIAS = "production"


@dataclasses.dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str

    @property
    def verdict(self):
        return "passed" if self.passed else "rejected"

    @property
    def summary(self):
        """The decision in one line, as every stage and step prints it."""
        return f"gate {self.verdict.upper()} - {self.reason}"


def decide(challenger, champion, min_r2, min_improvement):
    """Apply the gate to metric dicts; `champion` is None when nothing is in production."""
    if challenger["r2"] < min_r2:
        return GateDecision(False, f"challenger R2 {challenger['r2']:.4f} is below the "
                                   f"floor min_r2={min_r2}")
    if champion is None:
        return GateDecision(True, "no model holds the production alias yet and the "
                                  f"challenger R2 {challenger['r2']:.4f} meets the floor")
    improvement = (champion["rmse"] - challenger["rmse"]) / champion["rmse"]
    verdict = (f"challenger RMSE {challenger['rmse']:.4f} vs champion RMSE "
               f"{champion['rmse']:.4f}: improvement {improvement:.2%}")
    if improvement >= min_improvement and challenger["rmse"] < champion["rmse"]:
        return GateDecision(True, f"{verdict} >= required {min_improvement:.2%}")
    return GateDecision(False, f"{verdict} < required {min_improvement:.2%} "
                               "(expected when neither data nor code changed)")


def skipped_registration(subject, reason):
    """What register says when the gate kept `subject` out of the registry."""
    return f"skipped, the gate rejected {subject}: {reason}"


@dataclasses.dataclass(frozen=True)
class Evaluation:
    challenger: dict                 # held-out metrics
    champion: dict | None            # None when no version holds the production alias
    champion_version: str | None
    decision: GateDecision


def champion_version(client, model_name):
    """The model version holding the production alias, or None."""
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(error).lower():
            return None
        raise


def evaluate(client, model_uri, model_name, x_test, y_test, min_r2, min_improvement):
    """Score the challenger at `model_uri` and the champion of `model_name`; decide."""
    challenger = regression_metrics(mlflow.sklearn.load_model(model_uri), x_test, y_test)
    champion_mv = champion_version(client, model_name)
    champion = None
    if champion_mv is not None:
        champion_model = mlflow.sklearn.load_model(f"models:/{model_name}/{champion_mv.version}")
        champion = regression_metrics(champion_model, x_test, y_test)
    return Evaluation(challenger, champion,
                      None if champion_mv is None else str(champion_mv.version),
                      decide(challenger, champion, min_r2, min_improvement))


def log(evaluation):
    """Record `evaluation` in the active MLflow run: metrics challenger_*, champion_* and
    gate_passed, tags champion_version and gate_reason."""
    if evaluation.champion is not None:
        mlflow.log_metrics({f"champion_{k}": v for k, v in evaluation.champion.items()})
        mlflow.set_tag("champion_version", evaluation.champion_version)
    mlflow.log_metrics({f"challenger_{k}": v for k, v in evaluation.challenger.items()})
    mlflow.log_metric("gate_passed", int(evaluation.decision.passed))
    mlflow.set_tag("gate_reason", evaluation.decision.reason)
