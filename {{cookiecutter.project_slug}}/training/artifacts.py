"""Models and files read from MLflow into memory, leaving no download behind.

Given no destination, MLflow downloads a `models:/` or `runs:/` artifact into a new
temporary folder that it never removes: every evaluate (challenger and champion),
register (the sample predictions) and monitor (the reference sample) left a copy of the
model or the sample in the temp folder, which grows by a model's size each time on a
laptop or a build agent that keeps it. These download into a folder of their own,
removed once what was read is in memory.
"""
import tempfile

import mlflow.artifacts
import pandas as pd


def load_model(load, model_uri):
    """`load(model_uri)`, an MLflow flavor's load_model (e.g. mlflow.sklearn.load_model):
    the model, read whole into memory, its downloaded files removed."""
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as folder:
        return load(model_uri, dst_path=folder)


def read_csv(run_id, artifact_path):
    """The CSV artifact `artifact_path` of run `run_id` as a DataFrame; the download
    removed."""
    with tempfile.TemporaryDirectory(prefix="mlops-artifact-") as folder:
        return pd.read_csv(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=folder))
