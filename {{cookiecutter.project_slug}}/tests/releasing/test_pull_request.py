"""Promotion by pull request, end to end against a bare git remote and a local HTTP
server standing in for the GitHub / Azure DevOps REST API (real urllib, real git)."""
import dataclasses
from pathlib import Path

import pytest

from ml_service import desired_state
from ml_service.errors import MlopsError
from ml_service.release import Release
from ml_service.releasing import pull_request
from tests.helpers.hosting_api import azure_env, github_env, recording_api
from tests.helpers.project import git, push_to_new_remote

OVERLAY = "deploy/overlays/production/kustomization.yaml"
EVIDENCE = {"metrics": {"r2": 0.4512, "rmse": 53.21}, "staging_smoke_test": "passed",
            "gate_reason": "R2 0.451 >= 0.3; RMSE 53.2 beats the champion's 55.0 by 3.3 %",
            "production_version": "none"}


@pytest.fixture
def api():
    with recording_api() as server:
        yield server


@pytest.fixture
def checkout(project, tmp_path):
    """The project on main, tracking a bare remote's main, as CD checks it out."""
    return push_to_new_remote(project, tmp_path / "remote.git")


def release(settings):
    return Release(model_name=settings.model.name, model_version="7",
                   image=f"{settings.image.registry}/{settings.model.name.lower()}:7-0123abc",
                   image_digest="sha256:" + "7" * 64, context_digest="",
                   context_dir=Path("/nowhere"))


def test_github_pull_request_changes_only_the_production_overlay(
        project, settings, checkout, api):
    main_before = git(project, "rev-parse", "main")
    overlay_before = (project / OVERLAY).read_text()
    url, commit = pull_request.propose(settings, release(settings), EVIDENCE, github_env(api))

    assert url == "https://github.com/o/r/pull/7"
    (request,) = api.requests
    assert request["path"] == "/repos/owner/project/pulls"
    assert request["authorization"] == "Bearer job-token"
    branch = f"promote/{settings.model.name.lower()}-7"
    assert request["body"]["head"] == branch and request["body"]["base"] == "main"
    assert request["body"]["title"] == f"Promote {settings.model.name} version 7 to production"
    body = request["body"]["body"]
    for shown in ("| model version | 7 |", "sha256:" + "7" * 64, "r2 0.4512", "rmse 53.21",
                  EVIDENCE["gate_reason"], "| staging smoke test | passed |"):
        assert shown in body
    # The branch on the remote: one commit on top of main, changing the overlay only.
    assert git(checkout, "rev-parse", branch) == commit
    assert git(checkout, "diff", "--name-only", f"main...{branch}") == OVERLAY
    assert git(checkout, "rev-parse", "main") == main_before
    # The checkout is back on main, unchanged: production is not touched before the merge.
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(project, "rev-parse", "HEAD") == main_before
    assert (project / OVERLAY).read_text() == overlay_before
    merged = project.parent / "merged"
    git(project.parent, "clone", "--quiet", "--branch", branch, str(checkout), str(merged))
    on_branch = dataclasses.replace(settings, project_root=merged)
    assert desired_state.read(on_branch, "production").model_version == "7"


def test_azure_devops_pull_request_uses_the_rest_api(project, settings, checkout, api):
    url, _ = pull_request.propose(settings, release(settings), EVIDENCE, azure_env(api))
    (request,) = api.requests
    assert request["path"] == "/org/proj/_apis/git/repositories/repo-id/pullrequests" \
        "?api-version=7.1"
    assert request["authorization"] == "Bearer job-token"
    branch = f"promote/{settings.model.name.lower()}-7"
    assert request["body"]["sourceRefName"] == f"refs/heads/{branch}"
    assert request["body"]["targetRefName"] == "refs/heads/main"
    assert "| model version | 7 |" in request["body"]["description"]
    assert url.endswith("/org/proj/_git/project/pullrequest/7")


def test_azure_devops_names_with_spaces_are_quoted_in_the_url(project, settings, checkout, api):
    environ = {**azure_env(api), "SYSTEM_TEAMPROJECT": "Fabrikam Fiber",
               "BUILD_REPOSITORY_NAME": "scoring repo"}
    url, _ = pull_request.propose(settings, release(settings), EVIDENCE, environ)
    (request,) = api.requests
    assert request["path"] == ("/org/Fabrikam%20Fiber/_apis/git/repositories/repo-id/"
                               "pullrequests?api-version=7.1")
    assert url.endswith("/org/Fabrikam%20Fiber/_git/scoring%20repo/pullrequest/7")


def test_azure_pipelines_building_a_github_repository_does_not_call_azure_repos(
        project, settings, checkout, api):
    """BUILD_REPOSITORY_PROVIDER=GitHub: the Azure Repos API has no such repository (the
    call failed after the push); the branch is pushed and the user told what to do."""
    environ = {**azure_env(api), "BUILD_REPOSITORY_PROVIDER": "GitHub"}
    with pytest.raises(MlopsError, match="of a GitHub repository") as raised:
        pull_request.propose(settings, release(settings), EVIDENCE, environ)
    assert api.requests == []
    assert "promote/" in raised.value.fix and "on GitHub yourself" in raised.value.fix
    branch = pull_request.branch_name(settings, "7")
    assert git(checkout, "rev-parse", "--verify", f"refs/heads/{branch}")


def test_a_refused_request_says_which_permission(project, settings, checkout, api):
    api.answer = (403, {"message": "Resource not accessible by integration"})
    with pytest.raises(MlopsError, match="answered 403: .*not accessible") as raised:
        pull_request.propose(settings, release(settings), EVIDENCE, github_env(api))
    assert "pull-requests: write" in raised.value.fix


def test_outside_ci_the_branch_is_pushed_and_the_reason_given(
        project, settings, checkout):
    with pytest.raises(MlopsError, match="neither") as raised:
        pull_request.propose(settings, release(settings), EVIDENCE, {})
    assert "promote/" in raised.value.fix
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"


def test_no_upstream_is_refused_before_any_commit(project, settings):
    git(project, "init", "--quiet", "--initial-branch", "main")
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet",
        "-m", "init")
    head = git(project, "rev-parse", "HEAD")
    with pytest.raises(MlopsError, match="no upstream"):
        pull_request.propose(settings, release(settings), EVIDENCE, {})
    assert git(project, "rev-parse", "HEAD") == head
    assert git(project, "branch", "--list", "promote/*") == ""


@pytest.mark.parametrize("push", ["accepted", "refused"])
def test_the_user_s_uncommitted_edits_survive_a_promotion(project, settings, checkout, api,
                                                          push):
    """The branch is committed in a worktree of its own: edits to tracked files stay as
    they were, whether the remote takes the branch or refuses it."""
    if push == "refused":
        hook = checkout / "hooks" / "pre-receive"
        hook.write_text("#!/bin/sh\necho 'refused by policy' >&2\nexit 1\n")
        hook.chmod(0o755)
    edits = {"README.md": "my notes, not committed\n",
             "training/model.py": "# a half-written change\n"}
    for name, text in edits.items():
        (project / name).write_text(text)
    status_before = git(project, "status", "--porcelain")

    if push == "refused":
        with pytest.raises(MlopsError, match="refused by policy"):
            pull_request.propose(settings, release(settings), EVIDENCE, github_env(api))
    else:
        pull_request.propose(settings, release(settings), EVIDENCE, github_env(api))

    assert {name: (project / name).read_text() for name in edits} == edits
    assert git(project, "status", "--porcelain") == status_before
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(project, "worktree", "list", "--porcelain").count("worktree ") == 1
