"""The canary's verdict on one step (ml_service/releasing/canary.py judge), from the
counts the traffic split reports and the predictions recorded: each threshold passes
at its limit and fails beyond it, in the documented order."""
import dataclasses

import numpy as np
import pytest

from ml_service.releasing.canary import judge, write_flagger_report

SAME = np.linspace(0, 1, 200)


@pytest.fixture
def canary(settings):
    return dataclasses.replace(settings.production, canary_min_requests=50,
                               canary_max_error_rate=0.02, canary_max_latency_ratio=1.5,
                               canary_latency_floor_ms=20.0, canary_max_prediction_ks=0.3)


def counts(requests=100, errors=0, latency_ms=5.0, current_latency_ms=5.0):
    return {"canary": 10,
            "canary_counts": {"requests": requests, "server_errors": errors,
                              "latencies_ms": [latency_ms] * requests},
            "stable_counts": {"requests": 900, "server_errors": 0,
                              "latencies_ms": [current_latency_ms] * 900}}


def verdict(canary, settings, step_counts, canary_predictions=SAME, current=SAME):
    return judge(canary, settings.monitoring, 10, step_counts,
                 step_counts["stable_counts"]["latencies_ms"],
                 lambda: (canary_predictions, current)).failure


def test_a_step_like_the_current_release_passes(canary, settings):
    assert verdict(canary, settings, counts()) is None


@pytest.mark.parametrize("requests, errors, failed", [
    (100, 2, None),  # 2 % is the limit
    (100, 3, "error rate 0.030"),
    # 2 errors in the first 10 requests: beyond the rate even if the next 40 succeed.
    (10, 2, "error rate 0.200"),
])
def test_server_errors(canary, settings, requests, errors, failed):
    found = verdict(canary, settings, counts(requests, errors))
    assert (found is None) if failed is None else found.startswith(failed)


def test_too_few_requests_are_not_judged_good(canary, settings):
    assert verdict(canary, settings, counts(requests=49)).startswith(
        "not enough traffic: 49 requests")


@pytest.mark.parametrize("canary_ms, current_ms, failed", [
    (29.0, 5.0, False),   # under the floor: 1.5 x 20 ms
    (31.0, 5.0, True),
    (150.0, 100.0, False),  # 1.5 x the current release's p99
    (151.0, 100.0, True),
])
def test_latency_against_the_current_release_above_the_floor(canary, settings, canary_ms,
                                                             current_ms, failed):
    found = verdict(canary, settings, counts(latency_ms=canary_ms, current_latency_ms=current_ms))
    assert (found or "").startswith("p99 latency") is failed


def test_predictions_that_moved_fail_and_small_differences_pass(canary, settings):
    assert verdict(canary, settings, counts(), SAME + 0.1) is None  # KS 0.1
    found = verdict(canary, settings, counts(), SAME + 0.5)  # KS 0.5
    assert found.startswith("predictions diverge: KS statistic 0.50 > "
                            "canary_max_prediction_ks = 0.3")


def test_a_large_statistic_from_few_predictions_is_not_significant(canary, settings):
    # KS 0.4 from 20 and 21 predictions: p = 0.06, not below [monitoring] p_value 0.01.
    assert verdict(canary, settings, counts(), np.linspace(0.4, 1.4, 20),
                   np.linspace(0, 1, 21)) is None


def test_without_enough_recorded_predictions_they_are_not_compared(canary, settings):
    step = judge(canary, settings.monitoring, 10, counts(), [5.0] * 900,
                 lambda: (SAME[:19], SAME))
    assert step.failure is None and step.predictions == "not compared (19 and 200 recorded)"


def test_flagger_s_verdict_is_reported_as_the_local_one_is(settings, tmp_path):
    path = tmp_path / "production-canary.md"
    write_flagger_report(path, settings, "2", "3",
                         "Halt scoring.ns advancement error-rate 0.05 > 0.01 at 10 % of traffic")
    report = path.read_text()
    assert report.startswith(f"## Canary of {settings.model.name} version 3 (current: version "
                             "2), run by Flagger on AKS")
    assert "**Rolled back**: Halt scoring.ns advancement error-rate 0.05 > 0.01 at 10 % of " \
           "traffic." in report
    write_flagger_report(path, settings, "2", "3")
    assert "**Promoted**: every step passed (10 %, 50 %, 100 %)." in path.read_text()
