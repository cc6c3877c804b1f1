"""The split proxy (ml_service/targets/traffic_split.py) on its own, in front of small
HTTP servers: moving its sides to other ports, keeping no data per request while it serves
one release (as the container target's front does for days), and what it does with the
connections it holds when it stops."""
import asyncio
import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from ml_service.targets import traffic_split
from ml_service.targets.local import (SPLIT_PROXY, Process, marked_processes,
                                      start_traffic_split, stop_group)
from tests.helpers.http_stub import JsonHandler, serving
from tests.helpers.project import free_port

pytestmark = pytest.mark.slow


class Named(JsonHandler):
    def do_GET(self):
        self.send_json(200, self.server.name)


@pytest.fixture
def servers():
    with serving(Named, name="old") as old, serving(Named, name="new") as new:
        yield {"old": old.server_address[1], "new": new.server_address[1]}


def answer(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return json.load(response)


def test_sides_move_to_new_ports_and_one_release_is_not_counted(servers, tmp_path):
    port, mark = free_port(), f"test-split-{tmp_path}"
    split = start_traffic_split(port, servers["old"], servers["old"], mark, tmp_path / "log")
    try:
        assert [answer(port) for _ in range(3)] == ["old"] * 3
        counts = split.counts()
        assert counts["stable_counts"]["requests"] == counts["canary_counts"]["requests"] == 0
        assert counts["stable_counts"]["latencies_ms"] == []
        # A canary: the new release on the canary side, half the traffic, counted.
        split.route(50, canary_port=servers["new"])
        assert sorted(answer(port) for _ in range(4)) == ["new", "new", "old", "old"]
        counts = split.counts()
        assert (counts["stable_counts"]["requests"], counts["canary_counts"]["requests"]) == \
            (2, 2)
        # The switch a deploy makes: both sides to the new release, all traffic.
        split.route(0, stable_port=servers["new"], canary_port=servers["new"])
        assert [answer(port) for _ in range(3)] == ["new"] * 3
        assert split.counts()["stable_counts"] == {"port": servers["new"], "requests": 0,
                                                   "server_errors": 0, "latencies_ms": []}
        with pytest.raises(urllib.error.HTTPError, match="400"):
            split.route(0, stable_port=70000)
        assert answer(port) == "new"
    finally:
        stop_group(Process.of_process(*next(marked_processes(mark))))


CLIENTS = 16


class Scoring(JsonHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_json(200, {"model_version": "1"})


def score(port, outcomes):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("POST", "/score", b'{"data": [[1]]}',
                           {"Content-Type": "application/json"})
        outcomes.append(str(connection.getresponse().status))
    except OSError as error:
        outcomes.append(repr(error))
    finally:
        connection.close()


def test_a_stopping_split_answers_every_connection_it_accepted():
    """Connections waiting in the listener's queue when SIGTERM arrives (the proxy is
    paused while they connect, as a busy proxy is between two accepts) are answered, not
    reset: on production's port, the release that takes over serves only what comes
    after."""
    port, control = free_port(), free_port()
    with serving(Scoring) as upstream:
        upstream_port = upstream.server_address[1]
        proxy = subprocess.Popen(
            [sys.executable, str(SPLIT_PROXY), "--port", str(port), "--control",
             str(control), "--stable", str(upstream_port), "--canary", str(upstream_port)],
            stdout=subprocess.PIPE, text=True)
        try:
            assert "traffic split on" in proxy.stdout.readline()
            proxy.send_signal(signal.SIGSTOP)
            outcomes = []
            clients = [threading.Thread(target=score, args=(port, outcomes))
                       for _ in range(CLIENTS)]
            for client in clients:
                client.start()
            time.sleep(0.5)  # connected (the kernel completes the handshake) and sent
            proxy.send_signal(signal.SIGTERM)
            proxy.send_signal(signal.SIGCONT)
            for client in clients:
                client.join()
            assert proxy.wait(timeout=30) == 0
        finally:
            proxy.kill()
    assert outcomes == ["200"] * CLIENTS


def test_a_connection_that_arrives_as_the_split_stops_is_answered():
    """A connection queued as the stop begins is accepted by the stop's drain and answered,
    not reset: asyncio gives an accepted connection its transport a loop pass later, and
    drops it if the server was closed meanwhile (the canary test's probe saw that reset
    once, as a canary ended). Run in this process, so the connection is in the queue
    exactly when the stop begins."""
    request = (b"POST /score HTTP/1.1\r\nHost: split\r\nContent-Type: application/json\r\n"
               b"Content-Length: 15\r\n\r\n{\"data\": [[1]]}")

    async def stop_with_a_connection_queued(upstream_port):
        split = traffic_split.Split(upstream_port, upstream_port)
        front = await asyncio.start_server(split.serve_client, "127.0.0.1", 0)
        client = socket.create_connection(front.sockets[0].getsockname(), timeout=10)
        client.sendall(request)  # the loop has not run since: nothing accepted yet
        await traffic_split.stop_serving(front, split)
        return client

    with serving(Scoring) as upstream:
        client = asyncio.run(stop_with_a_connection_queued(upstream.server_address[1]))
    with client:
        try:
            answer = b"".join(iter(lambda: client.recv(65536), b""))
        except OSError as error:  # reset, or no answer in time: dropped unanswered
            answer = repr(error).encode()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b'{"model_version": "1"}')
