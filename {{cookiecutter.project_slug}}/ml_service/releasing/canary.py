"""The canary of a promotion on this machine ([production] strategy = "canary", on a
local process or container target).

The new release first takes a share of production's real traffic, growing step by step
(canary_steps, e.g. 10 %, 50 %, 100 %), beside the release it replaces, through the
target's traffic split (ml_service/targets/traffic_split.py). Each step lasts
canary_step_seconds and until the canary answered canary_min_requests, then is judged
against the current release on what the servers answered and recorded:
- error rate: the canary's server errors (5xx; a 4xx is the client's bad input) per
  request, at most canary_max_error_rate;
- latency: the canary's p99 at most canary_max_latency_ratio times the current release's
  (judged only above canary_latency_floor_ms, below which jitter dominates);
- predictions: the two-sample Kolmogorov-Smirnov statistic between the canary's and the
  current release's predictions in the prediction log, at most canary_max_prediction_ks
  unless not significant at [monitoring] p_value.
The current release's numbers are those of every step so far (at 100 % it takes none).
A step that fails stops the canary: promotion.py rolls back, with a commit that names
the failed check and its measured value. The version's `canary` tag records the verdict.
On AKS, Flagger runs the same analysis from the same settings (deploy/canary/).
"""
import dataclasses
import datetime
import time

import numpy as np

from ml_service.config import MACHINE_KINDS
from ml_service.errors import CanaryFailed
from ml_service.monitoring import records
from ml_service.monitoring.prediction_log import log_folder
from training.reference import PREDICTION_COLUMN

CANARY_TAG = "canary"
# The kinds of production target whose canary runs here, through their traffic split
# (traffic_split.py): the targets on this machine, a local process and a container. On
# AKS, Flagger.
SPLIT_KINDS = MACHINE_KINDS
# A step that has not had canary_min_requests by this many times canary_step_seconds
# fails: a canary is never promoted on too little evidence, nor held forever.
MAX_STEP_LENGTHS = 10
# Fewer predictions on a side than this, and KS says nothing useful: not judged.
MIN_PREDICTIONS_COMPARED = 20
# The canary's servers start cold (the first request of each worker loads what it
# needs): the latencies of its first requests are left out of its p99, or a single one
# would decide a small step (with 50 requests, p99 is the slowest).
WARM_UP_REQUESTS = 5


def percentages(steps, separator=", "):
    """`steps` as text: "10 %, 50 %, 100 %"."""
    return separator.join(f"{percent} %" for percent in steps)


def errors_beyond_rate(canary_settings, canary):
    """Whether the canary's server errors exceed canary_max_error_rate even if every
    request up to canary_min_requests succeeds: a step with them fails at once, so a
    broken release meets as little traffic as possible."""
    return canary["server_errors"] > canary_settings.canary_max_error_rate * max(
        canary["requests"], canary_settings.canary_min_requests)


def step_failed(version, percent, reason):
    """The CanaryFailed of `version` at the step of `percent`."""
    reason = f"{reason} at the {percent} % step"
    return CanaryFailed(f"The canary of version {version} failed: {reason}.",
                        "Production serves the current release again; see the canary "
                        "report, fix the release, then deploy and promote again.", reason)


@dataclasses.dataclass
class Step:
    """What one step measured, and why it failed (None: it passed)."""

    percent: int
    canary_requests: int
    current_requests: int
    server_errors: int
    p99_ms: float
    current_p99_ms: float
    ks: float = float("nan")
    ks_p_value: float = float("nan")
    predictions: str = "not compared"
    failure: str = None

    def row(self):
        return (f"| {self.percent} % | {self.canary_requests} | {self.current_requests} "
                f"| {self.server_errors} | {self.p99_ms:.1f} ms | {self.current_p99_ms:.1f} ms "
                f"| {self.predictions} | {self.failure or 'passed'} |")


def p99(latencies):
    return float(np.percentile(latencies, 99)) if len(latencies) else float("nan")


def judge(canary_settings, monitoring, percent, counts, current_latencies, predictions):
    """The Step of `percent` from the split's `counts` and, once every other check
    passed, the predictions recorded: `predictions()` returns the canary's and the
    current release's."""
    canary, current = counts["canary_counts"], counts["stable_counts"]
    step = Step(percent, canary["requests"], current["requests"], canary["server_errors"],
                p99(canary["latencies_ms"]), p99(current_latencies))
    if errors_beyond_rate(canary_settings, canary):
        step.failure = (f"error rate {canary['server_errors'] / canary['requests']:.3f} "
                        f"({canary['server_errors']} server errors in {canary['requests']} "
                        f"requests) > canary_max_error_rate = "
                        f"{canary_settings.canary_max_error_rate}")
        return step
    if canary["requests"] < canary_settings.canary_min_requests:
        step.failure = (f"not enough traffic: {canary['requests']} requests reached the canary, "
                        f"fewer than canary_min_requests = {canary_settings.canary_min_requests}")
        return step
    floor = canary_settings.canary_latency_floor_ms
    limit = canary_settings.canary_max_latency_ratio * max(step.current_p99_ms, floor)
    if step.p99_ms > limit:
        step.failure = (f"p99 latency {step.p99_ms:.1f} ms > {limit:.1f} ms "
                        f"(canary_max_latency_ratio = {canary_settings.canary_max_latency_ratio} "
                        f"x the current release's {step.current_p99_ms:.1f} ms, at least "
                        f"{floor:g} ms)")
        return step
    canary_predictions, current_predictions = predictions()
    if min(len(canary_predictions), len(current_predictions)) < MIN_PREDICTIONS_COMPARED:
        step.predictions = (f"not compared ({len(canary_predictions)} and "
                            f"{len(current_predictions)} recorded)")
        return step
    # Here, not at the top: importing scipy.stats is about 0.5 CPU-s, which every
    # `promote` and dry run paid, the first promotion and those without a canary too.
    from scipy import stats

    result = stats.ks_2samp(canary_predictions, current_predictions)
    step.ks, step.ks_p_value = float(result.statistic), float(result.pvalue)
    step.predictions = f"KS {step.ks:.2f} (p {step.ks_p_value:.2g})"
    if step.ks > canary_settings.canary_max_prediction_ks and step.ks_p_value < monitoring.p_value:
        step.failure = (f"predictions diverge: KS statistic {step.ks:.2f} > "
                        f"canary_max_prediction_ks = {canary_settings.canary_max_prediction_ks} "
                        f"(p = {step.ks_p_value:.2g} < {monitoring.p_value})")
    return step


def recorded_predictions(settings, versions_since):
    """The predictions in production's prediction log of each version in
    `versions_since` (version -> the time from which its records count)."""
    found = {version: [] for version in versions_since}
    for record in records.read_log_files(log_folder(settings, "production")):
        version = str(record.get("model_version"))
        # Only these versions' recent records become a table (the log holds days of them).
        if version in found and str(record.get("time", "")) >= versions_since[version]:
            found[version].append(record)
    return [records.to_frame(found[version]).get(PREDICTION_COLUMN, []).astype(float).to_numpy()
            for version in versions_since]


def run(settings, client, split, current, new, report_path):
    """Take `new` through every step against `current` on `split` (a TrafficSplit that
    serves production); return the Steps. Raises CanaryFailed at the first failed step,
    once the split sends the canary nothing more; either way, the version's `canary` tag
    and the report at `report_path` say how it went."""
    canary_settings = settings.production
    steps, current_latencies, verdict = [], [], "stopped: the promotion was interrupted"
    since = now()
    try:
        for percent in canary_settings.canary_steps:
            step_since = now()
            split.route(percent)
            counts = wait_for_step(canary_settings, split)
            current_latencies += counts["stable_counts"]["latencies_ms"]
            if not steps:
                counts["canary_counts"]["latencies_ms"] = \
                    counts["canary_counts"]["latencies_ms"][WARM_UP_REQUESTS:]
            step = judge(canary_settings, settings.monitoring, percent, counts,
                         current_latencies, lambda: recorded_predictions(settings, {
                             str(new.model_version): step_since,
                             str(current.model_version): since}))
            steps.append(step)
            print(f"promote: canary step {percent} %: {step.canary_requests} requests to "
                  f"version {new.model_version}, {step.current_requests} to version "
                  f"{current.model_version}; {step.failure or 'passed'}", flush=True)
            if step.failure:
                split.route(0)
                failure = step_failed(new.model_version, percent, step.failure)
                verdict = f"failed: {failure.reason}"
                raise failure
        verdict = f"passed: {percentages(canary_settings.canary_steps)}"
        return steps
    finally:
        if steps:
            write_report(report_path, settings, current, new, steps)
        client.set_model_version_tag(settings.model.name, new.model_version, CANARY_TAG,
                                     verdict)


def now():
    """The time as the prediction log writes it (UTC, ISO 8601 with Z), to compare as text."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def wait_for_step(canary_settings, split):
    """The split's counts once the step has lasted canary_step_seconds and the canary
    answered canary_min_requests, or earlier once its errors alone fail it, or after
    MAX_STEP_LENGTHS step lengths whatever it had."""
    started = time.monotonic()
    poll = min(1.0, canary_settings.canary_step_seconds / 5)
    while True:
        time.sleep(poll)
        counts = split.counts()
        canary = counts["canary_counts"]
        elapsed = time.monotonic() - started
        enough = canary["requests"] >= canary_settings.canary_min_requests
        if errors_beyond_rate(canary_settings, canary) or \
                (enough and elapsed >= canary_settings.canary_step_seconds) or \
                elapsed >= MAX_STEP_LENGTHS * canary_settings.canary_step_seconds:
            return counts


def write_report(path, settings, current, new, steps):
    """The canary's steps as markdown (promotion.py shows it in the CI run's summary)."""
    failed = next((step for step in steps if step.failure), None)
    lines = [f"## Canary of {settings.model.name} version {new.model_version} "
             f"(current: version {current.model_version})", "",
             f"**{'Rolled back' if failed else 'Promoted'}**"
             + (f": {failed.failure} at the {failed.percent} % step." if failed else
                f": every step passed ({percentages(step.percent for step in steps)})."), "",
             "| step | canary requests | current requests | canary 5xx | canary p99 "
             "| current p99 | predictions | verdict |",
             "|---|---|---|---|---|---|---|---|",
             *(step.row() for step in steps), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def write_flagger_report(path, settings, current_version, new_version, reason=None):
    """The verdict of Flagger's canary on AKS as markdown (its measurements stay in the
    cluster's Prometheus; `kubectl describe canary scoring` lists its events)."""
    steps = percentages(settings.production.canary_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([
        f"## Canary of {settings.model.name} version {new_version} (current: version "
        f"{current_version}), run by Flagger on AKS", "",
        f"**Rolled back**: {reason}." if reason else f"**Promoted**: every step passed ({steps}).",
        "", f"Analysis: {plan(settings, current_version, new_version)}.", ""]))


def plan(settings, current_version, new_version):
    """The canary in words, for --dry-run promote."""
    production = settings.production
    return (f"canary: version {new_version} takes "
            f"{percentages(production.canary_steps, ', then ')} of "
            f"production's traffic beside version {current_version}, each step at least "
            f"{production.canary_step_seconds:g} s and {production.canary_min_requests} "
            "canary requests; a step fails (and production rolls back to version "
            f"{current_version}) on an error rate above {production.canary_max_error_rate}, "
            f"a p99 above {production.canary_max_latency_ratio} x the current release's "
            f"(at least {production.canary_latency_floor_ms:g} ms), or predictions whose KS "
            f"statistic exceeds {production.canary_max_prediction_ks} "
            f"(p < {settings.monitoring.p_value})")
