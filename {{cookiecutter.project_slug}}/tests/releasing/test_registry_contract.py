"""Contract test: the whole local release flow on a registry that behaves like Azure ML's.

It encodes Microsoft's "Manage models registries in Azure Machine Learning with
MLflow" (the support matrix): model version tags are supported, model version
aliases are not listed, and searches that filter on tags are not supported
(azureml-mlflow overrides only `create_model_version`, so every other call reaches
the service as it is). A real `mlflow server` runs on loopback behind a filter
(tests/helpers/azureml_registry.py) that refuses those calls as the service does.
Train, evaluate, register, build-image, deploy, smoke-test, promote, a better
version, and rollback must all work on it: release state is git's desired state
plus version tags, and aliases are at most a best-effort mirror, never read.
"""
import tempfile

import pytest

from ml_service import desired_state, tracking
from ml_service.backends.local import LocalBackend
from ml_service.config import load_settings
from ml_service.errors import MlopsError
from ml_service.releasing import registry
from ml_service.releasing.deployment import deploy
from ml_service.releasing.image import build_image
from ml_service.releasing.promotion import promote, rollback
from ml_service.releasing.smoke import smoke_test
from ml_service.targets import get_target
from tests.helpers.azureml_registry import ALIAS_PATH, azureml_like_registry
from tests.helpers.project import copy_project, free_port, git, kill_local_servers

pytestmark = pytest.mark.slow


def test_release_flow_on_a_registry_without_aliases(tmp_path, migrated_database, monkeypatch):
    root = copy_project(tmp_path / "project", migrated_database)
    # This process's temporary folder: MLflow downloads what a remote registry serves
    # (models, samples) into new folders there, and the flow must leave none behind.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")
    with azureml_like_registry(tmp_path / "registry") as (tracking_uri, refused):
        environ = {"MLFLOW_TRACKING_URI": tracking_uri,
                   "MLOPS_STAGING_PORT": str(free_port()),
                   "MLOPS_PRODUCTION_PORT": str(free_port()),
                   "MLOPS_SERVING_WORKERS": "1"}
        settings = load_settings(root / "mlops.toml", environ=environ)
        try:
            _release_flow(root, environ, settings)
        finally:
            kill_local_servers(settings)
    # Aliases may be mirrored (and refused), but nothing ever depends on reading one.
    assert all(method != "GET" for method, path in refused if ALIAS_PATH in path), refused
    assert not [path for _, path in refused if ALIAS_PATH not in path], refused
    assert sorted(path.name for path in scratch.iterdir()) == []


def _release_flow(root, environ, settings):
    def with_alpha(alpha):
        return load_settings(root / "mlops.toml",
                             environ={**environ, "MLOPS_TRAINING_ALPHA": alpha})

    def ship(alpha):
        trained = with_alpha(alpha)
        version = LocalBackend(trained).train_gate_register()
        assert version is not None, "the gate rejected a model the flow needs"
        build_image(trained, version)
        deploy(settings, "staging", version)
        smoke_test(settings, "staging")
        promote(settings, approved=True, model_version=version)
        return version

    weak = ship("1.0")
    assert git(root, "log", "-2", "--format=%s").splitlines() == [
        f"Promote {settings.model.name} version {weak} to production",
        f"Deploy {settings.model.name} version {weak} to staging"]
    better = ship("0.1")
    assert desired_state.read(settings, "production").model_version == better
    assert get_target("production", settings).status().model_version == better
    client, _ = tracking.connect(settings)
    assert client.get_model_version(settings.model.name, better).tags[
        registry.PREVIOUS_PRODUCTION_TAG] == weak
    # An identical retrain is judged against production's version and rejected.
    assert LocalBackend(with_alpha("0.1")).train_gate_register() is None

    assert rollback(settings) == weak
    assert get_target("production", settings).status().model_version == weak
    smoke_test(settings, "production")
    with pytest.raises(MlopsError, match="no earlier version"):
        rollback(settings)
    assert desired_state.read(settings, "production").model_version == weak
