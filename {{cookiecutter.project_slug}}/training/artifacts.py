"""Models and files read from MLflow into memory, leaving no download behind.

Given no destination, MLflow downloads an artifact (a model from a remote registry, as
Azure ML's or an MLflow server; a run's file from any store) into a new temporary folder
that it never removes: evaluate (challenger and champion), register (the sample
predictions) and monitor (the reference sample) each left a copy of the model or the
sample there, a model's size more each time on a laptop or build agent that keeps its
temp folder. These download into a folder of their own, removed once what was read is
in memory (from a local store, where MLflow would hand out the store's own files, that
is one copy more, as short-lived).
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
