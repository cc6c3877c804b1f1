"""The traffic split of a canary on this machine: an HTTP/1.1 reverse proxy on the
target's port that sends each request to the current release ("stable") or the new one
("canary") by weight, and counts what each answered.

Run by the local target (ml_service/targets/local.py) for the length of a canary, and by
the container target (container.py) as the front of its port at all times, as a script
with the standard library only:

    python traffic_split.py --port P --control C --stable S --canary K [--mark M]
                            [--listener-fd F]

It listens on 127.0.0.1:P, on the port's socket when the local target hands it over (the
descriptor F, the running servers' socket), else beside the servers or front already
there (SO_REUSEPORT), so the port never goes unserved while it takes over; and forwards
whole requests to the two servers' private ports 127.0.0.1:S and :K over kept-alive
connections. The split is exact, not random: of every 100 requests, `weight` go to the
canary, spread evenly. The canary controller (ml_service/releasing/canary.py) drives it
on 127.0.0.1:C:
  PUT /split?canary=W[&stable_port=S][&canary_port=K]
                        send W % to the canary from now on (and, when given, the sides to
                        new ports: the requests in flight finish where they went), and
                        start counting afresh
  GET /split            {"canary": W, "stable_counts": {...}, "canary_counts": {...}}: per
                        side its port, the requests answered, the server errors (5xx, and
                        502 when the side could not be reached) and the latencies in ms
                        since the PUT. Counted only while the two sides differ (a canary):
                        a front that serves one release for days keeps no data per request.
Like the scoring worker (scoring/worker.py), it reads a request whole before it
forwards it, with a deadline, so slow clients hold no server thread; a request it cannot
forward gets a JSON error, never a dropped connection. SIGTERM stops it gracefully:
it accepts what the kernel queued for the port, stops accepting, answers every request it
accepted (a new connection's first one included), and exits.
"""
import argparse
import asyncio
import json
import re
import select
import signal
import socket
import time
import urllib.parse

HEAD_TIMEOUT = 10.0
IDLE_TIMEOUT = 5.0  # seconds a kept-alive client connection may wait for its next request
UPSTREAM_TIMEOUT = 60.0
MAX_BODY_BYTES = 64 * 1024 * 1024
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$")
_CHUNKED = re.compile(rb"(?im)^transfer-encoding:[ \t]*.*chunked")
_CLOSE = re.compile(rb"(?im)^connection:[ \t]*close[ \t]*\r?$")
_KEEP_ALIVE = re.compile(rb"(?im)^connection:[ \t]*keep-alive[ \t]*\r?$")


def answer(status, reason, message, close=True):
    body = json.dumps({"message": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


class Side:
    """One release behind the split: where it listens, its idle connections, its counts."""

    def __init__(self, name, port):
        self.name, self.port, self.idle = name, port, []
        self.retired = False
        self.reset()

    def retire(self):
        """No more requests go here: its idle connections close, and so does each one in
        flight once its answer is back."""
        self.retired = True
        while self.idle:
            self.idle.pop()[1].close()

    def reset(self):
        self.requests, self.server_errors, self.latencies_ms = 0, 0, []

    def counts(self):
        return {"port": self.port, "requests": self.requests,
                "server_errors": self.server_errors, "latencies_ms": self.latencies_ms}

    async def _connection(self, reuse):
        while reuse and self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return reader, writer, False

    async def forward(self, request):
        """Send `request` (bytes) and return the whole response (bytes) and its status.
        A kept-alive connection the server closed meanwhile is retried on a new one."""
        for reuse in (True, False):
            reader, writer, reused = await self._connection(reuse)
            try:
                writer.write(request)
                await writer.drain()
                response, keep = await asyncio.wait_for(read_response(reader), UPSTREAM_TIMEOUT)
            except (ConnectionError, asyncio.IncompleteReadError) as error:
                writer.close()
                if reused:
                    continue
                raise ConnectionError(str(error)) from error
            except BaseException:
                writer.close()
                raise
            if keep and not self.retired:
                self.idle.append((reader, writer))
            else:
                writer.close()
            return response, int(response.split(b" ", 2)[1])
        raise ConnectionError("no connection")


async def read_response(reader):
    """The whole response on `reader` and whether the connection may be reused."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = _CONTENT_LENGTH.search(head)
    if length is not None:
        return head + await reader.readexactly(int(length.group(1))), not _CLOSE.search(head)
    if _CHUNKED.search(head):
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            body += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                body += await reader.readuntil(b"\r\n")  # no trailers from our servers
                return head + body, not _CLOSE.search(head)
            body += await reader.readexactly(size + 2)
    if head.split(b" ", 2)[1] in (b"204", b"304"):
        return head, not _CLOSE.search(head)
    return head + await reader.read(), False


class Split:
    def __init__(self, stable_port, canary_port):
        self.sides = {"stable": Side("stable", stable_port), "canary": Side("canary", canary_port)}
        self.weight, self.sent = 0, 0
        # Connections with a request to answer: from the accept to the first answer, then
        # from each request's first byte to its answer. Stopping waits for them.
        self.busy, self.stopping = 0, False

    def set_split(self, weight, ports):
        """`weight` % to the canary from now on; `ports` ({side: port}) moves sides."""
        for name, port in ports.items():
            if port != self.sides[name].port:
                self.sides[name].retire()
                self.sides[name] = Side(name, port)
        self.weight, self.sent = weight, 0
        for side in self.sides.values():
            side.reset()

    @property
    def counting(self):
        return self.sides["stable"].port != self.sides["canary"].port

    def choose(self):
        """The canary gets request n when n * weight / 100 passes a whole number: exactly
        `weight` of every 100, evenly spread."""
        self.sent += 1
        takes = (self.sent * self.weight) // 100 > ((self.sent - 1) * self.weight) // 100
        return self.sides["canary" if takes else "stable"]

    async def serve_client(self, reader, writer):
        # A new connection's first request is answered even once stopping began: the
        # client sent it to a listener that accepted it (main() drains the queue).
        busy = True
        self.busy += 1
        try:
            while True:
                try:
                    first = await asyncio.wait_for(reader.read(1), IDLE_TIMEOUT)
                    if not first:
                        return
                    if not busy:
                        busy = True
                        self.busy += 1
                    head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                                          HEAD_TIMEOUT)
                except asyncio.LimitOverrunError:
                    writer.write(answer(431, "Request Header Fields Too Large",
                                        "The request's head is larger than 64 KB."))
                    return
                except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                    return
                close = self.stopping or bool(_CLOSE.search(head)) or (
                    head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.0")
                    and not _KEEP_ALIVE.search(head))
                refusal = self.request_refusal(head)
                if refusal:
                    writer.write(refusal)
                    return
                length = _CONTENT_LENGTH.search(head)
                body = b""
                if length:
                    try:
                        body = await asyncio.wait_for(
                            reader.readexactly(int(length.group(1))), HEAD_TIMEOUT)
                    except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                        writer.write(answer(408, "Request Timeout",
                                            "The request's body did not arrive in time."))
                        return
                response = await self.forward(head + body)
                writer.write(response)
                await writer.drain()
                if close or self.stopping:
                    return
                busy = False
                self.busy -= 1
        except ConnectionError:
            pass
        finally:
            if busy:
                self.busy -= 1
            writer.close()

    def request_refusal(self, head):
        """The answer for a request this proxy does not forward, or None."""
        if _CHUNKED.search(head):
            return answer(411, "Length Required",
                          "Send the request with a Content-Length (not chunked).")
        length = _CONTENT_LENGTH.search(head)
        if length and int(length.group(1)) > MAX_BODY_BYTES:
            return answer(413, "Content Too Large", "The request body is too large.")
        return None

    async def forward(self, request):
        side = self.choose()
        started = time.perf_counter()
        try:
            response, status = await side.forward(request)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError) as error:
            response, status = answer(502, "Bad Gateway", f"The {side.name} release did not "
                                      f"answer: {error or type(error).__name__}"), 502
        if self.counting:
            side.requests += 1
            side.server_errors += status >= 500
            side.latencies_ms.append(round((time.perf_counter() - started) * 1000, 3))
        return response

    async def serve_control(self, reader, writer):
        """PUT /split?canary=W[&stable_port=S][&canary_port=K] and GET /split, for the
        canary controller and the container target."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            url = urllib.parse.urlsplit(target)
            query = {name: values[0] for name, values in
                     urllib.parse.parse_qs(url.query).items()}
            ports = {side: int(query[f"{side}_port"]) for side in self.sides
                     if query.get(f"{side}_port", "").isdigit()}
            if url.path != "/split":
                writer.write(answer(404, "Not Found", "Only /split is here."))
            elif method == "PUT" and query.get("canary", "").isdigit() and \
                    0 <= int(query["canary"]) <= 100 and \
                    all(0 < port < 65536 for port in ports.values()):
                self.set_split(int(query["canary"]), ports)
                writer.write(self.state())
            elif method == "GET":
                writer.write(self.state())
            else:
                writer.write(answer(400, "Bad Request", "PUT /split?canary=0..100"
                                    "[&stable_port=P][&canary_port=P] or GET /split"))
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()

    def state(self):
        body = json.dumps({"canary": self.weight, "stable_counts": self.sides["stable"].counts(),
                           "canary_counts": self.sides["canary"].counts()}).encode()
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


async def main(arguments):
    split = Split(arguments.stable, arguments.canary)
    if arguments.listener_fd is None:
        front = await asyncio.start_server(split.serve_client, "127.0.0.1", arguments.port,
                                           reuse_port=True, limit=64 * 1024)
    else:
        front = await asyncio.start_server(split.serve_client, limit=64 * 1024,
                                           sock=socket.socket(fileno=arguments.listener_fd))
    control = await asyncio.start_server(split.serve_control, "127.0.0.1", arguments.control)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stopped.set)
    print(f"traffic split on 127.0.0.1:{arguments.port}: stable :{arguments.stable}, "
          f"canary :{arguments.canary}, control :{arguments.control}", flush=True)
    await stopped.wait()
    await stop_serving(front, split)
    control.close()


async def stop_serving(front, split):
    """Stop the front gracefully: no new connections; the requests in flight are answered
    (a kept-alive client is closed after its current answer). The connections the kernel
    queued for the port are accepted first: closing a listener of its own resets them, and
    on a port shared with the servers that take over, new ones queue there until then. (A
    handed socket stays open in the server it was handed to.)"""
    while select.select(front.sockets, [], [], 0)[0]:
        await asyncio.sleep(0)
    # Accepting stops one pass before the server closes: a connection accepted in the
    # last pass gets its transport in the next, and asyncio drops it unanswered (the
    # client sees a reset) if the server is closed by then (Server._attach asserts it is
    # open; seen once under a steady probe as a canary ended).
    loop = asyncio.get_running_loop()
    for listener in front.sockets:
        loop.remove_reader(listener.fileno())
    await asyncio.sleep(0)
    front.close()
    split.stopping = True
    # A connection just accepted reaches serve_client (and counts as busy) a few loop
    # iterations later: let them run before counting.
    await asyncio.sleep(0.1)
    deadline = time.monotonic() + UPSTREAM_TIMEOUT
    while split.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("port", "control", "stable", "canary"):
        parser.add_argument(f"--{name}", type=int, required=True)
    # Names the project and target on the command line, so the local target finds it.
    parser.add_argument("--mark", default="")
    parser.add_argument("--listener-fd", type=int)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_arguments()))
