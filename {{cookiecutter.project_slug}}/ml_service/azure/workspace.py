"""The Azure ML workspace: its client, its MLflow tracking URI, and Azure errors in plain words.

Every call to Azure in ml_service/azure/ runs inside `azure_errors(...)`, which turns
the SDK's exceptions (sign-in, permissions, missing resources, conflicts, throttling,
quota, timeouts) into an MlopsError that says what to do.
"""
import contextlib
import dataclasses

from ml_service.errors import MlopsError

SIGN_IN = ("Sign in with `az login` and `az account set --subscription {subscription}`. In CI, "
           "sign in with OIDC before this step (GitHub: azure/login with the repository "
           "variables AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_SUBSCRIPTION_ID, which are "
           "not secrets; Azure Pipelines: a service connection with workload identity "
           "federation); see environment_setup/README.md.")


@dataclasses.dataclass(frozen=True)
class Scope:
    """Where a call goes, for the messages: subscription, resource group, workspace, region."""

    subscription: str
    resource_group: str
    workspace: str
    location: str = ""

    @classmethod
    def of(cls, settings):
        azure = settings.azure
        return cls(azure.subscription_id, azure.resource_group, azure.workspace_name,
                   azure.location)


def default_credential():
    """Azure CLI sign-in, environment variables, workload identity (CI) or managed identity."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def ml_client(settings, credential=None, **kwargs):
    """An MLClient for the configured workspace. Nothing is sent until it is used."""
    from azure.ai.ml import MLClient

    return MLClient(credential or default_credential(),
                    subscription_id=settings.azure.subscription_id,
                    resource_group_name=settings.azure.resource_group,
                    workspace_name=settings.azure.workspace_name, **kwargs)


def tracking_uri(client):
    """The workspace's MLflow tracking URI (azureml://...), for MLFLOW_TRACKING_URI."""
    scope = Scope(client.subscription_id, client.resource_group_name, client.workspace_name)
    with azure_errors(f"read the workspace {client.workspace_name}", scope):
        return client.workspaces.get(client.workspace_name).mlflow_tracking_uri


def _summary(error):
    """(status, code, message) of an Azure SDK error, the message on one line."""
    status = getattr(error, "status_code", None)
    odata = getattr(error, "error", None)
    code = getattr(odata, "code", None) or ""
    message = getattr(odata, "message", None) or getattr(error, "message", None) or str(error)
    message = " ".join(str(message).split())
    if len(message) > 400:
        message = message[:397] + "..."
    return status, code, message


def _is_quota(code, message):
    text = f"{code} {message}".lower()
    return "quota" in text or "exceeding approved" in text


def translate(error, action, scope, missing=None):
    """The MlopsError for an Azure SDK `error` raised while trying to `action`.

    `missing` is (what, fix) for a 404, when the missing thing is not the workspace.
    Returns None for errors that do not come from Azure (they stay as they are).
    """
    from azure.core import exceptions as core

    module = type(error).__module__
    if not isinstance(error, (core.AzureError, TimeoutError)) and not module.startswith(
            "azure.ai.ml"):
        return None
    status, code, message = _summary(error)
    where = f"resource group {scope.resource_group} of subscription {scope.subscription}"
    sign_in = SIGN_IN.format(subscription=scope.subscription)
    if isinstance(error, core.ClientAuthenticationError) and status in (None, 401):
        if status is None:
            return MlopsError(f"Could not {action}: no Azure sign-in is available ({message}).",
                              sign_in)
        return MlopsError(f"Azure rejected the sign-in while trying to {action} "
                          f"(401 {code}: {message}).",
                          "The token may have expired or belong to another tenant. " + sign_in)
    if _is_quota(code, message):
        return MlopsError(
            f"Could not {action}: the subscription's quota does not allow it ({code}: {message}).",
            "Request more vCPU quota for this VM family"
            + (f" in {scope.location}" if scope.location else "")
            + " (Azure portal: Subscriptions > Usage + quotas), or choose a VM size with free "
            "quota ([azure] compute_vm_size) or fewer nodes ([azure] compute_max_nodes).")
    if status == 403:
        return MlopsError(
            f"The signed-in identity may not {action} in {where} (403 {code}: {message}).",
            "Give it the role this step needs (environment_setup/main.bicep grants the CI "
            "identity exactly those; see environment_setup/README.md), or sign in as someone "
            "who has it. `az account show` says who is signed in.")
    if isinstance(error, core.ResourceNotFoundError) or status == 404:
        if missing:
            return MlopsError(f"{missing[0]} (404 {code}: {message}).", missing[1])
        return MlopsError(
            f"Could not {action}: the Azure ML workspace {scope.workspace} was not found in "
            f"{where} (404 {code}).",
            "Create the environment first with `python -m ml_service infra --apply` "
            "(environment_setup/main.bicep), or correct [azure] subscription_id, "
            "resource_group and workspace_name in mlops.toml.")
    if isinstance(error, core.ResourceExistsError) or status == 409:
        return MlopsError(
            f"Azure refused to {action} because of a conflicting operation on the same "
            f"resource (409 {code}: {message}).",
            "Another operation on it is still running (a deployment, a resize, a deletion). "
            "Wait until it has finished, then run the command again.")
    if status == 429:
        return MlopsError(
            f"Azure throttled the requests to {action} (429 Too Many Requests, still after "
            f"the client's retries: {message}).",
            "Wait a minute and run the command again; avoid running many jobs against the "
            "same subscription at once.")
    if isinstance(error, (core.ServiceRequestError, core.ServiceResponseError, TimeoutError)):
        return MlopsError(
            f"Could not reach Azure to {action}: {type(error).__name__}: {message}.",
            "Check the network connection and any proxy (HTTPS_PROXY), then run the command "
            "again; https://azure.status.microsoft lists Azure incidents.")
    if isinstance(error, core.HttpResponseError):
        return MlopsError(f"Azure answered {status} {code} when trying to {action}: {message}.",
                          "Run again with --debug to see the full response.")
    return MlopsError(f"Could not {action}: {type(error).__name__}: {message}.",
                      "Fix the cause named above; --debug shows the full error.")


@contextlib.contextmanager
def azure_errors(action, scope, missing=None):
    """Run the block; re-raise any Azure SDK error as an MlopsError (see `translate`)."""
    try:
        yield
    except MlopsError:
        raise
    except Exception as error:
        translated = translate(error, action, scope, missing)
        if translated is None:
            raise
        raise translated from error
