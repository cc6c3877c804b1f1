"""The production rollout workflow (.github/workflows/production.yml) under GitHub's own
event rules, played against a bare remote with tests/ci/test_harness.py's runner; and
CD's refusal of a run dispatched from a branch other than main.

Modelled here, as GitHub documents them:
- a push that creates a branch (the first push of a new repository) has
  `github.event.before` all zeros, and a `paths` filter then counts every file of the
  pushed commit as changed, so the rollout fires on a project that promoted nothing;
- the job checks out the triggering commit (`github.sha`) as actions/checkout does
  (fetch by id, depth 2, detached), while main may have moved on since the push.
"""
import os
import subprocess

import pytest

from ml_service import desired_state
from ml_service.config import load_settings
from tests.ci.test_harness import Harness, load_workflow, what_happened
from tests.helpers.hosting_api import github_env, recording_api
from tests.helpers.platform_rules import (NEW_BRANCH, WORKFLOW_TOKEN, event_starts_runs,
                                          protect_main, push_fires)
from tests.helpers.ci_scenarios import promotion_then_unrelated_push, rollout_workspace
from tests.helpers.project import PROJECT_ROOT, git

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "production.yml"

pytestmark = pytest.mark.skipif(not WORKFLOW.is_file(),
                                reason="no .github/ in this project (ci_platform=azure-devops)")


def play_rollout(remote, tmp_path, migrated_database, sha, before, environ=None):
    """Play the rollout job for a push of `sha` (after `before`) in a fresh runner, with
    `environ` added to the runner's environment."""
    checkout, temp = tmp_path / "runner" / "checkout", tmp_path / "runner" / "temp"
    rollout_workspace(remote, checkout, sha, migrated_database)
    temp.mkdir()
    workflow = load_workflow(WORKFLOW)
    harness = Harness(checkout, temp, {"MLOPS_PRODUCTION_KIND": "local", **(environ or {})})
    env = harness.base_env()
    contexts = {"github": {"event_name": "push", "ref": "refs/heads/main", "sha": sha,
                           "repository": "example/project", "token": "job-token",
                           "event": {"before": before, "after": sha}},
                "vars": {"MLOPS_PRODUCTION_KIND": "local"}, "inputs": {}, "needs": {},
                "secrets": {"PRODUCTION_SCORING_KEY": "rollout-key"},
                "runner": {"os": "Linux", "temp": str(temp)}}
    contexts["env"] = {"MLOPS_PRODUCTION_KIND": "local", "MLOPS_PIPELINE_BACKEND": "local"}
    harness.needs["rollout"] = harness.run_job("rollout", workflow["jobs"]["rollout"],
                                               contexts, env)
    return harness


def test_the_first_push_rolls_out_nothing_and_reverts_nothing(repository, tmp_path,
                                                              migrated_database):
    source, remote = repository
    root = git(remote, "rev-parse", "main")
    assert push_fires(load_workflow(WORKFLOW), remote, NEW_BRANCH, root)

    harness = play_rollout(remote, tmp_path, migrated_database, root, NEW_BRANCH)

    happened = what_happened(harness)
    assert happened[("rollout", "Roll out the desired state")] == "ran", happened
    assert happened[("rollout", "Smoke test production")] == "skipped by its if"
    assert happened[("rollout", "Revert the promotion")] == "skipped by its if"
    assert harness.needs["rollout"]["result"] == "success"
    assert git(remote, "rev-parse", "main") == root, "the first push was reverted"
    assert "production rollout skipped" in "".join(harness.summary)


def test_a_failed_rollout_reverts_the_triggering_commit_on_main_s_new_tip(
        repository, tmp_path, migrated_database):
    """The merged desired state names a version production cannot run; before the job
    starts, someone pushes an unrelated commit. The revert undoes the promotion, on top
    of that commit, which stays."""
    source, remote = repository
    root = git(remote, "rev-parse", "main")
    promotion, unrelated = promotion_then_unrelated_push(source)
    assert push_fires(load_workflow(WORKFLOW), remote, root, promotion)

    harness = play_rollout(remote, tmp_path, migrated_database, promotion, root)

    happened = what_happened(harness)
    assert happened[("rollout", "Roll out the desired state")].startswith("FAILED")
    assert happened[("rollout", "Revert the promotion")] == "ran", happened
    assert harness.needs["rollout"]["result"] == "failure"
    subject, parent = git(remote, "log", "-1", "--format=%s|%P", "main").split("|")
    assert subject == 'Revert "Promote version 7 to production"'
    assert parent == unrelated
    assert git(remote, "show", "main:README.md") == "A teammate's edit"
    assert git(remote, "show", "main:deploy/overlays/production/kustomization.yaml") == \
        git(remote, "show", f"{root}:deploy/overlays/production/kustomization.yaml")


def promote_and_merge(source, version, branch):
    """A promotion pull request of `version`, merged by a person (--no-ff, as GitHub's
    merge button does) and pushed; return the merge commit."""
    settings = load_settings(source / "mlops.toml", environ={})
    git(source, "checkout", "--quiet", "-b", branch)
    path = desired_state.write(settings, "production", desired_state.DesiredState(
        model_version=version, image=f"model:{version}", image_digest=""))
    desired_state.commit(settings, path, f"Promote version {version} to production")
    git(source, "checkout", "--quiet", "main")
    git(source, "merge", "--quiet", "--no-ff", "-m", f"Merge pull request #7 from {branch}",
        branch)
    git(source, "push", "--quiet", "origin", "main")
    return git(source, "rev-parse", "HEAD")


@pytest.mark.slow
def test_with_a_protected_main_a_failed_rollout_proposes_the_revert_of_the_merge(
        repository, tmp_path, migrated_database):
    """promotion = "pr", main takes pull requests only: the merged promotion fails to
    roll out, main moved meanwhile. The revert of exactly the merge, on main's new tip,
    is pushed as a branch and proposed as a pull request, with CI started on it (the
    workflow token's pull request would start none); main itself is not pushed to."""
    source, remote = repository
    root = git(remote, "rev-parse", "main")
    merge = promote_and_merge(source, "7", "promote/model-7")
    protect_main(remote)
    (source / "README.md").write_text("A teammate's edit\n")
    git(source, "commit", "--quiet", "-am", "Unrelated change")
    git(source, "push", "--quiet", "origin", "main")
    unrelated = git(source, "rev-parse", "HEAD")

    with recording_api() as api:
        harness = play_rollout(remote, tmp_path, migrated_database, merge, root, {
            "MLOPS_PRODUCTION_PROMOTION": "pr", **github_env(api),
            "GITHUB_REPOSITORY": "example/project"})

    happened = what_happened(harness)
    assert happened[("rollout", "Roll out the desired state")].startswith("FAILED")
    revert = happened[("rollout", "Revert the promotion")]
    assert "merge https://github.com/o/r/pull/7 to roll it back" in revert, happened
    assert git(remote, "rev-parse", "main") == unrelated, "main was pushed to"
    branch = f"revert/{merge[:12]}"
    subject, parent = git(remote, "log", "-1", "--format=%s|%P", branch).split("|")
    assert subject == 'Revert "Merge pull request #7 from promote/model-7"'
    assert parent == unrelated
    assert git(remote, "show", f"{branch}:deploy/overlays/production/kustomization.yaml") == \
        git(remote, "show", f"{root}:deploy/overlays/production/kustomization.yaml")
    assert [(request["path"], request["body"].get("head") or request["body"].get("ref"))
            for request in api.requests] == [
        ("/repos/example/project/pulls", branch),
        ("/repos/example/project/actions/workflows/ci.yml/dispatches", branch)]
    assert api.requests[0]["body"]["base"] == "main"
    assert event_starts_runs("pull_request", WORKFLOW_TOKEN) is False
    assert event_starts_runs("workflow_dispatch", WORKFLOW_TOKEN) is True
    assert "workflow_dispatch" in load_workflow(PROJECT_ROOT / ".github" / "workflows"
                                                / "ci.yml")["on"]


CD_WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "cd.yml"


@pytest.mark.parametrize("ref, refused", [("refs/heads/feature", True),
                                          ("refs/heads/main", False)])
def test_cd_dispatched_by_hand_runs_from_main_only(tmp_path, ref, refused):
    """CD commits the desired state to main: dispatched from another branch, it would
    push that branch's commits to main too. The release step refuses it and says how."""
    step = next(step for step in load_workflow(CD_WORKFLOW)["jobs"]["release"]["steps"]
                if step.get("id") == "version")
    output = tmp_path / "output"
    output.touch()
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
        env={"PATH": os.environ["PATH"], "GITHUB_EVENT_NAME": "workflow_dispatch",
             "GITHUB_REF": ref, "INPUT_VERSION": "4", "GITHUB_OUTPUT": str(output),
             "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")})
    if refused:
        assert result.returncode == 1
        assert "CD deploys from main only" in result.stdout
        assert output.read_text() == ""
    else:
        assert result.returncode == 0, result.stderr
        assert output.read_text() == "model_version=4\n"
