"""register: register the model if, and only if, the gate passed.

The decision is read from evaluate's gate/decision.json and nothing overrides it.
The version carries the lineage tags of training/lineage.py, as a local one does. The result
(version, or null when the gate rejected the model) goes to
registration/registration.json, which `python -m ml_service` reads after the job.

    python -m training.components.register --data DATA --model MODEL --info INFO
        --gate GATE --model-name NAME --git-commit SHA --registration OUT
"""
import argparse
import os
from pathlib import Path

from training import evaluation_report, gate, lineage
from training.components import mlflow_model_dir, read_json, require_tracking, write_json


def register(data_dir, model_dir, info_dir, gate_dir, registration_dir, model_name,
             git_commit):
    """Register the model when the gate passed; return the version, or None."""
    decision = read_json(gate_dir, "decision.json")
    if not decision["passed"]:
        write_json(registration_dir, "registration.json",
                   {"model_version": None, "gate": "rejected", "reason": decision["reason"]})
        print(f"register: {gate.skipped_registration('the model', decision['reason'])}")
        return None
    require_tracking("register")
    info = read_json(info_dir, "train.json")
    data = read_json(data_dir, "data.json")
    tags = lineage.version_tags(
        git_commit=git_commit,
        # The pipeline job's name; Azure ML sets it in every step of a pipeline.
        pipeline_run_id=os.environ.get("AZUREML_ROOT_RUN_ID", "unknown"),
        train_run_id=info["run_id"] or "unknown",
        data_fingerprint=data["data_fingerprint"], gate_reason=decision["reason"],
        metrics=info["metrics"], data_source=data["data_source"])
    source = Path(mlflow_model_dir(model_dir)).resolve().as_uri()
    report = Path(gate_dir) / evaluation_report.REPORT_FILE
    version = lineage.register(source, model_name, tags,
                               description=report.read_text() if report.exists() else None)
    write_json(registration_dir, "registration.json",
               {"model_version": version, "gate": "passed", "reason": decision["reason"]})
    print(f"register: {model_name} version {version} (git {git_commit[:12]})")
    return version


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prep_data's output folder")
    parser.add_argument("--model", required=True, help="train's MLflow model folder")
    parser.add_argument("--info", required=True, help="train's info folder")
    parser.add_argument("--gate", required=True, help="evaluate's gate folder")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--git-commit", required=True)
    parser.add_argument("--registration", required=True, help="output folder")
    args = parser.parse_args(argv)
    register(args.data, args.model, args.info, args.gate, args.registration,
             args.model_name, args.git_commit)


if __name__ == "__main__":
    main()
