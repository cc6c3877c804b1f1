"""The pipelines' own definitions under the platforms' queueing rules
(tests/helpers/platform_rules.py): which runs of several pushes, or of several CD runs
waiting for an environment, go ahead and which are cancelled."""
import pytest
import yaml

from tests.ci.test_harness import load_workflow
from tests.helpers.ci_expressions import render
from tests.helpers.platform_rules import ConcurrencyGroups, exclusive_lock
from tests.helpers.project import PROJECT_ROOT

GITHUB_CI = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"
AZURE_CD = PROJECT_ROOT / ".azure-pipelines" / "cd.yml"


def group_of(definition, contexts):
    return render(definition["group"], contexts, {"failed": False})


@pytest.mark.skipif(not GITHUB_CI.is_file(), reason="no .github/ in this project")
def test_every_push_to_main_gets_its_checks_and_the_newest_waiting_push_trains():
    """Three pushes to main while the first one's CI runs. A group holds one running and
    one pending run, so with one group for main the second push's run would be cancelled
    by the third's, and its commit never linted or tested. Each push's run must go ahead;
    of the trainings waiting in the model job's group, the newest one does."""
    ci = load_workflow(GITHUB_CI)
    runs, trainings = ConcurrencyGroups(), ConcurrencyGroups()
    for number in (1, 2, 3):
        contexts = {"github": {"event_name": "push", "ref": "refs/heads/main",
                               "sha": f"{number}" * 40}}
        runs.queue(group_of(ci["concurrency"], contexts), f"push {number}")
        trainings.queue(group_of(ci["jobs"]["model"]["concurrency"], contexts),
                        f"push {number}")
    assert runs.cancelled == []
    assert sorted(runs.running.values()) == ["push 1", "push 2", "push 3"]
    assert trainings.cancelled == ["push 2"]
    assert list(trainings.pending.values()) == ["push 3"]


@pytest.mark.skipif(not GITHUB_CI.is_file(), reason="no .github/ in this project")
def test_a_newer_push_to_a_pull_request_cancels_its_older_run():
    ci = load_workflow(GITHUB_CI)
    contexts = {"github": {"event_name": "pull_request", "ref": "refs/pull/4/merge",
                           "sha": "1" * 40}}
    newer = {"github": {**contexts["github"], "sha": "2" * 40}}
    assert group_of(ci["concurrency"], contexts) == group_of(ci["concurrency"], newer)
    assert render(ci["concurrency"]["cancel-in-progress"], newer, {"failed": False}) == "true"


@pytest.mark.skipif(not AZURE_CD.is_file(), reason="no .azure-pipelines/ in this project")
def test_of_the_cd_runs_waiting_for_an_environment_only_the_newest_deploys():
    """Runs for versions 1 and 2 wait for production's Exclusive lock (version 2 is on
    staging now). Version 1's promote would be refused (staging's record names 2): with
    the pipeline's lockBehavior it is cancelled instead of failing, and version 2 goes."""
    lock_behavior = yaml.safe_load(AZURE_CD.read_text())["lockBehavior"]
    assert exclusive_lock(lock_behavior, ["version 1", "version 2"]) == ["version 2"]
