"""The redeploy drill: a local target redeployed again and again while client threads score
on its port, each request on a new connection; it counts the requests that failed (a reset
or refused connection, a timeout, a status other than 200), which no redeploy should cause.

    python benchmarks/redeploy.py [--redeploys 30] [--clients 4] [--workers 2]

Two versions of a throwaway model (load.py's) alternate, served by a local target whose
state lives in a temporary folder (a copy of mlops.toml, a free port): the project's own
staging and production are not touched. It prints the requests, the failures by kind and
the redeploys' durations; it asserts nothing.
"""
import argparse
import collections
import http.client
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # load.py, beside this script

from load import PROJECT_ROOT, throwaway_model  # noqa: E402 (sets sys.path for these)
from ml_service.config import load_settings  # noqa: E402
from ml_service.release import Release  # noqa: E402
from ml_service.releasing.image import SCORING_FILES  # noqa: E402
from ml_service.targets.local import LocalTarget  # noqa: E402
from ml_service.targets.loopback import free_port  # noqa: E402

REQUEST = (PROJECT_ROOT / "scoring" / "sample-request.json").read_bytes()


def score_until(port, stop, outcomes):
    """Score on new connections until `stop` is set, counting each outcome."""
    while not stop.is_set():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("POST", "/score", REQUEST, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            outcome = "ok" if response.status == 200 else f"status {response.status}"
        except OSError as error:
            outcome = type(error).__name__
        finally:
            connection.close()
        outcomes[outcome] += 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redeploys", type=int, default=30)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        context = folder / "context"
        context.mkdir()
        for name in SCORING_FILES:
            shutil.copy2(PROJECT_ROOT / "scoring" / name, context / name)
        shutil.copytree(throwaway_model(folder), context / "model")
        shutil.copy2(PROJECT_ROOT / "mlops.toml", folder / "mlops.toml")
        environ = {"MLOPS_PRODUCTION_PORT": str(free_port()),
                   "MLOPS_SERVING_WORKERS": str(arguments.workers)}
        target = LocalTarget("production", load_settings(folder / "mlops.toml", environ),
                             environ)
        releases = [Release("model", version, f"image:{version}", "", "", context)
                    for version in ("1", "2")]
        outcomes, stop, durations = collections.Counter(), threading.Event(), []
        clients = [threading.Thread(target=score_until, args=(target.port, stop, outcomes))
                   for _ in range(arguments.clients)]
        try:
            target.deploy(releases[0])
            for client in clients:
                client.start()
            for index in range(arguments.redeploys):
                started = time.monotonic()
                target.deploy(releases[(index + 1) % 2])
                durations.append(time.monotonic() - started)
        finally:
            stop.set()
            for client in clients:
                if client.is_alive():
                    client.join()
            target.stop()
    failures = {outcome: count for outcome, count in outcomes.items() if outcome != "ok"}
    durations.sort()
    print(f"{arguments.redeploys} redeploys ({arguments.workers} workers) under "
          f"{arguments.clients} clients: {sum(outcomes.values())} requests, "
          f"{sum(failures.values())} failed {failures or ''}")
    if durations:
        print(f"redeploy s: median {durations[len(durations) // 2]:.1f}, "
              f"max {durations[-1]:.1f}")


if __name__ == "__main__":
    main()
