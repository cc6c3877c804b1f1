"""The Flagger canary of deploy/canary/, rendered into production and checked offline.

Flagger objects are validated against the CRD schemas vendored in
deploy/canary/schemas/ (jsonschema), everything else with kubernetes-validate, as
test_manifests.py does for the overlays.
"""
import dataclasses
import json
import shutil

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ml_service.config import load_settings
from ml_service.errors import MlopsError
from ml_service.targets import flagger
from tests.deploy.test_manifests import DEPLOY, KUBERNETES_VERSIONS, kubectl, render  # noqa: F401
from tests.helpers.project import PROJECT_ROOT

SCHEMAS = DEPLOY / "canary" / "schemas"
FLAGGER_KINDS = {"Canary": "canary", "MetricTemplate": "metrictemplate"}


def enable_canary(overlay):
    """What a user does to switch production to strategy = "canary": include the
    component in place of the load balancer patch (the Service becomes Flagger's)."""
    path = overlay / "kustomization.yaml"
    text = path.read_text()
    patch = "  - path: service-patch.yaml\n"
    assert patch in text
    path.write_text(text.replace(patch, "") + "\ncomponents:\n  - ../../canary\n")


def project_settings(root, **production):
    settings = load_settings(PROJECT_ROOT / "mlops.toml", environ={})
    return dataclasses.replace(settings, project_root=root, production=dataclasses.replace(
        settings.production, **production))


@pytest.fixture(scope="module")
def canary_project(tmp_path_factory):
    """A copy of deploy/ whose production overlay includes the canary component."""
    root = tmp_path_factory.mktemp("canary")
    shutil.copytree(DEPLOY, root / "deploy")
    enable_canary(root / "deploy" / "overlays" / "production")
    return root


@pytest.fixture(scope="module")
def rendered(kubectl, canary_project):  # noqa: F811
    return render(kubectl, canary_project / "deploy" / "overlays" / "production")


def crd_validator(kind):
    schema = json.loads((SCHEMAS / f"{FLAGGER_KINDS[kind]}-flagger-v1beta1.json").read_text())
    return jsonschema.Draft7Validator(schema)


def named(rendered, kind):
    return {obj["metadata"]["name"]: obj for obj in rendered if obj["kind"] == kind}


def test_every_object_matches_its_schema(rendered):
    kinds = sorted(obj["kind"] for obj in rendered)
    assert kinds.count("Canary") == 1 and kinds.count("MetricTemplate") == 3, kinds
    for obj in rendered:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in FLAGGER_KINDS:
            assert obj["apiVersion"] == "flagger.app/v1beta1", where
            errors = [f"{'.'.join(map(str, e.path))}: {e.message}"
                      for e in crd_validator(obj["kind"]).iter_errors(obj)]
            assert not errors, f"{where} does not match the Flagger CRD: {errors}"
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_vendored_schema_rejects_a_malformed_canary(rendered):
    """The check above can fail: a step weight that is not a number is refused."""
    (canary,) = named(rendered, "Canary").values()
    broken = json.loads(json.dumps(canary))
    broken["spec"]["analysis"]["stepWeights"] = ["ten"]
    del broken["spec"]["targetRef"]
    messages = [e.message for e in crd_validator("Canary").iter_errors(broken)]
    assert any("'ten' is not of type 'number'" in m for m in messages), messages
    assert any("'targetRef' is a required property" in m for m in messages), messages


def test_the_canary_drives_the_scoring_deployment(rendered):
    (canary,) = named(rendered, "Canary").values()
    spec = canary["spec"]
    assert spec["provider"] == "nginx"
    assert spec["targetRef"]["name"] in named(rendered, "Deployment")
    assert spec["autoscalerRef"]["name"] in named(rendered, "HorizontalPodAutoscaler")
    ingress = named(rendered, "Ingress")[spec["ingressRef"]["name"]]
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    # The port of deploy/base/service.yaml, which Flagger now makes itself.
    base_service = yaml.safe_load((DEPLOY / "base" / "service.yaml").read_text())
    (port,) = base_service["spec"]["ports"]
    assert (spec["service"]["port"], spec["service"]["portName"],
            spec["service"]["targetPort"]) == (port["port"], port["name"], port["targetPort"])
    assert path["backend"]["service"] == {"name": base_service["metadata"]["name"],
                                          "port": {"name": port["name"]}}
    assert "Service" not in {obj["kind"] for obj in rendered}, "Flagger owns the Services"
    pdb = named(rendered, "PodDisruptionBudget")["scoring"]
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "scoring-primary"
    templates = named(rendered, "MetricTemplate")
    for metric in spec["analysis"]["metrics"]:
        assert metric["templateRef"]["name"] in templates, metric
    for template in templates.values():
        assert template["spec"]["provider"]["type"] == "prometheus"
        # Flagger's own placeholders survived cookiecutter's rendering of the template
        # (written without two braces here, which cookiecutter would render too).
        assert "{" * 2 + " ingress }}" in template["spec"]["query"]


def test_rendered_analysis_is_the_settings(rendered, canary_project):
    (canary,) = named(rendered, "Canary").values()
    settings = project_settings(canary_project, strategy="canary")
    analysis = flagger.canary_analysis(settings)
    assert canary["spec"]["analysis"] == analysis
    production = settings.production
    assert analysis["stepWeights"] == list(production.canary_steps)[:-1]
    assert analysis["interval"] == f"{production.canary_step_seconds:.0f}s"
    assert analysis["threshold"] == 1
    flagger.check_canary_manifest(settings, canary_project / "deploy" / "overlays" /
                                  "production")


def test_check_refuses_an_analysis_that_differs_from_the_settings(canary_project):
    overlay = canary_project / "deploy" / "overlays" / "production"
    settings = project_settings(canary_project, strategy="canary", canary_max_error_rate=0.05)
    with pytest.raises(MlopsError) as raised:
        flagger.check_canary_manifest(settings, overlay)
    assert "deploy/canary/analysis.yaml holds a canary analysis that differs" in \
        raised.value.what
    assert "'max': 0.05" in raised.value.what
    assert "python -m ml_service.targets.flagger" in raised.value.fix


def test_rewritten_analysis_satisfies_the_check(kubectl, tmp_path):  # noqa: F811
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    overlay = tmp_path / "deploy" / "overlays" / "production"
    enable_canary(overlay)
    settings = project_settings(tmp_path, strategy="canary", canary_steps=(5, 25, 60, 100),
                                canary_step_seconds=90.5, canary_latency_floor_ms=35.0)
    flagger.write_analysis(settings)
    flagger.check_canary_manifest(settings, overlay)
    (canary,) = named(render(kubectl, overlay), "Canary").values()
    analysis = canary["spec"]["analysis"]
    assert (analysis["stepWeights"], analysis["interval"]) == ([5, 25, 60], "91s")
    (latency,) = [m for m in analysis["metrics"] if m["name"] == "latency-p99-ratio"]
    assert latency["templateVariables"] == {"floorSeconds": "0.035"}


def test_check_refuses_a_canary_strategy_without_the_component(tmp_path):
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    overlay = tmp_path / "deploy" / "overlays" / "production"
    flagger.check_canary_manifest(project_settings(tmp_path, strategy="direct"), overlay)
    with pytest.raises(MlopsError) as raised:
        flagger.check_canary_manifest(project_settings(tmp_path, strategy="canary"), overlay)
    assert "does not include the Flagger component deploy/canary" in raised.value.what
    assert "components: [../../canary]" in raised.value.fix


def test_check_refuses_the_component_with_the_direct_strategy(canary_project):
    overlay = canary_project / "deploy" / "overlays" / "production"
    with pytest.raises(MlopsError, match="Flagger would run a canary"):
        flagger.check_canary_manifest(project_settings(canary_project, strategy="direct"),
                                      overlay)


def test_check_refuses_a_sync_timeout_shorter_than_the_steps(canary_project):
    overlay = canary_project / "deploy" / "overlays" / "production"
    settings = project_settings(canary_project, strategy="canary", sync_timeout=150.0)
    with pytest.raises(MlopsError) as raised:
        flagger.check_canary_manifest(settings, overlay)
    assert "takes at least 180 s" in raised.value.what
    assert "Set sync_timeout above 180 s" in raised.value.fix


def test_a_single_step_is_not_a_canary(canary_project):
    with pytest.raises(MlopsError, match="needs a step below 100"):
        flagger.canary_analysis(project_settings(canary_project, canary_steps=(100,)))
