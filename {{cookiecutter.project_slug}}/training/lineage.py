"""A model version's lineage: how the model is saved and the tags every version carries.

The local stages (ml_service/backends/local.py) and the Azure ML steps (components/)
both save and register through here, so a version carries the same files and tags
wherever it was trained.
"""
import json
from pathlib import Path

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature

from training import artifacts
from training.data import data_tags

# The version's answers to scoring/sample-request.json: the smoke test's known answers.
SAMPLE_PREDICTIONS_TAG = "sample_predictions"


def _model_files(model, x_train):
    # Explicit requirements: inferring them costs ~20 s and picks up unrelated packages.
    return {"signature": infer_signature(x_train, model.predict(x_train)),
            "input_example": x_train.head(3),
            "pip_requirements": mlflow.sklearn.get_default_pip_requirements(include_skops=True)}


def log_model(model, x_train):
    """Log `model` to the active run as the artifact `model`; return MLflow's ModelInfo."""
    return mlflow.sklearn.log_model(model, name="model", **_model_files(model, x_train))


def save_model(model, x_train, folder):
    """Save `model` as an MLflow model folder (what an Azure ML step outputs)."""
    mlflow.sklearn.save_model(model, str(folder), **_model_files(model, x_train))


def version_tags(git_commit, pipeline_run_id, train_run_id, data_fingerprint, gate_reason,
                 metrics, data_source):
    """The tags of a registered version: where its code, data, run and decision came from."""
    return {
        "git_commit": git_commit,
        "pipeline_run_id": pipeline_run_id,
        "run_id": train_run_id,
        "data_fingerprint": data_fingerprint,
        **data_tags(data_source),
        "gate_reason": gate_reason,
        **{name: str(value) for name, value in metrics.items()},
    }


def sample_predictions(model_uri, sample_request):
    """The model's predictions for the rows of `sample_request` (a file in the form of
    scoring/sample-request.json, rows in signature order), as a JSON list."""
    model = artifacts.load_model(mlflow.pyfunc.load_model, model_uri)
    rows = json.loads(Path(sample_request).read_text())["data"]
    columns = model.metadata.get_input_schema().input_names()
    return json.dumps([float(value) for value in
                       model.predict(pd.DataFrame(rows, columns=columns, dtype=float))])


def register(model_uri, model_name, tags, description=None):
    """Register the model with its tags; return the new version. `description` (the gate
    report, markdown) is what the registry's version page shows first.

    The tags go in with the version itself, so no version exists without its lineage.
    """
    version = str(mlflow.register_model(model_uri, model_name, tags=tags).version)
    if description:
        mlflow.MlflowClient().update_model_version(model_name, version, description=description)
    return version
