"""evaluate: the champion/challenger gate, inside the Azure ML pipeline.

The challenger is the model from `train`; the champion is the registered version
holding the `production` alias, looked up in the registry when the step runs (so a
scheduled retraining compares with what is in production then). The decision comes
from the same `decide` function as the local `evaluate` stage and is written to
gate/decision.json, which `register` obeys.

    python -m training.components.evaluate --data DATA --model MODEL --model-name NAME
        --min-r2 0.3 --min-improvement 0.005 --gate OUT
"""
import argparse

import mlflow
import mlflow.sklearn
from mlflow.tracking import MlflowClient

from ml_service.config import GateSettings
from ml_service.stages.evaluate import CHAMPION_ALIAS, champion_version, decide
from training.components import (mlflow_model_dir, read_split, require_tracking,
                                 write_json)
from training.model import regression_metrics


def evaluate(data_dir, model_dir, gate_dir, model_name, min_r2, min_improvement):
    """Score challenger and champion on the test rows; write and return the decision."""
    require_tracking("evaluate")
    x_test, y_test = read_split(data_dir, "test")
    challenger = regression_metrics(mlflow.sklearn.load_model(str(mlflow_model_dir(model_dir))),
                                    x_test, y_test)
    champion_mv = champion_version(MlflowClient(), model_name)
    champion = None
    if champion_mv is not None:
        champion = regression_metrics(
            mlflow.sklearn.load_model(f"models:/{model_name}/{champion_mv.version}"),
            x_test, y_test)
    gate = GateSettings(min_r2=min_r2, min_improvement=min_improvement)
    decision = decide(challenger, champion, gate)
    with mlflow.start_run():
        mlflow.log_metrics({f"challenger_{k}": v for k, v in challenger.items()})
        if champion is not None:
            mlflow.log_metrics({f"champion_{k}": v for k, v in champion.items()})
            mlflow.set_tag("champion_version", str(champion_mv.version))
        mlflow.log_metric("gate_passed", int(decision.passed))
        mlflow.set_tag("gate_reason", decision.reason)
    result = {"passed": decision.passed, "reason": decision.reason,
              "challenger": challenger, "champion": champion,
              "champion_version": None if champion_mv is None else str(champion_mv.version),
              "champion_alias": CHAMPION_ALIAS}
    write_json(gate_dir, "decision.json", result)
    print(f"evaluate: gate {'PASSED' if decision.passed else 'REJECTED'} - {decision.reason}")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prep_data's output folder")
    parser.add_argument("--model", required=True, help="train's MLflow model folder")
    parser.add_argument("--model-name", required=True, help="registered model name")
    parser.add_argument("--min-r2", type=float, required=True)
    parser.add_argument("--min-improvement", type=float, required=True)
    parser.add_argument("--gate", required=True, help="output folder of decision.json")
    args = parser.parse_args(argv)
    evaluate(args.data, args.model, args.gate, args.model_name, args.min_r2,
             args.min_improvement)


if __name__ == "__main__":
    main()
