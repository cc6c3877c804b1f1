from training.gate import decide, skipped_registration

GATE = {"min_r2": 0.3, "min_improvement": 0.01}


def metrics(rmse, r2=0.5):
    return {"rmse": rmse, "mae": rmse * 0.8, "r2": r2}


def test_first_model_passes_when_it_meets_the_floor():
    assert decide(metrics(55), None, **GATE).passed


def test_floor_rejects_even_without_a_champion():
    decision = decide(metrics(55, r2=0.1), None, **GATE)
    assert not decision.passed
    assert "min_r2" in decision.reason


def test_challenger_better_by_the_margin_passes():
    assert decide(metrics(54.0), metrics(55.0), **GATE).passed  # 1.8 % better


def test_challenger_better_by_less_than_the_margin_is_rejected():
    decision = decide(metrics(54.9), metrics(55.0), **GATE)  # 0.2 % better
    assert not decision.passed
    assert "54.9000" in decision.reason and "55.0000" in decision.reason


def test_identical_model_is_rejected_even_with_zero_margin():
    assert not decide(metrics(55.0), metrics(55.0), min_r2=0.3, min_improvement=0.0).passed


def test_worse_challenger_is_rejected():
    assert not decide(metrics(60.0), metrics(55.0), **GATE).passed


def test_the_decision_and_a_rejection_read_the_same_everywhere():
    decision = decide(metrics(60.0), metrics(55.0), **GATE)
    assert decision.verdict == "rejected"
    assert decision.summary == f"gate REJECTED - {decision.reason}"
    assert skipped_registration("pipeline run r1", decision.reason) == \
        f"skipped, the gate rejected pipeline run r1: {decision.reason}"
