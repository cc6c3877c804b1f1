"""The container target: the pushed scoring image, run by digest on this machine's Docker.

Staging and production run exactly the image build-image pushed: pulled from the
registry by its digest (never by tag), as the image's own non-root user, with a
read-only root filesystem (a tmpfs on /tmp for the server's worker files), the CPU and
memory limits of [serving] and the target's port on 127.0.0.1. A deployment is healthy
when the image's HEALTHCHECK says so and the port answers. Every container carries
labels naming this project and the target: status and stop find containers by those
labels only, so stop never touches a container this project did not start.

The Docker CLI is driven through subprocess, as CI and people use it: no Docker SDK.
"""
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error

from ml_service import http_client
from ml_service.errors import MlopsError
from ml_service.monitoring.prediction_log import LOG_NAME, server_environment
from ml_service.release import Deployment, http_status
from ml_service.targets.loopback import LoopbackTarget

# Where scripts/container-engine.sh serves a registry (the demo and the tests push there);
# not 5000, where `make ui` serves MLflow.
LOCAL_REGISTRY = "127.0.0.1:5050"
LABEL_PROJECT = "mlops.project"
LABEL_TARGET = "mlops.target"
LABEL_VERSION = "mlops.model_version"
# The image's HEALTHCHECK runs every 30 s, so its first verdict would come after 30 s;
# a deployment waits for health, so its checks run every second.
HEALTH_INTERVAL = "1s"
# The one writable folder of the read-only container (the server's worker files): a
# tmpfs inside the container, not this machine's /tmp.
CONTAINER_TMP = "/tmp"  # nosec B108
ROOT_USERS = ("", "0", "root", "0:0", "root:root")
# Where the container writes its prediction log: the target's folder on this machine
# (.mlops/<target>/) mounted read-write, the only writable path besides the tmpfs.
CONTAINER_LOG_DIR = "/var/log/mlops"


def docker(*args, timeout=600, env=None):
    """Run the Docker CLI; the CompletedProcess, whatever its return code."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False,
                          timeout=timeout, env=env)


def engine_blocker():
    """Why no container can run here (None if one can)."""
    if not shutil.which("docker"):
        return "no docker command is installed"
    if docker("info", timeout=30).returncode != 0:
        return "no Docker engine answers (`docker info` failed)"
    return None


def registry_blocker(registry):
    """Why `registry` cannot take and serve images (None if its API answers)."""
    try:
        with http_client.urlopen(f"http://{registry}/v2/", timeout=3):
            return None
    except urllib.error.HTTPError as error:
        if error.code == 401:  # answers, wants a login
            return None
        return f"the registry {registry} answers {error.code} on /v2/"
    except OSError as error:
        return f"no registry answers at {registry} ({error})"


def _fail(command, result):
    return f"`docker {command}` failed: {(result.stderr or result.stdout).strip()[-800:]}"


class ContainerTarget(LoopbackTarget):
    def __init__(self, name, settings, environ=None):
        super().__init__(name, settings, environ)
        self.project = str(settings.project_root)
        # One name per project and target: two checkouts on one machine never collide.
        project_id = hashlib.sha256(self.project.encode()).hexdigest()[:8]
        self.container_name = f"mlops-{settings.model.name.lower()}-{name}-{project_id}"
        self.previous_name = f"{self.container_name}-previous"

    def _require_engine(self):
        blocker = engine_blocker()
        if blocker:
            raise MlopsError(f"The {self.name} target runs containers, but {blocker}.",
                             "Start Docker (scripts/container-engine.sh sets one up), or set "
                             f"[{self.name}] kind = \"local\" (MLOPS_{self.name.upper()}_KIND).")

    def _ours(self):
        """Inspect data of every container this project started for this target."""
        listed = docker("ps", "--all", "--quiet", "--no-trunc",
                        "--filter", f"label={LABEL_PROJECT}={self.project}",
                        "--filter", f"label={LABEL_TARGET}={self.name}")
        ids = listed.stdout.split()
        if listed.returncode != 0 or not ids:
            return []
        return json.loads(docker("inspect", *ids).stdout or "[]")

    def _current(self):
        return next((info for info in self._ours()
                     if info["Name"].lstrip("/") == self.container_name), None)

    def status(self):
        self._require_engine()
        info = self._current()
        if info is None:
            return None
        version = info["Config"]["Labels"][LABEL_VERSION]
        digest = info["Config"]["Image"].rpartition("@")[2]

        def deployment(healthy, detail=""):
            return Deployment(self.name, version, self.scoring_uri, healthy, detail,
                              image_digest=digest)
        state = info["State"]
        if not state["Running"]:
            return deployment(False, f"container {self.container_name} is {state['Status']} "
                                     f"(exit code {state['ExitCode']}); see "
                                     f"`docker logs {self.container_name}`")
        health = state.get("Health", {}).get("Status", "without a health check")
        if health != "healthy":
            return deployment(False, f"container {self.container_name} is {health}")
        if http_status(f"http://127.0.0.1:{self.port}/", timeout=2) != 200:
            return deployment(False, f"container {self.container_name} is healthy but "
                                     f"port {self.port} does not answer")
        return deployment(True)

    def reference(self, release):
        """The image by digest: repository@sha256:..., never a tag that can move."""
        if not release.image_digest:
            raise MlopsError(
                f"The image of {release.model_name} version {release.model_version} was not "
                f"pushed to a registry, so {self.name} cannot run it by digest.",
                f"Push it: `python -m ml_service build-image --model-version "
                f"{release.model_version} --push` with [image] registry (MLOPS_IMAGE_REGISTRY) "
                f"set to a registry, e.g. {LOCAL_REGISTRY} from scripts/container-engine.sh.")
        return f"{release.image.rpartition(':')[0]}@{release.image_digest}"

    def _run_arguments(self, release, reference, image_port):
        return ["run", "--detach", "--name", self.container_name,
                "--label", f"{LABEL_PROJECT}={self.project}",
                "--label", f"{LABEL_TARGET}={self.name}",
                "--label", f"{LABEL_VERSION}={release.model_version}",
                "--publish", f"127.0.0.1:{self.port}:{image_port}",
                "--read-only", "--tmpfs", CONTAINER_TMP,
                "--cpus", str(self.serving.container_cpus),
                "--memory", f"{self.serving.container_memory_mb}m",
                "--health-interval", HEALTH_INTERVAL,
                "--env", f"MODEL_VERSION={release.model_version}",
                "--env", f"WORKER_COUNT={self.serving.workers}",
                "--env", f"SCORING_MAX_BATCH_SIZE={self.serving.max_batch_size}",
                "--volume", f"{self.prediction_log_dir}:{CONTAINER_LOG_DIR}:rw",
                *(argument for name, value in server_environment(
                    self.monitoring, f"{CONTAINER_LOG_DIR}/{LOG_NAME}").items()
                  for argument in ("--env", f"{name}={value}")),
                # The target's key by name only: docker reads its value from its own
                # environment, so the key is never on a command line.
                *(["--env", "SCORING_KEY"] if self.scoring_key else []),
                reference]

    def plan(self, release):
        reference = self.reference(release)
        command = self._run_arguments(release, reference, "<the image's port>")
        return (f"{self.name} (container): docker pull {reference}; replace container "
                f"{self.container_name} with: docker {' '.join(command)}")

    def _pull(self, reference):
        """Pull `reference` from its registry; the image's configuration."""
        pulled = docker("pull", "--quiet", reference)
        if pulled.returncode != 0:
            raise MlopsError(f"Cannot pull {reference}: {_fail('pull', pulled)}",
                             "Check that the registry answers and holds the image "
                             "(build-image --push records the digest it pushed).")
        config = json.loads(docker("image", "inspect", reference).stdout)[0]["Config"]
        if (config.get("User") or "") in ROOT_USERS:
            raise MlopsError(f"{reference} runs as root (its Dockerfile sets no non-root USER).",
                             "Restore `USER 10001:10001` in scoring/Dockerfile and rebuild.")
        ports = sorted(config.get("ExposedPorts") or {})
        if len(ports) != 1:
            raise MlopsError(f"{reference} exposes {len(ports)} ports ({', '.join(ports)}), "
                             "so the scoring port is unknown.",
                             "Keep exactly one EXPOSE in scoring/Dockerfile.")
        return ports[0].partition("/")[0]

    def _wait_healthy(self):
        """Wait for the container's health; None when healthy, else what went wrong."""
        deadline = time.monotonic() + self.serving.startup_timeout
        while time.monotonic() < deadline:
            info = self._current()
            if info is None:
                return "the container was removed"
            state = info["State"]
            if not state["Running"]:
                return f"the container stopped ({state['Status']}, exit code {state['ExitCode']})"
            if state.get("Health", {}).get("Status") == "healthy" and \
                    http_status(f"http://127.0.0.1:{self.port}/", timeout=2) == 200:
                return None
            time.sleep(0.5)
        return f"it was not healthy within {self.serving.startup_timeout:.0f} s"

    def _start(self, release, reference, image_port):
        """Start `reference`; None once it is healthy, else why not (it is removed)."""
        key = self.scoring_key
        started = docker(*self._run_arguments(release, reference, image_port),
                         env={**os.environ, "SCORING_KEY": key} if key else None)
        if started.returncode != 0:
            docker("rm", "--force", self.container_name)
            if "already allocated" in started.stderr or "address already in use" in \
                    started.stderr:
                return (f"port {self.port} for {self.name} is already in use by another "
                        f"program (choose another: [{self.name}] port in mlops.toml or "
                        f"MLOPS_{self.name.upper()}_PORT)")
            return _fail("run", started)
        problem = self._wait_healthy()
        if problem:
            logs = docker("logs", "--tail", "20", self.container_name)
            problem += ". Its last log lines:\n" + (logs.stdout + logs.stderr).strip()
            docker("rm", "--force", self.container_name)
        return problem

    def deploy(self, release):
        self._require_engine()
        reference = self.reference(release)
        image_port = self._pull(reference)
        docker("rm", "--force", self.previous_name)  # left by an interrupted deploy
        self.prediction_log_dir.mkdir(parents=True, exist_ok=True)
        # The image's user (uid 10001) writes and rotates the log files in it: the folder
        # is writable for all, as the container's uid is not this machine's user.
        self.prediction_log_dir.chmod(0o777)
        previous = self._current()
        if previous is not None:
            # One port per target: the old container steps aside but stays until the
            # new one is healthy, to come back if it is not.
            docker("stop", self.container_name)
            docker("rename", self.container_name, self.previous_name)
        problem = self._start(release, reference, image_port)
        if problem is None:
            if previous is not None:
                docker("rm", "--force", self.previous_name)
            return self.status()
        restored = ""
        if previous is not None:
            docker("rename", self.previous_name, self.container_name)
            docker("start", self.container_name)
            if self._wait_healthy() is None:
                restored = (f" Version {previous['Config']['Labels'][LABEL_VERSION]} is "
                            "serving again.")
        raise MlopsError(f"Version {release.model_version} did not start on {self.name}: "
                         f"{problem}.{restored}",
                         f"See `docker logs` of the image {reference}, fix the release and "
                         "deploy again.")

    def stop(self):
        if engine_blocker():
            return  # no engine, so no container of ours can be running
        ids = [info["Id"] for info in self._ours()]
        if ids:
            docker("rm", "--force", *ids)
