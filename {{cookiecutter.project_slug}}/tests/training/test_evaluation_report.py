"""The gate's plots and report, logged to a real MLflow store by real models.

One store per module: a weak model is registered as the champion (version 1), a
better challenger is logged, and the gate evaluates the challenger twice, with and
without a champion in production, each in its own run.
"""
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.project import kept_unchanged
from training import evaluation_report, gate, lineage
from training.data import load_dataset, split_dataset
from training.evaluation_report import (CHAMPION_VS_CHALLENGER, PLOTS_FOLDER,
                                        PREDICTED_VS_ACTUAL, REPORT_FILE, RESIDUALS)
from training.model import train_model

MODEL_NAME = "evaluation-report-test"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FINGERPRINT = "f" * 64


@pytest.fixture(scope="module")
def store(tmp_path_factory, migrated_database):
    """{"with_champion" / "first_model": (run id, markdown returned by log)}, and the
    client of the store holding both runs."""
    folder = tmp_path_factory.mktemp("evaluation-report")
    database = folder / "mlflow.db"
    database.write_bytes(migrated_database.read_bytes())
    uri = f"sqlite:///{database}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        experiment_id = client.create_experiment(
            "evaluation-report", artifact_location=(folder / "artifacts").as_uri())
        mlflow.set_experiment(experiment_id=experiment_id)
        features, target = load_dataset()
        x_train, x_test, y_train, y_test = split_dataset(features, target, 0.2, 42)
        model_uris = {}
        for name, alpha in (("champion", 10.0), ("challenger", 0.1)):
            with mlflow.start_run(run_name=name):
                model_uris[name] = lineage.log_model(
                    train_model(x_train, y_train, alpha), x_train).model_uri
        lineage.register(model_uris["champion"], MODEL_NAME, {})
        runs = {}
        for case, champion_version in (("with_champion", "1"), ("first_model", None)):
            evaluation = gate.evaluate(model_uris["challenger"], MODEL_NAME, champion_version,
                                       x_test, y_test, min_r2=0.3, min_improvement=0.005)
            with mlflow.start_run(run_name=case) as run:
                gate.log(evaluation)
                runs[case] = run.info.run_id, evaluation_report.log(evaluation, FINGERPRINT)
        with kept_unchanged(folder):
            yield client, runs
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def artifact(client, run_id, path, folder):
    return Path(client.download_artifacts(run_id, path, str(folder))).read_bytes()


def plots(client, run_id):
    return sorted(entry.path for entry in client.list_artifacts(run_id, PLOTS_FOLDER))


def test_the_plots_are_real_pngs_of_the_evaluate_run(store, tmp_path):
    client, runs = store
    run_id, _ = runs["with_champion"]
    assert plots(client, run_id) == sorted(
        f"{PLOTS_FOLDER}/{name}"
        for name in (PREDICTED_VS_ACTUAL, RESIDUALS, CHAMPION_VS_CHALLENGER))
    for path in plots(client, run_id):
        content = artifact(client, run_id, path, tmp_path)
        assert content.startswith(PNG_MAGIC), path
        assert len(content) > 10_000, path  # axes, points and labels, not an empty canvas


def test_without_a_champion_no_comparison_is_pretended(store, tmp_path):
    client, runs = store
    run_id, markdown = runs["first_model"]
    assert plots(client, run_id) == sorted(
        f"{PLOTS_FOLDER}/{name}" for name in (PREDICTED_VS_ACTUAL, RESIDUALS))
    assert "champion" not in markdown.split("\n\n")[2]  # the metrics table: challenger only
    assert "- Champion: none, nothing is in production yet" in markdown
    assert CHAMPION_VS_CHALLENGER not in markdown


def test_the_report_artifact_has_the_decision_and_both_models_metrics(store, tmp_path):
    client, runs = store
    run_id, markdown = runs["with_champion"]
    assert artifact(client, run_id, REPORT_FILE, tmp_path).decode() == markdown
    metrics = client.get_run(run_id).data.metrics
    assert markdown.startswith("### Gate report: PASSED\n")
    assert client.get_run(run_id).data.tags["gate_reason"] in markdown
    challenger, champion = metrics["challenger_rmse"], metrics["champion_rmse"]
    assert (f"| RMSE | {challenger:.4f} | {champion:.4f} | {challenger - champion:+.4f} "
            f"({(challenger - champion) / champion:+.2%}) | better |") in markdown
    assert f"| R2 | {metrics['challenger_r2']:.4f} | {metrics['champion_r2']:.4f} |" in markdown
    assert "min_r2 = 0.3" in markdown and "min_improvement = 0.50%" in markdown
    assert "- Champion: version 1" in markdown
    assert "- Rows scored: 89 held-out rows, the same for both models" in markdown
    assert f"- Data fingerprint: `{FINGERPRINT}`" in markdown
    assert f"MLflow run `{run_id}`" in markdown
    for path in plots(client, run_id):
        assert f"`{path}`" in markdown
