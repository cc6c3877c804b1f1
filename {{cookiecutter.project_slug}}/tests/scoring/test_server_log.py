"""scoring/server_log.py: the server's own log, rotated in the file the local targets give it
(.mlops/<target>.log), with every control character a client sent escaped; a real server,
started as the local targets start it."""
import importlib.util
import re
import socket
import time

import pytest

from ml_service.monitoring.prediction_log import rotated_files
from tests.helpers.scoring import SCORING_DIR, body, saved_model
from tests.scoring.test_server import HOST, ROW, request, start_server

MAX_BYTES = 2000
# What must never reach the log: C0 controls but tab and newline, DEL, C1 controls (as
# UTF-8 text, the way the server decodes a header's bytes).
RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def server_log_module():
    spec = importlib.util.spec_from_file_location("server_log", SCORING_DIR / "server_log.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("raw, shown", [
    (b"GET /score?a=\x1b[31mred\x1b]0;title\x07 405\n",
     "GET /score?a=\\x1b[31mred\\x1b]0;title\\x07 405"),
    (b"csi \xc2\x9b2J, del \x7f, cr \r, nul \x00\n", "csi \\x9b2J, del \\x7f, cr \\x0d, nul \\x00"),
    (b"not utf-8 \xff\xfe, tab\tand \xc3\xa9 kept", "not utf-8 \\xff\\xfe, tab\tand \u00e9 kept"),
])
def test_control_characters_and_bytes_that_are_not_utf8_are_escaped(raw, shown):
    assert server_log_module().escape(raw) == shown


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    yield from saved_model(tmp_path_factory)


@pytest.fixture(scope="module")
def logged_server(model_dir, request, tmp_path_factory):
    """(port, log folder) of a server writing its log to <folder>/server.log (the file its
    output was given, as the local targets do), rotated at MAX_BYTES with 2 old files."""
    folder = tmp_path_factory.mktemp("server-log")
    port, _ = start_server(model_dir, folder, request, MLOPS_SERVER_LOG=str(folder / "server.log"),
                           MLOPS_SERVER_LOG_MAX_BYTES=str(MAX_BYTES), MLOPS_SERVER_LOG_BACKUPS="2")
    return port, folder


def written(folder):
    """The bytes of the log's files, oldest first, read as one set while the server may be
    rotating them."""
    with rotated_files(folder / "server.log") as handles:
        return b"".join(handle.read() for handle in handles)


def logged(folder, *fragments, seconds=10):
    """The log's text once it holds every one of `fragments` (gunicorn writes its access
    line after the answer is sent); the test fails if that takes over `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        text = written(folder).decode()
        if all(fragment in text for fragment in fragments):
            return text
        assert time.monotonic() < deadline, f"not in the log: {fragments}\n{text[-2000:]}"
        time.sleep(0.1)


def raw_request(port, line, headers=b""):
    payload = body([ROW]).encode()
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(line + b"\r\nHost: x\r\nContent-Type: application/json\r\n" + headers
                     + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(payload)
                     + payload)
        return sock.makefile("rb").readline()


@pytest.mark.slow
def test_escape_sequences_a_client_sends_reach_the_log_escaped(logged_server):
    port, folder = logged_server
    assert b" 200 " in raw_request(port, b"POST /score?q=\x1b[2J\x1b]0;owned\x07 HTTP/1.1",
                                   # gunicorn refuses C0 controls in headers, not C1's CSI
                                   b"User-Agent: agent\x9b31m\r\nReferer: r\x9b1A\r\n")
    assert b" 405 " in raw_request(port, b"GET /score?a=\x1b[31mred HTTP/1.1")
    # The access lines, each with the query string as text.
    logged(folder, '"POST /score?q=\\x1b[2J\\x1b]0;owned\\x07 HTTP/1.1" 200',
           '"r\\x9b1A" "agent\\x9b31m"', '"GET /score?a=\\x1b[31mred HTTP/1.1" 405')
    assert RAW_CONTROL.findall(written(folder)) == []


@pytest.mark.slow
@pytest.mark.parametrize("status, payload", [(200, body([ROW])), (400, "{")])
def test_each_request_is_logged_once_with_its_status_and_duration(logged_server, status,
                                                                  payload):
    """One access line per request (the app's own line repeated it at twice the cost)."""
    port, folder = logged_server
    path = f"/score?once={status}"
    assert request(port, path=path, payload=payload)[0] == status
    text = logged(folder, f'"POST {path} HTTP/1.1" {status}')
    [line] = [line for line in text.splitlines() if path in line]
    assert re.search(r'" \d+\.\d{6} s$', line), line


@pytest.mark.slow
def test_the_server_rotates_its_log_within_its_bounds(logged_server):
    port, folder = logged_server
    for index in range(40):
        assert request(port, path=f"/score?request={index}", payload=body([ROW]))[0] == 200
    logged(folder, '"POST /score?request=39 HTTP/1.1" 200')
    files = sorted(path.name for path in folder.glob("server.log*"))
    assert files == ["server.log", "server.log.1", "server.log.2", "server.log.lock"]
    assert all((folder / name).stat().st_size <= MAX_BYTES for name in files)
