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

from ml_service import desired_state
from ml_service.backends.local import LocalBackend
from ml_service.config import load_settings
from ml_service.releasing.deployment import deploy
from ml_service.releasing.image import build_image
from ml_service.releasing.pull_request import branch_name
from ml_service.releasing.smoke import smoke_test
from tests.ci.test_harness import Harness, load_workflow, what_happened
from tests.helpers.ci_checkout import actions_checkout, actions_checkout_sha
from tests.helpers.ci_expressions import condition_holds, render
from tests.helpers.hosting_api import github_env, recording_api
from tests.helpers.platform_rules import (WORKFLOW_TOKEN, event_starts_runs, protect_main,
                                          push_fires)
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


def play_cd_job(remote, store, runner, environ, job_id, needs, head_sha):
    """Play CD's job `job_id` for the CI run of `head_sha`, in a new runner folder: checked
    out as the job's checkout step says, with the model store and build contexts (the
    registry and the images) of the checkout `store`."""
    workflow = load_workflow(WORKFLOW)
    job = workflow["jobs"][job_id]
    contexts = {"github": {"event_name": "workflow_run", "ref": "refs/heads/main",
                           "sha": head_sha, "repository": "example/project",
                           "token": "job-token",
                           "event": {"workflow_run": {"head_sha": head_sha}}},
                "vars": {}, "inputs": {}, "env": dict(workflow["env"]),
                "secrets": {"PRODUCTION_SCORING_KEY": PRODUCTION_KEY}, "needs": needs,
                "runner": {"os": "Linux", "temp": str(runner)}}
    checkout = runner / "checkout"
    ref = render(job["steps"][0]["with"]["ref"], contexts, {"failed": False})
    if ref == "main":
        actions_checkout(remote, checkout)
    else:
        actions_checkout_sha(remote, checkout, ref)
    for kept in ("mlruns", "build"):
        shutil.copytree(store / kept, checkout / kept, symlinks=True)
    harness = Harness(checkout, runner, environ)
    harness.needs[job_id] = harness.run_job(job_id, job, contexts, harness.base_env())
    return harness


def play_staging(remote, ci_checkout, runner, environ, version, head_sha):
    """Play CD's staging job for the CI run of `head_sha` that registered `version`."""
    needs = {"release": {"result": "success", "outputs": {"model_version": version}}}
    return play_cd_job(remote, ci_checkout, runner, environ, "staging", needs, head_sha)


def test_two_cd_runs_after_pushes_both_record_staging_on_main(job, tmp_path):
    """CI ran for P1 (version 1) and P2 (version 2), P2 pushed before CD1's staging job
    started: CD1 records staging on top of P2, CD2 (its CI run's head_sha is P2, which
    lacks CD1's commit) must record version 2 on top of that, not conflict with it."""
    remote, checkout, temp, environ = job
    first = git(remote, "rev-parse", "main")
    pusher = tmp_path / "teammate"
    git(tmp_path, "clone", "--quiet", str(remote), str(pusher))
    (pusher / "README.md").write_text("A teammate's edit\n")
    git(pusher, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet",
        "-am", "Teammate's change")
    git(pusher, "push", "--quiet", "origin", "main")
    second = git(pusher, "rev-parse", "HEAD")
    runs = []
    try:
        for version, head_sha in (("1", first), ("2", second)):
            runner = tmp_path / f"cd-{version}"
            runner.mkdir()
            runs.append(play_staging(remote, checkout, runner, environ, version, head_sha))
            kill_local_servers(load_settings(runner / "checkout" / "mlops.toml",
                                             environ=environ))
    finally:
        for version in ("1", "2"):
            if (tmp_path / f"cd-{version}" / "checkout" / "mlops.toml").is_file():
                kill_local_servers(load_settings(
                    tmp_path / f"cd-{version}" / "checkout" / "mlops.toml", environ=environ))
    for harness in runs:
        assert harness.needs["staging"]["result"] == "success", what_happened(harness)
    subjects = git(remote, "log", "--format=%s", "-3", "main").splitlines()
    assert [subject.split(" version ")[1] for subject in subjects[:2]] == \
        ["2 to staging", "1 to staging"]
    assert subjects[2] == "Teammate's change"
    on_main = tmp_path / "main"
    git(tmp_path, "clone", "--quiet", str(remote), str(on_main))
    settings = load_settings(on_main / "mlops.toml", environ=environ)
    assert desired_state.read(settings, "staging").model_version == "2"


def test_pr_mode_with_a_protected_main(job, tmp_path):
    """promotion = "pr" and main protected (pull requests only: the workflow identity's
    pushes are refused). Staging's record goes to the branch desired-state/staging; the
    production job opens the promotion pull request, which carries staging's and
    production's desired state, and starts CI on its branch (the workflow token's pull
    request starts no run). A person's merge then starts the production rollout, not CI."""
    remote, checkout, temp, environ = job
    protect_main(remote)
    environ = {**environ, "MLOPS_PRODUCTION_PROMOTION": "pr"}
    before = git(remote, "rev-parse", "main")
    runners = tmp_path / "staging", tmp_path / "production"
    for runner in runners:
        runner.mkdir()
    try:
        staging = play_staging(remote, checkout, runners[0], environ, "1", before)
        assert staging.needs["staging"] == {
            "result": "success", "outputs": {"record_branch": "desired-state/staging"}}, \
            what_happened(staging)
        assert git(remote, "rev-parse", "main") == before
        assert git(remote, "log", "-1", "--format=%s|%P", "desired-state/staging") \
            .endswith(f" version 1 to staging|{before}")
        with recording_api() as api:
            needs = {"release": {"result": "success", "outputs": {"model_version": "1"}},
                     **staging.needs}
            production = play_cd_job(
                remote, runners[0] / "checkout", runners[1],
                {**environ, **github_env(api), "GITHUB_REPOSITORY": "example/project"},
                "production", needs, before)
    finally:
        kill_local_servers(load_settings(runners[0] / "checkout" / "mlops.toml",
                                         environ=environ))
    assert production.needs["production"]["result"] == "success", what_happened(production)
    assert ran(production) == [
        "Commit as github-actions",
        "Take staging's desired state from its branch (promotion = \"pr\")",
        "Promote the staging release (approved)", "Run CI on the promotion pull request",
        "Summary"]
    assert git(remote, "rev-parse", "main") == before
    branch = branch_name(load_settings(checkout / "mlops.toml", environ={}), "1")
    log = git(remote, "log", "--format=%s", f"{before}..{branch}").splitlines()
    assert [subject.rsplit(" version ", 1)[1] for subject in log] == \
        ["1 to production", "1 to staging"]
    assert [(request["path"], request["body"].get("head") or request["body"]["ref"])
            for request in api.requests] == [
        ("/repos/example/project/pulls", branch),
        ("/repos/example/project/actions/workflows/ci.yml/dispatches", branch)]

    # The pull request, opened with the workflow token, starts no run; the dispatch
    # starts CI on the branch, whose required check runs there (not the model job).
    assert not event_starts_runs("pull_request", WORKFLOW_TOKEN)
    assert event_starts_runs("workflow_dispatch", WORKFLOW_TOKEN)
    ci = load_workflow(PROJECT_ROOT / ".github" / "workflows" / "ci.yml")
    assert "workflow_dispatch" in ci["on"]
    dispatched = {"github": {"event_name": "workflow_dispatch", "ref": f"refs/heads/{branch}"}}
    assert [job_id for job_id, ci_job in ci["jobs"].items()
            if "needs" not in ci_job and condition_holds(ci_job.get("if"), dispatched,
                                                         {"failed": False})] == \
        ["lint-and-test"]
    assert not condition_holds(ci["jobs"]["model"]["if"], dispatched, {"failed": False})

    # A reviewer merges it (a person: the protection lets the merge through).
    merger = tmp_path / "merger"
    git(tmp_path, "clone", "--quiet", str(remote), str(merger))
    git(merger, "-c", "user.name=r", "-c", "user.email=r@example.com", "merge", "--quiet",
        "--no-ff", "-m", "Merge the promotion", f"origin/{branch}")
    git(merger, "push", "--quiet", "origin", "main")
    merge = git(merger, "rev-parse", "HEAD")
    assert push_fires(load_workflow(PROJECT_ROOT / ".github" / "workflows" / "production.yml"),
                      remote, before, merge)
    assert not push_fires(ci, remote, before, merge)
    settings = load_settings(merger / "mlops.toml", environ={})
    assert [desired_state.read(settings, name).model_version
            for name in ("staging", "production")] == ["1", "1"]
