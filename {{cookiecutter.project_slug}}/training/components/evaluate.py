"""evaluate: the champion/challenger gate, inside the Azure ML pipeline.

The challenger is the model from `train`; the champion is the registered version
holding the `production` alias, looked up in the registry when the step runs (so a
scheduled retraining compares with what is in production then). Scoring, decision
and record come from training/gate.py, as for the local `evaluate` stage; the
decision is written to gate/decision.json, which `register` obeys.

    python -m training.components.evaluate --data DATA --model MODEL --model-name NAME
        --min-r2 0.3 --min-improvement 0.005 --gate OUT
"""
import argparse

import mlflow
from mlflow.tracking import MlflowClient

from training import gate
from training.components import mlflow_model_dir, read_split, require_tracking, write_json


def evaluate(data_dir, model_dir, gate_dir, model_name, min_r2, min_improvement):
    """Score challenger and champion on the test rows; write and return the decision."""
    require_tracking("evaluate")
    x_test, y_test = read_split(data_dir, "test")
    evaluation = gate.evaluate(MlflowClient(), str(mlflow_model_dir(model_dir)), model_name,
                               x_test, y_test, min_r2, min_improvement)
    with mlflow.start_run():
        gate.log(evaluation)
    decision = evaluation.decision
    result = {"passed": decision.passed, "reason": decision.reason,
              "challenger": evaluation.challenger, "champion": evaluation.champion,
              "champion_version": evaluation.champion_version,
              "champion_alias": gate.CHAMPION_ALIAS}
    write_json(gate_dir, "decision.json", result)
    print(f"evaluate: {decision.summary}")
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
