"""Loopback load benchmark: the scoring server (azmlinfsrv's app + scoring/score.py on gunicorn,
as scoring/gunicorn.conf.py sets it up) against `mlflow models serve`.

Starts both servers on free loopback ports for the same MLflow model, sends the same rows to
each for a fixed time with a fixed number of connections, and prints requests/s, p50 and p99
latency and the error rate, for single-row and batch requests. Run from the project root:

    python benchmarks/load.py                     # a throwaway model from training/
    python benchmarks/load.py --model-dir PATH    # any MLflow model folder (MLmodel inside)
    python benchmarks/load.py --container IMAGE   # also the scoring image, in Docker
    python benchmarks/load.py --rate 500 --duration 30   # open loop: 500 requests/s

Closed loop (the default), each of --concurrency connections sends its next request when
the last is answered: requests/s is the server's capacity. Open loop (--rate R), requests
start at R per second on a fixed schedule whatever the answers, over as many connections
as that needs, and each latency counts from when its request was due: a server that falls
behind shows it in p99 (no coordinated omission), as users at a fixed arrival rate see it.

With --container, the image (e.g. the repository@sha256:... that build-image pushed) runs as
a third server, published on a loopback port, and the other two serve the model copied out
of it: process and container numbers side by side, for the same model, in one run.

It is a measurement tool, not a test: it asserts nothing and only ever talks to loopback.
Requests to the scoring server are encoded by ml_service.client (as every client of the
project sends them), and checked through it once before the load; the load itself goes over
raw keep-alive connections from one asyncio loop, so the load generator stays cheap and
predictable on a small machine.
"""
import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))  # run as a script: python benchmarks/load.py

from ml_service.client import ScoringClient, ScoringError  # noqa: E402
from ml_service.release import http_status  # noqa: E402

IMAGE_MODEL_DIR = "/var/azureml-app/model"  # where scoring/Dockerfile puts the model
IMAGE_PORT = 5001  # what scoring/Dockerfile exposes
MAX_DURATION = 300
MAX_CONCURRENCY = 64
MAX_WORKERS = 16
MAX_BATCH = 1000  # score.py's default SCORING_MAX_BATCH_SIZE
MAX_RATE = 5000
# Open loop: an idle connection is reused only this soon. Both servers close a connection
# idle for 5 s (gunicorn's keepalive, uvicorn's default); one reused later may be closed as
# a request goes out, which would count as the server's error (about 0.3 % at 500 req/s).
IDLE_REUSE_SECONDS = 2.0


def require_loopback(host):
    """Refuse any host that is not an IPv4 loopback address: this tool only loads localhost."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, socket.AF_INET)}
    except socket.gaierror:
        addresses = set()
    if not addresses or not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        raise SystemExit(f"Refusing to send load to {host!r} {sorted(addresses)}: "
                         "IPv4 loopback only (e.g. 127.0.0.1)")
    return host


def free_port(host):
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def throwaway_model(folder):
    """Train the project's model on its data and save it as an MLflow model under `folder`."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from training.data import load_dataset
    from training.model import train_model

    features, target = load_dataset()
    model = train_model(features, target, alpha=0.1)
    path = Path(folder) / "model"
    mlflow.sklearn.save_model(
        model, str(path), signature=infer_signature(features, model.predict(features)),
        input_example=features.head(3),
        # Explicit requirements: inferring them takes ~20 s.
        pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True))
    return path


@contextlib.contextmanager
def server(name, command, health_url, log_dir, settings):
    """Run a server process in its own process group; always kill the group on exit.

    `settings`: environment variables for the server. A scoring key in this environment is
    not passed on: the load is sent without one.
    """
    env = {key: value for key, value in os.environ.items()
           if key not in ("SCORING_KEY", "SCORING_KEY_FILE")}
    env.update(settings)
    # The servers' own entry points (gunicorn, mlflow's uvicorn) live next to this python.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    # gunicorn puts a control socket in XDG_RUNTIME_DIR (else ~/.gunicorn): keep it private.
    env["XDG_RUNTIME_DIR"] = str(log_dir)
    log = open(Path(log_dir) / f"{name}.log", "wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               cwd=PROJECT_ROOT / "scoring", start_new_session=True)
    try:
        yield process, health_url, log.name
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def model_from_image(reference, folder):
    """Copy the model baked into the scoring image `reference` to `folder`/model."""
    created = subprocess.run(["docker", "create", reference], capture_output=True, text=True)
    if created.returncode != 0:
        raise SystemExit(f"Cannot use the image {reference}: {created.stderr.strip()}")
    container = created.stdout.strip()
    try:
        subprocess.run(["docker", "cp", f"{container}:{IMAGE_MODEL_DIR}",
                        str(Path(folder) / "model")], check=True, capture_output=True)
    finally:
        subprocess.run(["docker", "rm", container], capture_output=True)
    return Path(folder) / "model"


def container_pid(name):
    """The host pid of a container's first process: its process group holds the server's
    processes (Docker starts it in a session of its own), so group_cpu_seconds counts them."""
    inspected = subprocess.run(["docker", "inspect", name], capture_output=True, text=True)
    return json.loads(inspected.stdout)[0]["State"]["Pid"] if inspected.returncode == 0 else 0


def group_cpu_seconds(group):
    """CPU seconds used so far by the live processes of a process group (Linux /proc).

    Unlike requests/s, CPU per request barely moves when other programs share the machine.
    NaN where there is no /proc (macOS).
    """
    if not os.path.isdir("/proc"):
        return float("nan")
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:
                total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def wait_healthy(process, url, log_name, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"Server exited with {process.returncode}; see {log_name}")
        if http_status(url, timeout=2) == 200:
            return
        time.sleep(0.25)
    raise SystemExit(f"Server not healthy after {timeout} s; see {log_name}")


async def _one_connection(host, port, request, deadline, latencies, errors):
    """Send `request` over and over; reconnect whenever the server closes the connection."""
    reader = writer = None
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            headers = head.lower()
            length = int(headers.split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if b"connection: close" in headers:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            status = None
            if writer is not None:
                writer.close()
                writer = None
        if status == 200:
            latencies.append(time.perf_counter() - start)
        else:
            errors.append(status)
    if writer is not None:
        writer.close()


async def _load(host, port, request, duration, concurrency):
    latencies, errors = [], []
    deadline = time.monotonic() + duration
    started = time.perf_counter()
    await asyncio.gather(*(_one_connection(host, port, request, deadline, latencies, errors)
                           for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


async def _open_loop(host, port, request, duration, rate):
    """Start `request` `rate` times a second for `duration` s on a fixed schedule; each on
    an idle kept-alive connection or a new one. Latency counts from the scheduled start."""
    latencies, errors, idle, tasks = [], [], [], []
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def one(due):
        connection = None
        while idle and connection is None:
            reader, writer, since = idle.pop()  # the most recently used first
            if loop.time() - since < IDLE_REUSE_SECONDS:
                connection = reader, writer
            else:
                writer.close()
        try:
            if connection is None:
                connection = await asyncio.open_connection(host, port)
            reader, writer = connection
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            headers = head.lower()
            await reader.readexactly(
                int(headers.split(b"content-length:")[1].split(b"\r\n")[0]))
            if b"connection: close" in headers:
                writer.close()
            else:
                idle.append((*connection, loop.time()))
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            status = None
            if connection is not None:
                connection[1].close()
        if status == 200:
            latencies.append(loop.time() - due)
        else:
            errors.append(status)

    for number in range(int(duration * rate)):
        due = started + number / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    for _, writer, _ in idle:
        writer.close()
    return latencies, errors, loop.time() - started


def scoring_request(client):
    """The request to a scoring server for some rows: (body, headers) as `client` (an
    ml_service.client.ScoringClient) sends them, once it has had the rows scored, so a
    server that does not answer them properly is never loaded."""
    def request(rows):
        try:
            client.predict(rows)
        except ScoringError as error:
            raise SystemExit(f"The check before the load failed: {error}") from None
        return client.encode(rows), client.headers
    return request


def json_request(payload):
    return json.dumps(payload).encode(), {"Content-Type": "application/json"}


def measure(host, port, path, body, headers, duration, concurrency, group, warmup=1.0,
            rate=None):
    """Load one endpoint with POSTs of `body` and `headers` (closed loop over
    `concurrency` connections, or open loop at `rate` requests/s); return requests/s, p50
    and p99 in ms, error rate, server CPU ms."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    asyncio.run(_load(host, port, request, warmup, concurrency))
    cpu = group_cpu_seconds(group)
    latencies, errors, elapsed = asyncio.run(
        _open_loop(host, port, request, duration, rate) if rate else
        _load(host, port, request, duration, concurrency))
    cpu = group_cpu_seconds(group) - cpu
    latencies.sort()
    total = len(latencies) + len(errors)

    def percentile(share):
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))] * 1e3 \
            if latencies else float("nan")
    return {"req_s": len(latencies) / elapsed, "p50": percentile(0.50), "p99": percentile(0.99),
            "errors": len(errors) / total if total else 1.0,
            "cpu_ms": cpu * 1e3 / total if total else float("nan")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="MLflow model folder (default: train one)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per run (default 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections (default 8)")
    parser.add_argument("--batch", type=int, default=100, help="rows per batch request")
    parser.add_argument("--rate", type=float,
                        help="open loop: requests started per second, whatever the answers "
                             "(default: closed loop over --concurrency connections)")
    parser.add_argument("--workers", type=int, default=2, help="azmlinfsrv workers (default 2)")
    parser.add_argument("--mlflow-workers", type=int,
                        help="mlflow models serve workers (default: as many as --workers)")
    parser.add_argument("--container", metavar="IMAGE",
                        help="also load the scoring image IMAGE, run in Docker (default model: "
                             "the one in the image)")
    parser.add_argument("--only", nargs="+", choices=["azmlinfsrv", "mlflow", "container"],
                        help="start only these servers")
    parser.add_argument("--host", default="127.0.0.1",
                        help="loopback address to load (default 127.0.0.1; others are refused)")
    args = parser.parse_args(argv)
    host = require_loopback(args.host)
    args.mlflow_workers = args.mlflow_workers or args.workers
    for name, value, low, high in [("duration", args.duration, 0.1, MAX_DURATION),
                                   ("concurrency", args.concurrency, 1, MAX_CONCURRENCY),
                                   ("batch", args.batch, 1, MAX_BATCH),
                                   ("workers", args.workers, 1, MAX_WORKERS),
                                   ("mlflow-workers", args.mlflow_workers, 1, MAX_WORKERS),
                                   ("rate", args.rate or 1, 1, MAX_RATE)]:
        if not low <= value <= high:
            parser.error(f"--{name} must be between {low} and {high}")

    with tempfile.TemporaryDirectory(prefix="scoring-bench-") as work:
        if args.model_dir:
            model_dir = args.model_dir.resolve()
        elif args.container:
            model_dir = model_from_image(args.container, work)
        else:
            model_dir = throwaway_model(work)
        if not (model_dir / "input_example.json").is_file():
            raise SystemExit(f"{model_dir} has no input_example.json to take rows from: "
                             "pass the folder of an MLflow model logged with input_example=")
        example = json.loads((model_dir / "input_example.json").read_text())
        columns, rows = example["columns"], example["data"]
        batch = [rows[i % len(rows)] for i in range(args.batch)]
        scenarios = {"1 row": rows[:1], f"{args.batch} rows": batch}

        azml_port, mlflow_port, container_port = (free_port(host) for _ in range(3))
        container_name = f"scoring-bench-{container_port}"
        url = f"http://{host}:"
        servers = {
            "azmlinfsrv": (
                ["gunicorn", "--config", "gunicorn.conf.py", "--bind", f"{host}:{azml_port}",
                 "--workers", str(args.workers)],
                {"AZUREML_MODEL_DIR": str(model_dir)},
                azml_port, f"{url}{azml_port}/", "/score",
                scoring_request(ScoringClient(f"{url}{azml_port}/score",
                                              max_batch_size=MAX_BATCH))),
            "mlflow": (
                ["mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local",
                 "-h", host, "-p", str(mlflow_port), "-w", str(args.mlflow_workers)], {},
                mlflow_port, f"{url}{mlflow_port}/ping", "/invocations",
                # Column-oriented "inputs": the cheapest of mlflow's request formats here
                # (about 5 ms of server CPU per request against 8 ms for dataframe_split).
                lambda data: json_request(
                    {"inputs": dict(zip(columns, map(list, zip(*data))))})),
        }
        if args.container:
            # Attached (no --detach): stopping this client stops the container (--sig-proxy).
            servers["container"] = (
                ["docker", "run", "--rm", "--name", container_name,
                 "--publish", f"{host}:{container_port}:{IMAGE_PORT}",
                 "--env", f"WORKER_COUNT={args.workers}", args.container], {},
                container_port, f"{url}{container_port}/", "/score",
                scoring_request(ScoringClient(f"{url}{container_port}/score",
                                              max_batch_size=MAX_BATCH)))
        if args.only:
            servers = {name: servers[name] for name in args.only if name in servers}

        results = {}
        with contextlib.ExitStack() as stack:
            # Start every server first (each takes 10-20 s to import and load), then load them
            # one at a time so they never compete for the CPU.
            if "container" in servers:
                stack.callback(subprocess.run, ["docker", "rm", "--force", container_name],
                               capture_output=True)
            started = {name: stack.enter_context(server(name, command, health, work, settings))
                       for name, (command, settings, _, health, _, _) in servers.items()}
            for name, (process, url, log_name) in started.items():
                wait_healthy(process, url, log_name)
            groups = {name: process.pid for name, (process, _, _) in started.items()}
            if "container" in groups:
                groups["container"] = container_pid(container_name)
            # Alternate the servers, so a burst of other work on the machine hits both.
            for scenario, data in scenarios.items():
                for name, (_, _, port, _, path, request) in servers.items():
                    results[name, scenario] = measure(
                        host, port, path, *request(data), args.duration, args.concurrency,
                        group=groups[name], rate=args.rate)
                    print(f"  measured {name:<10} {scenario}", file=sys.stderr)

    load = (f"open loop at {args.rate:g} requests/s" if args.rate
            else f"{args.concurrency} connections")
    print(f"\n{load}, {args.duration:g} s per run, "
          f"azmlinfsrv workers={args.workers}, mlflow workers={args.mlflow_workers}\n")
    print(f"| {'server':<10} | {'request':<9} | {'req/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} "
          f"| {'errors':>6} | {'server CPU ms/req':>17} |")
    print(f"|{'-' * 12}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 19}|")
    for (name, scenario), result in sorted(results.items()):
        print(f"| {name:<10} | {scenario:<9} | {result['req_s']:7.0f} | {result['p50']:7.1f} "
              f"| {result['p99']:7.1f} | {result['errors']:6.1%} | {result['cpu_ms']:17.2f} |")
    if {"azmlinfsrv", "mlflow"} <= set(servers):
        print()
        for scenario in scenarios:
            azml, mlflow = results["azmlinfsrv", scenario], results["mlflow", scenario]
            # At a fixed rate both serve it while they keep up: latency tells them apart.
            served = (f"azmlinfsrv answers with a p99 of {azml['p99']:.1f} ms against "
                      f"{mlflow['p99']:.1f} ms for mlflow" if args.rate else
                      f"azmlinfsrv serves {azml['req_s'] / mlflow['req_s']:.2f}x the "
                      "requests/s of mlflow")
            print(f"{scenario}: {served}, at {mlflow['cpu_ms'] / azml['cpu_ms']:.2f}x less CPU "
                  "per request")
    if {"azmlinfsrv", "container"} <= set(servers):
        print()
        for scenario in scenarios:
            process, container = results["azmlinfsrv", scenario], results["container", scenario]
            print(f"{scenario}: the container serves {container['req_s'] / process['req_s']:.2f}x "
                  "the requests/s of the process, at "
                  f"{container['cpu_ms'] / process['cpu_ms']:.2f}x its CPU per request")


if __name__ == "__main__":
    main()
