"""The local target: the scoring server as a background process on this machine.

It runs the same score.py and model files that go into the image, on the same
server with the same settings (scoring/gunicorn.conf.py) the image runs, so
staging and production behave here as they do on ACI and AKS; but it listens on
loopback only. What runs where is cached in .mlops/<target>.json, and
the cache is checked against the live process and port every time.
"""
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ml_service.errors import MlopsError
from ml_service.release import Deployment, http_status


def _alive(pid):
    try:
        # Reap it first if it is our own exited child (a zombie still "exists").
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _port_open(port):
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _healthy(port):
    return http_status(f"http://127.0.0.1:{port}/", timeout=2) == 200


def server_command(scoring_dir, model_dir, port, workers):
    """(command, environment variables) of a scoring server on 127.0.0.1:`port`.

    The image's command (scoring/Dockerfile) but on loopback: reachable from this machine
    only. `scoring_dir` holds score.py and gunicorn.conf.py; `model_dir` the MLflow model.
    """
    # From this interpreter's environment (CI and venvs alike).
    beside = Path(sys.executable).with_name("gunicorn")
    gunicorn = str(beside) if beside.exists() else shutil.which("gunicorn")
    if not gunicorn:
        raise MlopsError("The scoring server (gunicorn) is not installed.",
                         "Install the project's requirements: `make install`.")
    return ([gunicorn, "--config", str(Path(scoring_dir) / "gunicorn.conf.py"),
             "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
            {"AZUREML_MODEL_DIR": str(model_dir)})


class LocalTarget:
    def __init__(self, name, settings):
        self.name = name
        self.port = settings.target_settings(name).port
        self.serving = settings.serving
        self.state_dir = settings.project_root / ".mlops"
        self.state_file = self.state_dir / f"{name}.json"
        self.log_file = self.state_dir / f"{name}.log"

    @property
    def scoring_uri(self):
        return f"http://127.0.0.1:{self.port}/score"

    def _state(self):
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def request_headers(self):
        return {}

    def status(self):
        state = self._state()
        if state is None:
            return None
        if not _alive(state["pid"]):
            return Deployment(self.name, state["model_version"], self.scoring_uri, False,
                              f"the server process {state['pid']} is not running any more "
                              f"(it died or was stopped; see {self.log_file})")
        if not _healthy(self.port):
            return Deployment(self.name, state["model_version"], self.scoring_uri, False,
                              f"process {state['pid']} does not answer on port {self.port}")
        return Deployment(self.name, state["model_version"], self.scoring_uri, True)

    def _server(self, release):
        """(command, environment variables) of the server for `release`."""
        command, settings = server_command(release.context_dir, release.context_dir / "model",
                                           self.port, self.serving.workers)
        return command, {**settings, "MODEL_VERSION": release.model_version,
                         "SCORING_MAX_BATCH_SIZE": str(self.serving.max_batch_size)}

    def plan(self, release):
        command, settings = self._server(release)
        return (f"{self.name} (local): stop the server on port {self.port} if one runs, then "
                f"{' '.join(f'{name}={value}' for name, value in settings.items())} "
                f"{' '.join(command)}")

    def _start(self, release):
        self.state_dir.mkdir(exist_ok=True)
        command, settings = self._server(release)
        env = {**os.environ, **settings}
        with open(self.log_file, "ab") as log:
            # Its own session: the server outlives this command and is stopped as a group.
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env,
                                       start_new_session=True)
        deadline = time.monotonic() + self.serving.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _healthy(self.port):
                self.state_file.write_text(json.dumps({
                    "pid": process.pid, "port": self.port,
                    "model_version": release.model_version,
                    "context_dir": str(release.context_dir), "image": release.image,
                }, indent=2))
                return True
            time.sleep(0.5)
        self._kill(process.pid)
        return False

    def _kill(self, pid):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(100):
            if not _alive(pid):
                return
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)

    def stop(self):
        state = self._state()
        if state is not None:
            self._kill(state["pid"])
            self.state_file.unlink()

    def deploy(self, release):
        if not (release.context_dir / "score.py").exists():
            raise MlopsError(
                f"The build context of {release.model_name} version {release.model_version} "
                f"is not on this machine ({release.context_dir}).",
                f"Run `python -m ml_service build-image --model-version {release.model_version}`.")
        state = self._state()
        ours = state is not None and _alive(state["pid"])
        if _port_open(self.port) and not ours:
            raise MlopsError(
                f"Port {self.port} for {self.name} is already in use by another program.",
                f"Stop that program or choose another port: [{self.name}] port in mlops.toml "
                f"or MLOPS_{self.name.upper()}_PORT.")
        previous = state if ours else None
        self.stop()
        if self._start(release):
            return self.status()
        restored = ""
        if previous is not None:
            old = dataclasses.replace(release, model_version=previous["model_version"],
                                      context_dir=Path(previous["context_dir"]),
                                      image=previous["image"])
            if self._start(old):
                restored = f" Version {previous['model_version']} is serving again."
        raise MlopsError(
            f"Version {release.model_version} did not become healthy on {self.name} within "
            f"{self.serving.startup_timeout:.0f} s.{restored}",
            f"See the server log {self.log_file}.")
