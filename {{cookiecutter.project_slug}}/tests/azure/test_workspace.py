"""Workspace access and Azure errors, through the real MLClient with only HTTP replaced."""
import urllib.parse

import pytest
from azure.core.exceptions import ServiceResponseTimeoutError
from azure.identity import CredentialUnavailableError

from ml_service.azure import compute, workspace
from ml_service.errors import MlopsError
from tests.helpers.azure_fakes import FakeCredential, FakeTransport, arm_error, azure_settings
from tests.helpers.project import PROJECT_ROOT

WORKSPACE = r"/workspaces/[^/?]+\?"
COMPUTE = r"/computes/cpu-cluster\?"
MLFLOW_URI = ("azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/"
              "rg/providers/Microsoft.MachineLearningServices/workspaces/w")


def workspace_body(**properties):
    return {"id": "/subscriptions/s/resourceGroups/rg/providers/"
                  "Microsoft.MachineLearningServices/workspaces/w",
            "name": "w", "location": "westeurope", "properties": properties}


@pytest.fixture
def az(settings):
    return azure_settings(settings)


def client_for(az, routes, credential=None):
    transport = FakeTransport(routes)
    client = workspace.ml_client(az, credential=credential or FakeCredential(),
                                 transport=transport)
    return client, transport


def test_tracking_uri_is_the_workspace_mlflow_endpoint(az):
    client, transport = client_for(az, [
        ("GET", WORKSPACE, (200, workspace_body(mlFlowTrackingUri=MLFLOW_URI)))])
    uri = workspace.tracking_uri(client)
    # With azureml-mlflow installed the SDK moves the URI to the plugin's API version.
    assert uri.startswith("azureml://westeurope.api.azureml.ms/mlflow/v")
    assert uri.endswith(MLFLOW_URI.split("/mlflow/v1.0")[1])
    [request] = transport.requests
    assert f"/subscriptions/{az.azure.subscription_id}/resourceGroups/" \
           f"{urllib.parse.quote(az.azure.resource_group)}/" in request.url
    assert request.headers["Authorization"] == "Bearer fake-token"


def test_no_credential_says_az_login_or_oidc(az):
    class NoSignIn:
        def get_token(self, *scopes, **kwargs):
            raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token")

        get_token_info = get_token

    client, _ = client_for(az, [], credential=NoSignIn())
    with pytest.raises(MlopsError) as raised:
        workspace.tracking_uri(client)
    assert "no Azure sign-in is available" in raised.value.what
    assert "az login" in raised.value.fix and "OIDC" in raised.value.fix


def test_rejected_token_says_to_sign_in_again(az):
    client, _ = client_for(az, [("GET", WORKSPACE, (401, arm_error(
        "InvalidAuthenticationToken", "The access token has expired.")))])
    with pytest.raises(MlopsError, match="rejected the sign-in") as raised:
        workspace.tracking_uri(client)
    assert "expired" in raised.value.what and "az login" in raised.value.fix


def test_missing_workspace_says_to_run_environment_setup(az):
    client, _ = client_for(az, [("GET", WORKSPACE, (404, arm_error(
        "ResourceNotFound", "The Resource was not found.")))])
    with pytest.raises(MlopsError) as raised:
        workspace.tracking_uri(client)
    assert f"workspace {az.azure.workspace_name} was not found" in raised.value.what
    assert "ml_service infra --apply" in raised.value.fix
    assert "workspace_name in mlops.toml" in raised.value.fix


def test_missing_role_names_the_fix(az):
    client, _ = client_for(az, [("GET", WORKSPACE, (403, arm_error(
        "AuthorizationFailed", "The client does not have authorization to perform action.")))])
    with pytest.raises(MlopsError, match="403 AuthorizationFailed") as raised:
        workspace.tracking_uri(client)
    assert "role" in raised.value.fix


def test_conflict_says_to_wait_for_the_other_operation(az):
    client, _ = client_for(az, [
        ("GET", COMPUTE, (404, arm_error("ResourceNotFound", "no such compute"))),
        ("GET", WORKSPACE, (200, workspace_body())),
        ("PUT", COMPUTE, (409, arm_error("Conflict", "The compute is being deleted.")))])
    with pytest.raises(MlopsError, match="conflicting operation") as raised:
        compute.ensure_compute(client, az)
    assert "being deleted" in raised.value.what and "Wait" in raised.value.fix


def test_quota_says_which_settings_to_change(az):
    client, _ = client_for(az, [
        ("GET", COMPUTE, (404, arm_error("ResourceNotFound", "no such compute"))),
        ("GET", WORKSPACE, (200, workspace_body())),
        ("PUT", COMPUTE, (400, arm_error(
            "QuotaExceeded", "Operation results in exceeding quota limits of Core.")))])
    with pytest.raises(MlopsError, match="quota") as raised:
        compute.ensure_compute(client, az)
    assert "compute_vm_size" in raised.value.fix and az.azure.location in raised.value.fix


def test_throttling_is_retried_then_explained(az):
    client, transport = client_for(az, [("GET", WORKSPACE, (429, arm_error(
        "TooManyRequests", "Rate limit exceeded."), {"Retry-After": "1"}))])
    with pytest.raises(MlopsError, match="429 Too Many Requests") as raised:
        workspace.tracking_uri(client)
    assert len(transport.requests) > 1, "the SDK's retry policy should have retried"
    assert "Wait a minute" in raised.value.fix


def test_timeout_says_azure_could_not_be_reached(az):
    client, transport = client_for(az, [("GET", WORKSPACE, ServiceResponseTimeoutError(
        "Read timed out."))])
    with pytest.raises(MlopsError, match="Could not reach Azure") as raised:
        workspace.tracking_uri(client)
    assert "ServiceResponseTimeoutError" in raised.value.what
    assert "proxy" in raised.value.fix


def test_errors_that_are_not_azure_errors_stay_as_they_are():
    scope = workspace.Scope("s", "rg", "w")
    with pytest.raises(KeyError):
        with workspace.azure_errors("do something", scope):
            raise KeyError("a bug")


def test_importing_the_azure_modules_does_not_import_the_azure_sdks():
    """The local path imports these modules' neighbours; `import azure.ai.ml` costs ~7 s."""
    import subprocess
    import sys

    code = ("import sys; import ml_service.targets.aci, ml_service.targets.aks, "
            "ml_service.azure.bindings, ml_service.azure.compute, ml_service.azure.infra, "
            "ml_service.azure.job_runs, ml_service.azure.pipeline_job, "
            "ml_service.azure.schedule, ml_service.azure.workspace; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'azure'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
