"""The smoke test: send the sample requests to a target and check the answers.

Checks status 200, one prediction per row, the model version the target reports
and a latency bound. The result is recorded on the model version as the tag
smoke_test.<target>, which promote requires for staging.
"""
import json
import time
import urllib.error
import urllib.request

from ml_service import http_client, report, tracking
from ml_service.errors import MlopsError
from ml_service.targets import get_target

SAMPLE_REQUEST = "scoring/sample-request.json"


def score(deployment, headers, payload, timeout=30):
    """POST `payload` to the deployment; return (status, body, seconds)."""
    request = urllib.request.Request(
        deployment.scoring_uri, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json", **headers})
    started = time.perf_counter()
    try:
        with http_client.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except OSError as error:
        return None, str(error), time.perf_counter() - started
    elapsed = time.perf_counter() - started
    try:
        return status, json.loads(body), elapsed
    except ValueError:
        return status, body.decode(errors="replace"), elapsed


def failures(deployment, headers, payload, max_latency_ms):
    """Everything wrong with the deployment's answers to `payload` (empty if none)."""
    rows = len(payload["data"])
    score(deployment, headers, payload)  # first request warms the worker up
    status, body, seconds = score(deployment, headers, payload)
    if status != 200:
        return [f"status {status} instead of 200: {body}"]
    found = []
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(predictions, list) or len(predictions) != rows:
        found.append(f"expected {rows} predictions, got {body}")
    if str(body.get("model_version")) != deployment.model_version:
        found.append(f"serves model version {body.get('model_version')}, "
                     f"expected {deployment.model_version}")
    if seconds * 1000 > max_latency_ms:
        found.append(f"latency {seconds * 1000:.0f} ms exceeds the bound {max_latency_ms} ms")
    return found


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
        payload = json.loads((settings.project_root / SAMPLE_REQUEST).read_text())
        found = failures(deployment, target.request_headers(), payload,
                         settings.target_settings(target_name).smoke_max_latency_ms)
    client.set_model_version_tag(settings.model.name, deployment.model_version,
                                 f"smoke_test.{target_name}", "failed" if found else "passed")
    if found:
        raise MlopsError(
            f"Smoke test of {target_name} (version {deployment.model_version}) failed: "
            + "; ".join(found) + ".",
            f"Redeploy with `python -m ml_service deploy --target {target_name}` and check "
            "the server log, or roll back with `python -m ml_service rollback`.")
    report.publish("smoke-test", f"{target_name} version {deployment.model_version} passed "
                   f"at {deployment.scoring_uri}", {"smoke_test": "passed"})
    return deployment
