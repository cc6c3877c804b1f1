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

And it closes its listeners as soon as it stops, having accepted what the kernel queued
for them: gthread keeps them open but unaccepted until its last request ends, and the
kernel resets every connection still queued when they close. On a port the next server
shares (SO_REUSEPORT, a local target's redeploy) the kernel queues about half the new
connections there meanwhile: 8 of 48,069 requests were reset in 6 redeploys under
4 probe threads, and a kept-alive client holds the old workers (and the queue) for
the 5 s keep-alive.
"""
import collections
import functools
import json
import os
import re
import select
import selectors
import time

from gunicorn.workers import gthread
from score import BODY_TIMEOUT_ENV, DEFAULT_BODY_TIMEOUT

# The default largest body (1000 rows of 10 features, score.py's max_body) fits.
MAX_BUFFERED_BYTES = 2 * 1024 * 1024
# A head without its blank line by then goes to the parser, which refuses it (400, 431).
MAX_HEAD_BYTES = 64 * 1024
RECV_BYTES = 64 * 1024
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$")
_EXPECT_CONTINUE = re.compile(rb"(?im)^expect:[ \t]*100-continue[ \t]*\r?$")


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


class ScoringWorker(gthread.ThreadWorker):
    """gthread with whole requests handed to threads (see the module's docstring)."""

    def init_process(self):
        self.reading = collections.deque()  # connections being read, oldest deadline first
        # score.py refuses a bad value when the app loads, before any worker starts.
        self.read_seconds = float(os.environ.get(BODY_TIMEOUT_ENV, DEFAULT_BODY_TIMEOUT))
        self.timeout_answer = timeout_answer(self.read_seconds)
        super().init_process()

    def enqueue_req(self, conn):
        """A new connection, or a kept-alive one that became readable: read it here (TLS
        bytes only a thread can decrypt: gthread's way)."""
        if self.cfg.is_ssl:
            super().enqueue_req(conn)
        else:
            self._read(conn, b"")

    def finish_request(self, conn, fs):
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
        conn.mlops_read = bytearray(data)
        if is_whole(conn.mlops_read):
            self._hand_over(conn)
            return
        conn.sock.setblocking(False)
        conn.mlops_deadline = time.monotonic() + self.read_seconds
        self.reading.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ,
                             functools.partial(self._on_readable, conn))

    def _on_readable(self, conn, _sock):
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client closed the connection
            self.reading.remove(conn)
            self._close(conn)
            return
        conn.mlops_read += data
        if is_whole(conn.mlops_read):
            self.reading.remove(conn)
            self.poller.unregister(conn.sock)
            self._hand_over(conn)

    def _hand_over(self, conn):
        conn.data_ready = True  # gthread's handle() must not wait for more
        super().enqueue_req(conn)

    def _close(self, conn):
        self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        conn.close()
