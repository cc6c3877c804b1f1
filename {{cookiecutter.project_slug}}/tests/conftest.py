import os
import shutil
import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ml_service.config import load_settings
from tests.helpers.project import PROJECT_ROOT


@pytest.fixture(autouse=True)
def fresh_mlflow_uris(monkeypatch):
    """MLflow keeps the tracking and registry URIs and the active experiment in process
    globals and mirrors them into os.environ: reset them, so no test reads the store or
    experiment of a test run before it."""
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID",
                     "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory):
    """An empty MLflow SQLite store with its schema created once per session.

    Creating the schema runs every migration (seconds); copying the file is instant.
    """
    database = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{database}").search_experiments()
    return database


@pytest.fixture
def project(tmp_path, migrated_database):
    """A project folder with the real mlops.toml, scoring/ and deploy/, and a fresh
    local MLflow store."""
    shutil.copy(PROJECT_ROOT / "mlops.toml", tmp_path / "mlops.toml")
    for folder in ("scoring", "deploy"):
        shutil.copytree(PROJECT_ROOT / folder, tmp_path / folder)
    (tmp_path / "mlruns").mkdir()
    shutil.copy(migrated_database, tmp_path / "mlruns" / "mlflow.db")
    return tmp_path


@pytest.fixture
def settings(project):
    return load_settings(project / "mlops.toml", environ={})


@pytest.fixture
def client(settings):
    # Both URIs explicitly: MLflow otherwise takes the registry from process-global state.
    return MlflowClient(tracking_uri=settings.tracking.uri, registry_uri=settings.tracking.uri)


def cli_env(**overrides):
    """The environment for a CLI subprocess: no inherited MLOps/MLflow settings."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MLOPS_", "MLFLOW_"))}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env.update(overrides)
    return env


@pytest.fixture
def run_cli(project):
    """Run `python -m ml_service ...` in the project folder, as CI does."""
    def run(*args, **env):
        return subprocess.run([sys.executable, "-m", "ml_service", *args], cwd=project,
                              env=cli_env(**env), capture_output=True, text=True, timeout=300)
    return run
