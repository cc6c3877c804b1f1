"""The smoke test: send the sample requests to a target and check the answers.

Checks status 200, one prediction per row, the model version the target reports
and a latency bound; and, when the target has a scoring key, that a request without
it is refused with 401 (a server that answers anyone fails the test). The result is
recorded on the model version as the tag smoke_test.<target>, which promote requires
for staging.
"""
import contextlib
import json
import math
import time

from ml_service import report, tracking
from ml_service.client import ScoringClient, ScoringError
from ml_service.errors import MlopsError
from ml_service.releasing import registry
from ml_service.targets import get_target
from training.lineage import SAMPLE_PREDICTIONS_TAG

SAMPLE_REQUEST = "scoring/sample-request.json"


def failures(client, model_version, rows, max_latency_ms, known_answers=None):
    """Everything wrong with the answers of `client`'s endpoint to `rows` (empty if none),
    which should come from `model_version`; `known_answers` are the predictions the
    version gave at registration. `client` should not retry: a server that needs a
    second attempt fails the smoke test."""
    found = []
    if client.key:
        try:
            client.without_key().score(rows)
            status = 200
        except ScoringError as error:
            status = error.status
        if status != 401:
            found.append(f"a request without the scoring key got status {status} instead "
                         f"of 401: the endpoint does not check its key")
    with contextlib.suppress(ScoringError):
        client.score(rows)  # the first request warms the worker up
    started = time.perf_counter()
    try:
        scores = client.score(rows)
    except ScoringError as error:
        return [*found, error.what.rstrip(".")]
    seconds = time.perf_counter() - started
    predictions = scores.predictions
    if tuple(map(str, scores.model_versions)) != (model_version,):
        found.append(f"serves model version {', '.join(map(str, scores.model_versions))}, "
                     f"expected {model_version}")
    if known_answers is not None and not found and not all(
            math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6)
            for got, want in zip(predictions, known_answers)):
        found.append(f"predictions {predictions} differ from the version's known answers "
                     f"{known_answers} (recorded at registration): another model answers")
    if seconds * 1000 > max_latency_ms:
        found.append(f"latency {seconds * 1000:.0f} ms exceeds the bound {max_latency_ms} ms")
    return found


def sample_rows(settings):
    """The rows of scoring/sample-request.json."""
    return json.loads((settings.project_root / SAMPLE_REQUEST).read_text())["data"]


def _known_answers(client, settings, version):
    """The version's predictions for the sample request recorded at registration, or
    None for a version registered before they were recorded."""
    recorded = client.get_model_version(settings.model.name, version).tags.get(
        SAMPLE_PREDICTIONS_TAG)
    return json.loads(recorded) if recorded else None


def smoke_test(settings, target_name):
    """Smoke-test the target; record the result; raise MlopsError on failure."""
    client, _ = tracking.connect(settings)
    target = get_target(target_name, settings)
    deployment = target.status()
    if deployment is None:
        raise MlopsError(f"Nothing is deployed to {target_name}.",
                         f"Run `python -m ml_service deploy --target {target_name}` first.")
    if not deployment.healthy:
        found = [f"the deployment is not healthy: {deployment.detail}"]
    else:
        found = failures(ScoringClient.for_deployment(settings, deployment, retries=0,
                                                      smoke_test=True),
                         deployment.model_version, sample_rows(settings),
                         settings.target_settings(target_name).smoke_max_latency_ms,
                         _known_answers(client, settings, deployment.model_version))
    client.set_model_version_tag(settings.model.name, deployment.model_version,
                                 registry.smoke_tag(target_name),
                                 "failed" if found else "passed")
    if found:
        raise MlopsError(
            f"Smoke test of {target_name} (version {deployment.model_version}) failed: "
            + "; ".join(found) + ".",
            f"Redeploy with `python -m ml_service deploy --target {target_name}` and check "
            "the server log, or roll back with `python -m ml_service rollback`.")
    report.publish("smoke-test", f"{target_name} version {deployment.model_version} passed "
                   f"at {deployment.scoring_uri}", {"smoke_test": "passed"})
    return deployment
