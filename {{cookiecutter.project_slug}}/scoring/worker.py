"""The scoring server's gunicorn worker: gthread, except that a request is read whole by
the worker's event loop before a thread takes it, as a buffering proxy would.

gthread hands a connection to a thread as soon as its first byte arrives, and the thread
reads the rest with blocking reads and no deadline: a few dozen clients that send their
headers a byte at a time hold every thread, and good requests wait (0 good answers of 20
with 512 such clients and 256 idle ones, benchmarks/slow_clients.py). Here the loop reads
the head, and a body of a known length up to MAX_BUFFERED_BYTES, without blocking; a
connection that has not sent that much within score.py's body timeout
(SCORING_BODY_TIMEOUT, 10 s) is answered 408 and closed; a slow client costs a buffer,
never a thread. Idle keep-alive connections stay gthread's: in the loop, closed after
`keepalive` seconds. Larger bodies, chunked ones and those sent after
`Expect: 100-continue` are read by the thread, under score.py's body deadline.

It also answers pipelined requests: a request read ahead with the previous one is in the
parser's buffer, not on the socket, so gthread would wait for the socket to become
readable and leave it unanswered until keep-alive closed the connection (gunicorn's own
fix of September 2026, pull request 3727, covers its ASGI worker only).

It answers a whole `POST /score` itself, in its loop, when the request is an ordinary one
(fast_request): score.answer() with the response azmlinfsrv's app would give, and
gunicorn's access line. The thread handover, gunicorn's parser and WSGI, and the Flask app
cost about two thirds of a one-row request's CPU (benchmarks/README.md). Everything else
(other routes and methods, a query string, a chunked body or Expect, a repeated or
malformed header, a body over FAST_PATH_MAX_BODY) goes to a thread, as above; so does every
request while an azmlinfsrv setting the Flask app acts on per request is set (Application
Insights, model data collection, CORS origins, a path prefix). A model slow to predict
holds this worker's loop as it would hold one of its threads with the GIL.

And it closes its listeners as soon as it stops, having accepted what the kernel queued
for them: gthread keeps them open but unaccepted until its last request ends, and the
kernel resets every connection still queued when a listening socket closes. A local
target's redeploy hands the port's socket itself to the next server, which keeps it open
(scoring/gunicorn.conf.py); but on a port the next server shares with a socket of its own
(SO_REUSEPORT) the kernel queues about half the new connections on this one meanwhile: 8
of 48,069 requests were reset in 6 such redeploys under 4 probe threads, and a kept-alive
client holds the old workers (and the queue) for the 5 s keep-alive.
"""
import collections
import concurrent.futures
import datetime
import functools
import json
import logging
import os
import re
import select
import selectors
import time
import traceback
import types
import uuid

import score
from gunicorn import SERVER
from gunicorn.util import http_date
from gunicorn.workers import gthread
from werkzeug.http import HTTP_STATUS_CODES

# The default largest body (1000 rows of 10 features, score.py's max_body) fits.
MAX_BUFFERED_BYTES = 2 * 1024 * 1024
# A head without its blank line by then goes to the parser, which refuses it (400, 431).
MAX_HEAD_BYTES = 64 * 1024
RECV_BYTES = 64 * 1024
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$")
_EXPECT_CONTINUE = re.compile(rb"(?im)^expect:[ \t]*100-continue[ \t]*\r?$")
# The fast path: small bodies only, so that one request never holds the loop for long.
FAST_PATH_MAX_BODY = 64 * 1024
_FAST_REQUEST_LINE = re.compile(rb"POST /score HTTP/1\.([01])\r?")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Headers the fast path leaves to gunicorn (framing it does not do).
_NOT_FAST = frozenset(("transfer-encoding", "expect", "upgrade", "http2-settings"))
# What azmlinfsrv's app says of a run() that raised (routes.py).
RUN_FAILED = {"message": "An unexpected error occurred in scoring script. Check the logs for "
                         "more info."}
# azmlinfsrv's limit on the request id headers it echoes (routes.py).
REQUEST_ID_LIMIT = 100
# A request answered with the connection kept open, as gthread's finish_request takes it.
_KEPT_ALIVE = concurrent.futures.Future()
_KEPT_ALIVE.set_result(True)


def timeout_answer(seconds):
    """The 408 for a request that did not arrive in time, in score.py's error form."""
    body = json.dumps({"message": f"The request did not arrive within {seconds:g} s: send "
                                  "the whole request at once"}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def is_whole(data):
    """Whether `data` (the start of a connection's next request) is enough for a thread:
    the head and, for a Content-Length of at most MAX_BUFFERED_BYTES, the whole body."""
    end = _HEAD_END.search(data)
    if end is None:
        return len(data) > MAX_HEAD_BYTES
    head = data[:end.start()]
    length = _CONTENT_LENGTH.search(head)
    if length is None or _EXPECT_CONTINUE.search(head):
        return True
    wanted = int(length.group(1))
    return wanted > MAX_BUFFERED_BYTES or len(data) - end.end() >= wanted


def fast_request(data, limits):
    """The whole `POST /score` at the start of `data` as (HTTP minor version, headers by
    lower-case name, body, the bytes after it), when the fast path can answer it; else None.
    `limits`: gunicorn's settings (limit_request_fields, limit_request_field_size)."""
    end = _HEAD_END.search(data)
    if end is None:
        return None
    lines = bytes(data[:end.start()]).split(b"\n")
    request_line = _FAST_REQUEST_LINE.fullmatch(lines[0])
    if request_line is None or len(lines) - 1 > limits.limit_request_fields:
        return None
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.removesuffix(b"\r").partition(b":")
        value = value.strip(b" \t")
        if not colon or not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value) \
                or len(line) > limits.limit_request_field_size:
            return None
        name = name.decode("ascii").lower()
        if name in headers or name in _NOT_FAST:
            return None
        headers[name] = value.decode("latin-1")
    length = headers.get("content-length", "")
    if not (length.isascii() and length.isdigit()) or int(length) > FAST_PATH_MAX_BODY:
        return None
    start, stop = end.end(), end.end() + int(length)
    if len(data) < stop:
        return None
    return int(request_line.group(1)), headers, bytes(data[start:stop]), bytes(data[stop:])


def request_ids(headers):
    """(the request id headers azmlinfsrv's app answers with, the message of its 431 when
    one it echoes is over its limit, else None), as its routes.py has them."""
    request_id = headers.get("x-request-id")
    if request_id is None:
        request_id = str(uuid.uuid4())
    if len(request_id) > REQUEST_ID_LIMIT:
        return [], f"x-request-id must not exceed {REQUEST_ID_LIMIT} characters"
    ids = [("x-request-id", request_id)] * bool(request_id)
    legacy = headers.get("x-ms-request-id", "")
    client = headers.get("x-ms-client-request-id", "")
    if legacy:
        logging.getLogger("azmlinfsrv").warning(
            "x-ms-request-id header has been deprecated and will be removed from future "
            "versions of the server. Please use x-ms-client-request-id.")
        client = client or legacy
    else:
        legacy = client or request_id
    if len(legacy) > REQUEST_ID_LIMIT or len(client) > REQUEST_ID_LIMIT:
        return ids, (f"x-ms-request-id and x-ms-client-request-id must not exceed "
                     f"{REQUEST_ID_LIMIT} characters")
    return ids + [("x-ms-request-id", legacy)] * bool(legacy) + [
        ("x-ms-client-request-id", client)] * bool(client), None


class ScoringWorker(gthread.ThreadWorker):
    """gthread with whole requests handed to threads, and ordinary POST /score requests
    answered in its loop (see the module's docstring)."""

    def init_process(self):
        self.reading = collections.deque()  # connections being read, oldest deadline first
        # score.py refuses a bad value when the app loads, before any worker starts.
        self.read_seconds = float(os.environ.get(score.BODY_TIMEOUT_ENV,
                                                 score.DEFAULT_BODY_TIMEOUT))
        self.timeout_answer = timeout_answer(self.read_seconds)
        # Read by the app as it loads, after gunicorn.conf.py sets the entry script: only
        # imported then.
        from azureml_inference_server_http.server.config import config as azmlinfsrv_config
        self.fast_path = not (
            azmlinfsrv_config.app_insights_enabled or azmlinfsrv_config.mdc_storage_enabled
            or azmlinfsrv_config.cors_origins or azmlinfsrv_config.service_path_prefix)
        server_version = os.environ.get("HTTP_X_MS_SERVER_VERSION", "")
        self.server_version = [("x-ms-server-version", server_version)] * bool(server_version)
        super().init_process()

    def enqueue_req(self, conn):
        """A new connection, or a kept-alive one that became readable: read it here (TLS
        bytes only a thread can decrypt: gthread's way)."""
        if self.cfg.is_ssl:
            super().enqueue_req(conn)
        else:
            self._read(conn, b"")

    def finish_request(self, conn, fs):
        rest, conn.mlops_rest = getattr(conn, "mlops_rest", b""), b""
        if rest and self.alive and not fs.cancelled() and fs.exception() is None \
                and fs.result() is True:
            self._read(conn, rest)  # pipelined after a fast answer a thread finished sending
            return
        if (self.alive and not fs.cancelled() and fs.exception() is None
                and fs.result() is True and conn.parser is not None
                and conn.parser.unreader.buf.getbuffer().nbytes):
            # A pipelined request: its bytes, read ahead, are the start of the next one.
            self._read(conn, conn.parser.unreader.take_buffered())
            return
        super().finish_request(conn, fs)

    def set_accept_enabled(self, enabled):
        super().set_accept_enabled(enabled)
        if not self.alive:  # stopping: gthread's run() disables accepting once it ends
            self._drain_listeners()

    def _drain_listeners(self):
        """Accept the connections queued on the listeners, then close them (see the
        module's docstring). The arbiter closed its copy first, as it does on SIGTERM
        before it signals the workers, so the last worker's close ends the socket."""
        for listener in self.sockets:
            while listener.sock is not None and select.select([listener], [], [], 0)[0]:
                self.accept(listener)
            listener.close()

    def handle(self, conn):
        """In the thread: the parser reads what the loop read first."""
        data, conn.mlops_read = getattr(conn, "mlops_read", None), None
        if data:
            conn.init()
            conn.parser.unreader.unread(bytes(data))
        return super().handle(conn)

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        while self.reading and self.reading[0].mlops_deadline <= now:
            conn = self.reading.popleft()
            if conn.mlops_read:  # a request began: say why it ends (an idle one just closes)
                try:
                    conn.sock.send(self.timeout_answer)
                except OSError:
                    pass  # a full send buffer or a gone client: closing says enough
            self._close(conn)

    def _read(self, conn, data):
        """Go on with a request that begins with `data`: hand it over once whole, reading
        what the socket has at once (a kept-alive connection's next request is usually
        there), else in the loop under the read deadline."""
        conn.mlops_read = bytearray(data)
        conn.sock.setblocking(False)
        if not is_whole(conn.mlops_read) and self._receive(conn) is False:
            self.nr_conns -= 1
            conn.close()
            return
        if is_whole(conn.mlops_read):
            self._hand_over(conn)
            return
        conn.mlops_deadline = time.monotonic() + self.read_seconds
        self.reading.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ,
                             functools.partial(self._on_readable, conn))

    def _receive(self, conn):
        """Add what the socket has to conn.mlops_read: False when the client closed the
        connection, None when nothing has arrived yet."""
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        conn.mlops_read += data
        return bool(data)

    def _on_readable(self, conn, _sock):
        received = self._receive(conn)
        if received is False:
            self.reading.remove(conn)
            self._close(conn)
        elif received and is_whole(conn.mlops_read):
            self.reading.remove(conn)
            self.poller.unregister(conn.sock)
            self._hand_over(conn)

    def _hand_over(self, conn):
        """A whole request was read: answer it here if the fast path can, else in a thread."""
        while self.fast_path:
            try:
                request = fast_request(conn.mlops_read, self.cfg)
                if request is None:
                    break
                keep_alive, rest = self._answer(conn, *request)
            except Exception:  # a fault here costs this connection, not the worker's others
                self.log.exception("The fast path failed on a request; connection closed")
                self.nr_conns -= 1
                conn.close()
                return
            if keep_alive is None:  # a thread finishes sending the answer
                return
            if not keep_alive:
                # In a thread, as gthread closes: the close lingers (up to seconds) so
                # that bytes still unread cannot make the kernel reset the answer.
                self.nr_conns -= 1
                self.tpool.submit(conn.close, graceful=True)
                return
            if not rest:
                conn.mlops_read = None
                self.finish_request(conn, _KEPT_ALIVE)  # gthread's keep-alive
                return
            if not is_whole(rest):  # pipelined: the next request has begun
                self._read(conn, rest)
                return
            conn.mlops_read = bytearray(rest)
        conn.data_ready = True  # gthread's handle() must not wait for more
        super().enqueue_req(conn)

    def _answer(self, conn, minor, headers, body, rest):
        """Answer a fast-path request as azmlinfsrv's app would; return whether the
        connection stays open (None: a thread finishes sending) and the bytes after it."""
        started = datetime.datetime.now()
        ids, refusal = request_ids(headers)
        if refusal:
            status, payload = 431, {"message": refusal}
            extra = [("x-ms-run-function-failed", "False")]
        else:
            begun = time.perf_counter()
            try:
                status, added, payload = score.answer("POST", headers, body)
                extra = [("x-ms-run-function-failed", "False"), *added.items(), (
                    "x-ms-run-fn-exec-ms", f"{(time.perf_counter() - begun) * 1e3:.3f}")]
            except Exception:  # run() raising: the app's 500
                logging.getLogger("azmlinfsrv").error(
                    "Encountered Exception: %s", traceback.format_exc())
                status, payload, extra = 500, RUN_FAILED, [("x-ms-run-function-failed", "True")]
        extra += self.server_version + ids
        if "traceid" in headers:
            extra.append(("TraceId", headers["traceid"]))
        content = json.dumps(payload).encode()
        connection = headers.get("connection", "").lower()  # as gunicorn reads it
        keep_alive = (connection == "keep-alive" or minor == 1 and connection != "close") \
            and self.alive and bool(self.cfg.keepalive) \
            and len(self.keepalived_conns) < self.max_keepalived
        self.nr += 1
        if self.nr >= self.max_requests:  # as gthread counts requests
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            keep_alive = False
        reason = HTTP_STATUS_CODES[status].upper()  # as Flask's status line has it
        response_headers = [("Content-Type", "application/json"),
                            ("Content-Length", str(len(content))), *extra]
        response = "".join([
            f"HTTP/1.{minor} {status} {reason}\r\nServer: {SERVER}\r\nDate: {http_date()}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n",
            *(f"{name}: {value}\r\n" for name, value in response_headers), "\r\n",
        ]).encode("latin-1") + content
        self._log_access(conn, minor, headers, status, reason, response_headers, len(content),
                         datetime.datetime.now() - started)
        conn.sock.setblocking(False)
        try:
            sent = conn.sock.send(response)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return False, b""  # the client is gone
        if sent < len(response):  # a full send buffer: a thread waits for the client
            conn.mlops_read, conn.mlops_rest = None, rest
            future = self.tpool.submit(self._send_rest, conn, response[sent:], keep_alive)
            future.add_done_callback(
                lambda done: self.method_queue.defer(self.finish_request, conn, done))
            return None, b""
        return keep_alive, rest

    def _send_rest(self, conn, data, keep_alive):
        """In a thread: the rest of a fast answer, sent as a thread sends any answer."""
        try:
            conn.sock.setblocking(True)
            conn.sock.sendall(data)
        except OSError:
            return False
        return keep_alive

    def _log_access(self, conn, minor, headers, status, reason, response_headers, sent,
                    duration):
        """gunicorn's access line for a fast answer (its format, from its own atoms)."""
        client = conn.client
        environ = {
            "REMOTE_ADDR": client[0] if isinstance(client, (tuple, list)) else str(client),
            "REQUEST_METHOD": "POST", "RAW_URI": "/score", "PATH_INFO": "/score",
            "QUERY_STRING": "", "SERVER_PROTOCOL": f"HTTP/1.{minor}",
            **{f"HTTP_{name.upper().replace('-', '_')}": value
               for name, value in headers.items()
               if name in ("referer", "user-agent")}}
        response = types.SimpleNamespace(status=f"{status} {reason}", sent=sent,
                                         headers=response_headers)
        self.log.access(response, headers, environ, duration)

    def _close(self, conn):
        self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        conn.close()
