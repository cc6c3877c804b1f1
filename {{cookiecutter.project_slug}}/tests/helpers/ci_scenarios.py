"""Histories of a repository the CI tests play their workflows on (kept out of
tests/helpers/project.py, which most modules import: the file names here would make
every module look option-dependent to the template's test selection)."""
import shutil

from ml_service import desired_state
from ml_service.config import load_settings
from tests.helpers.ci_checkout import actions_checkout_sha
from tests.helpers.project import git


def promotion_then_unrelated_push(source, version="7"):
    """In `source`, commit production's desired state naming `version` (an image no
    production can run) and push it, then a teammate's unrelated commit to README.md,
    pushed too: main moved on after the promotion. Return (promotion, unrelated)."""
    settings = load_settings(source / "mlops.toml", environ={})
    path = desired_state.write(settings, "production", desired_state.DesiredState(
        model_version=version, image=f"model:{version}", image_digest=""))
    promotion = desired_state.commit(settings, path, f"Promote version {version} to production")
    git(source, "push", "--quiet", "origin", "main")
    (source / "README.md").write_text("A teammate's edit\n")
    git(source, "commit", "--quiet", "-am", "Unrelated change")
    git(source, "push", "--quiet", "origin", "main")
    return promotion, git(source, "rev-parse", "HEAD")


def rollout_workspace(remote, workspace, sha, database):
    """The rollout job's checkout of `sha` (actions/checkout by id, depth 2) with the
    test's MLflow store (`database`) in its mlruns/: the local stand-in for Azure ML's."""
    actions_checkout_sha(remote, workspace, sha, depth=2)
    (workspace / "mlruns").mkdir()
    shutil.copy(database, workspace / "mlruns" / "mlflow.db")
    return workspace
