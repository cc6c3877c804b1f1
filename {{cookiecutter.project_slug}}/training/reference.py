"""The reference sample of a model version: what `monitor` compares live traffic with.

A bounded, seeded sample of the training features and the model's predictions on them,
logged as the artifact reference/reference.csv of the train run (the version's `run_id`
tag). The local backend and the Azure ML train step both call `log_reference`, so every
version carries it wherever it was trained.
"""
import tempfile
from pathlib import Path

import mlflow

ARTIFACT_DIR = "reference"
ARTIFACT_FILE = "reference.csv"
ARTIFACT_PATH = f"{ARTIFACT_DIR}/{ARTIFACT_FILE}"
PREDICTION_COLUMN = "prediction"
# Enough rows for the two-sample tests to see a shift; small enough to download each time.
MAX_ROWS = 5000


def reference_sample(model, features, max_rows=MAX_ROWS, seed=0):
    """At most `max_rows` rows of `features` (a seeded sample) with the model's
    predictions as the column `prediction`."""
    sample = features.sample(n=min(max_rows, len(features)), random_state=seed)
    return sample.assign(**{PREDICTION_COLUMN: model.predict(sample)})


def log_reference(model, features, max_rows=MAX_ROWS):
    """Log the reference sample of `model` to the active MLflow run."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ARTIFACT_FILE
        reference_sample(model, features, max_rows).to_csv(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=ARTIFACT_DIR)
