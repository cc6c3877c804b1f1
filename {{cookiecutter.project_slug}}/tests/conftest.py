import os
import signal
import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ml_service.cli import collect_less_often
from ml_service.config import load_settings
from tests.helpers.project import PROJECT_ROOT, copy_project, kept_unchanged

# Variables the project reads (its settings, MLflow's, the CI runners' output files
# that report.py writes to, the targets' scoring keys and the server's): a test sees none
# of the caller's, so the suite behaves the same on a laptop, in this project's CI and
# inside another CI job.
CALLER_VARIABLES = ("MLOPS_", "MLFLOW_", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV",
                    "TF_BUILD", "STAGING_SCORING_KEY", "PRODUCTION_SCORING_KEY", "SCORING_KEY",
                    "EDGE_SCORING_KEY", "ACR_USERNAME", "ACR_PASSWORD")

# A test process imports what the stages import and keeps it, with the module-scoped
# fixtures, for the whole run: Python's full collections were 16 % of one's CPU (6.1 of
# 38.6 CPU-s), 2.9 CPU-s with the CLI's setting.
collect_less_often()


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle
def pytest_collection_modifyitems(items):
    """Modules with slow tests first, each group in the order it was (randomly) given.

    `--dist worksteal` gives each worker a contiguous share of this order and lets an idle
    worker take tests from the end of a busy one's share: the slow tests are started
    first and shared out, and a one-test module that takes minutes never starts last.
    Sorting by module keeps each module's tests together, so its fixtures start once
    per worker at most."""
    slow_modules = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_modules)


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
    Tests copy it, never open it.
    """
    database = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{database}").search_experiments()
    with kept_unchanged(database.parent):
        yield database


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


def default_sigint():
    """Popen's preexec_fn for a CLI process a test interrupts with SIGINT, as Ctrl-C does:
    an xdist worker ignores SIGINT and its children inherit that, so Python would install
    no KeyboardInterrupt handler and the signal would interrupt nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
