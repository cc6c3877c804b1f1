"""evaluate: the champion/challenger gate, inside the Azure ML pipeline.

The challenger is the model from `train`; the champion is the version production's
git desired state names (deploy/overlays/production), read when the job is submitted
and passed in as --champion-version ("none" before the first promotion). Azure ML's
MLflow registry has no aliases, so the step never asks it which version is in
production. Scoring, decision and record come from training/gate.py, as for the local
`evaluate` stage; the decision is written to gate/decision.json, which `register` obeys.
The plots and the gate report (training/evaluation_report.py) go to the step's MLflow
run, and the report also to gate/gate_report.md, where the `evaluate` stage of CI reads
it back (ml_service/azure/job_runs.py).

    python -m training.components.evaluate --data DATA --model MODEL --model-name NAME
        --champion-version 3 --min-r2 0.3 --min-improvement 0.005 --gate OUT
"""
import argparse
from pathlib import Path

import mlflow

from training import evaluation_report, gate
from training.components import (mlflow_model_dir, read_json, read_split, require_tracking,
                                 write_json)


# What the submitter passes when production's desired state names no version (the
# desired state's own word for unset, ml_service/desired_state.py).
NO_CHAMPION = "none"


def evaluate(data_dir, model_dir, gate_dir, model_name, champion_version, min_r2,
             min_improvement):
    """Score challenger and champion on the test rows; write and return the decision."""
    require_tracking("evaluate")
    x_test, y_test = read_split(data_dir, "test")
    data_fingerprint = read_json(data_dir, "data.json")["data_fingerprint"]
    champion = None if champion_version == NO_CHAMPION else champion_version
    evaluation = gate.evaluate(str(mlflow_model_dir(model_dir)), model_name, champion,
                               x_test, y_test, min_r2, min_improvement)
    with mlflow.start_run():
        gate.log(evaluation)
        report = evaluation_report.log(evaluation, data_fingerprint)
    decision = evaluation.decision
    result = {"passed": decision.passed, "reason": decision.reason,
              "challenger": evaluation.challenger, "champion": evaluation.champion,
              "champion_version": evaluation.champion_version}
    write_json(gate_dir, "decision.json", result)
    (Path(gate_dir) / evaluation_report.REPORT_FILE).write_text(report)
    print(f"evaluate: {decision.summary}")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prep_data's output folder")
    parser.add_argument("--model", required=True, help="train's MLflow model folder")
    parser.add_argument("--model-name", required=True, help="registered model name")
    parser.add_argument("--champion-version", required=True,
                        help=f"the version in production, or {NO_CHAMPION!r}")
    parser.add_argument("--min-r2", type=float, required=True)
    parser.add_argument("--min-improvement", type=float, required=True)
    parser.add_argument("--gate", required=True,
                        help="output folder of decision.json and gate_report.md")
    args = parser.parse_args(argv)
    evaluate(args.data, args.model, args.gate, args.model_name, args.champion_version,
             args.min_r2, args.min_improvement)


if __name__ == "__main__":
    main()
