"""The alias mirror is best effort: a deploy that already succeeded never fails on it,
whatever the registry answers (a real HTTP server through mlflow's real client)."""
import logging
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from ml_service.releasing import registry
from tests.helpers.http_stub import JsonHandler, serving


class RefusingRegistry(JsonHandler):
    """Answers every alias call with the status and body the test set."""

    def do_POST(self):  # noqa: N802 (the http.server hook's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = self.server.answer
        if isinstance(body, str):  # not JSON, as a proxy's error page
            payload = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        else:
            self.send_json(status, body)

    do_GET = do_POST  # noqa: N815 (mlflow's client may read before it writes)


@pytest.mark.parametrize("status, body", [
    (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad alias"}),
    (500, {"error_code": "INTERNAL_ERROR", "message": "server error"}),
    (502, {"unexpected": "a gateway answer without error_code"}),
    (403, {"message": "a JSON body without error_code"}),
    (404, "<html>Not Found</html>"),
])
def test_any_refusal_of_the_alias_is_logged_and_the_deploy_goes_on(
        monkeypatch, caplog, status, body):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = SimpleNamespace(model=SimpleNamespace(name="diabetes"))
    with serving(RefusingRegistry, answer=(status, body)) as server:
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{server.server_port}",
                              registry_uri=f"http://127.0.0.1:{server.server_port}")
        with caplog.at_level(logging.DEBUG, logger=registry.log.name):
            registry.mirror_alias(client, settings, "staging", "3")
    assert "staging runs version 3" in caplog.text
