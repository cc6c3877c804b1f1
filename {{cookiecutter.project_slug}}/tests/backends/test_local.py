import dataclasses

import pytest

from ml_service import desired_state
from ml_service.backends.base import GATE_REPORT
from ml_service.backends.local import LocalBackend
from ml_service.config import load_settings
from ml_service.errors import MlopsError
from tests.helpers.data import write_table
from tests.helpers.project import git
from training.evaluation_report import (CHAMPION_VS_CHALLENGER, PREDICTED_VS_ACTUAL,
                                        REPORT_FILE, RESIDUALS)


def versions(client, settings):
    return sorted(int(mv.version) for mv in
                  client.search_model_versions(f"name='{settings.model.name}'"))


def put_in_production(settings, version):
    """Make `version` what production's git desired state names (the gate's champion)."""
    desired_state.write(settings, "production", desired_state.DesiredState(
        model_version=version, image=f"example.azurecr.io/model:{version}", image_digest=""))


def newest_evaluate_run(client, settings):
    return client.search_runs(
        [client.get_experiment_by_name(settings.model.experiment).experiment_id],
        "attributes.run_name = 'evaluate'", order_by=["attributes.start_time DESC"])[0]


def artifacts(client, run, folder=""):
    return {entry.path for entry in client.list_artifacts(run.info.run_id, folder)}


def git_repository(folder):
    """Make `folder` a git checkout with one commit; return the commit id."""
    for command in (["init", "-q"], ["add", "-A"],
                    ["-c", "user.name=t", "-c", "user.email=t@example.com",
                     "commit", "-q", "-m", "init"]):
        git(folder, *command)
    return git(folder, "rev-parse", "HEAD")


def test_first_run_registers_a_version_with_lineage_tags(project, settings, client):
    commit = git_repository(project)
    backend = LocalBackend(settings)
    lineage_id = backend.train()
    assert backend.evaluate().passed
    version = backend.register()
    assert version == "1"
    tags = client.get_model_version(settings.model.name, version).tags
    lineage = client.get_run(lineage_id)
    assert tags["git_commit"] == commit
    assert tags["pipeline_run_id"] == lineage_id
    assert tags["run_id"] == lineage.data.tags["mlops.train_run_id"]
    assert len(tags["data_fingerprint"]) == 64
    train_metrics = client.get_run(tags["run_id"]).data.metrics
    assert float(tags["rmse"]) == pytest.approx(train_metrics["rmse"])
    assert float(tags["r2"]) > 0.4
    stage_runs = client.search_runs(
        [lineage.info.experiment_id], f"tags.mlflow.parentRunId = '{lineage_id}'")
    assert {run.info.run_name for run in stage_runs} == {"train", "evaluate", "register"}
    logs = client.list_artifacts(tags["run_id"], "logs")
    assert [entry.path for entry in logs] == ["logs/train.log"]
    # Nothing in production: the plots of the challenger alone, no comparison pretended.
    evaluate_run = newest_evaluate_run(client, settings)
    assert artifacts(client, evaluate_run, "plots") == {
        f"plots/{PREDICTED_VS_ACTUAL}", f"plots/{RESIDUALS}"}
    report = (project / GATE_REPORT).read_text()
    assert report.startswith("### Gate report: PASSED")
    assert f"- Data fingerprint: `{tags['data_fingerprint']}`" in report
    assert REPORT_FILE in artifacts(client, evaluate_run)
    # Where people look first: the version page shows the report and links to the run
    # that judged it; the pipeline run has the metric columns, the report and a plot.
    assert client.get_model_version(settings.model.name, version).description == (
        f"{report}\n[The evaluate run: plots and report](#/experiments/"
        f"{lineage.info.experiment_id}/runs/{evaluate_run.info.run_id})\n")
    assert tags["evaluate_run_id"] == evaluate_run.info.run_id
    assert {"challenger_rmse", "challenger_r2", "gate_passed"} <= set(lineage.data.metrics)
    assert {REPORT_FILE, "plots"} <= artifacts(client, lineage)
    assert lineage.data.tags["mlflow.note.content"] == report  # the run page's description
    assert artifacts(client, lineage, "plots") == {f"plots/{PREDICTED_VS_ACTUAL}"}


def test_register_is_idempotent_per_pipeline_run(settings, client):
    backend = LocalBackend(settings)
    backend.train()
    backend.evaluate()
    assert backend.register() == backend.register() == "1"
    assert versions(client, settings) == [1]


def test_identical_retrain_does_not_beat_the_champion(settings, client, tmp_path, capsys,
                                                      monkeypatch):
    backend = LocalBackend(settings)
    backend.train()
    backend.evaluate()
    put_in_production(settings, backend.register())
    backend.train()
    # As in CI: the gate report goes to the GitHub job summary, or the Azure Pipelines tab.
    summary = tmp_path / "step_summary"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("TF_BUILD", "True")
    capsys.readouterr()
    decision = backend.evaluate()
    assert not decision.passed
    report = settings.project_root / GATE_REPORT
    assert summary.read_text().endswith(report.read_text() + "\n")
    assert "### Gate report: REJECTED" in summary.read_text()
    assert "| RMSE |" in report.read_text() and "| the same |" in report.read_text()
    out = capsys.readouterr().out.splitlines()
    assert f"evaluate: report {report}" in out
    assert f"##vso[task.uploadsummary]{report}" in out
    assert backend.register() is None
    assert versions(client, settings) == [1]


def test_better_challenger_replaces_a_worse_champion(project, client):
    weak = LocalBackend(load_settings(project / "mlops.toml",
                                      environ={"MLOPS_TRAINING_ALPHA": "1.0"}))
    weak.train()
    weak.evaluate()
    put_in_production(weak.settings, weak.register())
    settings = load_settings(project / "mlops.toml", environ={})
    backend = LocalBackend(settings)
    backend.train()
    assert backend.evaluate().passed
    assert backend.register() == "2"
    evaluate_run = newest_evaluate_run(client, settings)
    assert evaluate_run.data.metrics["champion_rmse"] > evaluate_run.data.metrics["challenger_rmse"]
    assert evaluate_run.data.tags["champion_version"] == "1"
    assert f"plots/{CHAMPION_VS_CHALLENGER}" in artifacts(client, evaluate_run, "plots")
    pipeline_run = client.get_run(evaluate_run.data.tags["mlflow.parentRunId"])
    assert artifacts(client, pipeline_run, "plots") == {f"plots/{CHAMPION_VS_CHALLENGER}"}
    assert pipeline_run.data.metrics["champion_rmse"] == evaluate_run.data.metrics["champion_rmse"]


def test_a_feature_set_change_is_one_line_and_the_r2_floor_decides(project, client, capsys):
    """Production runs a model of the ten sample features; the challenger drops one and
    adds a derived one. The champion cannot be scored on the challenger's rows: the gate
    says so in one line and decides on the R2 floor alone (never a library error)."""
    champion = LocalBackend(load_settings(project / "mlops.toml", environ={}))
    champion.train()
    champion.evaluate()
    put_in_production(champion.settings, champion.register())
    data = project / "data.csv"
    write_table(data, change=lambda frame: frame.assign(bmi_x_bp=frame.bmi * frame.bp))
    features = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "bmi_x_bp"]
    settings = load_settings(project / "mlops.toml", environ={
        "MLOPS_DATA_SOURCE": str(data), "MLOPS_DATA_FEATURES": ",".join(features)})
    backend = LocalBackend(settings)
    backend.train()
    capsys.readouterr()
    decision = backend.evaluate()
    assert decision.passed
    assert decision.reason.startswith(
        "schema change: the champion (version 1) was trained on other features (added "
        "bmi_x_bp; removed s6), so it cannot be scored on the same rows; decided on the R2 "
        "floor alone")
    evaluate_run = newest_evaluate_run(client, settings)
    assert evaluate_run.data.tags["schema_change"].startswith("schema change: ")
    assert "champion_rmse" not in evaluate_run.data.metrics
    report = (project / GATE_REPORT).read_text()
    assert "- Champion: schema change: the champion (version 1)" in report
    assert backend.register() == "2"


def test_a_champion_the_registry_cannot_give_stops_the_gate(settings, client):
    """Production's desired state names a version this registry does not have: judging
    the new model against nothing would let any model through, so evaluate stops."""
    put_in_production(settings, "7")
    backend = LocalBackend(settings)
    backend.train()
    with pytest.raises(MlopsError, match="cannot judge.*version 7") as raised:
        backend.evaluate()
    assert "tracking" in raised.value.fix
    with pytest.raises(MlopsError, match="ml_service evaluate"):
        backend.register()


def test_quality_floor_blocks_registration_without_a_champion(settings, client):
    strict = dataclasses.replace(settings, gate=dataclasses.replace(settings.gate, min_r2=0.99))
    backend = LocalBackend(strict)
    backend.train()
    assert not backend.evaluate().passed
    assert backend.register() is None
    assert versions(client, settings) == []


def test_evaluate_before_train_says_to_train(settings):
    backend = LocalBackend(settings)
    with pytest.raises(MlopsError, match="ml_service train"):
        backend.evaluate()


def test_register_before_evaluate_says_to_evaluate(settings):
    backend = LocalBackend(settings)
    backend.train()
    with pytest.raises(MlopsError, match="ml_service evaluate"):
        backend.register()
