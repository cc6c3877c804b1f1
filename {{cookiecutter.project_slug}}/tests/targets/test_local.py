"""The local target under faults: a redeploy under load, crashes mid-deploy, stale and
foreign processes. Real gunicorn servers on free ports, real processes killed with -9."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from ml_service.config import load_settings
from ml_service.errors import MlopsError
from ml_service.monitoring import records
from ml_service.release import Release
from ml_service.releasing.image import SCORING_FILES
from ml_service.targets import local
from ml_service.targets.local import LocalTarget, listening_sockets
from tests.conftest import cli_env
from tests.helpers.project import free_port
from tests.helpers.scoring import ROW, SCORING_DIR, body, saved_model

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads Linux's /proc")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    yield from saved_model(tmp_path_factory)


@pytest.fixture
def releases(project, model_dir):
    """Versions 1 and 2: build contexts as build-image assembles them (same model)."""
    made = {}
    for version in ("1", "2"):
        context = project / "build" / "images" / f"model-v{version}"
        context.mkdir(parents=True)
        for name in SCORING_FILES:
            shutil.copy2(SCORING_DIR / name, context / name)
        shutil.copytree(model_dir, context / "model")
        made[version] = Release("model", version, f"image:{version}", "", "", context)
    return made


# Small, so that a redeploy under load rotates the server log.
SERVER_LOG_MAX_BYTES = 10_000


@pytest.fixture
def environ():
    return {"MLOPS_PRODUCTION_PORT": str(free_port()), "MLOPS_SERVING_WORKERS": "1",
            "MLOPS_SERVING_SERVER_LOG_MAX_BYTES": str(SERVER_LOG_MAX_BYTES)}


@pytest.fixture
def target(project, environ):
    target = LocalTarget("production", load_settings(project / "mlops.toml", environ=environ))
    yield target
    target.stop()


def score_version(port):
    """The model version the server on `port` answers with, or the error."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=body([ROW]).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())["model_version"]
    except (OSError, ValueError) as error:
        return f"failed: {error}"


class ProbeLoop:
    """Score every 20 ms on a thread; count the answers by version and the failures."""

    def __init__(self, port):
        self.port, self.answers, self.running = port, [], True
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while self.running:
            self.answers.append(score_version(self.port))
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    def failures(self):
        return [answer for answer in self.answers if answer.startswith("failed")]


def test_redeploy_under_a_probe_loop_loses_no_request(target, releases):
    target.deploy(releases["1"])
    # A client that keeps its connection to the old server open: the old server's workers
    # stay up for it (until keep-alive closes it), and while they do, the port's new
    # connections must not queue on the old server's listener, to be reset when it closes.
    kept_alive = http.client.HTTPConnection("127.0.0.1", target.port, timeout=5)
    kept_alive.request("POST", "/score", body([ROW]), {"Content-Type": "application/json"})
    first = json.loads(kept_alive.getresponse().read())["model_version"]
    assert first == "1"
    with ProbeLoop(target.port) as probes:
        time.sleep(0.3)
        target.deploy(releases["2"])
        time.sleep(0.3)
    kept_alive.close()
    print(f"probes: {len(probes.answers)}, failed: {len(probes.failures())}")
    assert probes.failures() == []
    assert probes.answers[0] == "1" and probes.answers[-1] == "2"
    assert target.status().model_version == "2"
    # Both servers recorded every answer in the target's one prediction log (sample 1.0).
    logged = records.read_log_files(target.prediction_log_dir)
    assert target.prediction_log_dir == target.state_dir / "production"
    assert sorted(record["model_version"] for record in logged) == sorted(
        [first, *probes.answers])
    # Both servers wrote the target's one server log, which rotated within its bounds
    # ([serving] server_log_max_bytes; server_log_backups = 2).
    files = sorted(path.name for path in target.state_dir.glob("production.log*"))
    assert files[:2] == ["production.log", "production.log.1"]
    assert set(files) <= {"production.log", "production.log.1", "production.log.2",
                          "production.log.lock"}
    assert all((target.state_dir / name).stat().st_size <= SERVER_LOG_MAX_BYTES
               for name in files)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stale_pid_in_the_state_file_is_never_killed(target, releases):
    # An unrelated program now runs under the PID the state file names.
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        target.state_dir.mkdir(exist_ok=True)
        target.state_file.write_text(json.dumps({"servers": [
            {"pid": bystander.pid, "command": ["gunicorn", "--config", "x"],
             "start_ticks": 1, "model_version": "1"}]}))
        assert target.status().healthy is False
        target.deploy(releases["1"])
        target.stop()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_finds_a_server_missing_from_the_state_file(target, releases):
    target.deploy(releases["1"])
    pid = json.loads(target.state_file.read_text())["servers"][0]["pid"]
    target.state_file.unlink()
    target.stop()  # it also reaps the server, a child of this process
    assert not alive(pid)
    assert not target.servers()


DEPLOY_IN_A_CHILD = """
import sys
from pathlib import Path
from ml_service.config import load_settings
from ml_service.release import Release
from ml_service.targets.local import LocalTarget
root, port, version = sys.argv[1:]
settings = load_settings(root + "/mlops.toml", environ={
    "MLOPS_PRODUCTION_PORT": port, "MLOPS_SERVING_WORKERS": "1"})
context = Path(root) / "build" / "images" / f"model-v{version}"
LocalTarget("production", settings).deploy(Release("model", version, "i", "", "", context))
"""


@pytest.mark.parametrize("kill_when", ["new server recorded", "at 50 ms"])
@pytest.mark.parametrize("desired", ["1", "2"])
def test_deploy_killed_mid_way_converges_on_the_next_deploy(
        target, releases, project, kill_when, desired):
    target.deploy(releases["1"])
    child = subprocess.Popen(
        [sys.executable, "-c", DEPLOY_IN_A_CHILD, str(project), str(target.port), "2"],
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_when == "at 50 ms":
        time.sleep(0.05)
    else:
        deadline = time.monotonic() + 30
        while len(target._record()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(target._record()) == 2
    child.send_signal(signal.SIGKILL)
    child.wait()
    with ProbeLoop(target.port) as probes:
        deployment = target.deploy(releases[desired])
    assert (deployment.healthy, deployment.model_version) == (True, desired)
    servers = target.servers()
    assert [server.model_version for server in servers] == [desired]
    assert probes.failures() == []
    target.stop()
    time.sleep(0.5)
    assert not any(alive(server.pid) for server in servers)
    assert not target.servers()


def test_redeploys_and_a_canary_pass_the_ports_one_listening_socket_on(target, releases):
    """No listener of the port ever closes while another serves (the kernel would reset
    the connections queued on it): servers, and a canary's split proxy, are handed the one
    socket the first deploy created."""
    target.deploy(releases["1"])
    [first] = listening_sockets(target.port)
    target.deploy(releases["2"])
    assert listening_sockets(target.port) == {first}
    split = target.start_split(releases["2"], releases["1"])
    split.route(50)
    assert {score_version(target.port) for _ in range(4)} == {"1", "2"}
    assert listening_sockets(target.port) == {first}
    target.deploy(releases["1"])
    assert listening_sockets(target.port) == {first}
    assert target.status().healthy


def test_a_server_that_offers_no_socket_is_replaced_beside_it_on_the_shared_port(
        target, releases, monkeypatch):
    """A server that hands no socket on (one started before servers did) is still
    replaced: the new one listens on a socket of its own beside it, on the shared port
    (where Linux resets what is queued on the old one as it closes, unless
    net.ipv4.tcp_migrate_req is set), and the old one's closes."""
    monkeypatch.setattr(local, "take_listener", lambda offer, port: None)
    target.deploy(releases["1"])
    [old] = listening_sockets(target.port)
    deployment = target.deploy(releases["2"])
    assert (deployment.healthy, deployment.model_version) == (True, "2")
    [new] = listening_sockets(target.port)
    assert new != old
    assert score_version(target.port) == "2"


def test_a_socket_is_taken_only_from_an_offer_of_this_port(target, releases):
    target.deploy(releases["1"])
    [server] = target.servers()
    assert local.take_listener("", target.port) is None
    assert local.take_listener(server.listener_offer + "-gone", target.port) is None
    assert local.take_listener(server.listener_offer, free_port()) is None
    with local.take_listener(server.listener_offer, target.port) as listener:
        assert listener.getsockname() == ("127.0.0.1", target.port)


def test_foreign_listener_on_the_port_fails_status_and_deploy(target, releases):
    target.deploy(releases["1"])
    with socket.socket() as squatter:
        # Another program sharing the port (SO_REUSEPORT, which the port's socket allows).
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        squatter.bind(("127.0.0.1", target.port))
        squatter.listen()
        deployment = target.status()
        assert not deployment.healthy
        assert f"also served by process(es) {os.getpid()}" in deployment.detail
        with pytest.raises(MlopsError, match=f"in use by another program \\(process "
                                             f"{os.getpid()}\\)"):
            target.deploy(releases["2"])
