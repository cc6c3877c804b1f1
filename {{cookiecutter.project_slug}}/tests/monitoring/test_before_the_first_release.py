"""Monitoring before anything is deployed (a new project's daily schedule): no verdict,
no error, and drift found on one environment is still reported when the other's check
failed."""
import pytest

from ml_service.monitoring import check
from tests.ci.test_harness import load_workflow
from tests.helpers.ci_expressions import condition_holds
from tests.helpers.project import PROJECT_ROOT

MONITOR_WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "monitor.yml"


@pytest.mark.parametrize("target", ["staging", "production"])
def test_nothing_deployed_is_no_verdict_and_exit_0(settings, target, capsys):
    assert check.monitor(settings, target) == 0
    assert f"nothing deployed to {target}" in capsys.readouterr().out


@pytest.mark.skipif(not MONITOR_WORKFLOW.is_file(), reason="no .github/ in this project")
def test_staging_drift_opens_the_issue_when_the_production_check_failed():
    condition = load_workflow(MONITOR_WORKFLOW)["jobs"]["open-issue"]["if"]
    needs = {"monitor": {"result": "failure",
                         "outputs": {"staging_drift": "yes", "production_drift": ""}}}
    assert condition_holds(condition, {"needs": needs}, {"failed": True})
    needs["monitor"]["outputs"]["staging_drift"] = "no"
    assert not condition_holds(condition, {"needs": needs}, {"failed": True})
