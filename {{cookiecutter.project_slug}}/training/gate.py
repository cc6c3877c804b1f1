"""The champion/challenger gate: one decision, one message, one record in MLflow.

The challenger is a newly trained model; the champion is the registered version
production runs, as its git desired state names it (deploy/overlays/production), or
none before the first promotion. The caller reads that state and passes the version
in: the registry is asked for the champion's model files only, never for "which
version is in production" (Azure ML's MLflow registry has no aliases). Both models
are scored on the same held-out rows.
The local `evaluate` stage (ml_service/backends/local.py) and the Azure ML step
(components/evaluate.py) both call `evaluate` and `log` here, and
training/evaluation_report.py for its plots and report, so a model is judged and
recorded the same way wherever it was trained.
"""
import dataclasses

import mlflow
import mlflow.sklearn
import numpy as np
from mlflow.exceptions import MlflowException

from training import artifacts
from training.model import prediction_metrics


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


def decide(challenger, champion, min_r2, min_improvement, schema_change=None):
    """Apply the gate to metric dicts; `champion` is None when nothing is in production,
    or when its features differ from the challenger's (`schema_change` says how): then
    the champion cannot be scored on the challenger's rows, and the R2 floor alone
    decides."""
    prefix = f"{schema_change}; " if schema_change else ""
    if challenger["r2"] < min_r2:
        return GateDecision(False, f"{prefix}challenger R2 {challenger['r2']:.4f} is below "
                                   f"the floor min_r2={min_r2}")
    if schema_change:
        return GateDecision(True, f"{prefix}decided on the R2 floor alone: challenger R2 "
                                  f"{challenger['r2']:.4f} meets min_r2={min_r2}")
    if champion is None:
        return GateDecision(True, "no model version is in production yet and the "
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
    champion: dict | None            # None when nothing is in production
    champion_version: str | None
    decision: GateDecision
    # What the plots and the report show: the held-out rows' actual values and both
    # models' predictions of the same rows (champion None when nothing is in production).
    actual: np.ndarray
    challenger_predictions: np.ndarray
    champion_predictions: np.ndarray | None
    min_r2: float
    min_improvement: float
    # Set when the champion was trained on other features than the challenger: the
    # line that says so (the champion is then not scored; champion and its
    # predictions are None).
    schema_change: str | None = None

    @property
    def rows(self):
        return len(self.actual)


class ChampionUnavailable(Exception):
    """Production's version could not be read from the registry: the gate cannot judge."""


def evaluate(model_uri, model_name, champion_version, x_test, y_test, min_r2,
             min_improvement):
    """Score the challenger at `model_uri` and `champion_version` of `model_name` (None:
    nothing is in production); decide. A champion the registry cannot give raises
    ChampionUnavailable, never "no champion": that would let any model through."""
    actual = np.asarray(y_test, dtype=float)
    challenger = artifacts.load_model(mlflow.sklearn.load_model, model_uri)
    challenger_predictions = _predict(challenger, x_test)
    champion_predictions = schema_change = None
    if champion_version is not None:
        champion_uri = f"models:/{model_name}/{champion_version}"
        try:
            champion_model = artifacts.load_model(mlflow.sklearn.load_model, champion_uri)
        except MlflowException as error:
            raise ChampionUnavailable(
                f"production runs {model_name} version {champion_version} (its git desired "
                f"state), but the registry cannot give {champion_uri}: {error.message}"
            ) from error
        champion_features = feature_names(champion_model) or list(x_test.columns)
        schema_change = feature_change(champion_version, champion_features,
                                       list(x_test.columns))
        if schema_change is None:  # the same columns, perhaps in another order
            champion_predictions = _predict(champion_model, x_test[champion_features])
    challenger = prediction_metrics(actual, challenger_predictions)
    champion = (None if champion_predictions is None
                else prediction_metrics(actual, champion_predictions))
    return Evaluation(challenger, champion, champion_version,
                      decide(challenger, champion, min_r2, min_improvement, schema_change),
                      actual, challenger_predictions, champion_predictions, min_r2,
                      min_improvement, schema_change)


def feature_names(model):
    """The feature columns `model` was fitted on, in order (None if it was fitted on
    an unnamed array)."""
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else [str(name) for name in names]


def feature_change(champion_version, champion_features, challenger_features):
    """One line naming the features added and removed since the champion, or None when
    both models take the same columns (in any order)."""
    added = [name for name in challenger_features if name not in champion_features]
    removed = [name for name in champion_features if name not in challenger_features]
    if not added and not removed:
        return None
    parts = ([f"added {', '.join(added)}"] if added else []) + (
        [f"removed {', '.join(removed)}"] if removed else [])
    return (f"schema change: the champion (version {champion_version}) was trained on other "
            f"features ({'; '.join(parts)}), so it cannot be scored on the same rows")


def _predict(model, features):
    return np.asarray(model.predict(features), dtype=float).ravel()


def log(evaluation):
    """Record `evaluation` in the active MLflow run: metrics challenger_*, champion_* and
    gate_passed, tags champion_version, gate_reason and (on a feature change)
    schema_change."""
    if evaluation.champion is not None:
        mlflow.log_metrics({f"champion_{k}": v for k, v in evaluation.champion.items()})
    if evaluation.champion_version is not None:
        mlflow.set_tag("champion_version", evaluation.champion_version)
    if evaluation.schema_change:
        mlflow.set_tag("schema_change", evaluation.schema_change)
    mlflow.log_metrics({f"challenger_{k}": v for k, v in evaluation.challenger.items()})
    mlflow.log_metric("gate_passed", int(evaluation.decision.passed))
    mlflow.set_tag("gate_reason", evaluation.decision.reason)
