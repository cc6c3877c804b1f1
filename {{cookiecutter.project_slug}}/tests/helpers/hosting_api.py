"""A local HTTP server standing in for the GitHub / Azure DevOps pull request API: it
records every request and gives the answer the test set (real HTTP, real urllib)."""
import contextlib
import http.server
import json
import threading


class RecordingApi(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (the http.server hook's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body,
                                     "authorization": self.headers["Authorization"]})
        status, answer = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(answer).encode())

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def recording_api():
    """The server, answering 201 with a pull request; `.requests` lists what it got."""
    server = http.server.HTTPServer(("127.0.0.1", 0), RecordingApi)
    server.requests = []
    server.answer = (201, {"html_url": "https://github.com/o/r/pull/7", "pullRequestId": 7})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def github_env(server):
    """What a GitHub Actions job's environment says about the API and its token."""
    return {"GITHUB_ACTIONS": "true", "GITHUB_TOKEN": "job-token",
            "GITHUB_API_URL": f"http://127.0.0.1:{server.server_port}",
            "GITHUB_REPOSITORY": "owner/project"}


def azure_env(server):
    """What an Azure Pipelines job's environment says (System.AccessToken mapped)."""
    return {"TF_BUILD": "True", "SYSTEM_ACCESSTOKEN": "job-token",
            "SYSTEM_COLLECTIONURI": f"http://127.0.0.1:{server.server_port}/org/",
            "SYSTEM_TEAMPROJECT": "proj", "BUILD_REPOSITORY_ID": "repo-id",
            "BUILD_REPOSITORY_NAME": "project"}
