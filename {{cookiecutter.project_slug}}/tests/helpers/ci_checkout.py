"""How each CI platform checks a repository out, replayed with git against a remote
(a local bare repository in tests), so the jobs' own git lines run as on a runner."""
from tests.helpers.project import git


def agent_checkout(remote, workspace, sha=None, depth=1):
    """An Azure Pipelines agent's `checkout: self` of the run's commit `sha` (main's tip
    if not given; `fetchDepth`, 1 by default): the commit fetched by id and checked out
    detached, with no local branch."""
    sha = sha or git(remote, "rev-parse", "main")
    workspace.mkdir()
    git(workspace, "init", "--quiet")
    git(workspace, "remote", "add", "origin", f"file://{remote}")
    git(workspace, "fetch", "--quiet", "--force", "--tags", "--prune", f"--depth={depth}",
        "origin", f"+{sha}:refs/remotes/origin/{sha}")
    git(workspace, "checkout", "--quiet", "--force", f"refs/remotes/origin/{sha}")


def actions_checkout(remote, workspace):
    """actions/checkout with `ref: main` and the default fetch-depth 1: main fetched
    into origin/main, then `git checkout -B main refs/remotes/origin/main`."""
    workspace.mkdir()
    git(workspace, "init", "--quiet")
    git(workspace, "remote", "add", "origin", f"file://{remote}")
    git(workspace, "fetch", "--quiet", "--no-tags", "--prune", "--depth=1", "origin",
        "+refs/heads/main*:refs/remotes/origin/main*")
    git(workspace, "checkout", "--quiet", "--force", "-B", "main", "refs/remotes/origin/main")


def actions_checkout_sha(remote, workspace, sha, depth=1):
    """actions/checkout with `ref: <a commit id>`: that commit fetched by id, detached."""
    workspace.mkdir(parents=True)
    git(workspace, "init", "--quiet")
    git(workspace, "remote", "add", "origin", f"file://{remote}")
    git(workspace, "fetch", "--quiet", "--no-tags", f"--depth={depth}", "origin", sha)
    git(workspace, "checkout", "--quiet", "--force", sha)
