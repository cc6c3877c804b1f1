"""The Azure ML pipeline's steps as plain modules: prep_data -> train -> evaluate -> register.

Each `<step>.py` has one function that does the work and a `__main__` that Azure ML
runs as the command of the component `<step>.yml`; the same function runs locally
(the tests call it). Steps hand over files through their output folders:

    data/      train.parquet, test.parquet, data.json (fingerprint, row counts)
    model/     an MLflow model folder (MLmodel, model.skops, ...)
    info/      train.json (training run id, held-out metrics)
    gate/      decision.json (the gate's decision, which register acts on), gate_report.md
    registration/  registration.json (the registered version, or null)

MLflow is used only when MLFLOW_TRACKING_URI is set, as Azure ML sets it in every
job (pointing at the workspace); evaluate and register need it, for the registry.
No Azure import here: the Azure side is ml_service/azure/pipeline_job.py.
"""
import json
import os
from pathlib import Path

import pandas as pd

TARGET_COLUMN = "target"


def tracking_configured():
    """True when an MLflow tracking store is configured (always inside Azure ML jobs)."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))


def require_tracking(step):
    if not tracking_configured():
        raise SystemExit(f"{step}: MLFLOW_TRACKING_URI is not set. Azure ML sets it in every "
                         "job; to run this step locally, point it at an MLflow store, e.g. "
                         "MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db")


def write_json(folder, name, content):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(content, indent=2, sort_keys=True))


def read_json(folder, name):
    path = Path(folder) / name
    if not path.is_file():
        raise SystemExit(f"{path} is missing: the step that writes it did not run or failed.")
    return json.loads(path.read_text())


def write_split(folder, name, features, target):
    Path(folder).mkdir(parents=True, exist_ok=True)
    pd.concat([features, target.rename(TARGET_COLUMN)], axis=1).to_parquet(
        Path(folder) / f"{name}.parquet")


def read_split(folder, name):
    """(features, target) of the `name` rows (train or test) written by prep_data."""
    frame = pd.read_parquet(Path(folder) / f"{name}.parquet")
    return frame.drop(columns=[TARGET_COLUMN]), frame[TARGET_COLUMN]


def mlflow_model_dir(root):
    """The folder holding the MLmodel file: `root` itself or the one subfolder that has it.

    Azure ML mounts an mlflow_model input either directly or one level down.
    """
    root = Path(root)
    if (root / "MLmodel").is_file():
        return root
    found = sorted(root.rglob("MLmodel"), key=lambda path: len(path.parts))
    if not found:
        raise SystemExit(f"No MLflow model (MLmodel file) under {root}.")
    return found[0].parent
