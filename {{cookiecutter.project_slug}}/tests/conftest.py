import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ml_service import desired_state
from ml_service.config import TARGET_NAMES, load_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# What running the project leaves behind (stores, servers' state, build contexts,
# caches): never copied into a test's project, so tests judge the code, not a used tree.
WORKING_STATE = ("mlruns", ".mlops", "build", ".venv", ".git", "__pycache__",
                 ".pytest_cache", "*.egg-info")


def copy_project(destination, database, image_build="context-only"):
    """Copy this project's files into `destination` as a fresh checkout would have them:
    without working state, with an empty MLflow store (`database` copied) and with no
    model version in any environment's desired state (a promotion here, e.g. by
    `make demo`, must not change what tests see).

    `image_build` is written as [image] build: "context-only" by default, so a test
    that is not about the image never starts a docker build, even where an engine runs;
    the container tests pass "auto"."""
    shutil.copytree(PROJECT_ROOT, destination, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(*WORKING_STATE))
    config = destination / "mlops.toml"
    text, count = re.subn(r'(?m)^build = "auto"$', f'build = "{image_build}"',
                          config.read_text())
    assert count == 1, "mlops.toml must set [image] build = \"auto\" (the template's default)"
    config.write_text(text)
    (destination / "mlruns").mkdir()
    shutil.copy(database, destination / "mlruns" / "mlflow.db")
    settings = load_settings(destination / "mlops.toml", environ={})
    for target in TARGET_NAMES:
        image_name = desired_state.read(settings, target).image.rpartition(":")[0]
        desired_state.write(settings, target, desired_state.DesiredState(
            model_version=desired_state.UNSET_VERSION, image=f"{image_name}:unset",
            image_digest=""))
    return destination


# Variables the project reads (its settings, MLflow's, and the CI runners' output files
# that report.py writes to): a test sees none of the caller's, so the suite behaves the
# same on a laptop, in this project's CI and inside another CI job.
CALLER_VARIABLES = ("MLOPS_", "MLFLOW_", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV",
                    "TF_BUILD")


@pytest.fixture(autouse=True)
def hermetic_environment(monkeypatch):
    """Clear the caller's settings, and MLflow's process globals: MLflow keeps the
    tracking and registry URIs and the active experiment in globals and mirrors them into
    os.environ, so without this a test could read the store of a test run before it."""
    for variable in list(os.environ):
        if variable.startswith(CALLER_VARIABLES):
            monkeypatch.delenv(variable)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)


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
    """A copy of this project as freshly checked out, with an empty local MLflow store."""
    return copy_project(tmp_path / "project", migrated_database)


@pytest.fixture
def settings(project):
    return load_settings(project / "mlops.toml", environ={})


@pytest.fixture
def client(settings):
    # Both URIs explicitly: MLflow otherwise takes the registry from process-global state.
    return MlflowClient(tracking_uri=settings.tracking.uri, registry_uri=settings.tracking.uri)


def cli_env(**overrides):
    """The environment for a CLI subprocess: this test's, plus `overrides`."""
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **overrides}


@pytest.fixture
def run_cli(project):
    """Run `python -m ml_service ...` in the project folder, as CI does."""
    def run(*args, **env):
        return subprocess.run([sys.executable, "-m", "ml_service", *args], cwd=project,
                              env=cli_env(**env), capture_output=True, text=True, timeout=300)
    return run
