"""The release flow against real scoring servers: build-image, deploy, smoke-test,
promote (with and without approval), automatic rollback and rollback.

Training and image contexts are made once per module; each test works on its own
copy of that project, on its own ports, and sets up the situation it needs.
"""
import json
import os
import shutil
import signal
import socket
import subprocess

import pytest

from ml_service import desired_state, releases, tracking
from ml_service.config import load_settings
from ml_service.errors import MlopsError
from ml_service.stages.build_image import build_image
from ml_service.stages.deploy import deploy
from ml_service.stages.evaluate import evaluate
from ml_service.stages.promote import promote
from ml_service.stages.register import register
from ml_service.stages.rollback import rollback
from ml_service.stages.smoke_test import smoke_test
from ml_service.stages.stop import stop
from ml_service.stages.train import train
from ml_service.targets import get_target
from tests.conftest import copy_project

pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def git(folder, *args):
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True,
                          text=True).stdout.strip()


def new_version(settings):
    train(settings)
    evaluate(settings)
    return register(settings)


@pytest.fixture(scope="module")
def registered(tmp_path_factory, migrated_database):
    """A git checkout with two registered versions and their build contexts: version 1
    is weak (alpha 1.0), version 2 beats it. Nothing is deployed. Tests copy it."""
    root = copy_project(tmp_path_factory.mktemp("release") / "project", migrated_database)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")
    for alpha in ("1.0", "0.1"):
        settings = load_settings(root / "mlops.toml", environ={"MLOPS_TRAINING_ALPHA": alpha})
        build_image(settings, new_version(settings))
    return root


@pytest.fixture
def release_settings(registered, tmp_path):
    """Settings of this test's own copy of `registered`, on free ports; every server
    it starts is stopped at the end."""
    root = tmp_path / "project"
    shutil.copytree(registered, root, symlinks=True)
    environ = {"MLOPS_STAGING_PORT": str(free_port()),
               "MLOPS_PRODUCTION_PORT": str(free_port()),
               "MLOPS_SERVING_WORKERS": "1"}

    def settings(**overrides):
        return load_settings(root / "mlops.toml", environ={**environ, **overrides})
    yield settings
    stop(settings())


def in_production(settings, version):
    """Production runs `version`, deployed directly (no promotion history)."""
    deploy(settings, "production", version)


def passed_staging(settings, version):
    deploy(settings, "staging", version)
    smoke_test(settings, "staging")


def test_build_image_context_is_reproducible(release_settings):
    settings = release_settings()
    recorded = releases.release_for(tracking.connect(settings)[0], settings, "1")
    again = build_image(settings, "1")
    assert again.context_digest == recorded.context_digest
    assert again.context_digest.startswith("sha256:")
    assert again.image.startswith(f"{settings.image.registry}/{settings.model.name.lower()}:1-")
    assert (again.context_dir / "model" / "MLmodel").exists()
    assert (again.context_dir / "score.py").exists()


def test_unknown_model_version_is_refused(release_settings):
    with pytest.raises(MlopsError, match="no version '99'.*registered versions: 1, 2"):
        deploy(release_settings(), "staging", "99")


def test_promote_without_approval_changes_nothing(release_settings):
    settings = release_settings()
    passed_staging(settings, "1")
    before = desired_state.read(settings, "production")
    with pytest.raises(MlopsError, match="approval"):
        promote(settings, approved=False)
    assert desired_state.read(settings, "production") == before
    assert get_target("production", settings).status() is None


def test_approved_promotion_commits_and_serves(release_settings):
    settings = release_settings()
    passed_staging(settings, "1")
    promote(settings, approved=True)
    root = settings.project_root
    assert desired_state.read(settings, "production").model_version == "1"
    assert git(root, "log", "-1", "--format=%s") == \
        f"Promote {settings.model.name} version 1 to production"
    assert git(root, "status", "--porcelain", "deploy/overlays/production") == ""
    assert get_target("production", settings).status().model_version == "1"


def test_version_not_smoke_tested_on_staging_is_not_promoted(release_settings):
    settings = release_settings()
    deploy(settings, "staging", "2")
    before = desired_state.read(settings, "production")
    with pytest.raises(MlopsError, match="has not passed its staging smoke test"):
        promote(settings, approved=True)
    assert desired_state.read(settings, "production") == before


def test_failed_production_smoke_test_rolls_back(release_settings):
    settings = release_settings()
    in_production(settings, "1")
    passed_staging(settings, "2")
    # Production's latency bound is impossible to meet, so its smoke test fails.
    strict = release_settings(MLOPS_PRODUCTION_SMOKE_MAX_LATENCY_MS="0.001")
    with pytest.raises(MlopsError, match="rolled back.*serves version 1 again"):
        promote(strict, approved=True)
    assert desired_state.read(settings, "production").model_version == "1"
    assert get_target("production", settings).status().model_version == "1"
    smoke_test(settings, "production")
    subjects = git(settings.project_root, "log", "-2", "--format=%s").splitlines()
    assert subjects[0].startswith("Roll back production to version 1")
    assert subjects[1].startswith("Promote")


def test_rollback_returns_to_the_previous_version(release_settings):
    settings = release_settings()
    in_production(settings, "1")
    passed_staging(settings, "2")
    promote(settings, approved=True)
    assert get_target("production", settings).status().model_version == "2"
    assert rollback(settings) == "1"
    assert desired_state.read(settings, "production").model_version == "1"
    smoke_test(settings, "production")


def test_smoke_test_of_an_empty_target_says_to_deploy(release_settings):
    with pytest.raises(MlopsError, match="Nothing is deployed to staging"):
        smoke_test(release_settings(), "staging")


def test_dead_server_is_noticed(release_settings):
    settings = release_settings()
    deploy(settings, "staging", "1")
    pid = json.loads((settings.project_root / ".mlops" / "staging.json").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)  # the server and its workers die without notice
    os.waitpid(pid, 0)  # deploy ran in this process, so the dead server is ours to reap
    with pytest.raises(MlopsError, match="not running any more"):
        smoke_test(settings, "staging")


def test_port_in_use_is_refused(release_settings):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = release_settings(MLOPS_STAGING_PORT=str(port))
        with pytest.raises(MlopsError, match=f"Port {port} for staging is already in use"):
            deploy(settings, "staging", "1")
