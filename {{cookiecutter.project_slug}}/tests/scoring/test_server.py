"""A real azmlinfsrv process serving scoring/score.py over HTTP on loopback.

One server for the whole module (startup takes 10-20 s); `--dist loadfile` (pyproject.toml)
keeps the module on one xdist worker, so one server serves all its tests.
"""
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers.scoring import (BAD_REQUEST_PARAMS, BAD_REQUESTS, ROW, SCORING_DIR, body,
                                   save_model)

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 180


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def request(port, method="POST", path="/score", payload=None, content_type="application/json"):
    """Send one request; return (status, Content-Type, decoded JSON or raw text)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        if payload is not None:
            payload = payload.encode() if isinstance(payload, str) else payload
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
        kind = response.getheader("Content-Type", "")
        return response.status, kind, json.loads(text) if "json" in kind else text
    finally:
        connection.close()


def _stop(process):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    """(port, fitted model, features) of a running azmlinfsrv; killed when the module ends."""
    work = tmp_path_factory.mktemp("azmlinfsrv")
    model, features = save_model(work / "model")
    port = free_port()
    env = dict(os.environ, MODEL_VERSION="test-1", XDG_RUNTIME_DIR=str(work))
    env.pop("SCORING_MAX_BATCH_SIZE", None)
    # azmlinfsrv is a console script of this interpreter's environment.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    log = open(work / "azmlinfsrv.log", "wb")
    process = subprocess.Popen(
        ["azmlinfsrv", "--entry_script", "score.py", "--model_dir", str(work / "model"),
         "--port", str(port)],
        cwd=SCORING_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    request.addfinalizer(log.close)
    request.addfinalizer(lambda: _stop(process))

    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"azmlinfsrv did not become healthy:\n"
                        f"{(work / 'azmlinfsrv.log').read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            if request_health(port):
                break
        time.sleep(0.25)
    return port, model, features


def request_health(port):
    status, _, text = request(port, "GET", "/", content_type=None)
    return status == 200 and text == "Healthy"


def test_valid_request_gets_predictions(server):
    port, model, features = server
    rows = features.head(10)
    status, kind, result = request(port, payload=body(rows.to_numpy().tolist()))
    assert (status, kind) == (200, "application/json")
    assert result["model_version"] == "test-1"
    np.testing.assert_allclose(result["predictions"], model.predict(rows), rtol=1e-12)


def test_named_records_get_predictions(server):
    port, model, features = server
    rows = features.head(3)
    status, _, result = request(port, payload=body(rows.to_dict("records")))
    assert status == 200
    np.testing.assert_allclose(result["predictions"], model.predict(rows), rtol=1e-12)


@pytest.mark.parametrize("payload, status, message", BAD_REQUEST_PARAMS)
def test_bad_request_gets_4xx_and_a_json_error(server, payload, status, message):
    got_status, kind, result = request(server[0], payload=payload)
    assert (got_status, kind) == (status, "application/json")
    assert message in result["error"]


def test_server_keeps_serving_after_every_kind_of_bad_request(server):
    port = server[0]
    for _, payload, status, _ in BAD_REQUESTS:
        assert request(port, payload=payload)[0] == status
    assert request(port, payload=b"\xff\xfe")[0] == 400  # not UTF-8: the server's own 400
    status, _, result = request(port, payload=body([ROW]))
    assert status == 200 and len(result["predictions"]) == 1


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json; charset=utf-8"])
def test_json_body_is_scored_whatever_the_content_type(server, content_type):
    status, _, result = request(server[0], payload=body([ROW]), content_type=content_type)
    assert status == 200 and len(result["predictions"]) == 1


def test_form_encoded_body_gets_415_with_a_hint(server):
    # `curl -d` without -H sends a form Content-Type; the server then hands run() no body.
    status, _, result = request(server[0], payload=body([ROW]),
                                content_type="application/x-www-form-urlencoded")
    assert status == 415
    assert "Content-Type: application/json" in result["error"]
