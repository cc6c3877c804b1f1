"""Staging on ACI: the container group spec, and deploy/status/stop through the real SDK.

ContainerInstanceManagementClient sends its real requests to a fake ARM that keeps
container groups in a dict; the health check of the public endpoint is the other
network edge and is replaced by a function.
"""
import copy
import re
import json
from pathlib import Path

import pytest
from azure.mgmt.containerinstance import ContainerInstanceManagementClient

from ml_service.errors import MlopsError
from ml_service.release import Release
from ml_service.targets import aci
from tests.helpers.azure_fakes import FakeCredential, FakeTransport, arm_error, azure_settings

KEY = "k" * 32
DIGEST = "sha256:" + "ab" * 32
GROUPS = r"/providers/Microsoft.ContainerInstance/containerGroups/(?P<name>[\w-]+)\?"
WORKSPACE = r"/providers/Microsoft.OperationalInsights/workspaces/log-[\w-]+"
WORKSPACE_ID = "11111111-2222-3333-4444-555555555555"
WORKSPACE_KEY = "d29ya3NwYWNlLWtleQ=="


def release(version="3", digest=None):
    """A pushed release; each version has its own image digest."""
    digest = DIGEST if digest is None and version == "3" else (
        digest if digest is not None else "sha256:" + (version * 64)[:64])
    return Release(model_name="diabetes-mlops-model", model_version=version,
                   image=f"diabetesmlopsacr.azurecr.io/diabetes-mlops-model:{version}-0123abc",
                   image_digest=digest, context_digest="sha256:" + "cd" * 32,
                   context_dir=Path("/nowhere"))


@pytest.fixture
def az(settings):
    return azure_settings(settings)


class FakeArm:
    """Container groups by name; a group runs if its image is in `healthy_images`."""

    def __init__(self):
        self.groups = {}
        self.healthy_images = set()
        self.transport = FakeTransport([
            ("PUT", GROUPS, self.put), ("GET", GROUPS, self.get),
            ("DELETE", GROUPS, self.delete),
            ("GET", r"/containers/scoring/logs\?", (200, {"content": "line 1\nModel failed\n"})),
            ("GET", WORKSPACE + r"\?", (200, {"properties": {"customerId": WORKSPACE_ID}})),
            ("POST", WORKSPACE + r"/sharedKeys\?", (200, {"primarySharedKey": WORKSPACE_KEY})),
        ])

    @staticmethod
    def name(request):
        return request.url.split("containerGroups/")[1].split("?")[0]

    def put(self, request):
        body = copy.deepcopy(request.body)
        for container in body["properties"]["containers"]:
            for variable in container["properties"]["environmentVariables"]:
                variable.pop("secureValue", None)  # Azure never returns secure values
            container["properties"]["instanceView"] = {"restartCount": 0}
        body["properties"]["provisioningState"] = "Succeeded"
        label = body["properties"]["ipAddress"]["dnsNameLabel"]
        body["properties"]["ipAddress"]["fqdn"] = f"{label}.h4sh.westeurope.azurecontainer.io"
        image = body["properties"]["containers"][0]["properties"]["image"]
        body["properties"]["instanceView"] = {
            "state": "Running" if image in self.healthy_images else "Waiting"}
        body["name"] = self.name(request)
        self.groups[body["name"]] = body
        return 200, body

    def get(self, request):
        group = self.groups.get(self.name(request))
        if group is None:
            return 404, arm_error("ResourceNotFound", "The container group was not found.")
        return 200, group

    def delete(self, request):
        self.groups.pop(self.name(request), None)
        return 200, None

    def puts(self):
        return [r.body for r in self.transport.requests if r.method == "PUT"]


@pytest.fixture
def arm():
    return FakeArm()


def target(az, arm, answers=200, **kwargs):
    client = ContainerInstanceManagementClient(FakeCredential(), az.azure.subscription_id,
                                               transport=arm.transport)
    ticks = iter(range(0, 100000, 5))
    return aci.AciTarget("staging", az, client=client, http_get=lambda url: answers,
                         sleep=lambda seconds: None, clock=lambda: next(ticks),
                         environ={"STAGING_SCORING_KEY": KEY}, **kwargs)


def test_container_group_spec(az):
    group = aci.build_container_group(az, release(), KEY)
    [container] = group.containers
    assert container.image == "diabetesmlopsacr.azurecr.io/diabetes-mlops-model@" + DIGEST
    assert container.resources.requests.cpu == az.staging.cpu
    assert container.resources.requests.memory_in_gb == az.staging.memory_gb
    assert [p.port for p in container.ports] == [5001]
    for probe in (container.readiness_probe, container.liveness_probe):
        assert (probe.http_get.path, probe.http_get.port) == ("/", 5001)
    assert container.liveness_probe.initial_delay_seconds == az.serving.startup_timeout
    variables = {v.name: v for v in container.environment_variables}
    assert variables["MODEL_VERSION"].value == "3"
    assert variables["IMAGE_DIGEST"].value == DIGEST
    assert variables["SCORING_KEY"].secure_value == KEY and variables["SCORING_KEY"].value is None
    # Prediction records on stdout (no log file), sampled as [monitoring] says.
    assert variables["MLOPS_PREDICTION_LOG_SAMPLE"].value == str(az.monitoring.sample_rate)
    assert "MLOPS_PREDICTION_LOG" not in variables
    identity = (f"/subscriptions/{az.azure.subscription_id}/resourceGroups/"
                f"{az.azure.resource_group}/providers/Microsoft.ManagedIdentity/"
                f"userAssignedIdentities/{az.staging.pull_identity}")
    assert group.identity.type == "UserAssigned"
    assert list(group.identity.user_assigned_identities) == [identity]
    [credential] = group.image_registry_credentials
    assert (credential.server, credential.identity) == ("diabetesmlopsacr.azurecr.io", identity)
    assert credential.password is None
    assert group.ip_address.type == "Public"
    assert group.ip_address.dns_name_label == az.staging.dns_label
    assert [p.port for p in group.ip_address.ports] == [5001]
    assert group.location == az.azure.location
    assert group.tags["model_version"] == "3"


def test_an_unpushed_image_is_used_by_tag(az):
    group = aci.build_container_group(az, release(digest=""), KEY)
    assert group.containers[0].image.endswith("diabetes-mlops-model:3-0123abc")


def test_deploy_sends_the_group_and_reports_the_endpoint(az, arm):
    arm.healthy_images.add(aci.pinned_image(release()))
    staging = target(az, arm)
    deployment = staging.deploy(release())
    [body] = arm.puts()
    properties = body["properties"]
    assert body["location"] == az.azure.location
    assert properties["ipAddress"]["autoGeneratedDomainNameLabelScope"] == "TenantReuse"
    secure = [v for v in properties["containers"][0]["properties"]["environmentVariables"]
              if v["name"] == "SCORING_KEY"]
    assert secure == [{"name": "SCORING_KEY", "secureValue": KEY}]
    assert deployment.healthy and deployment.model_version == "3"
    assert deployment.scoring_uri == (f"http://{az.staging.dns_label}.h4sh.westeurope."
                                      "azurecontainer.io:5001/score")
    assert staging.request_headers() == {"Authorization": f"Bearer {KEY}"}
    assert staging.status() == deployment


def test_an_unhealthy_release_is_replaced_by_the_previous_one(az, arm):
    arm.healthy_images.add(aci.pinned_image(release("2")))
    staging = target(az, arm)
    staging.deploy(release("2"))
    with pytest.raises(MlopsError) as raised:
        staging.deploy(release("3"))
    assert "Version 3 did not become healthy" in raised.value.what
    assert "Version 2 is serving again" in raised.value.what
    assert "Model failed" in raised.value.fix and "az container logs" in raised.value.fix
    images = [body["properties"]["containers"][0]["properties"]["image"] for body in arm.puts()]
    assert images == [aci.pinned_image(release(version)) for version in ("2", "3", "2")]
    assert staging.status().model_version == "2"


def test_a_running_group_that_does_not_answer_is_not_healthy(az, arm):
    arm.healthy_images.add(aci.pinned_image(release()))
    staging = target(az, arm, answers=None)
    with pytest.raises(MlopsError, match="answered nothing"):
        staging.deploy(release())


def test_deploy_without_a_key_says_how_to_make_one(az, arm):
    staging = target(az, arm)
    staging.environ = {}
    with pytest.raises(MlopsError, match="STAGING_SCORING_KEY is not set") as raised:
        staging.deploy(release())
    assert "openssl rand -hex 32" in raised.value.fix
    assert arm.transport.requests == []


def test_status_and_stop_of_nothing(az, arm):
    staging = target(az, arm)
    assert staging.status() is None
    staging.stop()
    assert [r.method for r in arm.transport.requests] == ["GET", "DELETE"]


def test_stop_deletes_the_group(az, arm):
    arm.healthy_images.add(aci.pinned_image(release()))
    staging = target(az, arm)
    staging.deploy(release())
    staging.stop()
    assert arm.groups == {} and staging.status() is None


def test_plan_shows_the_request_with_the_key_masked(az, arm):
    text = target(az, arm).plan(release())
    assert "dry run: nothing is sent to Azure" in text
    assert KEY not in text
    body = json.loads(text[text.index("{"):])
    variables = body["properties"]["containers"][0]["properties"]["environmentVariables"]
    assert {"name": "SCORING_KEY", "secureValue": "***"} in variables
    assert arm.transport.requests == []


@pytest.mark.parametrize("value, problem", [
    ("short", "is unusable (5 characters"),
    ("a key with spaces in it", "is unusable"),
    # What Azure Pipelines passes when the secret variable was never created.
    ("$(STAGING_SCORING_KEY)", "is not defined"),
])
def test_an_unusable_key_is_refused_before_anything_is_sent(az, arm, value, problem):
    staging = target(az, arm)
    staging.environ = {"STAGING_SCORING_KEY": value}
    with pytest.raises(MlopsError, match=re.escape(f"STAGING_SCORING_KEY {problem}")) as raised:
        staging.deploy(release())
    assert value not in str(raised.value)  # a key, even a bad one, is never shown
    assert arm.transport.requests == []


def test_the_container_group_sends_its_logs_to_the_monitoring_workspace(az, arm):
    arm.healthy_images.add(aci.pinned_image(release()))
    assert target(az, arm).deploy(release()).healthy
    [body] = arm.puts()
    assert body["properties"]["diagnostics"]["logAnalytics"] == {
        "workspaceId": WORKSPACE_ID, "workspaceKey": WORKSPACE_KEY,
        "logType": "ContainerInstanceLogs"}
    [workspace] = arm.transport.calls("GET", WORKSPACE + r"\?")
    assert workspace.url.split("workspaces/")[1].startswith(
        az.monitoring.log_analytics_workspace + "?")


def test_an_unreadable_workspace_deploys_without_log_collection_and_says_so(az, arm, capsys):
    arm.transport.routes.insert(0, ("POST", WORKSPACE + r"/sharedKeys\?", (403, arm_error(
        "AuthorizationFailed", "no sharedKeys/action"))))
    arm.healthy_images.add(aci.pinned_image(release()))
    assert target(az, arm).deploy(release()).healthy
    [body] = arm.puts()
    assert "diagnostics" not in body["properties"]
    out = capsys.readouterr().out
    assert "note: staging runs without sending its logs to Log Analytics" in out
    assert WORKSPACE_KEY not in out


def test_plan_masks_the_workspace_key(az, arm):
    text = target(az, arm).plan(release())
    assert '"workspaceKey": "***"' in text
    assert f"<customerId of {az.monitoring.log_analytics_workspace}>" in text
    assert not arm.transport.requests  # a plan sends nothing
