"""Shared by the canary tests of the local and the container target: canary settings fast
enough for a test, a release that fails on part of the traffic, and a probe that sends
production a steady stream of requests while a deploy or promote runs."""
import collections
import json
import threading
import time
import urllib.error
import urllib.request

from ml_service.targets import get_target
from training.data import SAMPLE_FEATURES, sample_table

CANARY = {"MLOPS_PRODUCTION_STRATEGY": "canary", "MLOPS_PRODUCTION_CANARY_STEPS": "10,50,100",
          "MLOPS_PRODUCTION_CANARY_STEP_SECONDS": "1", "MLOPS_PRODUCTION_CANARY_MIN_REQUESTS": "20",
          # Two test workers, servers and the probe share two cores: latency differences
          # below the smoke test's limit are the machine's, not the releases' (the
          # latency check itself: test_canary_analysis.py).
          "MLOPS_PRODUCTION_CANARY_LATENCY_FLOOR_MS": "1000",
          # Versions 1 and 2 (Ridge, alpha 1.0 and 0.1) differ by KS 0.10 on the whole
          # sample; 20 requests of it can show 0.3. Version 3 differs by 1.0.
          "MLOPS_PRODUCTION_CANARY_MAX_PREDICTION_KS": "0.6"}
# Appended to scoring/score.py: its scoring fails on every row whose first feature is
# below -0.03, about a third of the sample's rows but none of the smoke test's.
BROKEN_ON_PART_OF_THE_TRAFFIC = '''

_init_healthy = init


def init():
    """A release that fails on part of the traffic (tests/helpers/canary.py)."""
    _init_healthy()
    healthy = _state["predict"]

    def predict(features):
        if float(np.asarray(features, dtype=float)[0][0]) < -0.03:
            raise RuntimeError("broken on these inputs")
        return healthy(features)
    _state["predict"] = predict
'''


class Probe:
    """A steady stream of one-row requests to production (or `target`; about 150 per
    second), in a thread: what every answer was, by model version."""

    def __init__(self, settings, target="production"):
        self.url = get_target(target, settings).scoring_uri
        features = sample_table()[list(SAMPLE_FEATURES)]
        self.bodies = [json.dumps({"data": [row]}).encode() for row in features.values.tolist()]
        self.answers = collections.Counter()
        self.failures = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        sent = 0
        while not self.stopped.is_set():
            body = self.bodies[sent % len(self.bodies)]
            sent += 1
            request = urllib.request.Request(self.url, data=body,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    self.answers[("200", json.load(response)["model_version"])] += 1
            except urllib.error.HTTPError as error:
                self.answers[(str(error.code), "")] += 1
            except OSError as error:  # refused, reset, timed out: failed by the switch
                self.failures.append(repr(error))
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        time.sleep(0.5)
        self.stopped.set()
        self.thread.join()

    def served(self):
        """Answers by version ("error" for a 5xx or 4xx)."""
        return collections.Counter({answer[1] or "error": count
                                    for answer, count in self.answers.items()})
