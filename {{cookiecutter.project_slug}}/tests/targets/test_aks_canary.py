"""Production on AKS with strategy = "canary": deploy waits for Flagger's verdict.

As in test_aks.py, only the cluster is replaced (FakeCluster at the subprocess edge);
FakeFlagger adds the Canary, which answers the statuses a test scripts, one per
`kubectl get canary/scoring`, the way Flagger moves a release through its steps.
"""
import copy
import json

import pytest

from ml_service import desired_state
from ml_service.errors import MlopsError
from ml_service.targets import aks
from tests.deploy.test_canary_manifests import enable_canary
from tests.helpers.project import git, push_to_new_remote
from tests.releasing.test_dry_run import released, run_dry, signed_out  # noqa: F401
from tests.targets.test_aks import (LB_IP, FakeCluster, flux_follows, kubectl,  # noqa: F401
                                    production, set_desired, target)

NAMESPACE_EVENTS = [
    {"type": "Normal", "lastTimestamp": "2026-01-01T10:00:00Z",
     "message": "Advance scoring.ns canary weight 10"},
    {"type": "Warning", "lastTimestamp": "2026-01-01T10:01:00Z",
     "message": "Halt scoring.ns advancement error-rate 0.05 > 0.01"},
    {"type": "Warning", "lastTimestamp": "2026-01-01T10:01:01Z",
     "message": "Rolling back scoring.ns failed checks threshold reached 1"},
]


def canary_status(phase, weight=0, spec="new", message=""):
    return {"phase": phase, "canaryWeight": weight, "lastAppliedSpec": spec,
            "conditions": [{"type": "Promoted", "message": message}] if message else []}


class FakeFlagger(FakeCluster):
    """A cluster with Flagger: `scoring-primary` serves; the Canary follows `script`
    from the apply on, and a promotion copies `scoring` to `scoring-primary`."""

    def __init__(self, kubectl, script):  # noqa: F811
        super().__init__(kubectl)
        self.script = script
        self.pending = iter(())
        self.canary = canary_status("Succeeded", spec="old")
        self.primary = None
        self.events = []
        self.restarted = False
        self.installed = True  # Flagger's CRDs
        # What deploy/canary needs besides: the add-on's ingress class, the query proxy.
        self.present = {"ingressclass/webapprouting.kubernetes.azure.com",
                        "service/azure-monitor-query-proxy"}

    def promote(self):
        self.primary = copy.deepcopy(self.deployment)
        self.primary["metadata"]["name"] = aks.PRIMARY

    def apply(self, overlay):
        super().apply(overlay)
        self.pending = iter(self.script)

    def answer(self, command, args):
        if args[:2] == ["get", aks.CANARY]:
            self.canary = next(self.pending, self.canary)
            if self.canary["phase"] in aks.CANARY_DONE and self.canary["lastAppliedSpec"] \
                    == "new":
                self.promote()
            return 0, json.dumps({"status": self.canary}), ""
        if args[:2] == ["get", f"deployment/{aks.PRIMARY}"]:
            if self.primary is None:
                return 1, "", 'Error from server (NotFound): "scoring-primary" not found'
            return 0, json.dumps(self.primary), ""
        if args[:2] == ["get", aks.INGRESS]:
            return 0, json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": LB_IP}]}}}), ""
        if args[:3] == ["rollout", "restart", f"deployment/{aks.PRIMARY}"]:
            self.restarted = True
            return 0, "deployment.apps/scoring-primary restarted\n", ""
        if args[:2] == ["get", f"crd/{aks.FLAGGER_CRD}"]:
            if not self.installed:
                return 1, "", ('Error from server (NotFound): customresourcedefinitions'
                               f'.apiextensions.k8s.io "{aks.FLAGGER_CRD}" not found')
            return 0, json.dumps({"metadata": {"name": aks.FLAGGER_CRD}}), ""
        if args[0] == "get" and args[1].split("/")[0] in ("ingressclass", "service") \
                and args[1] != f"service/{aks.SERVICE}":
            if args[1] not in self.present:
                return 1, "", f'Error from server (NotFound): "{args[1]}" not found'
            return 0, json.dumps({"metadata": {"name": args[1].split("/")[1]}}), ""
        if args[:2] == ["get", "events"]:
            return 0, json.dumps({"items": self.events}), ""
        return super().answer(command, args)


def canary_production(project, settings):
    enable_canary(project / "deploy" / "overlays" / "production")
    return production(settings, "push", strategy="canary")


def serving_version(settings, kubectl, version):  # noqa: F811
    """A FakeFlagger on which `version` went through a canary and serves."""
    cluster = FakeFlagger(kubectl, [canary_status("Succeeded")])
    cluster.apply(project_overlay(settings))
    cluster.promote()
    cluster.canary, cluster.pending = canary_status("Succeeded", spec="old"), iter(())
    assert cluster.version() == version
    return cluster


def project_overlay(settings):
    return settings.project_root / "deploy" / "overlays" / "production"


def steps_printed(capsys):
    return [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("canary:")]


def test_a_good_release_goes_through_every_step(project, settings, kubectl, capsys):  # noqa: F811
    settings = canary_production(project, settings)
    set_desired(settings, "2")
    cluster = serving_version(settings, kubectl, "2")
    cluster.script = [
        # Flagger has not seen the change yet: the previous release's verdict is stale.
        canary_status("Succeeded", spec="old"),
        canary_status("Progressing", 0), canary_status("Progressing", 10),
        canary_status("Progressing", 10), canary_status("Progressing", 50),
        canary_status("Promoting", 0), canary_status("Succeeded", 0)]
    rel = set_desired(settings, "3")
    production_target = target(settings, cluster)
    production_target.check_ready()
    deployment = production_target.deploy(rel)
    assert deployment.healthy and deployment.model_version == "3"
    assert deployment.scoring_uri == f"http://{LB_IP}/score"
    assert steps_printed(capsys) == [
        "canary: 10 % of traffic (step 1 of 2), analysing",
        "canary: 10 % of traffic, analysis passed",
        "canary: 50 % of traffic (step 2 of 2), analysing",
        "canary: 50 % of traffic, analysis passed",
        "canary: Succeeded, version 3 takes all traffic"]
    verbs = [" ".join(c[1:]) for c in cluster.commands if c[0] != "git"]
    assert not any("rollout status" in v or "rollout undo" in v for v in verbs), \
        "Flagger rolls out and back, not kubectl"
    # The new key reaches the pods that serve; restarting `scoring` would start a canary.
    assert cluster.restarted


def test_a_failed_check_names_itself_and_leaves_the_previous_release(
        project, settings, kubectl, capsys):  # noqa: F811
    settings = canary_production(project, settings)
    set_desired(settings, "2")
    cluster = serving_version(settings, kubectl, "2")
    cluster.events = list(reversed(NAMESPACE_EVENTS))  # kubectl does not sort them
    cluster.script = [
        canary_status("Progressing", 10),
        canary_status("Failed", 0, message="Canary analysis failed, Deployment scaled to "
                      "zero.")]
    rel = set_desired(settings, "3")
    with pytest.raises(MlopsError) as raised:
        target(settings, cluster).deploy(rel)
    assert raised.value.what == (
        "Flagger rolled back version 3 on production at 10 % of traffic: Halt scoring.ns "
        "advancement error-rate 0.05 > 0.01. Canary analysis failed, Deployment scaled "
        "to zero.")
    assert "previous release still serves (deployment scoring-primary)" in raised.value.fix
    assert aks.AksTarget._version(cluster.primary) == "2"
    assert steps_printed(capsys) == ["canary: 10 % of traffic (step 1 of 2), analysing"]


def test_a_canary_that_never_ends_times_out(project, settings, kubectl):  # noqa: F811
    settings = canary_production(project, settings)
    set_desired(settings, "2")
    cluster = serving_version(settings, kubectl, "2")
    cluster.script = [canary_status("Progressing", 10)]
    rel = set_desired(settings, "3")
    with pytest.raises(MlopsError) as raised:
        target(settings, cluster).deploy(rel)
    assert "did not finish the canary of version 3 on production within 600 s: phase " \
        "Progressing, 10 % of traffic" in raised.value.what
    assert "sync_timeout must cover every step" in raised.value.fix


def test_the_same_release_again_is_not_waited_for(project, settings, kubectl):  # noqa: F811
    settings = canary_production(project, settings)
    rel = set_desired(settings, "2")
    cluster = serving_version(settings, kubectl, "2")
    cluster.script = []  # the Deployment did not change: Flagger starts nothing
    assert target(settings, cluster).deploy(rel).model_version == "2"


def flux_applies_new_commits(cluster, project, remote):
    """Play Flux: when the Canary is read, apply the overlay of the remote's main if it
    got a new commit since Flux last looked."""
    checkout = project.parent / f"{project.name}-flux"
    git(project.parent, "clone", "--quiet", str(remote), str(checkout))
    answer = cluster.answer

    def with_flux(command, args):
        if args[:2] == ["get", aks.CANARY]:
            before = git(checkout, "rev-parse", "HEAD")
            git(checkout, "pull", "--quiet")
            if git(checkout, "rev-parse", "HEAD") != before:
                cluster.apply(checkout / "deploy" / "overlays" / "production")
        return answer(command, args)

    cluster.answer = with_flux


def test_gitops_waits_for_the_canary_of_the_pushed_commit(
        project, settings, kubectl, tmp_path, capsys):  # noqa: F811
    enable_canary(project / "deploy" / "overlays" / "production")
    settings = production(settings, "gitops", strategy="canary")
    set_desired(settings, "2")
    remote = push_to_new_remote(project, tmp_path.parent / f"{tmp_path.name}-remote.git")
    cluster = serving_version(settings, kubectl, "2")
    cluster.script = [canary_status("Progressing", 10), canary_status("Succeeded", 0)]
    flux_follows(cluster, settings, str(remote))
    flux_applies_new_commits(cluster, project, remote)
    rel = set_desired(settings, "3")
    commit = desired_state.commit(settings, desired_state.overlay_file(settings, "production"),
                                  "Promote version 3")
    production_target = target(settings, cluster)
    production_target.check_ready()
    deployment = production_target.deploy(rel)
    assert deployment.healthy and deployment.model_version == "3"
    assert git(project, "rev-parse", "origin/main") == commit
    assert steps_printed(capsys)[-1] == "canary: Succeeded, version 3 takes all traffic"


def test_check_ready_refuses_a_canary_strategy_without_the_component(
        project, settings, kubectl):  # noqa: F811
    cluster = FakeFlagger(kubectl, [])
    settings = production(settings, "push", strategy="canary")
    with pytest.raises(MlopsError, match="does not include the Flagger component"):
        target(settings, cluster).check_ready()
    assert cluster.commands == []


def test_check_ready_refuses_a_cluster_without_flagger(project, settings, kubectl):  # noqa: F811
    settings = canary_production(project, settings)
    cluster = FakeFlagger(kubectl, [])
    target(settings, cluster).check_ready()
    cluster.installed = False
    with pytest.raises(MlopsError, match="has no Flagger .*canaries.flagger.app.*Nothing "
                                         "was committed.*deploy/canary/README.md"):
        target(settings, cluster).check_ready()


@pytest.mark.parametrize("missing, named, fix", [
    ("ingressclass/webapprouting.kubernetes.azure.com",
     "IngressClass webapprouting.kubernetes.azure.com", "az aks approuting enable"),
    ("service/azure-monitor-query-proxy",
     "Service azure-monitor-query-proxy in namespace monitoring", "query proxy"),
])
def test_check_ready_refuses_a_cluster_without_what_the_canary_needs(
        project, settings, kubectl, missing, named, fix):  # noqa: F811
    settings = canary_production(project, settings)
    cluster = FakeFlagger(kubectl, [])
    cluster.present.discard(missing)
    with pytest.raises(MlopsError) as refused:
        target(settings, cluster).check_ready()
    assert named in refused.value.what and "Nothing was committed" in refused.value.what
    assert fix in refused.value.fix and 'strategy = "direct"' in refused.value.fix
    if missing.startswith("service/"):  # where the MetricTemplates' address says it runs
        assert cluster.commands[-1][-6:-2] == ["--namespace", "monitoring", "get", missing]


def test_dry_run_plan_lists_the_steps_and_thresholds(project, settings, kubectl):  # noqa: F811
    settings = canary_production(project, settings)
    text = target(settings, FakeFlagger(kubectl, [])).plan(set_desired(settings, "3"))
    assert ("wait up to 600 s for Flagger's Canary scoring: steps 10 %, 50 % of traffic, "
            "60s each, then 100 %; rolled back at the first step with under 50 canary "
            "requests, 5xx above 1.0% or p99 above 1.5 x the primary's (over 20 ms)") in text
    assert "kind: Canary" in text and "rollout status" not in text


def test_dry_run_promote_prints_the_canary_plan(run_cli, released, signed_out):  # noqa: F811
    enable_canary(released / "deploy" / "overlays" / "production")
    git(released, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam",
        "production by canary")
    text = run_dry(run_cli, signed_out, "promote", MLOPS_PRODUCTION_KIND="aks",
                   MLOPS_PRODUCTION_STRATEGY="canary")
    assert "for Flagger's Canary scoring: steps 10 %, 50 % of traffic, 60s each" in text
    assert git(released, "status", "--porcelain") == ""
