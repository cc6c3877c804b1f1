"""The release flow against real scoring servers: build-image, deploy, smoke-test,
promote (with and without approval), automatic rollback and rollback.

Training and image building are done once per module: `registered` holds versions 1
(deliberately weak, alpha=1.0) and 2 (better), both built. Every test starts from its
own copy of that project, with its own ports, brings the targets into the situation it
needs and stops its servers at the end, so the tests depend neither on each other nor
on their order.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ml_service import desired_state, tracking
from ml_service.backends.local import LocalBackend
from ml_service.client import ScoringClient, ScoringError
from ml_service.config import load_settings
from ml_service.errors import MlopsError
from ml_service.monitoring import records
from ml_service.monitoring.prediction_log import log_folder
from ml_service.releasing.deployment import deploy
from ml_service.releasing.dry_run import promote_plan, rollback_plan
from ml_service.releasing.image import build_image
from ml_service.releasing import registry
from ml_service.releasing.promotion import promote, rollback
from ml_service.releasing.registry import context_dir
from ml_service.releasing.smoke import SAMPLE_REQUEST, sample_rows, smoke_test
from ml_service.targets import get_target
from tests.conftest import cli_env, default_sigint
from tests.helpers.hosting_api import github_env, recording_api
from tests.helpers.project import (copy_checkout, copy_project, free_port, git, kept_unchanged,
                                   kill_local_servers)
from training.lineage import SAMPLE_PREDICTIONS_TAG

pytestmark = pytest.mark.slow
KEY = "staging-key-for-release-tests"


@pytest.fixture(scope="module")
def registered(tmp_path_factory, migrated_database):
    """A git checkout of a fresh copy of this project, versions 1 and 2 registered and
    their images built. Tests use copies (`release_project`)."""
    root = copy_project(tmp_path_factory.mktemp("registered") / "project", migrated_database)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")
    for alpha in ("1.0", "0.1"):
        settings = load_settings(root / "mlops.toml", environ={"MLOPS_TRAINING_ALPHA": alpha})
        build_image(settings, LocalBackend(settings).train_gate_register())
    with kept_unchanged(root):
        yield root


@pytest.fixture
def release_project(registered, tmp_path):
    """This test's own copy of `registered`, with free ports; its servers stop after it."""
    root = copy_checkout(registered, tmp_path / "project")
    environ = {"MLOPS_STAGING_PORT": str(free_port()),
               "MLOPS_PRODUCTION_PORT": str(free_port()),
               "MLOPS_SERVING_WORKERS": "1"}
    yield root, environ
    kill_local_servers(load_settings(root / "mlops.toml", environ=environ))


def settings_for(release_project, **overrides):
    root, environ = release_project
    return load_settings(root / "mlops.toml", environ={**environ, **overrides})


def in_production(settings, version):
    """Deploy `version` to staging, smoke-test it and promote it (approved)."""
    deploy(settings, "staging", version)
    smoke_test(settings, "staging")
    promote(settings, approved=True)


def test_build_image_context_is_reproducible(release_project):
    settings = settings_for(release_project)
    first = build_image(settings, "1")
    again = build_image(settings, "1")
    assert first.context_digest == again.context_digest
    assert first.context_digest.startswith("sha256:")
    assert first.image.startswith(f"{settings.image.registry}/{settings.model.name.lower()}:1-")
    assert (first.context_dir / "model" / "MLmodel").exists()
    assert (first.context_dir / "score.py").exists()


def test_unknown_model_version_is_refused(release_project):
    with pytest.raises(MlopsError, match="no version '99'.*registered versions: 1, 2"):
        deploy(settings_for(release_project), "staging", "99")


def test_promote_without_approval_changes_nothing(release_project):
    settings = settings_for(release_project)
    deploy(settings, "staging", "1")
    smoke_test(settings, "staging")
    before = desired_state.read(settings, "production")
    with pytest.raises(MlopsError, match="approval"):
        promote(settings, approved=False)
    assert desired_state.read(settings, "production") == before
    assert get_target("production", settings).status() is None


def test_the_smoke_tests_requests_are_recorded_marked_and_are_not_traffic(release_project):
    settings = settings_for(release_project)
    deploy(settings, "staging", "1")
    smoke_test(settings, "staging")
    recorded = records.read_log_files(log_folder(settings, "staging"))
    assert len(recorded) >= 2  # the warm-up request and the timed one
    assert all(record["smoke_test"] is True for record in recorded)
    assert records.to_frame(recorded).empty  # what monitor compares: nothing


def test_approved_promotion_commits_and_serves(release_project):
    root, _ = release_project
    settings = settings_for(release_project)
    in_production(settings, "1")
    state = desired_state.read(settings, "production")
    assert state.model_version == "1"
    assert git(root, "log", "-1", "--format=%s") == \
        f"Promote {settings.model.name} version 1 to production"
    assert git(root, "status", "--porcelain", "deploy/overlays/production") == ""
    assert get_target("production", settings).status().model_version == "1"


def test_version_not_smoke_tested_on_staging_is_not_promoted(release_project):
    settings = settings_for(release_project)
    in_production(settings, "1")
    deploy(settings, "staging", "2")
    with pytest.raises(MlopsError, match="has not passed its staging smoke test"):
        promote(settings, approved=True)
    assert desired_state.read(settings, "production").model_version == "1"


def test_failed_production_smoke_test_rolls_back(release_project):
    root, _ = release_project
    settings = settings_for(release_project)
    in_production(settings, "1")
    deploy(settings, "staging", "2")
    smoke_test(settings, "staging")
    # Production's latency bound is impossible to meet, so its smoke test fails.
    strict = settings_for(release_project, MLOPS_PRODUCTION_SMOKE_MAX_LATENCY_MS="0.001")
    with pytest.raises(MlopsError, match="rolled back.*serves version 1 again"):
        promote(strict, approved=True)
    assert desired_state.read(strict, "production").model_version == "1"
    assert get_target("production", strict).status().model_version == "1"
    smoke_test(settings, "production")
    subjects = git(root, "log", "-2", "--format=%s").splitlines()
    assert subjects[0].startswith("Roll back production to version 1")
    assert subjects[1].startswith("Promote")


def test_rollback_returns_to_the_previous_version(release_project):
    settings = settings_for(release_project)
    in_production(settings, "1")
    in_production(settings, "2")
    assert get_target("production", settings).status().model_version == "2"
    assert rollback(settings) == "1"
    assert desired_state.read(settings, "production").model_version == "1"
    smoke_test(settings, "production")


def test_deploy_to_staging_commits_its_desired_state(release_project):
    root, _ = release_project
    settings = settings_for(release_project)
    deploy(settings, "staging", "1")
    assert git(root, "log", "-1", "--format=%s") == \
        f"Deploy {settings.model.name} version 1 to staging"
    assert git(root, "status", "--porcelain", "deploy/overlays/staging") == ""


def test_promote_of_another_version_than_staging_is_refused(release_project):
    root, _ = release_project
    settings = settings_for(release_project)
    in_production(settings, "1")
    deploy(settings, "staging", "2")
    smoke_test(settings, "staging")
    head = git(root, "rev-parse", "HEAD")
    with pytest.raises(MlopsError, match="Version 1 is not the staging release.*names "
                                         "version 2; production was not changed"):
        promote(settings, approved=True, model_version=1)
    assert git(root, "rev-parse", "HEAD") == head
    assert desired_state.read(settings, "production").model_version == "1"
    promote(settings, approved=True, model_version=2)
    assert get_target("production", settings).status().model_version == "2"


def test_promote_of_a_version_whose_staging_smoke_test_failed_is_refused(release_project):
    root, _ = release_project
    settings = settings_for(release_project)
    deploy(settings, "staging", "1")
    strict = settings_for(release_project, MLOPS_STAGING_SMOKE_MAX_LATENCY_MS="0.001")
    with pytest.raises(MlopsError, match="Smoke test of staging"):
        smoke_test(strict, "staging")
    head = git(root, "rev-parse", "HEAD")
    with pytest.raises(MlopsError, match=r"smoke_test.staging=failed"):
        promote(settings, approved=True, model_version="1")
    assert git(root, "rev-parse", "HEAD") == head
    assert not desired_state.read(settings, "production").is_set


def test_promoting_the_production_version_again_keeps_the_rollback_target(release_project):
    root, _ = release_project
    settings = settings_for(release_project)
    in_production(settings, "1")
    in_production(settings, "2")
    head = git(root, "rev-parse", "HEAD")
    promote(settings, approved=True, model_version="2")  # the same version, once more
    assert git(root, "rev-parse", "HEAD") == head
    assert rollback(settings) == "1"
    assert get_target("production", settings).status().model_version == "1"


def test_rollback_past_the_oldest_release_says_so_and_exits_1(release_project):
    root, environ = release_project
    settings = settings_for(release_project)
    in_production(settings, "1")
    result = subprocess.run([sys.executable, "-m", "ml_service", "rollback"], cwd=root,
                            env=cli_env(**environ), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1
    assert "no earlier version to roll back to" in result.stdout + result.stderr
    assert desired_state.read(settings, "production").model_version == "1"


def test_dead_server_is_noticed(release_project):
    root, _ = release_project
    settings = settings_for(release_project)
    with pytest.raises(MlopsError, match="Nothing is deployed to staging"):
        smoke_test(settings, "staging")
    deploy(settings, "staging", "1")
    pid = json.loads((root / ".mlops" / "staging.json").read_text())["servers"][0]["pid"]
    os.killpg(pid, signal.SIGKILL)  # the server and its workers die without notice
    os.waitpid(pid, 0)  # deploy ran in this process, so the dead server is ours to reap
    with pytest.raises(MlopsError, match="not running any more"):
        smoke_test(settings, "staging")


def test_port_in_use_is_refused(release_project):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = settings_for(release_project, MLOPS_STAGING_PORT=str(port))
        with pytest.raises(MlopsError, match=f"Port {port} for staging is already in use"):
            deploy(settings, "staging", "1")


def test_a_keyed_staging_answers_only_with_the_key_and_passes(release_project, monkeypatch):
    monkeypatch.setenv("STAGING_SCORING_KEY", KEY)
    settings = settings_for(release_project)
    deployment = deploy(settings, "staging", "1")
    rows = [[0.01] * 10]
    client = ScoringClient.for_deployment(settings, deployment)
    assert client.key == KEY
    with pytest.raises(ScoringError) as refused:
        client.without_key().predict(rows)
    assert refused.value.status == 401 and "send the header" in refused.value.what
    assert len(client.predict(rows)) == 1
    smoke_test(settings, "staging")


def test_smoke_test_fails_an_endpoint_that_does_not_check_its_key(
        release_project, monkeypatch):
    settings = settings_for(release_project)
    deploy(settings, "staging", "1")  # started without a key: it answers anyone
    monkeypatch.setenv("STAGING_SCORING_KEY", KEY)
    with pytest.raises(MlopsError, match="without the scoring key got status 200 instead of "
                                         "401: the endpoint does not check its key"):
        smoke_test(settings, "staging")
    with pytest.raises(MlopsError, match="has not passed its staging smoke test"):
        promote(settings, approved=True)


def test_promote_and_rollback_plans_read_the_local_registry_and_change_nothing(
        release_project):
    root, _ = release_project
    settings = settings_for(release_project)
    in_production(settings, "1")
    deploy(settings, "staging", "2")
    head = git(root, "rev-parse", "HEAD")
    promotion = promote_plan(settings)
    assert "version 1 -> 2" in promotion
    assert "smoke_test.staging=passed on version 2 (now: not run)" in promotion
    assert "no earlier version to roll back to" in rollback_plan(settings)
    assert git(root, "rev-parse", "HEAD") == head
    assert desired_state.read(settings, "production").model_version == "1"
    assert get_target("production", settings).status().model_version == "1"


def test_promotion_by_pull_request_leaves_production_to_the_merge(
        release_project, tmp_path, monkeypatch):
    """promotion = "pr": promote pushes a branch and opens the pull request (GitHub's API
    replaced by a local server); main, the overlay and production stay as they were."""
    root, _ = release_project
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch", "main", str(remote))
    settings = settings_for(release_project, MLOPS_PRODUCTION_PROMOTION="pr")
    deploy(settings, "staging", "2")  # commits the staging overlay
    smoke_test(settings, "staging")
    # As CD's staging job does: main holds staging's record before promote runs.
    git(root, "branch", "-M", "main")
    git(root, "remote", "add", "origin", str(remote))
    git(root, "push", "--quiet", "-u", "origin", "main")
    head = git(root, "rev-parse", "HEAD")
    with recording_api() as api:
        for name, value in github_env(api).items():
            monkeypatch.setenv(name, value)
        assert promote(settings, approved=True) is None
    (request,) = api.requests
    body = request["body"]["body"]
    assert "| model version | 2 |" in body and "| staging smoke test | passed |" in body
    assert "| metrics (held-out data) | " in body and "rmse" in body
    assert "| production now | version none |" in body
    assert git(remote, "diff", "--name-only", "main", request["body"]["head"]) == (
        "deploy/overlays/production/kustomization.yaml")
    assert git(root, "rev-parse", "HEAD") == head == git(remote, "rev-parse", "main")
    assert desired_state.read(settings, "production").model_version == "none"
    assert get_target("production", settings).status() is None


def test_smoke_test_checks_the_known_answers_of_the_version(release_project):
    settings = settings_for(release_project)
    client = MlflowClient(settings.tracking.uri, settings.tracking.uri)
    deploy(settings, "staging", "2")
    smoke_test(settings, "staging")
    # Version 2's recorded answers are version 1's: the served model is not the one
    # registered as version 2, as when a wrong model or another server answers.
    known = client.get_model_version(settings.model.name, "1").tags[SAMPLE_PREDICTIONS_TAG]
    client.set_model_version_tag(settings.model.name, "2", SAMPLE_PREDICTIONS_TAG, known)
    with pytest.raises(MlopsError, match="differ from the version's known answers"):
        smoke_test(settings, "staging")


def test_a_build_context_changed_after_staging_passed_is_never_served(release_project):
    root, _ = release_project
    settings = settings_for(release_project)
    deploy(settings, "staging", "1")
    smoke_test(settings, "staging")
    staging = get_target("staging", settings).status()
    score = context_dir(settings, "1") / "score.py"
    original = score.read_text()
    score.write_text(original + "\n# an auth bypass added after the smoke test\n")
    head = git(root, "rev-parse", "HEAD")
    with pytest.raises(MlopsError, match=r"not the one build-image recorded .*changed since "
                                         r"build-image: score.py\. Nothing was started") as refused:
        promote(settings, approved=True)
    assert "build-image --model-version 1" in refused.value.fix
    assert get_target("production", settings).status() is None
    assert not desired_state.read(settings, "production").is_set
    assert git(root, "rev-parse", "HEAD") == head
    # Nor does a deploy keep the running server of that version as if nothing changed.
    with pytest.raises(MlopsError, match="changed since build-image: score.py"):
        deploy(settings, "staging", "1")
    assert get_target("staging", settings).status() == staging
    # With the recorded files back, the release deploys and promotes as before.
    score.write_text(original)
    promote(settings, approved=True)
    assert get_target("production", settings).status().model_version == "1"


def test_a_context_rebuilt_after_the_staging_smoke_test_is_not_promoted(release_project):
    settings = settings_for(release_project)
    deploy(settings, "staging", "1")
    smoke_test(settings, "staging")
    # build-image again with other serving code: a new context digest is recorded.
    # scoring/score.py, named through the CLI's own constant (the folder's name would make
    # the template's option-dependent test selection pick this module).
    scoring = settings.project_root / Path(SAMPLE_REQUEST).parent / "score.py"
    scoring.write_text(scoring.read_text() + "\n# changed serving code\n")
    build_image(settings, "1")
    with pytest.raises(MlopsError, match="build-image ran again after the smoke test"):
        promote(settings, approved=True)
    assert get_target("production", settings).status() is None


def _production_servers(settings):
    return get_target("production", settings).servers()


def _answering_versions(settings, probes=20):
    """The model versions that answer on production's port over `probes` requests."""
    rows = sample_rows(settings)
    target = get_target("production", settings)
    versions = set()
    for _ in range(probes):
        request = urllib.request.Request(
            target.scoring_uri, data=json.dumps({"data": rows}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            versions.add(json.loads(answer.read())["model_version"])
    return versions


def _wait_for(condition, timeout=180):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the promote never reached the point"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", ["new server started", "new server answering"])
def test_an_interrupted_promote_leaves_one_version_serving_and_git_naming_it(
        release_project, signum, point):
    root, environ = release_project
    settings = settings_for(release_project)
    in_production(settings, "1")
    deploy(settings, "staging", "2")
    smoke_test(settings, "staging")
    promoting = subprocess.Popen(
        [sys.executable, "-m", "ml_service", "promote", "--approve"], cwd=root,
        env=cli_env(**environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=default_sigint)
    try:
        def new_server():
            return [server for server in _production_servers(settings)
                    if server.model_version == "2"]
        if point == "new server started":
            _wait_for(lambda: new_server())
        else:
            _wait_for(lambda: new_server() and new_server()[0].healthy())
        promoting.send_signal(signum)
        output, _ = promoting.communicate(timeout=120)
    finally:
        promoting.kill()
    # 130: interrupted as meant. A new server needs seconds to answer, so a promote is
    # always interrupted at the first point; at the second, on a machine so loaded that
    # it finished between seeing the answer and the signal, it exits 0. Either way what
    # follows must hold.
    assert promoting.returncode in ((130,) if point == "new server started" else (130, 0)), \
        output
    assert promoting.returncode == 0 or "interrupted" in output, output
    servers = _production_servers(settings)
    assert len(servers) == 1, servers
    serving = servers[0].model_version
    assert _answering_versions(settings) == {serving}
    assert desired_state.read(settings, "production").model_version == serving
    assert git(root, "status", "--porcelain", "deploy") == ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_deploy_leaves_one_version_serving_and_git_naming_it(
        release_project, signum):
    root, environ = release_project
    settings = settings_for(release_project)
    deploy(settings, "staging", "1")
    deploying = subprocess.Popen(
        [sys.executable, "-m", "ml_service", "deploy", "--target", "staging",
         "--model-version", "2"], cwd=root, env=cli_env(**environ),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint)
    try:
        staging = get_target("staging", settings)
        _wait_for(lambda: any(server.model_version == "2" for server in staging.servers()))
        deploying.send_signal(signum)
        output, _ = deploying.communicate(timeout=120)
    finally:
        deploying.kill()
    assert deploying.returncode == 130, output  # the new server was not answering yet
    [server] = staging.servers()
    assert server.model_version == "1"
    assert staging.status().healthy
    assert desired_state.read(settings, "staging").model_version == server.model_version
    assert git(root, "status", "--porcelain", "deploy") == ""


def test_two_versions_on_one_port_are_not_healthy_and_fail_the_smoke_test(release_project):
    """What a killed deploy (SIGKILL: nothing can undo) leaves: the next command sees it."""
    settings = settings_for(release_project)
    in_production(settings, "1")
    target = get_target("production", settings)
    target._start(registry_release(settings, "2"))  # a second version, never handed over
    status = target.status()
    assert not status.healthy and "versions 1 and 2 both serve port" in status.detail
    with pytest.raises(MlopsError, match="both serve port"):
        smoke_test(settings, "production")
    deploy(settings, "production")  # converges on what git names
    assert _answering_versions(settings) == {"1"}


def registry_release(settings, version):
    client, _ = tracking.connect(settings)
    return registry.release_for(client, settings, version)
