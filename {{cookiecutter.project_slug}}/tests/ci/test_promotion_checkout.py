"""The production job's git, replayed: can promote push its desired-state commit?

Each CI platform checks the repository out its own way; the production job then runs
its own git lines (read from the pipeline file here, never copied) and promote pushes
the commit to the branch's upstream, which is where Flux reads. A local bare
repository stands in for the remote, and a commit pushed to it after the checkout
plays the main that moved while the approval was pending.

- Azure Pipelines: the agent fetches the one commit (shallow) and checks it out
  detached, with no local branch and no origin/main.
- GitHub Actions: actions/checkout with `ref: main` fetches refs/heads/main into
  origin/main (depth 1) and runs `git checkout -B main refs/remotes/origin/main`.
"""
import subprocess

import pytest
import yaml

from ml_service import desired_state
from ml_service.config import load_settings
from ml_service.targets import aks
from tests.ci.test_definitions import step_lists
from tests.helpers.azure_fakes import azure_settings
from tests.helpers.ci_checkout import actions_checkout, agent_checkout
from tests.helpers.project import PROJECT_ROOT, git, push_to_new_remote

AZURE_CD = PROJECT_ROOT / ".azure-pipelines" / "cd.yml"
GITHUB_CD = PROJECT_ROOT / ".github" / "workflows" / "cd.yml"


def bash(script, cwd):
    result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                            cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{script}\nfailed:\n{result.stdout}{result.stderr}"


@pytest.fixture
def remote(project, tmp_path):
    """A bare repository holding this project on main."""
    return push_to_new_remote(project, tmp_path / "remote.git")


def someone_pushes(remote, tmp_path, name):
    """Another commit lands on the remote's main (e.g. while the approval waited)."""
    other = tmp_path / f"other-{name}"
    git(tmp_path, "clone", "--quiet", str(remote), str(other))
    (other / f"{name}.md").write_text(f"{name}\n")
    git(other, "add", f"{name}.md")
    git(other, "-c", "user.name=o", "-c", "user.email=o@example.com", "commit", "--quiet",
        "-m", name)
    git(other, "push", "--quiet", "origin", "main")


def production_steps_azure():
    cd = yaml.safe_load(AZURE_CD.read_text())
    return [step for stage in cd["stages"] for job in stage["jobs"]
            if job.get("environment") == "production"
            for steps in step_lists(job) for step in steps]


def production_steps_github():
    return yaml.safe_load(GITHUB_CD.read_text())["jobs"]["production"]["steps"]


def git_scripts(steps, key):
    """The production job's unconditional scripts that only run git (checkout,
    identity)."""
    scripts = [step[key] for step in steps if key in step and not (
        "if" in step or "condition" in step) and all(
        line.split()[0] in ("git", "set") for line in step[key].splitlines() if line.strip())]
    assert scripts, "the production job has no git-only step"
    return scripts


def commit_desired_state(workspace):
    """What promote does in gitops mode before pushing: commit the desired state; return
    the AKS target that pushes it."""
    settings = azure_settings(load_settings(workspace / "mlops.toml", environ={}),
                              production={"kind": "aks", "mode": "gitops"})
    state = desired_state.read(settings, "production")
    path = desired_state.write(settings, "production", desired_state.DesiredState(
        model_version="7", image=state.image.rpartition(":")[0] + ":7-abc",
        image_digest="sha256:" + "7" * 64))
    desired_state.commit(settings, path, "Promote version 7")
    return aks.AksTarget("production", settings, environ={})


@pytest.mark.parametrize("platform", ["azure", "github"])
def test_production_job_git_lets_promote_push_on_top_of_a_moved_main(
        platform, remote, tmp_path):
    definition = AZURE_CD if platform == "azure" else GITHUB_CD
    if not definition.is_file():
        pytest.skip(f"no {definition.name} for {platform} in this project")
    workspace = tmp_path / "agent"
    someone_pushes(remote, tmp_path, "before-checkout")
    (agent_checkout if platform == "azure" else actions_checkout)(remote, workspace)
    someone_pushes(remote, tmp_path, "while-approval-waited")
    steps = production_steps_azure() if platform == "azure" else production_steps_github()
    for script in git_scripts(steps, "script" if platform == "azure" else "run"):
        bash(script, workspace)
    someone_pushes(remote, tmp_path, "during-promote")

    target = commit_desired_state(workspace)
    pushed = target.push_desired_state()

    log = git(remote, "log", "--format=%s", "main").splitlines()
    assert log[:4] == ["Promote version 7", "during-promote", "while-approval-waited",
                       "before-checkout"]
    assert git(remote, "rev-parse", "main") == pushed == git(workspace, "rev-parse", "HEAD")
    assert git(workspace, "log", "-1", "--format=%an") == (
        "Azure Pipelines" if platform == "azure" else "github-actions[bot]")


def test_a_detached_agent_checkout_without_the_fix_has_no_upstream(remote, tmp_path):
    """The failure the replay guards against: `git checkout -B main FETCH_HEAD` (the old
    line) leaves main without an upstream, and promote cannot push."""
    workspace = tmp_path / "agent"
    agent_checkout(remote, workspace)
    bash("git fetch --quiet origin main && git checkout --quiet -B main FETCH_HEAD", workspace)
    target = commit_desired_state(workspace)
    with pytest.raises(aks.MlopsError, match="no upstream") as raised:
        target.push_desired_state()
    assert "--track origin/main" in raised.value.fix
