"""Run CD's production job (.github/workflows/cd.yml) here, its own `run:` lines in
order, after a staging deployment, against a bare remote and local targets.

The job is checked out as actions/checkout does it (tests/helpers/ci_checkout.py)
from a local bare repository; the harness of tests/ci/test_harness.py plays the
steps with the same skip rules (actions, installs, Azure CLI). Local targets stand in
for ACI and AKS (MLOPS_*_KIND=local), so promote commits the desired state, the push
step pushes it to the bare remote, and production's smoke test runs against a real
scoring server. A second run makes production's smoke test fail after the push and
checks that the rollback step runs and pushes its commit too.
"""
import shutil

import pytest

from ml_service.backends.local import LocalBackend
from ml_service.config import load_settings
from ml_service.releasing.deployment import deploy
from ml_service.releasing.image import build_image
from ml_service.releasing.smoke import smoke_test
from tests.ci.test_harness import Harness, load_workflow, what_happened
from tests.helpers.ci_checkout import actions_checkout
from tests.helpers.project import (PROJECT_ROOT, copy_checkout, copy_project, free_port, git,
                                   kept_unchanged, kill_local_servers, push_to_new_remote)

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "cd.yml"

pytestmark = [
    pytest.mark.skipif(not WORKFLOW.is_file(),
                       reason="no .github/ in this project (ci_platform=azure-devops)"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def staged(tmp_path_factory, migrated_database):
    """A bare remote of this project and a CD checkout of it in which versions 1 and 2
    are registered and built; tests deploy to staging in their own copy."""
    base = tmp_path_factory.mktemp("cd")
    source = copy_project(base / "source", migrated_database)
    remote = push_to_new_remote(source, base / "remote.git")
    checkout = base / "checkout"
    actions_checkout(remote, checkout)
    (checkout / "mlruns").mkdir()
    (checkout / "mlruns" / "mlflow.db").write_bytes(
        (source / "mlruns" / "mlflow.db").read_bytes())
    for alpha in ("1.0", "0.1"):
        settings = load_settings(checkout / "mlops.toml", environ={"MLOPS_TRAINING_ALPHA": alpha})
        build_image(settings, LocalBackend(settings).train_gate_register())
    with kept_unchanged(remote), kept_unchanged(checkout):
        yield remote, checkout


@pytest.fixture
def job(staged, tmp_path):
    """This test's copies of the remote and the checkout, its own ports; servers stop."""
    remote, checkout = (tmp_path / "remote.git", tmp_path / "checkout")
    shutil.copytree(staged[0], remote)
    copy_checkout(staged[1], checkout)
    git(checkout, "remote", "set-url", "origin", f"file://{remote}")
    environ = {"MLOPS_STAGING_KIND": "local", "MLOPS_PRODUCTION_KIND": "local",
               "MLOPS_STAGING_PORT": str(free_port()),
               "MLOPS_PRODUCTION_PORT": str(free_port()), "MLOPS_SERVING_WORKERS": "1"}
    temp = tmp_path / "runner"
    temp.mkdir()
    yield remote, checkout, temp, environ
    kill_local_servers(load_settings(checkout / "mlops.toml", environ=environ))


PRODUCTION_KEY = "harness-production-scoring-key"


def play_production(checkout, temp, environ, version):
    """Stage `version` as the staging job would, then play the production job."""
    settings = load_settings(checkout / "mlops.toml", environ=environ)
    deploy(settings, "staging", version)
    smoke_test(settings, "staging")
    workflow = load_workflow(WORKFLOW)
    harness = Harness(checkout, temp, environ)
    env = harness.base_env()
    needs = {"release": {"result": "success", "outputs": {"model_version": version}},
             "staging": {"result": "success", "outputs": {}}}
    contexts = {"github": {"event_name": "workflow_run", "ref": "refs/heads/main",
                           "sha": env["GITHUB_SHA"], "repository": "example/project",
                           "token": "job-token", "event": {}},
                "vars": {}, "inputs": {}, "needs": needs, "env": dict(workflow["env"]),
                # The production environment's secret: promote, smoke test and rollback
                # must all carry it (the server then refuses requests without it).
                "secrets": {"PRODUCTION_SCORING_KEY": PRODUCTION_KEY},
                "runner": {"os": "Linux", "temp": str(temp)}}
    job = workflow["jobs"]["production"]
    harness.needs["production"] = harness.run_job("production", job, contexts, env)
    return harness


PRODUCTION_STEPS_RUN = ["Commit as github-actions", "Promote the staging release (approved)",
                        "Push the desired state (GitOps commit)", "Smoke test production",
                        "Summary"]


def ran(harness):
    return [step for (_, step), record in what_happened(harness).items() if record == "ran"]


def test_production_job_promotes_pushes_and_smoke_tests(job):
    remote, checkout, temp, environ = job
    harness = play_production(checkout, temp, environ, "1")
    assert ran(harness) == PRODUCTION_STEPS_RUN, what_happened(harness)
    assert what_happened(harness)[("production", "Roll back production")] == \
        "skipped by its if"
    assert harness.needs["production"]["result"] == "success"
    subject, author = git(remote, "log", "-1", "--format=%s|%an", "main").split("|")
    assert subject.startswith("Promote ") and subject.endswith(" version 1 to production")
    assert author == "github-actions[bot]"
    assert git(remote, "rev-parse", "main") == git(checkout, "rev-parse", "HEAD")
    assert "Promotion of model version 1: success." in "".join(harness.summary)


def test_a_refused_push_rolls_production_back(job, monkeypatch):
    """The remote refuses the promotion of version 2 (as a protected main would): the
    push step fails, the rollback step restores version 1 and pushes that."""
    remote, checkout, temp, environ = job
    play_production(checkout, temp, environ, "1")
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nwhile read old new ref; do\n"
                    "  case \"$(git log -1 --format=%s \"$new\")\" in\n"
                    "    *'version 2 to production') echo refused >&2; exit 1;;\n"
                    "  esac\ndone\n")
    hook.chmod(0o755)
    harness = play_production(checkout, temp, environ, "2")
    happened = what_happened(harness)
    assert happened[("production", "Push the desired state (GitOps commit)")].startswith(
        "FAILED")
    assert happened[("production", "Smoke test production")] == "skipped by its if"
    assert happened[("production", "Roll back production")] == "ran"
    assert harness.needs["production"]["result"] == "failure"
    subject = git(remote, "log", "-1", "--format=%s", "main")
    assert subject == "Roll back production from version 2 to 1"
    settings = load_settings(checkout / "mlops.toml", environ=environ)
    monkeypatch.setenv("PRODUCTION_SCORING_KEY", PRODUCTION_KEY)
    assert smoke_test(settings, "production").model_version == "1"
