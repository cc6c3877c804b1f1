"""The production rollout workflow (.github/workflows/production.yml) run by act, a
maintained GitHub Actions runner, from the real workflow file: GitHub's expression and
step semantics as act implements them, not as tests/ci/test_harness.py models them.
Which pushes start the workflow (the `paths` filter on a branch-creating push) stays
with tests/helpers/platform_rules.py; the remote actions are local stand-ins
(tests/helpers/act.py)."""

import pytest

from tests.helpers.act import run_job
from tests.helpers.platform_rules import NEW_BRANCH, push_fires
from tests.ci.test_harness import load_workflow
from tests.helpers.ci_scenarios import promotion_then_unrelated_push, rollout_workspace
from tests.helpers.project import PROJECT_ROOT, git

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "production.yml"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not WORKFLOW.is_file(),
                                 reason="no .github/ in this project (ci_platform=azure-devops)")]


def roll_out(remote, tmp_path, migrated_database, sha, before):
    """act runs the rollout job for the push of `sha` (after `before`) to main."""
    workspace = rollout_workspace(remote, tmp_path / "runner" / "workspace", sha,
                                  migrated_database)
    event = {"ref": "refs/heads/main", "before": before, "after": sha,
             "repository": {"full_name": "example/project", "default_branch": "main"}}
    return run_job(WORKFLOW, "rollout", workspace, event, tmp_path / "act", remote,
                   # The edge: this machine's MLflow store instead of Azure ML's.
                   env={"MLOPS_PIPELINE_BACKEND": "local"},
                   variables={"MLOPS_PRODUCTION_KIND": "local",
                              "AZURE_CLIENT_ID": "client", "AZURE_TENANT_ID": "tenant",
                              "AZURE_SUBSCRIPTION_ID": "subscription"},
                   secrets={"PRODUCTION_SCORING_KEY": "rollout-key"})


def test_the_first_push_rolls_out_nothing_and_reverts_nothing(repository, tmp_path,
                                                              migrated_database):
    source, remote = repository
    root = git(remote, "rev-parse", "main")
    assert push_fires(load_workflow(WORKFLOW), remote, NEW_BRANCH, root)

    run = roll_out(remote, tmp_path, migrated_database, root, NEW_BRANCH)

    assert run.returncode == 0, run.log[-3000:]
    assert "stand-in azure/login: OIDC, client client" in run.log
    assert run.step("Roll out the desired state") == "success"
    assert run.step("Smoke test production") == "not run"
    assert run.step("Revert the promotion") == "not run"
    assert "### deploy" in run.summary
    assert "deploy: production rollout skipped" in run.log
    assert git(remote, "rev-parse", "main") == root, "the first push was reverted"


def test_a_failed_rollout_reverts_the_triggering_commit_on_main_s_new_tip(
        repository, tmp_path, migrated_database):
    """The merged desired state names a version production cannot run; before the job
    starts, someone pushes an unrelated commit: the revert undoes the promotion on top
    of it."""
    source, remote = repository
    root = git(remote, "rev-parse", "main")
    promotion, unrelated = promotion_then_unrelated_push(source)

    run = roll_out(remote, tmp_path, migrated_database, promotion, root)

    assert run.returncode != 0
    assert run.step("Roll out the desired state") == "failure", run.log[-3000:]
    assert run.step("Revert the promotion") == "success", run.log[-3000:]
    subject, parent = git(remote, "log", "-1", "--format=%s|%P", "main").split("|")
    assert subject == 'Revert "Promote version 7 to production"'
    assert parent == unrelated
    assert git(remote, "show", "main:README.md") == "A teammate's edit"
