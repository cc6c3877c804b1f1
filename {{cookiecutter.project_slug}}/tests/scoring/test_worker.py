"""scoring/worker.py's choice of the requests its loop answers itself (fast_request): an
ordinary whole POST /score; anything else is left to gunicorn's parser and the Flask app,
which refuse or answer it as they always have. That the loop's answers are the app's:
test_server.py."""
import types

import pytest

from tests.helpers.scoring import import_worker

worker = import_worker()
# gunicorn's defaults.
LIMITS = types.SimpleNamespace(limit_request_fields=100, limit_request_field_size=8190)
BODY = b'{"data": [[0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]]}'


def post(head=b"", body=BODY, request_line=b"POST /score HTTP/1.1", length=None):
    length = b"%d" % len(body) if length is None else length
    return (request_line + b"\r\nHost: x\r\nContent-Type: application/json\r\n" + head
            + b"Content-Length: " + length + b"\r\n\r\n" + body)


def test_an_ordinary_request_is_taken_whole_with_what_follows_it():
    minor, headers, body, rest = worker.fast_request(post(b"X-Request-ID: a\r\n") + b"GET /",
                                                     LIMITS)
    assert (minor, body, rest) == (1, BODY, b"GET /")
    assert headers == {"host": "x", "content-type": "application/json",
                       "x-request-id": "a", "content-length": str(len(BODY))}


def test_http_1_0_and_bare_line_feeds_are_taken():
    assert worker.fast_request(post(request_line=b"POST /score HTTP/1.0"), LIMITS)[0] == 0
    assert worker.fast_request(post().replace(b"\r\n", b"\n"), LIMITS)[2] == BODY


@pytest.mark.parametrize("data", [
    pytest.param(post(request_line=b"GET /score HTTP/1.1"), id="another-method"),
    pytest.param(post(request_line=b"POST /score?x=1 HTTP/1.1"), id="a-query-string"),
    pytest.param(post(request_line=b"POST /score/ HTTP/1.1"), id="another-path"),
    pytest.param(post(request_line=b"POST  /score HTTP/1.1"), id="a-malformed-request-line"),
    pytest.param(post(request_line=b"POST /score HTTP/2.0"), id="another-version"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n"), id="chunked"),
    pytest.param(post(b"Expect: 100-continue\r\n"), id="expect"),
    pytest.param(post(b"Upgrade: h2c\r\n"), id="upgrade"),
    pytest.param(post(b"Content-Length: 1\r\n"), id="two-lengths"),
    pytest.param(post(b"X-A: 1\r\nx-a: 2\r\n"), id="a-repeated-header"),
    pytest.param(post(b"X-A: 1\r\n folded\r\n"), id="a-folded-header"),
    pytest.param(post(b"X A: 1\r\n"), id="a-bad-header-name"),
    pytest.param(post(b"X-A: 1\x00\r\n"), id="a-control-character"),
    pytest.param(post(b"X-A: " + b"a" * 8200 + b"\r\n"), id="an-over-long-header"),
    pytest.param(post(b"".join(b"X-%d: 1\r\n" % n for n in range(100))), id="too-many-headers"),
    pytest.param(post(length=b"+72"), id="a-signed-length"),
    pytest.param(post(length=b"\xc2\xb2"), id="a-non-ascii-digit"),
    pytest.param(post(body=b" " * (worker.FAST_PATH_MAX_BODY + 1)), id="a-large-body"),
    pytest.param(post()[:-1], id="a-body-not-all-here"),
    pytest.param(post()[:30], id="a-head-not-all-here"),
    pytest.param(post().replace(b"Content-Length: 72\r\n", b""), id="no-length"),
])
def test_anything_else_is_left_to_the_full_server(data):
    assert worker.fast_request(data, LIMITS) is None
