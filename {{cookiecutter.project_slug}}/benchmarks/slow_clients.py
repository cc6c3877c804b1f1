"""The slow-client drill: many connections that trickle their headers or sit idle (and
reconnect when dropped), while a good client sends ordinary requests and times them.

One asyncio loop holds every connection, so a few hundred cost the machine little. Against a
scoring server already running on loopback (issue 21's drill: 512 slow, 256 idle):

    python benchmarks/slow_clients.py --port 5001 --body-file request.json [--slow 512 --idle 256]

It prints how many good requests got a 200 and their p50/p99; it asserts nothing.
"""
import argparse
import asyncio
import time

SLOW_HEAD = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


async def _trickle_headers(host, port, stop, interval):
    """Send a request head one byte per `interval` seconds, reconnecting when dropped."""
    while not stop.is_set():
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(interval)
            continue
        try:
            for index in range(len(SLOW_HEAD)):
                if stop.is_set():
                    break
                writer.write(SLOW_HEAD[index:index + 1])
                await writer.drain()
                await asyncio.sleep(interval)
        except OSError:
            pass
        finally:
            writer.close()


async def _sit_idle(host, port, stop):
    """Hold a connection that sends nothing; open a new one whenever it is closed."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        try:
            closed = asyncio.ensure_future(reader.read(1))
            await asyncio.wait([closed, asyncio.ensure_future(stop.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
        except OSError:
            pass
        finally:
            writer.close()


async def _good_requests(host, port, request, count, timeout):
    """Send `request` `count` times on fresh connections; (statuses, seconds each)."""
    statuses, seconds = [], []
    for _ in range(count):
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            statuses.append(int(head[9:12]))
            writer.close()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            statuses.append(None)
        seconds.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return statuses, seconds


async def _drill(host, port, request, slow, idle, settle, count, timeout):
    stop = asyncio.Event()
    attackers = [asyncio.ensure_future(_trickle_headers(host, port, stop, 1.0))
                 for _ in range(slow)]
    attackers += [asyncio.ensure_future(_sit_idle(host, port, stop)) for _ in range(idle)]
    await asyncio.sleep(settle)
    try:
        return await _good_requests(host, port, request, count, timeout)
    finally:
        stop.set()
        if attackers:
            await asyncio.wait(attackers, timeout=5)
        for attacker in attackers:
            attacker.cancel()


def drill(host, port, request, slow=512, idle=256, settle=3.0, count=100, timeout=3.0):
    """(statuses, seconds) of `count` good requests (raw bytes `request`, answered on a
    fresh connection each) sent while `slow` connections trickle request headers one byte
    a second and `idle` connections sit idle, reconnecting when dropped; the attackers get
    `settle` seconds to connect first. A status is None when no answer came in `timeout`."""
    return asyncio.run(_drill(host, port, request, slow, idle, settle, count, timeout))


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", required=True, help="JSON body of one good /score request")
    parser.add_argument("--slow", type=int, default=512, help="slow-header connections")
    parser.add_argument("--idle", type=int, default=256, help="idle connections")
    parser.add_argument("--count", type=int, default=100, help="good requests")
    args = parser.parse_args(argv)
    with open(args.body_file, "rb") as body_file:
        body = body_file.read()
    request = (b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    statuses, seconds = drill(args.host, args.port, request, args.slow, args.idle,
                              count=args.count)
    p50, p99 = percentile(seconds, 0.5) * 1e3, percentile(seconds, 0.99) * 1e3
    print(f"slow={args.slow} idle={args.idle}: {statuses.count(200)}/{len(statuses)} 200, "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
