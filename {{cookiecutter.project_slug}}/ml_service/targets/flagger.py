"""The Flagger canary on AKS, driven by the same [production] settings as the local one.

deploy/canary/ is a kustomize Component holding a Flagger `Canary` for Deployment
`scoring` and the `MetricTemplate`s it checks. Its `analysis` (the steps, their length
and the thresholds) lives in deploy/canary/analysis.yaml, which this module writes from
mlops.toml, so the two cannot drift apart unnoticed: `check_canary_manifest` refuses a
promotion while the committed manifests and the settings disagree.

Run `python -m ml_service.targets.flagger` to rewrite analysis.yaml after changing the
canary_* settings, then commit it.
"""
import math
import sys
import urllib.parse
from pathlib import Path

import yaml

from ml_service.config import load_settings
from ml_service.errors import MlopsError

COMPONENT = Path("deploy") / "canary"
ANALYSIS_FILE = "analysis.yaml"
HEADER = """\
# Written by `python -m ml_service.targets.flagger` from mlops.toml [production] canary_*:
# change the settings and run it again rather than editing this file (promote refuses
# while the two differ). The KS check of predictions runs only in the local canary
# (README.md).
"""


def _duration(seconds):
    """Flagger's durations are whole seconds or minutes ("60s")."""
    return f"{math.ceil(seconds)}s"


def canary_analysis(settings):
    """The Canary's spec.analysis for the [production] canary_* settings."""
    production = settings.production
    steps = list(production.canary_steps)
    if len(steps) < 2:
        raise MlopsError(
            f"[production] canary_steps is {steps}: a canary needs a step below 100 %.",
            "Add one (e.g. [10, 50, 100]) or set strategy = \"direct\" in mlops.toml.")
    interval = _duration(production.canary_step_seconds)
    return {
        "interval": interval,
        # Flagger promotes after the last step passes, so 100 is not a step of its own.
        "stepWeights": steps[:-1],
        # The first failed check rolls back, as the local canary does.
        "threshold": 1,
        "metrics": [
            {"name": "canary-requests", "templateRef": {"name": "canary-requests"},
             "interval": interval, "thresholdRange": {"min": production.canary_min_requests}},
            {"name": "error-rate", "templateRef": {"name": "error-rate"},
             "interval": interval,
             "thresholdRange": {"max": production.canary_max_error_rate}},
            {"name": "latency-p99-ratio", "templateRef": {"name": "latency-p99-ratio"},
             "interval": interval,
             "thresholdRange": {"max": production.canary_max_latency_ratio},
             "templateVariables": {
                 "floorSeconds": f"{production.canary_latency_floor_ms / 1000:g}"}},
        ],
    }


def describe(settings):
    """The canary plan in one line, for --dry-run."""
    production, analysis = settings.production, canary_analysis(settings)
    steps = ", ".join(f"{weight} %" for weight in analysis["stepWeights"])
    return (f"steps {steps} of traffic, {analysis['interval']} each, then 100 %; rolled "
            f"back at the first step with under {production.canary_min_requests} canary "
            f"requests, 5xx above {production.canary_max_error_rate:.1%} or p99 above "
            f"{production.canary_max_latency_ratio:g} x the primary's (over "
            f"{production.canary_latency_floor_ms:g} ms)")


def analysis_patch(settings):
    """The text of analysis.yaml: a patch setting the Canary's analysis."""
    patch = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
             "metadata": {"name": "scoring"},
             "spec": {"analysis": canary_analysis(settings)}}
    return HEADER + yaml.safe_dump(patch, sort_keys=False)


def write_analysis(settings):
    """Rewrite deploy/canary/analysis.yaml from the settings; return its path."""
    path = settings.project_root / COMPONENT / ANALYSIS_FILE
    path.write_text(analysis_patch(settings))
    return path


def _included_components(overlay_dir):
    """The component folders the overlay's kustomization.yaml includes, resolved."""
    kustomization = yaml.safe_load((Path(overlay_dir) / "kustomization.yaml").read_text())
    return [(Path(overlay_dir) / entry).resolve()
            for entry in kustomization.get("components") or []]


def check_canary_manifest(settings, overlay_dir):
    """Refuse when the overlay and mlops.toml disagree about the canary on AKS."""
    root = settings.project_root
    component = (root / COMPONENT).resolve()
    overlay = Path(overlay_dir).relative_to(root).as_posix()
    included = component in _included_components(overlay_dir)
    strategy = settings.production.strategy
    if strategy == "canary" and not included:
        raise MlopsError(
            f"[production] strategy is \"canary\" but {overlay}/kustomization.yaml does not "
            f"include the Flagger component {COMPONENT.as_posix()}: production would switch "
            "all at once.",
            f"Add `components: [../../canary]` to {overlay}/kustomization.yaml and commit it "
            "(deploy/canary/README.md lists what the cluster needs), or set strategy = "
            "\"direct\".")
    if strategy != "canary" and included:
        raise MlopsError(
            f"{overlay}/kustomization.yaml includes the Flagger component "
            f"{COMPONENT.as_posix()}, but [production] strategy is {strategy!r}: Flagger "
            "would run a canary that mlops.toml does not describe.",
            f"Set strategy = \"canary\" in mlops.toml, or remove the component from "
            f"{overlay}/kustomization.yaml.")
    if not included:
        return
    # Flagger spends an interval on each step and at least one more promoting.
    least = len(settings.production.canary_steps) * math.ceil(
        settings.production.canary_step_seconds)
    if settings.production.sync_timeout < least:
        raise MlopsError(
            f"[production] sync_timeout is {settings.production.sync_timeout:g} s, but "
            f"Flagger's canary takes at least {least} s (a canary_step_seconds for each step "
            "and one to promote): deploy would always give up waiting.",
            f"Set sync_timeout above {least} s (with room for the pods' start-up) in "
            "mlops.toml.")
    path = component / ANALYSIS_FILE
    committed = (yaml.safe_load(path.read_text()) or {}).get("spec", {}).get("analysis")
    expected = canary_analysis(settings)
    if committed != expected:
        raise MlopsError(
            f"{path.relative_to(root)} holds a canary analysis that differs from mlops.toml "
            f"[production] (committed: {committed}; the settings give: {expected}).",
            "Run `python -m ml_service.targets.flagger` to rewrite it from mlops.toml and "
            "commit it (or change the settings back).")


def cluster_needs(root):
    """What the canary component needs on the cluster besides Flagger, as (kind, name,
    namespace or None, what it is for, how to provide it): the IngressClass its Ingress
    names, and the Service of each in-cluster address its MetricTemplates query."""
    component = Path(root) / COMPONENT
    ingress = yaml.safe_load((component / "ingress.yaml").read_text())
    ingress_class = ingress["spec"]["ingressClassName"]
    needs = [("ingressclass", ingress_class, None,
              f"IngressClass {ingress_class} (deploy/canary/ingress.yaml): no ingress "
              "controller would serve production or shift its traffic",
              "Enable the application routing add-on: `az aks approuting enable "
              "--resource-group <group> --name <cluster>` (deploy/canary/README.md, "
              "Prerequisites)")]
    templates = yaml.safe_load_all((component / "metric-templates.yaml").read_text())
    addresses = sorted({template["spec"]["provider"]["address"] for template in templates
                        if template and template.get("kind") == "MetricTemplate"})
    for address in addresses:
        # <service>.<namespace>[.svc[.cluster.local]]: Flagger queries from its own
        # namespace, so only an address naming the namespace is a Service to look up.
        labels = (urllib.parse.urlsplit(address).hostname or "").split(".")
        if len(labels) < 2 or labels[2:3] not in ([], ["svc"]):
            continue
        service, namespace = labels[:2]
        needs.append(("service", service, namespace,
                      f"Service {service} in namespace {namespace}, the query proxy the "
                      f"MetricTemplates ask ({address}): every step's analysis would fail "
                      "and roll back",
                      "Run the Azure Monitor query proxy there, or set its address in "
                      "deploy/canary/metric-templates.yaml (deploy/canary/README.md, "
                      "Prerequisites)"))
    return needs


if __name__ == "__main__":
    try:
        print(f"wrote {write_analysis(load_settings())}")
    except MlopsError as error:
        sys.exit(str(error))
