"""The Azure Pipelines rollout pipeline (.azure-pipelines/production.yml), played against a
bare remote with tests/helpers/azure_pipelines.py, under the platform's rules
(tests/helpers/platform_rules.py): its paths trigger starts it for every push to main
that changes the production overlay, the pipelines' own pushes included; the agent
checks out the run's commit (Build.SourceVersion, depth 2, detached) while main may
have moved since. A YAML pipeline also runs once when it is created, on main's tip: on
a new project, before anything was promoted."""
import shutil

import pytest
import yaml

from ml_service import desired_state
from ml_service.config import load_settings
from tests.helpers.azure_pipelines import AzureJob
from tests.helpers.ci_checkout import agent_checkout
from tests.helpers.platform_rules import push_fires
from tests.helpers.project import PROJECT_ROOT, git

PIPELINE = PROJECT_ROOT / ".azure-pipelines" / "production.yml"
OVERLAY = "deploy/overlays/production/kustomization.yaml"

pytestmark = pytest.mark.skipif(not PIPELINE.is_file(),
                                reason="no .azure-pipelines/ in this project")


def play(remote, tmp_path, migrated_database, sha):
    """Play the rollout job for a run of `sha`, in a fresh agent folder."""
    workspace = tmp_path / "agent"
    agent_checkout(remote, workspace, sha, depth=2)
    (workspace / "mlruns").mkdir()
    shutil.copy(migrated_database, workspace / "mlruns" / "mlflow.db")
    return AzureJob(PIPELINE, workspace,
                    {"Build.SourceVersion": sha, "Build.SourceBranch": "refs/heads/main",
                     "MLOPS_PIPELINE_BACKEND": "local", "MLOPS_PRODUCTION_KIND": "local"},
                    {"System.AccessToken": "job-token",
                     "PRODUCTION_SCORING_KEY": "rollout-key"}).run()


def promote(source, version, author):
    """Commit production's desired state naming `version` as `author` and push it."""
    settings = load_settings(source / "mlops.toml", environ={})
    path = desired_state.write(settings, "production", desired_state.DesiredState(
        model_version=version, image=f"model:{version}", image_digest=""))
    git(source, "add", str(path))
    git(source, "-c", f"user.name={author}", "-c", "user.email=a@example.com", "commit",
        "--quiet", "-m", f"Promote version {version} to production")
    git(source, "push", "--quiet", "origin", "main")
    return git(source, "rev-parse", "HEAD")


def test_the_first_run_rolls_out_nothing_and_reverts_nothing(repository, tmp_path,
                                                             migrated_database):
    source, remote = repository
    root = git(remote, "rev-parse", "main")
    job = play(remote, tmp_path, migrated_database, root)
    assert job.records["Roll out the desired state"] == "ran", job.records
    assert job.variables["rollout.skipped"] == "true"
    assert job.records["Smoke test production"] == "skipped by its condition"
    assert job.records["Revert the promotion"] == "skipped by its condition"
    assert not job.failed
    assert git(remote, "rev-parse", "main") == root


def test_a_failed_rollout_reverts_the_triggering_commit_on_main_s_new_tip(
        repository, tmp_path, migrated_database):
    source, remote = repository
    root = git(remote, "rev-parse", "main")
    promotion = promote(source, "7", "A reviewer")
    assert push_fires(yaml.safe_load(PIPELINE.read_text()), remote, root, promotion)
    (source / "README.md").write_text("A teammate's edit\n")
    git(source, "commit", "--quiet", "-am", "Unrelated change")
    git(source, "push", "--quiet", "origin", "main")
    unrelated = git(source, "rev-parse", "HEAD")

    job = play(remote, tmp_path, migrated_database, promotion)

    assert job.records["Roll out the desired state"].startswith("FAILED")
    assert job.records["Revert the promotion"] == "ran", job.records
    subject, parent = git(remote, "log", "-1", "--format=%s|%P", "main").split("|")
    assert subject == 'Revert "Promote version 7 to production"'
    assert parent == unrelated
    assert git(remote, "show", "main:README.md") == "A teammate's edit"
    assert git(remote, "show", f"main:{OVERLAY}") == git(remote, "show", f"{root}:{OVERLAY}")


def test_a_commit_a_pipeline_made_is_not_rolled_out_again(repository, tmp_path,
                                                          migrated_database):
    """CD's promotion commit (commit mode), pushed with the job's token, starts this
    pipeline (Azure Pipelines has no rule against that); CD deployed it already."""
    source, remote = repository
    root = git(remote, "rev-parse", "main")
    promotion = promote(source, "7", "Azure Pipelines")
    assert push_fires(yaml.safe_load(PIPELINE.read_text()), remote, root, promotion)

    job = play(remote, tmp_path, migrated_database, promotion)

    assert job.records["Who made the commit"] == "ran"
    assert [name for name, record in job.records.items() if record == "ran"] == \
        ["Who made the commit"], job.records
    assert not job.failed
    assert git(remote, "rev-parse", "main") == promotion
