"""The local target: the scoring server as a background process on this machine.

It runs the same score.py and model files that go into the image, on the same
server with the same settings (scoring/gunicorn.conf.py) the image runs, so
staging and production behave here as they do on ACI and AKS; but it listens on
loopback only. The server gets the target's own key (STAGING_SCORING_KEY, ...;
release.scoring_key) as SCORING_KEY, and none when that is unset: a key variable of the
caller's shell never reaches it.

A deploy never leaves the port unserved: the new server listens on the port's very
socket, which the running server hands over (scoring/gunicorn.conf.py), and on a private
check port too; the old one is stopped only once the new one answers there, and a
connection queued meanwhile waits on the one socket for whichever server accepts it
first. (Servers that each bound the port, SO_REUSEPORT, would not do: the kernel resets
what is queued on a listener when it closes.) A server that cannot hand the socket over
(one started before servers did) gets a new one beside it, on the shared port. Every
server is recorded in .mlops/<target>.json (PID, command line, start time) before it is
waited for, and is found again by its command line, which names this project, the target
and the port: after a crash at any point, `deploy` and `stop` see every server the
project started, and a PID is killed only when its command line says it is one of them.

A canary (ml_service/releasing/canary.py) serves the port through a traffic split
instead (traffic_split.py): the current and the new release each on a private port only,
the split proxy on the target's port, handed the port's socket the same way (and the
canary's servers keep a copy, to hand on); it gives the port back the same way: the
deploy that ends the canary starts one release on the port and stops the split, its
proxy first. Its processes carry their own mark, so a canary interrupted at any point is
found and ended by the next `deploy` or `stop`.
"""
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ml_service import http_client
from ml_service.errors import MlopsError
from ml_service.monitoring.prediction_log import LOG_NAME, server_environment
from ml_service.release import (SERVER_KEY_VARIABLES, Deployment, http_status,
                                verify_context)
from ml_service.releasing.interrupts import signals_held
from ml_service.targets.loopback import LoopbackTarget, free_port

PROC = Path("/proc")
# Set on the server's command line (gunicorn --env): who started it, for which target.
SERVER_MARK = "MLOPS_SERVER"
SPLIT_PROXY = Path(__file__).with_name("traffic_split.py")
SPLIT_START_TIMEOUT = 10.0
# gunicorn's default backlog, for a port's listening socket created here.
LISTEN_BACKLOG = 2048


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


def port_open(port):
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _healthy(port):
    return http_status(f"http://127.0.0.1:{port}/", timeout=2) == 200


def _command_line(pid):
    """The command line of process `pid` as a list, or None when it is gone."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1]


def _start_ticks(pid):
    """When process `pid` started (clock ticks after boot), or None when it is gone: with
    the PID it names one process, even after the PID is reused."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2, in parentheses) may contain spaces.
    return int(stat.rpartition(")")[2].split()[19])


def listening_sockets(port):
    """The listening TCP sockets on `port`, any address, as a process's descriptor links
    to them read ("socket:[<inode>]")."""
    sockets = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                sockets.add(f"socket:[{fields[9]}]")
    return sockets


def _listener_pids(port):
    """The PIDs holding a listening TCP socket on `port` (those this user may see)."""
    inodes = listening_sockets(port)
    pids = set()
    for fd_dir in PROC.glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                pids.add(int(fd_dir.parent.name))
        except OSError:  # gone, or another user's
            continue
    return pids


def _peer_uid(connection):
    """The user ID of the process at the other end of Unix socket `connection`."""
    return struct.unpack("3i", connection.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]


def take_listener(offer, port):
    """The listening socket of 127.0.0.1:`port` from the server that offers it on the
    abstract Unix socket `offer` (scoring/gunicorn.conf.py), or None: no offer (a server
    started before servers offered it), gone, or a process of another user."""
    if not offer:
        return None
    with socket.socket(socket.AF_UNIX) as asking:
        asking.settimeout(5)
        try:
            asking.connect("\0" + offer)
            if _peer_uid(asking) != os.getuid():
                return None
            _, descriptors, _, _ = socket.recv_fds(asking, 1, 1)
        except OSError:
            return None
    if not descriptors:
        return None
    try:
        listener = socket.socket(fileno=descriptors[0])
    except OSError:  # not a socket
        os.close(descriptors[0])
        return None
    if (listener.family != socket.AF_INET or listener.getsockname() != ("127.0.0.1", port)
            or not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
        listener.close()
        return None
    return listener


def bind_listener(port):
    """A new listening socket on 127.0.0.1:`port`, for the first server on the port, or
    beside servers that cannot hand theirs over: sharing the port with them (SO_REUSEPORT;
    set on the socket, it lets a later one share it too)."""
    listener = socket.socket()
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(LISTEN_BACKLOG)
    except OSError:
        listener.close()
        raise
    return listener


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


@dataclasses.dataclass(frozen=True)
class Process:
    """A process this project started, named by its PID and start time."""

    pid: int
    command: tuple
    start_ticks: int

    @classmethod
    def of_process(cls, pid, command):
        """The process running as `pid` with the command line `command` (from /proc)."""
        return cls(pid, tuple(command), _start_ticks(pid))

    def is_running(self):
        """Whether `pid` is still this process (not a later one that reuses the PID)."""
        return (_alive(self.pid) and _start_ticks(self.pid) == self.start_ticks
                and _arguments(_command_line(self.pid) or ()) == _arguments(self.command))


@dataclasses.dataclass(frozen=True)
class Server(Process):
    """One scoring server this project started, as its command line describes it."""

    model_version: str
    check_port: int
    context_dir: Path
    context_digest: str  # of the build context, verified when the server was started
    listener_offer: str  # where it hands the port's socket on; "" if it does not

    @classmethod
    def of_process(cls, pid, command):
        """The server running as `pid` with the command line `command` (from /proc)."""
        options = dict(zip(command, command[1:]))
        environment = dict(value.split("=", 1) for flag, value in zip(command, command[1:])
                           if flag == "--env")
        binds = [value for flag, value in zip(command, command[1:]) if flag == "--bind"]
        return cls(pid, tuple(command), _start_ticks(pid), environment.get("MODEL_VERSION", ""),
                   int(binds[-1].rpartition(":")[2]),
                   Path(options["--config"]).parent, environment.get("CONTEXT_DIGEST", ""),
                   environment.get("MLOPS_LISTENER_OFFER", ""))

    def healthy(self):
        """Whether this very server answers: on its own check port, which no other
        process shares."""
        return _healthy(self.check_port)


class LocalTarget(LoopbackTarget):
    def __init__(self, name, settings, environ=None):
        super().__init__(name, settings, environ)
        self.state_dir = settings.project_root / ".mlops"
        self.state_file = self.state_dir / f"{name}.json"
        self.log_file = self.state_dir / f"{name}.log"
        self.mark = f"{SERVER_MARK}={name}@{settings.project_root.resolve()}"
        self.split_mark = f"{SERVER_MARK}={name}.split@{settings.project_root.resolve()}"

    def _record(self):
        """The servers recorded in the state file (PID, command line), newest last."""
        try:
            return json.loads(self.state_file.read_text())["servers"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return []

    def _write_record(self, servers):
        """Replace the state file in one step: a crash leaves the old or the new record."""
        self.state_dir.mkdir(exist_ok=True)
        partial = self.state_file.with_suffix(".json.partial")
        partial.write_text(json.dumps({"servers": [
            {"pid": server.pid, "command": list(server.command),
             "start_ticks": server.start_ticks, "model_version": server.model_version}
            for server in servers]}, indent=2))
        os.replace(partial, self.state_file)

    def servers(self):
        """Every running server this project started for this target, oldest first: the
        recorded ones and any a crash left unrecorded, each confirmed by its command line."""
        bind = f"127.0.0.1:{self.port}"
        found = {pid: Server.of_process(pid, command)
                 for pid, command in marked_processes(self.mark) if bind in command}
        recorded = [entry["pid"] for entry in self._record()]
        return sorted(found.values(),
                      key=lambda server: (server.pid not in recorded,
                                          recorded.index(server.pid)
                                          if server.pid in recorded else server.pid))

    def split_processes(self):
        """The processes of a canary's traffic split on this target (its proxy first,
        then its servers); none outside a canary."""
        found = [Server.of_process(pid, command) if "--config" in command
                 else Process.of_process(pid, command)
                 for pid, command in marked_processes(self.split_mark)]
        return sorted(found, key=lambda process: (isinstance(process, Server), process.pid))

    def _foreign_listeners(self, servers):
        """PIDs listening on the port that are not one of `servers`, a canary's traffic
        split, or their workers."""
        ours = {process.pid for process in [*servers, *self.split_processes()]}
        return {pid for pid in _listener_pids(self.port) if _group_of(pid) not in ours}

    def status(self):
        servers = self.servers()
        split = self.split_processes()
        if split and not servers:
            versions = [server.model_version for server in split if isinstance(server, Server)]
            return Deployment(self.name, versions[0] if versions else "", self.scoring_uri,
                              False, f"a canary's traffic split serves port {self.port} "
                              f"(versions {' and '.join(versions)}): a promote runs, or was "
                              "stopped before it ended; promote or deploy again to converge")
        if not servers:
            record = self._record()
            if not record:
                return None
            return Deployment(self.name, record[-1]["model_version"], self.scoring_uri, False,
                              f"the server process {record[-1]['pid']} is not running any more "
                              f"(it died or was stopped; see {self.log_file})")
        current = servers[-1]
        versions = sorted({server.model_version for server in servers})
        if len(versions) > 1:
            return Deployment(self.name, current.model_version, self.scoring_uri, False,
                              f"versions {' and '.join(versions)} both serve port {self.port} "
                              "(an interrupted or killed deploy); deploy again to converge")
        if not current.healthy():
            return Deployment(self.name, current.model_version, self.scoring_uri, False,
                              f"process {current.pid} does not answer (see {self.log_file})")
        foreign = self._foreign_listeners(servers)
        if foreign:
            return Deployment(self.name, current.model_version, self.scoring_uri, False,
                              f"port {self.port} is also served by process(es) "
                              f"{', '.join(map(str, sorted(foreign)))}, which this project "
                              "did not start")
        return Deployment(self.name, current.model_version, self.scoring_uri, True,
                          context_digest=current.context_digest)

    def _server(self, release, check_port, split=False):
        """(command, environment variables) of the server for `release`: on the target's
        port, the socket handed over from the server it replaces, and on its own check
        port; for a canary's split (`split`), on its own port only, behind the split
        proxy. Either way it offers the port's socket to the next deploy."""
        command, settings = server_command(release.context_dir, release.context_dir / "model",
                                           check_port if split else self.port,
                                           self.serving.workers)
        key = self.scoring_key
        check = [] if split else ["--bind", f"127.0.0.1:{check_port}"]
        return ([*command, *check,
                 "--env", f"MLOPS_LISTENER_OFFER=mlops-listener-{secrets.token_hex(8)}",
                 "--env", f"MODEL_VERSION={release.model_version}",
                 "--env", f"CONTEXT_DIGEST={release.context_digest}",
                 "--env", self.split_mark if split else self.mark],
                # No __pycache__ written into the build context: its files are verified
                # against the digest build-image recorded before every start.
                {**settings, "PYTHONDONTWRITEBYTECODE": "1",
                 "SCORING_MAX_BATCH_SIZE": str(self.serving.max_batch_size),
                 **server_environment(self.monitoring, self.prediction_log_dir / LOG_NAME),
                 # The server writes its own log, rotated (scoring/server_log.py): it
                 # outlives this command, which only gives it the file for its first lines.
                 "MLOPS_SERVER_LOG": str(self.log_file),
                 "MLOPS_SERVER_LOG_MAX_BYTES": str(self.serving.server_log_max_bytes),
                 "MLOPS_SERVER_LOG_BACKUPS": str(self.serving.server_log_backups),
                 **({"SCORING_KEY": key} if key else {})})

    def plan(self, release):
        command, settings = self._server(release, "<free port>")
        shown = {**settings, **({"SCORING_KEY": "***"} if "SCORING_KEY" in settings else {})}
        return (f"{self.name} (local): start "
                f"{' '.join(f'{name}={value}' for name, value in shown.items())} "
                f"{' '.join(command)} beside the server on port {self.port} if one runs, "
                "then stop the old one once the new one answers")

    def port_listener(self):
        """The port's listening socket, for the next server or split proxy on it: handed
        over by a running server of ours (the newest that offers it: a canary's servers
        keep it too), else a new one."""
        holders = [*self.servers(), *(process for process in self.split_processes()
                                      if isinstance(process, Server))]
        for server in reversed(holders):
            listener = take_listener(server.listener_offer, self.port)
            if listener is not None:
                return listener
        try:
            return bind_listener(self.port)
        except OSError as error:
            raise MlopsError(f"Port {self.port} for {self.name} cannot be listened on: "
                             f"{error.strerror}.",
                             f"Stop the program using it or choose another port: "
                             f"[{self.name}] port in mlops.toml or "
                             f"MLOPS_{self.name.upper()}_PORT.") from error

    def _start(self, release, split=False):
        """Start a server for `release` beside the running ones (`split`: for a canary's
        traffic split); return it once it answers, or stop it and return None."""
        command, settings = self._server(release, free_port(), split)
        # The caller's key variables never reach the server: only the target's own key.
        inherited = {name: value for name, value in os.environ.items()
                     if name not in SERVER_KEY_VARIABLES}
        self.state_dir.mkdir(exist_ok=True)
        server = None
        try:
            with signals_held():
                with open(self.log_file, "ab") as log, self.port_listener() as listener:
                    # Its own session: the server outlives this command and is stopped
                    # as a group. This command's copy of the socket closes here.
                    process = subprocess.Popen(
                        command, stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, start_new_session=True,
                        env={**inherited, **settings,
                             "MLOPS_LISTENER_FD": str(listener.fileno())},
                        pass_fds=[listener.fileno()])
                server = Server.of_process(process.pid, command)
                # Recorded before the wait: if this command dies now, the server is known
                # (a split's server by its mark).
                if not split:
                    self._write_record([*(other for other in self.servers()
                                          if other.pid != server.pid), server])
            deadline = time.monotonic() + self.serving.startup_timeout
            while time.monotonic() < deadline and process.poll() is None:
                if server.healthy():
                    return server
                time.sleep(0.2)
        except KeyboardInterrupt:
            if server is not None:
                self._undo_start(server)
            raise
        stop_group(server)
        return None

    def _undo_start(self, server):
        """Stop a server this deploy started and forget it: the old one serves on."""
        with signals_held():
            stop_group(server)
            self._write_record([other for other in self.servers() if other.pid != server.pid])

    def stop(self):
        for server in self.servers():
            stop_group(server)
        self._stop_split()
        self.state_file.unlink(missing_ok=True)

    def _stop_split(self):
        """End a canary's traffic split: its proxy first (it answers what it took), then
        its servers."""
        for process in self.split_processes():
            stop_group(process)

    def start_split(self, current, new):
        """Serve the port through a traffic split between `current` and `new`, all
        traffic to `current` for now; return the TrafficSplit. The servers on the port
        stop only once the split answers beside them; if any part fails to start, the
        parts started are stopped and the port is served as before."""
        for release in (current, new):
            verify_context(release)
        started = []
        try:
            for release in (current, new):
                server = self._start(release, split=True)
                if server is None:
                    raise MlopsError(f"Version {release.model_version} did not become healthy "
                                     f"for the canary on {self.name} within "
                                     f"{self.serving.startup_timeout:.0f} s; production was not "
                                     "changed.", f"See the server log {self.log_file}.")
                started.append(server)
            split = start_traffic_split(self.port, started[0].check_port,
                                        started[1].check_port, self.split_mark,
                                        self.log_file, self.port_listener())
            if split is None:
                raise MlopsError(f"The canary's traffic split did not start on port "
                                 f"{self.port}; production was not changed.",
                                 f"See {self.log_file}.")
        except BaseException:
            with signals_held():
                self._stop_split()
            raise
        # From here the split serves the port: an interrupt leaves it serving, for the
        # caller's deploy to end (stopping it now would leave the port unserved).
        with signals_held():
            for server in self.servers():
                stop_group(server)
            self._write_record([])
        return split

    def deploy(self, release):
        if not (release.context_dir / "score.py").exists():
            raise MlopsError(
                f"The build context of {release.model_name} version {release.model_version} "
                f"is not on this machine ({release.context_dir}).",
                f"Run `python -m ml_service build-image --model-version {release.model_version}`.")
        running = self.servers()
        foreign = self._foreign_listeners(running)
        if foreign or (not running and not self.split_processes()
                       and port_open(self.port)):
            raise MlopsError(
                f"Port {self.port} for {self.name} is already in use by another program"
                + (f" (process {', '.join(map(str, sorted(foreign)))})." if foreign else "."),
                f"Stop that program or choose another port: [{self.name}] port in mlops.toml "
                f"or MLOPS_{self.name.upper()}_PORT.")
        # What runs is what was built and smoke-tested: the files as build-image recorded
        # them, checked before a server starts from them or one of them is kept.
        verify_context(release)
        # A server of this very release that answers is kept (e.g. one a crashed deploy
        # started): deploying converges instead of restarting.
        keep = next((server for server in reversed(running)
                     if server.model_version == release.model_version
                     and server.context_dir == release.context_dir
                     and server.context_digest == release.context_digest
                     and server.healthy()), None)
        started = None
        try:
            if keep is None:
                keep = started = self._start(release)
            if keep is None:
                self._write_record(self.servers())
                serving = running[-1].model_version if running else None
                raise MlopsError(
                    f"Version {release.model_version} did not become healthy on {self.name} "
                    f"within {self.serving.startup_timeout:.0f} s."
                    + (f" Version {serving} is still serving." if serving else ""),
                    f"See the server log {self.log_file}.")
            # The hand-over, once begun, is finished even if interrupted: one version
            # serves the port afterwards.
            with signals_held():
                self._stop_split()
                for server in self.servers():
                    if server.pid != keep.pid:
                        stop_group(server)
                self._write_record([keep])
                started = None
        except KeyboardInterrupt:
            if started is not None:
                self._undo_start(started)
            raise
        return self.status()


def start_traffic_split(port, stable_port, canary_port, mark, log_file, listener=None):
    """Start the split proxy (traffic_split.py) on `port` in its own session, marked with
    `mark`, all traffic to `stable_port`; its TrafficSplit once it answers, else None. It
    listens on `listener`, the port's socket, when given (this process's copy is closed
    once the proxy has it); else it binds the port itself."""
    control = free_port()
    handed = [] if listener is None else [listener.fileno()]
    command = [sys.executable, str(SPLIT_PROXY), "--port", str(port),
               "--control", str(control), "--stable", str(stable_port),
               "--canary", str(canary_port), "--mark", mark,
               *(["--listener-fd", str(handed[0])] if handed else [])]
    with signals_held(), open(log_file, "ab") as log, listener or contextlib.nullcontext():
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                                   pass_fds=handed)
    split = TrafficSplit(control)
    deadline = time.monotonic() + SPLIT_START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        if http_status(split.control_url, timeout=1) == 200:
            return split
        time.sleep(0.1)
    stop_group(Process.of_process(process.pid, command))
    return None


class TrafficSplit:
    """A split proxy (traffic_split.py), driven over its control port."""

    def __init__(self, control_port):
        self.control_url = f"http://127.0.0.1:{control_port}/split"

    @classmethod
    def of_process(cls, process):
        """The TrafficSplit of the split proxy running as `process`."""
        return cls(int(process.command[process.command.index("--control") + 1]))

    def route(self, canary_percent, stable_port=None, canary_port=None):
        """Send `canary_percent` % of requests to the canary from now on (and, when
        given, each side to its new port); counts restart."""
        ports = "".join(f"&{side}_port={port}" for side, port in
                        (("stable", stable_port), ("canary", canary_port)) if port)
        request = urllib.request.Request(f"{self.control_url}?canary={canary_percent}{ports}",
                                         method="PUT")
        with http_client.urlopen(request, timeout=5) as response:
            return json.load(response)

    def counts(self):
        """{"canary": percent, "stable_counts": {...}, "canary_counts": {...}} since the
        last route(): requests, server_errors, latencies_ms per side."""
        with http_client.urlopen(self.control_url, timeout=5) as response:
            return json.load(response)


def _arguments(command):
    """The server's arguments: what follows the program, which /proc shows as
    `python .../gunicorn` where it was started as `.../gunicorn`."""
    return tuple(command[command.index("--config"):]) if "--config" in command else ()


def marked_processes(mark):
    """(pid, command line) of every process group leader whose command line holds
    `mark`: the workers are forked from it with the same command."""
    for cmdline in PROC.glob("[0-9]*/cmdline"):
        pid = int(cmdline.parent.name)
        command = _command_line(pid)
        if command and mark in command and _group_leader(pid):
            yield pid, command


def _group_leader(pid):
    return _group_of(pid) == pid


def _group_of(pid):
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def stop_group(server):
    """Stop `server` and its workers (its process group): gracefully, then by force. Only
    while its PID still runs the server's command line, so a reused PID is never hit."""
    if not server.is_running():
        return
    # The leader alone: gunicorn's arbiter closes its copy of the listening socket before
    # it stops its workers, which accept what is queued and then close theirs
    # (scoring/worker.py); a signal to the whole group would race the two. (On a port
    # handed over, the next server's copy keeps the socket and its queue.)
    os.kill(server.pid, signal.SIGTERM)
    for _ in range(100):
        if not _alive(server.pid):
            return
        time.sleep(0.1)
    if server.is_running():
        os.killpg(server.pid, signal.SIGKILL)
