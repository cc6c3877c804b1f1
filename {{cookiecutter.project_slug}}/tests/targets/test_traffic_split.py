"""The canary's traffic split (ml_service/targets/traffic_split.py) as a real process in
front of a real HTTP server: what it does with the connections it holds when it stops."""
import http.client
import signal
import subprocess
import sys
import threading
import time

from ml_service.targets import local
from ml_service.targets.loopback import free_port
from tests.helpers.http_stub import JsonHandler, serving

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
            [sys.executable, str(local.SPLIT_PROXY), "--port", str(port), "--control",
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
