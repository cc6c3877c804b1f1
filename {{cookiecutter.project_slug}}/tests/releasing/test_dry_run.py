"""--dry-run of deploy, promote and rollback with the Azure ML backend, signed in nowhere.

The CLI runs as CI runs it, with an Azure sign-in that cannot succeed (only the
environment credential, unconfigured): a plan that tried to read the registry would
fail. The desired states in git are the only input, and must stay as they are.
"""
import pytest

from ml_service import desired_state
from ml_service.config import load_settings
from tests.helpers.project import git

IMAGE = "diabetesmlopsacr.azurecr.io/diabetes-mlops-model"
DIGEST = "sha256:" + "3" * 64


@pytest.fixture
def signed_out(monkeypatch):
    for variable in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                     "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME"):
        monkeypatch.delenv(variable, raising=False)
    return {"AZURE_TOKEN_CREDENTIALS": "EnvironmentCredential"}


@pytest.fixture
def released(project):
    """Staging runs version 3, production version 2, committed."""
    settings = load_settings(project / "mlops.toml", environ={})
    for target, version in (("staging", "3"), ("production", "2")):
        desired_state.write(settings, target, desired_state.DesiredState(
            version, f"{IMAGE}:{version}-0123abc", DIGEST if version == "3" else ""))
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")
    return project


def run_dry(run_cli, signed_out, *args, **env):
    result = run_cli("--backend", "azureml", "--dry-run", *args, **signed_out, **env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_deploy_plans_with_placeholders_for_the_registry(run_cli, released, signed_out):
    text = run_dry(run_cli, signed_out, "deploy", "--target", "staging", "--model-version",
                   "4", MLOPS_STAGING_KIND="aci")
    assert "dry run: nothing is sent to Azure" in text
    assert "<image of version 4: read from the Azure ML registry at run time>" in text


def test_deploy_of_a_version_in_git_plans_its_image_from_git(run_cli, released, signed_out):
    text = run_dry(run_cli, signed_out, "deploy", "--target", "staging",
                   MLOPS_STAGING_KIND="aci")
    assert f"{IMAGE}@{DIGEST}" in text


def test_promote_plans_without_approval_or_sign_in(run_cli, released, signed_out):
    text = run_dry(run_cli, signed_out, "promote")
    assert "deploy/overlays/production/kustomization.yaml: version 2 -> 3" in text
    assert "smoke_test.staging=passed on version 3 (now: <tag smoke_test.staging" in text
    assert "then           deploys it and smoke-tests production; if that fails, rolls back " \
           "to 2" in text
    assert git(released, "status", "--porcelain") == ""


def test_rollback_plans_with_a_placeholder_for_the_previous_version(run_cli, released,
                                                                    signed_out):
    text = run_dry(run_cli, signed_out, "rollback")
    assert "version 2; before it: <tag previous_production of version 2" in text
    assert git(released, "status", "--porcelain") == ""
