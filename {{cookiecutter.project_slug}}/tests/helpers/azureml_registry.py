"""A real `mlflow server` on loopback that answers like Azure ML's MLflow registry.

Azure ML's MLflow registry ("Manage models registries in Azure Machine Learning with
MLflow", its support matrix) supports registered models, versions, version tags and
stages, but lists no model version aliases, and does not support model searches that
filter on tags; azureml-mlflow overrides only `create_model_version`, so the other
calls reach the service unchanged. `AzureMLRegistryFilter` is a small reverse proxy in
front of a real server that refuses exactly those calls, the way the service does
(an error status with an MLflow error JSON), and forwards everything else.
"""
import contextlib
import http.client
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from tests.helpers.project import free_port

# The REST paths of the alias calls (set: POST, delete: DELETE, get by alias: GET), under
# /api/2.0 and the UI's /ajax-api/2.0 alike.
ALIAS_PATH = "/mlflow/registered-models/alias"
VERSION_SEARCH_PATH = "/mlflow/model-versions/search"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host"}


def refusal(request_path, query):
    """(status, error JSON) for a call Azure ML's registry does not support, else None."""
    path = urllib.parse.urlsplit(request_path).path
    if path.endswith(ALIAS_PATH):
        return 404, {"error_code": "ENDPOINT_NOT_FOUND",
                     "message": f"No API found for {path} (model aliases are not supported)"}
    if path.endswith(VERSION_SEARCH_PATH) and "tags." in query.get("filter", [""])[0]:
        return 400, {"error_code": "INVALID_PARAMETER_VALUE",
                     "message": "Search model versions by tags is not supported"}
    return None


class _FilterHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None   # (host, port), set per server class
    refused = None    # list of (method, path) the filter answered itself

    def log_message(self, *args):
        """Quiet: the test reads `refused`, not a log."""

    def _forward(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        refused = refusal(self.path, query)
        if refused is not None:
            self.refused.append((self.command, self.path))
            status, payload = refused
            self._answer(status, [("Content-Type", "application/json")],
                         json.dumps(payload).encode())
            return
        connection = http.client.HTTPConnection(*self.upstream, timeout=300)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
            self._answer(response.status,
                         [(k, v) for k, v in response.getheaders()
                          if k.lower() not in HOP_BY_HOP | {"content-length"}], content)
        finally:
            connection.close()

    def _answer(self, status, headers, content):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward


@contextlib.contextmanager
def azureml_like_registry(folder):
    """Start `mlflow server` (SQLite store, served artifacts under `folder`) and the
    filter in front of it; yield (tracking URI of the filter, list of refused calls)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    server_port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    # The server's workers are started by command name: the venv's bin must be on PATH.
    # No job runner: its six huey processes (GenAI scorers) import mlflow each, about
    # 20 CPU-seconds for nothing the registry calls use.
    environ = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
         "--port", str(server_port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=environ, start_new_session=True)
    handler = type("Handler", (_FilterHandler,),
                   {"upstream": ("127.0.0.1", server_port), "refused": []})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        _wait_until_up(server_port, server, folder / "server.log")
        yield f"http://127.0.0.1:{proxy.server_address[1]}", handler.refused
    finally:
        proxy.shutdown()
        proxy.server_close()
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


def _wait_until_up(port, server, log_path, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log_path.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"mlflow server did not answer in {timeout} s: "
                       f"{log_path.read_text()[-2000:]}")
