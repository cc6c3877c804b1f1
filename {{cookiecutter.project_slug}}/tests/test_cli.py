def test_pipeline_runs_every_stage_and_a_second_run_is_safe(run_cli, project):
    first = run_cli("pipeline")
    assert first.returncode == 0, first.stderr
    assert "register: " in first.stdout and "version 1" in first.stdout
    second = run_cli("pipeline")
    assert second.returncode == 0, second.stderr
    # No model holds the production alias, so the gate passes and a new version is added.
    assert "version 2" in second.stdout
    assert "Traceback" not in first.stderr + second.stderr


def test_stage_before_train_exits_1_with_advice(run_cli):
    result = run_cli("evaluate")
    assert result.returncode == 1
    assert "python -m ml_service train" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_error_exits_2_and_names_the_key(run_cli):
    result = run_cli("train", MLOPS_GATE_MIN_R2="high")
    assert result.returncode == 2
    assert "MLOPS_GATE_MIN_R2" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_store_is_reported_not_traced(run_cli, project):
    (project / "mlruns" / "mlflow.db").write_bytes(b"this is not a database" * 100)
    result = run_cli("train")
    assert result.returncode == 1
    assert "Cannot use the MLflow tracking store" in result.stderr
    assert "mv mlruns" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_store_is_reported_not_traced(run_cli):
    result = run_cli("train", MLFLOW_TRACKING_URI="http://127.0.0.1:9",
                     MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    assert result.returncode == 1
    assert "Cannot use the MLflow tracking store at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_stage_is_a_usage_error(run_cli):
    result = run_cli("deploy-everything")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
