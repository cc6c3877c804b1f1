"""A real scoring server over HTTP on loopback, started as the local targets start it (the
image's command, scoring/Dockerfile, but bound to 127.0.0.1).

Each server is shared by its module's tests (startup takes 5-20 s); `--dist worksteal`
(pyproject.toml) runs the module on one xdist worker, or two at most. Malformed requests
go over raw sockets or http.client, so nothing in between repairs them.
"""
import concurrent.futures
import contextlib
import http.client
import importlib.util
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ml_service.config import load_settings
from ml_service.release import Release
from ml_service.releasing.image import SCORING_FILES
from ml_service.targets.local import LocalTarget, server_command
from ml_service.targets.loopback import free_port
from tests.helpers.canary import BROKEN_ON_PART_OF_THE_TRAFFIC
from tests.helpers.project import PROJECT_ROOT, kept_unchanged
from tests.helpers.scoring import (BAD_REQUEST_PARAMS, BAD_REQUESTS, ROW, SCORING_DIR, body,
                                   import_worker, save_model, strict_json)

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 180
KEY = "test-key-0123456789abcdef"
UNAUTHENTICATED_NOTICE = "No scoring key configured"


def request(port, method="POST", path="/score", payload=None, content_type="application/json",
            headers=None):
    """Send one request; return (status, response headers, decoded JSON or raw text).

    JSON bodies are parsed strictly (no NaN or Infinity), as strict clients do.
    """
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        headers = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
        if payload is not None:
            payload = payload.encode() if isinstance(payload, str) else payload
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
        kind = response.getheader("Content-Type", "")
        return response.status, response.headers, strict_json(text) if "json" in kind else text
    finally:
        connection.close()


def raw_exchange(port, head, body=b"", timeout=10):
    """Send raw bytes; return (status, seconds until the status line arrived)."""
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(head + body)
        status_line = sock.makefile("rb").readline()
    return int(status_line.split()[1]), time.monotonic() - started


def _stop(process):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class ServerLog:
    """The log of a server the module's tests share: what it wrote by the time it
    answered (`startup`), and what it wrote after a test's `mark()`, so a test reads the
    lines of its own requests, never another test's."""

    def __init__(self, path):
        self.path = path
        self.startup = path.read_text()

    def mark(self):
        return self.path.stat().st_size

    def since(self, mark):
        with open(self.path, "rb") as log:
            log.seek(mark)
            return log.read().decode()

    def wait_for(self, mark, text, count=1, timeout=10):
        """What was written since `mark` once `text` is in it `count` times: the server's
        output reaches the file through its master (scoring/server_log.py), a moment
        after the answer."""
        deadline = time.monotonic() + timeout
        while (written := self.since(mark)).count(text) < count:
            assert time.monotonic() < deadline, f"{text!r} x{count} not logged: {written}"
            time.sleep(0.05)
        return written


def launch_server(model_dir, state_dir, request, workers=1, scoring_dir=SCORING_DIR, **env):
    """(process, port, log path) of a healthy scoring server on a fresh port, its files in
    `state_dir`, its scoring files those in `scoring_dir`; stopped when the scope of
    `request` ends if it still runs."""
    port = free_port()
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith(("SCORING_", "GUNICORN_"))}
    command, settings = server_command(scoring_dir, model_dir, port, workers=workers)
    environ.update(settings, MODEL_VERSION="test-1", XDG_RUNTIME_DIR=str(state_dir), **env)
    log_path = state_dir / "server.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(command, cwd=state_dir, env=environ, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    request.addfinalizer(log.close)
    request.addfinalizer(lambda: _stop(process))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"The scoring server did not become healthy:\n"
                        f"{log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            if request_health(port):
                return process, port, log_path
        time.sleep(0.25)


def start_server(model_dir, state_dir, request, **env):
    """(port, ServerLog) of a healthy scoring server (launch_server) of one worker, the
    fewest threads to starve; stopped when the module ends."""
    _, port, log_path = launch_server(model_dir, state_dir, request, **env)
    return port, ServerLog(log_path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(model folder, fitted model, features); the servers and tests only read it."""
    folder = tmp_path_factory.mktemp("scoring-server") / "model"
    fitted, features = save_model(folder)
    with kept_unchanged(folder):
        yield folder, fitted, features


@pytest.fixture(scope="module")
def server(model, request, tmp_path_factory):
    """(port, fitted model, features, ServerLog) of a server with the default settings:
    no key."""
    folder, fitted, features = model
    port, log = start_server(folder, tmp_path_factory.mktemp("open-server"), request)
    return port, fitted, features, log


@pytest.fixture(scope="module")
def keyed_server(model, request, tmp_path_factory):
    """(port, ServerLog) of a server whose key comes from a file (as a Kubernetes secret
    is mounted), with a 1 s body timeout."""
    state_dir = tmp_path_factory.mktemp("keyed-server")
    key_file = state_dir / "scoring-key"
    key_file.write_text(KEY + "\n")
    return start_server(model[0], state_dir, request, SCORING_KEY_FILE=str(key_file),
                        SCORING_BODY_TIMEOUT="1")


def request_health(port):
    status, _, text = request(port, "GET", "/", content_type=None)
    return status == 200 and text == "Healthy"


def test_valid_request_gets_predictions(server):
    port, fitted, features, _ = server
    rows = features.head(10)
    status, headers, result = request(port, payload=body(rows.to_numpy().tolist()))
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert result["model_version"] == "test-1"
    np.testing.assert_allclose(result["predictions"], fitted.predict(rows), rtol=1e-12)


def test_named_records_get_predictions(server):
    port, fitted, features, _ = server
    rows = features.head(3)
    status, _, result = request(port, payload=body(rows.to_dict("records")))
    assert status == 200
    np.testing.assert_allclose(result["predictions"], fitted.predict(rows), rtol=1e-12)


@pytest.mark.parametrize("payload, status, message", BAD_REQUEST_PARAMS)
def test_bad_request_gets_4xx_and_a_strict_json_error(server, payload, status, message):
    got_status, headers, result = request(server[0], payload=payload)
    assert (got_status, headers["Content-Type"]) == (status, "application/json")
    assert message in result["error"]


def test_server_keeps_serving_after_every_kind_of_bad_request(server):
    port = server[0]
    for _, payload, status, _ in BAD_REQUESTS:
        assert request(port, payload=payload)[0] == status
    status, _, result = request(port, payload=body([ROW]))
    assert status == 200 and len(result["predictions"]) == 1


def test_body_that_is_not_utf8_gets_400(server):
    status, _, result = request(server[0], payload=b'{"data": [["\xff\xfe"]]}')
    assert status == 400
    assert "UTF-8" in result["error"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/xml"])
def test_body_without_json_content_type_gets_415(server, content_type):
    status, _, result = request(server[0], payload=body([ROW]), content_type=content_type)
    assert status == 415
    assert "Content-Type: application/json" in result["error"]


def test_json_content_type_with_charset_is_scored(server):
    status, _, result = request(server[0], payload=body([ROW]),
                                content_type="application/json; charset=utf-8")
    assert status == 200 and len(result["predictions"]) == 1


@pytest.mark.parametrize("method, path", [
    ("GET", "/score"), ("GET", "/score?data=[[0.01,0.01,0.01,0.01,0.01,0.01,0.01,0.01,0.01,0.01]]"),
    ("OPTIONS", "/score")])
def test_score_accepts_only_post(server, method, path):
    status, headers, result = request(server[0], method, path, payload=body([ROW]))
    assert (status, headers["Allow"]) == (405, "POST")
    assert f"{method} is not allowed on /score: send a POST" in result["error"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_methods_the_server_does_not_route_get_its_own_405(server, method):
    # Refused by the server's Flask app before score.py (and without an Allow header).
    status, headers, result = request(server[0], method, "/score", payload=body([ROW]))
    assert (status, headers["Content-Type"]) == (405, "application/json")
    assert "not allowed" in result["message"]


def test_oversized_body_gets_413_before_it_is_sent(server):
    # Only the headers: a server that waited for the 100 MB would not answer at all.
    status, seconds = raw_exchange(
        server[0], b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 100000000\r\n\r\n")
    assert status == 413 and seconds < 5


def test_pipelined_requests_are_answered_in_order(server):
    """HTTP/1.1 pipelining: two requests in one write get two answers, in order, on the
    same connection (gunicorn's gthread worker left the second one unanswered until
    keep-alive closed the connection)."""
    one, two = (body([ROW] * rows).encode() for rows in (1, 2))
    with socket.create_connection((HOST, server[0]), timeout=10) as sock:
        sock.sendall(b"".join(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload) for payload in (one, two)))
        answers = sock.makefile("rb")
        for rows in (1, 2):
            status, _, content = read_answer(answers)
            assert status.split()[1] == "200"
            assert len(strict_json(content.decode())["predictions"]) == rows


def read_answer(answers):
    """The next answer from the file `answers` (a socket's): (status line,
    [(header, value)], body of its Content-Length)."""
    status = answers.readline().decode().rstrip()
    headers = [tuple(part.strip() for part in line.decode().split(":", 1))
               for line in iter(answers.readline, b"\r\n")]
    length = int(next(value for name, value in headers if name.lower() == "content-length"))
    return status, headers, answers.read(length)


def benchmark(name):
    """The module benchmarks/<name>.py (a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slow_and_idle_clients_leave_every_good_request_answered(server):
    """benchmarks/slow_clients.py's drill, smaller (one worker of 16 threads): connections
    that trickle their headers a byte a second and idle ones that reconnect when dropped
    hold no thread, so every good request is answered at once (gthread: none)."""
    slow_clients = benchmark("slow_clients")
    payload = body([ROW]).encode()
    statuses, seconds = slow_clients.drill(
        HOST, server[0], b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload),
        slow=128, idle=64, settle=2.0, count=30, timeout=3.0)
    assert statuses == [200] * 30, statuses
    assert max(seconds) < 2.0, sorted(seconds)[-5:]


def test_a_request_that_does_not_arrive_within_the_body_timeout_gets_408(keyed_server):
    """The worker's loop reads the head and the body under SCORING_BODY_TIMEOUT (1 s here)
    and then answers 408 and closes: the client learns why."""
    started = time.monotonic()
    with socket.create_connection((HOST, keyed_server[0]), timeout=10) as sock:
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Le")
        answer = sock.makefile("rb").read()
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"408" and time.monotonic() - started < 5
    assert "did not arrive within 1 s" in strict_json(text.decode())["message"]


def test_oversized_body_sent_whole_gets_a_413_the_client_can_read(server):
    """A client that sends the whole body before it reads (Python's urllib; requests under
    load) reads the 413: the server reads the refused body and throws it away rather than
    closing with unread bytes, which resets the connection and loses the answer."""
    size = 20_000_000
    head = (b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % size)
    status, _ = raw_exchange(server[0], head, b" " * size, timeout=30)
    assert status == 413


def test_oversized_chunked_body_gets_413(server):
    chunk = b" " * 65536
    body_bytes = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 20 + b"0\r\n\r\n"
    status, _ = raw_exchange(
        server[0], b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n", body_bytes)
    assert status == 413


class SlowUpload:
    """A client sending a request body at a trickle (or not at all) in a background thread."""

    def __init__(self, port, head, step=b" " * 1000, interval=0.1):
        self.sock = socket.create_connection((HOST, port))
        self.sock.sendall(head)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._trickle, args=(step, interval), daemon=True)
        self.thread.start()

    def _trickle(self, step, interval):
        while step and not self.stopped.wait(interval):
            try:
                self.sock.sendall(step)
            except OSError:
                return

    def close(self):
        self.stopped.set()
        self.thread.join()
        self.sock.close()


def slow_uploads(port):
    """Two slow clients: 10 MB announced and sent at 10 kB/s, and a small body that stalls."""
    head = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return [SlowUpload(port, head + b"Content-Length: 10000000\r\n\r\n"),
            SlowUpload(port, head + b'Content-Length: 300\r\n\r\n{"data": [', step=b"")]


def timed_request(port, headers=None):
    started = time.monotonic()
    status = request(port, payload=body([ROW]), headers=headers)[0]
    return status, time.monotonic() - started


def test_slow_uploads_do_not_starve_good_requests(server):
    port = server[0]
    uploads = slow_uploads(port)
    try:
        time.sleep(1)  # the slow clients are in
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: timed_request(port), range(4)))
    finally:
        for upload in uploads:
            upload.close()
    assert [status for status, _ in answers] == [200] * 4
    assert max(seconds for _, seconds in answers) < 3


def test_stalled_body_gets_408_after_the_body_timeout(keyed_server):
    port = keyed_server[0]
    head = (b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 300\r\n\r\n")
    status, seconds = raw_exchange(port, head, b'{"data": [')
    assert status == 408
    assert 1 <= seconds < 3


def listening_addresses(port):
    """The local IPv4 addresses listening on `port`, from /proc/net/tcp (Linux)."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            addresses.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return addresses


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_server_listens_on_loopback_only(server):
    assert listening_addresses(server[0]) == {HOST}


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_local_target_serves_its_build_context_on_loopback_only(model, project):
    # The build context as build-image assembles it: the scoring files and model/.
    context = project / "build" / "context"
    context.mkdir(parents=True)
    for name in SCORING_FILES:
        shutil.copy2(SCORING_DIR / name, context / name)
    shutil.copytree(model[0], context / "model")
    settings = load_settings(project / "mlops.toml", environ={
        "MLOPS_STAGING_PORT": str(free_port()), "MLOPS_SERVING_WORKERS": "1"})
    target = LocalTarget("staging", settings)
    try:
        deployment = target.deploy(Release("model", "4", "image", "", "", context))
        assert deployment.healthy
        assert listening_addresses(target.port) == {HOST}
        status, _, result = request(target.port, payload=body([ROW]))
        assert (status, result["model_version"]) == (200, "4")
    finally:
        target.stop()


def test_open_server_says_once_at_startup_that_it_is_unauthenticated(server):
    log = server[3].startup
    assert log.count(UNAUTHENTICATED_NOTICE) == 1, log[-3000:]


@pytest.mark.parametrize("headers, problem", [
    ({}, "needs a key"),
    ({"Authorization": "Bearer wrong-key-0123456789abcdef"}, "not valid"),
    ({"Authorization": f"Basic {KEY}"}, "needs a key"),
    ({"Authorization": f"Bearer {KEY}x"}, "not valid"),
])
def test_request_without_the_key_gets_401(keyed_server, headers, problem):
    status, response_headers, result = request(keyed_server[0], payload=body([ROW]),
                                               headers=headers)
    assert status == 401
    assert response_headers["WWW-Authenticate"].startswith("Bearer")
    assert problem in result["error"]


def test_request_with_the_key_is_scored(keyed_server):
    status, _, result = request(keyed_server[0], payload=body([ROW]),
                                headers={"Authorization": f"Bearer {KEY}"})
    assert status == 200 and len(result["predictions"]) == 1


def test_health_route_stays_open_with_a_key(keyed_server):
    assert request_health(keyed_server[0])


def test_key_never_reaches_the_log(keyed_server):
    port, log = keyed_server
    mark = log.mark()
    request(port, payload=body([ROW]), headers={"Authorization": f"Bearer {KEY}"})
    request(port, payload=body([ROW]), headers={"Authorization": f"Bearer {KEY}x"})
    # Both requests' access lines are there: anything they would leak is too.
    written = log.startup + log.wait_for(mark, '"POST /score HTTP/1.1"', count=2)
    assert "Scoring key required" in log.startup
    assert KEY not in written
    assert UNAUTHENTICATED_NOTICE not in written


@pytest.fixture(scope="module")
def one_thread_server(model, request, tmp_path_factory):
    """(port, ServerLog) of a server with a key, one thread, a 5 s body timeout, and a
    score.py that fails on every row whose first feature is below -0.03."""
    state_dir = tmp_path_factory.mktemp("one-thread-server")
    scoring_dir = state_dir / "scoring"
    scoring_dir.mkdir()
    for name in SCORING_FILES:
        shutil.copy2(SCORING_DIR / name, scoring_dir / name)
    with open(scoring_dir / "score.py", "a") as script:
        script.write(BROKEN_ON_PART_OF_THE_TRAFFIC)
    return start_server(model[0], state_dir, request, scoring_dir=scoring_dir, SCORING_KEY=KEY,
                        SCORING_BODY_TIMEOUT="5", GUNICORN_CMD_ARGS="--threads 1")


def exchange(port, head, payload):
    """Send one POST /score (`head`: the request line and headers but Content-Length);
    return (status line, [(header, value)], body)."""
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
        return read_answer(sock.makefile("rb"))


LONG_ID = "x" * 101
# (id, headers after the request line, body): the requests whose answers are compared.
ANSWERED_ALIKE = [
    # (Where malformed JSON ends, the padding would move the position its error names.)
    *((case[0], {}, case[1]) for case in BAD_REQUESTS if case[0] != "malformed-json"),
    ("malformed-json-inside", {}, '{"data": [[1, 2}'),
    ("good", {}, body([ROW])),
    ("named", {}, body([dict(zip(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5",
                                  "s6"], ROW))])),
    ("run-raises", {}, body([[-0.05] + ROW[1:]])),
    ("no-key", {"Authorization": None}, body([ROW])),
    ("wrong-key", {"Authorization": "Bearer " + "y" * 24}, body([ROW])),
    ("not-json", {"Content-Type": "text/plain"}, body([ROW])),
    ("json-with-charset", {"Content-Type": "application/json; charset=utf-8"}, body([ROW])),
    ("request-id", {"x-request-id": "abc-123"}, body([ROW])),
    ("client-request-id", {"x-ms-client-request-id": "client-1"}, body([ROW])),
    ("legacy-request-id", {"x-ms-request-id": "legacy-1"}, body([ROW])),
    ("trace-id", {"TraceId": "trace-1"}, body([ROW])),
    ("long-request-id", {"x-request-id": LONG_ID}, body([ROW])),
    ("long-client-request-id", {"x-ms-client-request-id": LONG_ID}, body([ROW])),
    ("connection-close", {"Connection": "close"}, body([ROW])),
    ("connection-keep-alive", {"Connection": "keep-alive"}, body([ROW])),
    ("connection-two-tokens", {"Connection": "keep-alive, TE"}, body([ROW])),
    ("smoke-test", {"X-MLOPS-Smoke-Test": "1"}, body([ROW])),
]
# Differ between any two answers: when it was, how long run() took, a generated request id.
VARYING = {"Date", "x-ms-run-fn-exec-ms"}


@pytest.mark.parametrize("headers, payload", [pytest.param(*case[1:], id=case[0])
                                              for case in ANSWERED_ALIKE])
@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_the_workers_fast_answers_are_the_flask_apps(one_thread_server, headers, payload,
                                                     version):
    """A whole POST /score of up to 64 KB is answered by the worker's loop (worker.py's
    fast path); the same request padded with JSON whitespace past that goes through
    azmlinfsrv's Flask app. Same status line, headers in the same order with the same
    values, same body."""
    headers = {"Host": "x", "Content-Type": "application/json",
               "Authorization": f"Bearer {KEY}", **headers}
    head = f"POST /score HTTP/{version}\r\n".encode() + b"".join(
        f"{name}: {value}\r\n".encode() for name, value in headers.items() if value is not None)
    payload = payload.encode() if isinstance(payload, str) else payload
    fast, app = (exchange(one_thread_server[0], head, payload + padding)
                 for padding in (b"", b" " * import_worker().FAST_PATH_MAX_BODY))
    generated = "x-request-id" not in headers

    def comparable(answer):
        status, answer_headers, content = answer
        return status, [(name, "*" if name in VARYING or (generated and name.endswith(
            "request-id")) else value) for name, value in answer_headers], content
    assert comparable(fast) == comparable(app)
    if generated and fast[0].split()[1] != "431":  # a new id for every request
        assert dict(fast[1])["x-request-id"] != dict(app[1])["x-request-id"]


def test_a_score_request_needs_no_free_thread(one_thread_server):
    """The server's one thread is held by a chunked body the Flask app reads at a trickle;
    a whole POST /score is still answered at once, by the worker's loop."""
    port = one_thread_server[0]
    held = SlowUpload(port, b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                            b"\r\nAuthorization: Bearer " + KEY.encode()
                      + b"\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n", step=b"")
    try:
        time.sleep(1)  # the thread is reading the trickle
        answers = [timed_request(port, {"Authorization": f"Bearer {KEY}"}) for _ in range(3)]
    finally:
        held.close()
    assert [status for status, _ in answers] == [200] * 3
    assert max(seconds for _, seconds in answers) < 2, answers


def test_a_failing_run_is_logged_and_answered_500(one_thread_server):
    port, log = one_thread_server
    mark = log.mark()
    status, headers, content = exchange(
        port, f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Authorization: Bearer {KEY}\r\n".encode(), body([[-0.05] + ROW[1:]]).encode())
    assert status.split()[1] == "500"
    assert ("x-ms-run-function-failed", "True") in headers
    assert "scoring script" in json.loads(content)["message"]
    written = log.wait_for(mark, '"POST /score HTTP/1.1" 500')
    assert "RuntimeError: broken on these inputs" in written


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_a_stopped_server_exits_at_once_with_its_last_lines_logged(model, tmp_path, request):
    """SIGTERM: the master and both workers exit 0 after writing their last lines, without
    freeing their objects one by one (gunicorn.conf.py): that was 0.4-2 CPU-s of every
    stop, about 0.07 without it."""
    process, _, log_path = launch_server(model[0], tmp_path, request, workers=2)
    ServerLog(log_path).wait_for(0, "Booting worker with pid", count=2)
    running = benchmark("load").group_cpu_seconds(process.pid)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The whole server's CPU, reaped now, less what it had used while it ran.
    stopping = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) - running
    log = log_path.read_text()
    assert log.count("Worker exiting (pid") == 2 and "Shutting down: Master" in log, log
    assert stopping < 0.3, f"the stop took {stopping:.2f} CPU-s"
