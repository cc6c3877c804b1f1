"""ml_service.http_client: scoring and health requests go over http(s) only."""
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ml_service import http_client
from ml_service.errors import MlopsError
from ml_service.release import http_status


class Healthy(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "7")
        self.end_headers()
        self.wfile.write(b"Healthy")

    def log_message(self, *args):
        pass


@pytest.fixture
def server_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_opens_http_urls_and_requests(server_url):
    with http_client.urlopen(server_url, timeout=5) as response:
        assert response.read() == b"Healthy"
    with http_client.urlopen(urllib.request.Request(server_url), timeout=5) as response:
        assert response.status == 200
    assert http_status(server_url) == 200


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/model",
                                 "127.0.0.1:5101/score"])
def test_refuses_other_schemes_before_opening_anything(url):
    with pytest.raises(MlopsError) as raised:
        http_client.urlopen(url, timeout=1)
    assert repr(url) in raised.value.what and "scoring URI" in raised.value.fix
    with pytest.raises(MlopsError):
        http_status(url)
