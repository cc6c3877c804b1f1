"""Promotion by pull request: the approval is a reviewed merge, not an environment gate.

With `[production] promotion = "pr"`, promote writes production's desired state on a
branch of its own, pushes that branch and opens a pull request that changes only
deploy/overlays/production/kustomization.yaml. Merging it is the approval (branch
protection, CODEOWNERS: available on more plans than environment reviewers). What
rolls it out after the merge is the branch's normal path: Flux (gitops) or the
production workflow that deploys the desired state on a push to main (push).

The pull request is opened through the hosting service's REST API, the only network
call here, with the token CI gives its job:
- GitHub Actions: GITHUB_TOKEN (the job needs `pull-requests: write`),
  POST {GITHUB_API_URL}/repos/{GITHUB_REPOSITORY}/pulls;
- Azure Pipelines: System.AccessToken (mapped to SYSTEM_ACCESSTOKEN; the build
  service needs Contribute to pull requests), POST {SYSTEM_COLLECTIONURI}
  {SYSTEM_TEAMPROJECT}/_apis/git/repositories/{BUILD_REPOSITORY_ID}/pullrequests.
"""
import dataclasses
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from ml_service import desired_state, git, http_client
from ml_service.errors import MlopsError

TIMEOUT = 30
AZURE_DEVOPS_API_VERSION = "7.1"


def branch_name(settings, version):
    return f"promote/{settings.model.name.lower()}-{version}"


def describe(settings, release, evidence):
    """Title and body of the pull request: what is promoted and why it may be."""
    title = f"Promote {settings.model.name} version {release.model_version} to production"
    metrics = ", ".join(f"{name} {value:.4g}" for name, value in sorted(
        evidence["metrics"].items())) or "none recorded"
    body = "\n".join([
        f"Merging this pull request approves and rolls out **{settings.model.name} "
        f"version {release.model_version}** to production.",
        "",
        "| | |",
        "|---|---|",
        f"| model version | {release.model_version} |",
        f"| image | `{release.image}` |",
        f"| image digest | `{release.image_digest or 'not pushed'}` |",
        f"| metrics (held-out data) | {metrics} |",
        f"| gate | {evidence['gate_reason'] or 'not recorded'} |",
        f"| staging smoke test | {evidence['staging_smoke_test']} |",
        f"| production now | version {evidence['production_version']} |",
        "",
        "It changes only `deploy/overlays/production/kustomization.yaml`. After the merge "
        "the production deployment applies it, smoke-tests it and, if that fails, rolls "
        "production back with another commit.",
    ])
    return title, body


def commit_on_branch(settings, release, branch, title):
    """Commit `release` as production's desired state on a new `branch` from HEAD and
    push the branch; return (the commit, the upstream branch the pull request targets).

    The commit is made in a git worktree of its own, a temporary folder: the user's
    checkout (its branch, index and uncommitted edits, the overlay's included) is never
    switched or rewritten, whatever fails (a commit hook, a refused push)."""
    root = settings.project_root
    upstream = git.run(root, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}")
    if upstream.returncode != 0:
        raise MlopsError("The current branch has no upstream to open the pull request "
                         "against.", "Check out main tracking the remote: `git fetch origin "
                         "main && git checkout -B main --track origin/main`.")
    remote, _, base = upstream.stdout.strip().partition("/")
    # The project may be a folder of a larger repository: the same folder in the worktree.
    prefix = git.run(root, "rev-parse", "--show-prefix", check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="mlops-promote-") as scratch:
        worktree = Path(scratch) / "checkout"
        git.run(root, "worktree", "add", "--quiet", "--force", "-B", branch, str(worktree),
                "HEAD", check=True)
        try:
            on_branch = dataclasses.replace(settings, project_root=worktree / prefix)
            path = desired_state.write(on_branch, "production",
                                       desired_state.DesiredState.of_release(release))
            commit = desired_state.commit(on_branch, path, title)
            git.run(worktree, "push", "--quiet", "--force", remote,
                    f"HEAD:refs/heads/{branch}", check=True)
        finally:
            git.run(root, "worktree", "remove", "--force", str(worktree))
    return commit, base


def _request(url, token, payload, scheme="Bearer"):
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Authorization": f"{scheme} {token}", "Content-Type": "application/json",
                 "Accept": "application/json", "User-Agent": "ml_service"})
    try:
        with http_client.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        detail = " ".join(error.read().decode(errors="replace").split())[:400]
        raise MlopsError(f"Opening the pull request failed: POST {url} answered "
                         f"{error.code}: {detail}",
                         "GitHub: give the job `permissions: pull-requests: write` and allow "
                         "Actions to create pull requests (Settings > Actions > General); "
                         "Azure DevOps: give the build service Contribute to pull requests "
                         "and map SYSTEM_ACCESSTOKEN: $(System.AccessToken).") from None
    except OSError as error:
        raise MlopsError(f"Opening the pull request failed: {url}: {error}",
                         "Check the connection to the hosting service and run again.") from None


def open_pull_request(head, base, title, body, environ=None):
    """Open the pull request head -> base where CI runs; return its web address."""
    environ = os.environ if environ is None else environ
    if environ.get("GITHUB_ACTIONS") == "true":
        token = environ.get("GITHUB_TOKEN")
        if not token:
            raise MlopsError("GITHUB_TOKEN is not set, so no pull request can be opened.",
                             "Pass the job token to the step as GITHUB_TOKEN (github.token).")
        api = environ.get("GITHUB_API_URL", "https://api.github.com")
        answer = _request(f"{api}/repos/{quote(environ['GITHUB_REPOSITORY'])}/pulls", token,
                          {"title": title, "head": head, "base": base, "body": body})
        return answer.get("html_url", "")
    if environ.get("TF_BUILD") == "True":
        # The job's token opens pull requests in Azure Repos only (provider TfsGit).
        provider = environ.get("BUILD_REPOSITORY_PROVIDER", "TfsGit")
        if provider != "TfsGit":
            raise MlopsError(f"This Azure Pipelines build is of a {provider} repository; "
                             "its job token opens pull requests in Azure Repos only.",
                             f"The branch was pushed: open the pull request {head} -> {base} "
                             f"on {provider} yourself (merging it is the approval).")
        token = environ.get("SYSTEM_ACCESSTOKEN")
        if not token:
            raise MlopsError("SYSTEM_ACCESSTOKEN is not set, so no pull request can be "
                             "opened.", "Map it in the step: `env: SYSTEM_ACCESSTOKEN: "
                             "$(System.AccessToken)`.")
        # Names go into the URL path quoted: a project or repository name may hold spaces.
        project = f"{environ['SYSTEM_COLLECTIONURI'].rstrip('/')}/" \
                  f"{quote(environ['SYSTEM_TEAMPROJECT'], safe='')}"
        url = (f"{project}/_apis/git/repositories/"
               f"{quote(environ['BUILD_REPOSITORY_ID'], safe='')}/pullrequests"
               f"?api-version={AZURE_DEVOPS_API_VERSION}")
        answer = _request(url, token, {"sourceRefName": f"refs/heads/{head}",
                                       "targetRefName": f"refs/heads/{base}",
                                       "title": title, "description": body})
        return (f"{project}/_git/{quote(environ.get('BUILD_REPOSITORY_NAME', ''), safe='')}"
                f"/pullrequest/{answer.get('pullRequestId', '')}")
    raise MlopsError("promotion = \"pr\" opens the pull request from CI (GitHub Actions or "
                     "Azure Pipelines); this is neither.",
                     f"The branch was pushed: open the pull request yourself, or promote "
                     f"with `MLOPS_PRODUCTION_PROMOTION=commit`. ({head} -> {base})")


def propose(settings, release, evidence, environ=None):
    """Push a branch with `release` as production's desired state and open the pull
    request; return (web address, commit). Production itself is not touched."""
    title, body = describe(settings, release, evidence)
    branch = branch_name(settings, release.model_version)
    commit, base = commit_on_branch(settings, release, branch, title)
    return open_pull_request(branch, base, title, body, environ), commit
