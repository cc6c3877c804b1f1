"""The container target: the pushed scoring image, run by digest on this machine's Docker.

Staging and production run exactly the image build-image pushed: pulled from the
registry by its digest (never by tag), as the image's own non-root user, with a
read-only root filesystem (a tmpfs on /tmp for the server's worker files) and the CPU
and memory limits of [serving]. A deployment is healthy when the image's HEALTHCHECK
says so and the target's port answers. Every container carries labels naming this
project and the target: status and stop find containers by those labels only, so stop
never touches a container this project did not start.

The target's port on 127.0.0.1 is served by one front at all times: the traffic split
proxy (traffic_split.py), a process on this machine supervised as the local target
supervises its servers (marked on its command line, found by /proc, started again by
`deploy` when it is gone). Each container publishes its scoring port on a private port
of 127.0.0.1 that Docker picks. Docker's own port publishing could not do this: one
port, one container, so a new container could only take the port once the old one gave
it up, leaving it unserved for a moment. A deploy starts the new container beside the
one serving, switches the front to it once it is healthy, then stops the old one (which
answers what it took first): no request fails because of a deploy. A canary (promote
with strategy = "canary") starts the new container the same way and has the front split
the traffic step by step (ml_service/releasing/canary.py); the deploy that ends it keeps
the one container that won.

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
from ml_service.releasing.interrupts import signals_held
from ml_service.targets.local import (SERVER_MARK, Process, TrafficSplit, marked_processes,
                                      port_open, start_traffic_split, stop_group)
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
# How long a container that no longer takes traffic has to answer the requests it took
# before it is stopped by force (gunicorn finishes them on SIGTERM).
STOP_GRACE_SECONDS = 30


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


def _published_port(info):
    """The port of this machine the container's scoring port is published on (None when
    it is not running)."""
    ports = info["NetworkSettings"].get("Ports") or {}
    bindings = [binding for published in ports.values() for binding in published or ()]
    return int(bindings[0]["HostPort"]) if bindings else None


class ContainerTarget(LoopbackTarget):
    def __init__(self, name, settings, environ=None):
        super().__init__(name, settings, environ)
        self.project = str(settings.project_root)
        # One name per project and target: two checkouts on one machine never collide.
        project_id = hashlib.sha256(self.project.encode()).hexdigest()[:8]
        self.container_name = f"mlops-{settings.model.name.lower()}-{name}-{project_id}"
        self.log_file = settings.project_root / ".mlops" / f"{name}.log"
        self.front_mark = f"{SERVER_MARK}={name}.front@{settings.project_root.resolve()}"

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

    def front(self):
        """The front process serving the target's port (traffic_split.py), or None."""
        return next((Process.of_process(pid, command)
                     for pid, command in marked_processes(self.front_mark)), None)

    @staticmethod
    def _routes(front):
        """The front's split ({"canary": percent, "stable_counts": {"port": ...},
        "canary_counts": {...}}), or None when it does not answer."""
        try:
            return TrafficSplit.of_process(front).counts()
        except (OSError, ValueError):
            return None

    def status(self):
        self._require_engine()
        ours, front = self._ours(), self.front()
        routes = self._routes(front) if front else None
        by_port = {_published_port(info): info for info in ours}
        stable_port = routes["stable_counts"]["port"] if routes else None
        if routes and stable_port not in by_port:
            return Deployment(self.name, "", self.scoring_uri, False,
                              f"the front of port {self.port} routes to port {stable_port}, "
                              "where no container of this project runs; deploy again")
        info = by_port.get(stable_port) or next(
            (info for info in ours if info["Name"].lstrip("/") == self.container_name),
            ours[-1] if ours else None)
        if info is None:
            return None
        name = info["Name"].lstrip("/")
        version = info["Config"]["Labels"][LABEL_VERSION]

        def deployment(healthy, detail=""):
            return Deployment(self.name, version, self.scoring_uri, healthy, detail,
                              image_digest=info["Config"]["Image"].rpartition("@")[2])
        if front is None:
            return deployment(False, f"no front serves port {self.port} (its process, "
                                     f"traffic_split.py, is not running; see {self.log_file}); "
                                     "deploy again to start it")
        if routes is None:
            return deployment(False, f"the front of port {self.port} (process {front.pid}) "
                                     f"does not answer; see {self.log_file}")
        canary = by_port.get(routes["canary_counts"]["port"])
        if canary is not info:
            versions = [version, canary["Config"]["Labels"][LABEL_VERSION] if canary else "?"]
            return deployment(False, f"a canary's traffic split serves port {self.port} "
                                     f"(versions {' and '.join(versions)}): a promote runs, or "
                                     "was stopped before it ended; promote or deploy again to "
                                     "converge")
        state = info["State"]
        if not state["Running"]:
            return deployment(False, f"container {name} is {state['Status']} "
                                     f"(exit code {state['ExitCode']}); see `docker logs {name}`")
        health = state.get("Health", {}).get("Status", "without a health check")
        if health != "healthy":
            return deployment(False, f"container {name} is {health}")
        if http_status(f"http://127.0.0.1:{self.port}/", timeout=2) != 200:
            return deployment(False, f"container {name} is healthy but port {self.port} "
                                     "does not answer")
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

    def _run_arguments(self, release, reference, image_port, name):
        return ["run", "--detach", "--name", name,
                "--label", f"{LABEL_PROJECT}={self.project}",
                "--label", f"{LABEL_TARGET}={self.name}",
                "--label", f"{LABEL_VERSION}={release.model_version}",
                # A private port Docker picks; the front serves the target's port.
                "--publish", f"127.0.0.1::{image_port}",
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
        command = self._run_arguments(release, reference, "<the image's port>",
                                      f"{self.container_name}-<n>")
        return (f"{self.name} (container): docker pull {reference}; docker "
                f"{' '.join(command)}; once it is healthy, the front on port {self.port} "
                f"(traffic_split.py) sends it all traffic and the old container stops; the "
                f"new one is renamed {self.container_name}")

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

    @staticmethod
    def _inspect(name):
        inspected = docker("inspect", name)
        return json.loads(inspected.stdout)[0] if inspected.returncode == 0 else None

    @staticmethod
    def _healthy(info):
        """Whether the container runs, its HEALTHCHECK says healthy and its port answers."""
        return (info["State"]["Running"]
                and info["State"].get("Health", {}).get("Status") == "healthy"
                and http_status(f"http://127.0.0.1:{_published_port(info)}/", timeout=2) == 200)

    def _wait_healthy(self, name):
        """Wait for the container's health; None when healthy, else what went wrong."""
        deadline = time.monotonic() + self.serving.startup_timeout
        while time.monotonic() < deadline:
            info = self._inspect(name)
            if info is None:
                return "the container was removed"
            state = info["State"]
            if not state["Running"]:
                return f"the container stopped ({state['Status']}, exit code {state['ExitCode']})"
            if self._healthy(info):
                return None
            time.sleep(0.5)
        return f"it was not healthy within {self.serving.startup_timeout:.0f} s"

    def _start(self, release):
        """Start a container of `release` beside the running ones, on a private port;
        its inspect data once it is healthy. If it is not, it is removed and MlopsError
        says why, the target serving what it served before."""
        reference = self.reference(release)
        image_port = self._pull(reference)
        self.prediction_log_dir.mkdir(parents=True, exist_ok=True)
        # The image's user (uid 10001) writes and rotates the log files in it: the folder
        # is writable for all, as the container's uid is not this machine's user.
        self.prediction_log_dir.chmod(0o777)
        name = f"{self.container_name}-{time.time_ns()}"
        key = self.scoring_key
        problem = "interrupted"
        try:
            started = docker(*self._run_arguments(release, reference, image_port, name),
                             env={**os.environ, "SCORING_KEY": key} if key else None)
            problem = _fail("run", started) if started.returncode != 0 else \
                self._wait_healthy(name)
            if problem is None:
                return self._inspect(name)
            logs = docker("logs", "--tail", "20", name)
            problem += ". Its last log lines:\n" + (logs.stdout + logs.stderr).strip()
        finally:
            if problem is not None:  # also when interrupted
                docker("rm", "--force", name)
        raise MlopsError(f"Version {release.model_version} did not start on {self.name}: "
                         f"{problem}. {self.name} serves what it served before.",
                         f"See `docker logs` of the image {reference}, fix the release and "
                         "deploy again.")

    def _retire(self, containers):
        """Stop `containers` (inspect data), which take no more traffic: each answers
        what it took first; then remove them."""
        ids = [info["Id"] for info in containers]
        if ids:
            docker("stop", "--time", str(STOP_GRACE_SECONDS), *ids)
            docker("rm", "--force", *ids)

    def deploy(self, release):
        self._require_engine()
        reference = self.reference(release)
        ours, front = self._ours(), self.front()
        # Without a front, only a container this project started before the front existed
        # (publishing the port itself) may hold the port.
        if front is None and port_open(self.port) and \
                self.port not in map(_published_port, ours):
            raise MlopsError(
                f"Port {self.port} for {self.name} is already in use by another program.",
                f"Stop that program or choose another port: [{self.name}] port in mlops.toml "
                f"or MLOPS_{self.name.upper()}_PORT.")
        routes = self._routes(front) if front else None
        if front is not None and routes is None:
            stop_group(front)  # it does not answer: a new front replaces it
            front = None
        serving_port = routes["stable_counts"]["port"] if routes else None
        # A healthy container of this very image is kept (the one serving first): the
        # canary that passed, or the current release after a canary that failed.
        candidates = sorted(ours, key=lambda info: _published_port(info) != serving_port)
        keep = next((info for info in candidates
                     if info["Config"]["Image"] == reference
                     and _published_port(info) not in (None, self.port)
                     and self._healthy(info)), None) or self._start(release)
        self._serve(keep, [info for info in ours if info["Id"] != keep["Id"]], front)
        return self.status()

    def _serve(self, chosen, others, front):
        """Make the front send all traffic to `chosen` (starting the front if none runs),
        retire `others` and give `chosen` the target's container name. Once begun,
        finished even if interrupted: one container serves afterwards."""
        port = _published_port(chosen)
        with signals_held():
            if front is None:
                # Nothing serves the port but, at most, a container started before the
                # front existed: it gives the port up first (a moment unserved, once).
                self._retire(others)
                self.log_file.parent.mkdir(exist_ok=True)
                if start_traffic_split(self.port, port, port, self.front_mark,
                                       self.log_file) is None:
                    raise MlopsError(f"The front of {self.name} (traffic_split.py) did not "
                                     f"start on port {self.port}.", f"See {self.log_file}.")
            else:
                TrafficSplit.of_process(front).route(0, stable_port=port, canary_port=port)
                self._retire(others)
            if chosen["Name"].lstrip("/") != self.container_name:
                docker("rename", chosen["Id"], self.container_name)

    def start_split(self, current, new):
        """Split the port's traffic between the container of `current` (started first if
        it does not serve the port) and a new one of `new`, all to `current` for now;
        return the TrafficSplit. If `new` does not start, nothing changed."""
        serving = self.status()
        if serving is None or not serving.healthy or \
                serving.image_digest != current.image_digest:
            self.deploy(current)
        canary = self._start(new)
        split = TrafficSplit.of_process(self.front())
        split.route(0, canary_port=_published_port(canary))
        return split

    def stop(self):
        front = self.front()
        if front is not None:
            stop_group(front)
        if engine_blocker():
            return  # no engine, so no container of ours can be running
        ids = [info["Id"] for info in self._ours()]
        if ids:
            docker("rm", "--force", *ids)
