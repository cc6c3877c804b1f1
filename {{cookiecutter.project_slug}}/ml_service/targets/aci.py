"""The ACI target: staging as one Azure Container Instances container group.

The group runs the scoring image (pulled by digest when it was pushed) with the
CPU and memory of mlops.toml, readiness and liveness probes on GET / (port 5001),
a public IP with a DNS label, and pulls from the registry with the user-assigned
identity environment_setup creates (no registry password anywhere).

The endpoint is public, so it needs a key: deploy passes the secret
STAGING_SCORING_KEY (an environment variable, e.g. a CI secret; release.scoring_key)
to the container as the secure variable SCORING_KEY, which Azure never returns;
score.py refuses requests without it, and `request_headers()` sends it as
`Authorization: Bearer <key>`.
"""
import json
import os
import time
from pathlib import Path

from ml_service.azure.workspace import Scope, azure_errors, default_credential
from ml_service.errors import MlopsError
from ml_service.monitoring.prediction_log import server_environment
from ml_service.release import (Deployment, Release, http_status, key_headers, key_variable,
                                pinned_image, scoring_key)

CONTAINER_NAME = "scoring"
CONTAINER_PORT = 5001
KEY_VARIABLE = "SCORING_KEY"  # inside the container (scoring/score.py)
POLL_SECONDS = 5


def registry_of(image):
    return image.split("/", 1)[0]


def identity_id(settings, target):
    """Resource id of the pull identity (the setting may be a name or a full id)."""
    name = settings.target_settings(target).pull_identity
    if name.startswith("/subscriptions/"):
        return name
    return (f"/subscriptions/{settings.azure.subscription_id}/resourceGroups/"
            f"{settings.azure.resource_group}/providers/Microsoft.ManagedIdentity/"
            f"userAssignedIdentities/{name}")


def group_name(settings, target):
    return settings.target_settings(target).dns_label


def build_container_group(settings, release, key, target="staging", log_analytics=None):
    """The container group that runs `release`, as the SDK model sent to Azure;
    `log_analytics` is (workspace id, workspace key) of the workspace its logs go to."""
    from azure.mgmt.containerinstance import models

    options = settings.target_settings(target)
    identity = identity_id(settings, target)

    def probe(initial_delay, period, timeout):
        return models.ContainerProbe(
            http_get=models.ContainerHttpGet(path="/", port=CONTAINER_PORT, scheme="http"),
            initial_delay_seconds=initial_delay, period_seconds=period,
            timeout_seconds=timeout, failure_threshold=3)

    variables = {
        "MODEL_NAME": release.model_name,
        "MODEL_VERSION": release.model_version,
        "IMAGE_DIGEST": release.image_digest or "none",
        "SCORING_MAX_BATCH_SIZE": str(settings.serving.max_batch_size),
        "WORKER_COUNT": str(settings.serving.workers),
        # The prediction records go to stdout, collected by Log Analytics.
        **server_environment(settings.monitoring),
    }
    container = models.Container(
        name=CONTAINER_NAME,
        image=pinned_image(release),
        resources=models.ResourceRequirements(requests=models.ResourceRequests(
            cpu=options.cpu, memory_in_gb=options.memory_gb)),
        ports=[models.ContainerPort(port=CONTAINER_PORT, protocol="TCP")],
        environment_variables=[
            *(models.EnvironmentVariable(name=name, value=value)
              for name, value in variables.items()),
            models.EnvironmentVariable(name=KEY_VARIABLE, secure_value=key)],
        # Ready once the server answers; restarted if it stops answering after startup.
        readiness_probe=probe(initial_delay=10, period=10, timeout=3),
        liveness_probe=probe(initial_delay=int(settings.serving.startup_timeout), period=20,
                             timeout=5),
    )
    return models.ContainerGroup(
        location=settings.azure.location,
        containers=[container],
        os_type="Linux",
        restart_policy="Always",
        identity=models.ContainerGroupIdentity(
            type="UserAssigned",
            user_assigned_identities={identity: models.UserAssignedIdentities()}),
        image_registry_credentials=[models.ImageRegistryCredential(
            server=registry_of(release.image), identity=identity)],
        ip_address=models.IpAddress(
            type="Public", ports=[models.Port(port=CONTAINER_PORT, protocol="TCP")],
            dns_name_label=options.dns_label,
            # The FQDN gets a hash of tenant and label: unique, and stable across redeploys.
            auto_generated_domain_name_label_scope="TenantReuse"),
        tags={"model_name": release.model_name, "model_version": release.model_version,
              "image": release.image, "image_digest": release.image_digest,
              "managed_by": "ml_service"},
        # The container's stdout (the prediction records `monitor` reads) goes to the
        # table ContainerInstanceLog_CL of the project's Log Analytics workspace.
        diagnostics=None if log_analytics is None else models.ContainerGroupDiagnostics(
            log_analytics=models.LogAnalytics(workspace_id=log_analytics[0],
                                              workspace_key=log_analytics[1],
                                              log_type="ContainerInstanceLogs")),
    )


def masked_body(group):
    """The JSON body of the PUT request, secure values (and the workspace key) replaced
    by ***."""
    body = group.serialize()
    log_analytics = body["properties"].get("diagnostics", {}).get("logAnalytics")
    if log_analytics:
        log_analytics["workspaceKey"] = "***"
    for container in body["properties"]["containers"]:
        for variable in container["properties"].get("environmentVariables", []):
            if "secureValue" in variable:
                variable["secureValue"] = "***"
    return body


# Workspaces and their shared keys (Microsoft.OperationalInsights).
LOG_ANALYTICS_API = "2020-08-01"


class AciTarget:
    def __init__(self, name, settings, client=None, http_get=http_status, sleep=time.sleep,
                 clock=time.monotonic, environ=None):
        self.name = name
        self.settings = settings
        self.group = group_name(settings, name)
        self.resource_group = settings.azure.resource_group
        self.scope = Scope.of(settings)
        self._client = client
        self.http_get = http_get
        self.sleep = sleep
        self.clock = clock
        self.environ = os.environ if environ is None else environ

    @property
    def client(self):
        if self._client is None:
            from azure.mgmt.containerinstance import ContainerInstanceManagementClient

            self._client = ContainerInstanceManagementClient(
                default_credential(), self.settings.azure.subscription_id)
        return self._client

    def _key(self):
        return scoring_key(self.name, self.environ, required=True)

    def _workspace_path(self):
        azure = self.settings.azure
        return (f"/subscriptions/{azure.subscription_id}/resourceGroups/{azure.resource_group}"
                "/providers/Microsoft.OperationalInsights/workspaces/"
                f"{self.settings.monitoring.log_analytics_workspace}")

    def _log_analytics(self):
        """(workspace id, key) of the Log Analytics workspace the logs go to; None, said
        in a note, when it cannot be read: the model is deployed without log collection
        rather than not at all."""
        from azure.core.rest import HttpRequest

        workspace = self._workspace_path()
        name = self.settings.monitoring.log_analytics_workspace
        # Two ARM calls through the client's own pipeline (sign-in, retries, transport):
        # the generated SDK's raw-request helper, not a new SDK package for them.
        send = self.client._send_request
        try:
            with azure_errors(f"read the Log Analytics workspace {name}", self.scope):
                found = send(HttpRequest(
                    "GET", f"{workspace}?api-version={LOG_ANALYTICS_API}"))
                found.raise_for_status()
                keys = send(HttpRequest(
                    "POST", f"{workspace}/sharedKeys?api-version={LOG_ANALYTICS_API}"))
                keys.raise_for_status()
            return found.json()["properties"]["customerId"], keys.json()["primarySharedKey"]
        except MlopsError as error:
            print(f"note: {self.name} runs without sending its logs to Log Analytics "
                  f"({error.what}), so `monitor --target {self.name}` sees no traffic. "
                  f"{error.fix} The CI identity gets Log Analytics Contributor on {name} "
                  "from environment_setup/.", flush=True)
            return None

    def check_ready(self):
        """Deploying needs no setup beyond what deploy itself checks."""

    def request_headers(self):
        return key_headers(scoring_key(self.name, self.environ))

    def _get(self):
        from azure.core.exceptions import ResourceNotFoundError

        with azure_errors(f"read the container group {self.group}", self.scope):
            try:
                return self.client.container_groups.get(self.resource_group, self.group)
            except ResourceNotFoundError:
                return None

    @staticmethod
    def _scoring_uri(group):
        fqdn = group.ip_address.fqdn if group.ip_address else None
        return f"http://{fqdn}:{CONTAINER_PORT}/score" if fqdn else ""

    def _deployment(self, group):
        tags = group.tags or {}
        uri = self._scoring_uri(group)
        version = tags.get("model_version", "unknown")
        state = group.instance_view.state if group.instance_view else None
        container = group.containers[0].instance_view if group.containers else None
        restarts = container.restart_count if container else 0
        if group.provisioning_state != "Succeeded" or state != "Running":
            return Deployment(self.name, version, uri, False,
                              f"the container group is {group.provisioning_state}/{state} "
                              f"(restarts: {restarts})")
        status = self.http_get(uri[:-len("score")])
        if status != 200:
            return Deployment(self.name, version, uri, False,
                              f"GET {uri[:-len('score')]} answered {status or 'nothing'} "
                              f"(restarts: {restarts})")
        return Deployment(self.name, version, uri, True)

    def status(self):
        group = self._get()
        return None if group is None else self._deployment(group)

    def _apply(self, release, key):
        from azure.core.exceptions import HttpResponseError

        spec = build_container_group(self.settings, release, key, self.name,
                                     self._log_analytics())
        action = f"deploy version {release.model_version} to the container group {self.group}"
        with azure_errors(action, self.scope):
            try:
                self.client.container_groups.begin_create_or_update(
                    self.resource_group, self.group, spec).result()
            except HttpResponseError as error:
                code = getattr(error.error, "code", "") or ""
                if "image" not in code.lower() and "registry" not in code.lower():
                    raise
                raise MlopsError(
                    f"ACI could not pull {pinned_image(release)} ({code}: "
                    f"{' '.join(str(error.message).split())[:300]}).",
                    "Push the image first (`python -m ml_service build-image "
                    f"--model-version {release.model_version} --push`) and check that "
                    f"the identity {self.settings.target_settings(self.name).pull_identity} has "
                    "AcrPull on the registry (environment_setup grants it).") from error

    def _wait_healthy(self):
        deadline = self.clock() + self.settings.serving.startup_timeout
        deployment = None
        while True:
            group = self._get()
            deployment = None if group is None else self._deployment(group)
            if deployment is not None and deployment.healthy:
                return deployment
            if self.clock() >= deadline:
                return deployment
            self.sleep(POLL_SECONDS)

    def _logs(self):
        try:
            with azure_errors(f"read the logs of {self.group}", self.scope):
                logs = self.client.containers.list_logs(self.resource_group, self.group,
                                                        CONTAINER_NAME, tail=20)
            return " | ".join((logs.content or "").strip().splitlines()[-8:]) or "(empty)"
        except MlopsError as error:
            return f"(logs unavailable: {error.what})"

    def deploy(self, release):
        key = self._key()
        previous = self._get()
        self._apply(release, key)
        deployment = self._wait_healthy()
        if deployment is not None and deployment.healthy:
            return deployment
        detail = deployment.detail if deployment else "the container group disappeared"
        logs = self._logs()
        restored = ""
        tags = (previous.tags or {}) if previous is not None else {}
        if tags.get("image") and tags.get("model_version") not in (None,
                                                                   release.model_version):
            old = Release(model_name=release.model_name, model_version=tags["model_version"],
                          image=tags["image"], image_digest=tags.get("image_digest", ""),
                          context_digest="", context_dir=Path())
            self._apply(old, key)
            back = self._wait_healthy()
            if back is not None and back.healthy:
                restored = f" Version {old.model_version} is serving again."
        raise MlopsError(
            f"Version {release.model_version} did not become healthy on {self.name} "
            f"(container group {self.group}) within "
            f"{self.settings.serving.startup_timeout:.0f} s: {detail}.{restored}",
            f"Last log lines: {logs}. Full log: `az container logs --resource-group "
            f"{self.resource_group} --name {self.group}`.")

    def stop(self):
        from azure.core.exceptions import ResourceNotFoundError

        with azure_errors(f"delete the container group {self.group}", self.scope):
            try:
                self.client.container_groups.begin_delete(self.resource_group,
                                                          self.group).result()
            except ResourceNotFoundError:
                pass

    def plan(self, release):
        """What deploy would send, as text for --dry-run (the key shown as ***)."""
        spec = build_container_group(
            self.settings, release, "***", self.name,
            (f"<customerId of {self.settings.monitoring.log_analytics_workspace}>", "***"))
        options = self.settings.target_settings(self.name)
        lines = [
            f"ACI {self.name} deployment (dry run: nothing is sent to Azure)",
            f"  container group  {self.group} in {self.resource_group} "
            f"({self.settings.azure.location})",
            f"  image            {pinned_image(release)}",
            f"  pulled with      {identity_id(self.settings, self.name)}",
            f"  resources        {options.cpu} CPU, {options.memory_gb} GB",
            f"  endpoint         http://{options.dns_label}.<hash>."
            f"{self.settings.azure.location}.azurecontainer.io:{CONTAINER_PORT}/score",
            f"  probes           readiness GET / every 10 s; liveness GET / every 20 s after "
            f"{self.settings.serving.startup_timeout:.0f} s",
            f"  calls need       Authorization: Bearer ${key_variable(self.name)}",
            "",
            f"PUT .../resourceGroups/{self.resource_group}/providers/"
            f"Microsoft.ContainerInstance/containerGroups/{self.group}",
            json.dumps(masked_body(spec), indent=2),
        ]
        return "\n".join(lines)
