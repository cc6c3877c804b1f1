import dataclasses

import pytest

from ml_service.backends.local import LocalBackend
from ml_service.config import load_settings
from ml_service.errors import MlopsError
from tests.helpers.project import git
from training.gate import CHAMPION_ALIAS


def versions(client, settings):
    return sorted(int(mv.version) for mv in
                  client.search_model_versions(f"name='{settings.model.name}'"))


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


def test_register_is_idempotent_per_pipeline_run(settings, client):
    backend = LocalBackend(settings)
    backend.train()
    backend.evaluate()
    assert backend.register() == backend.register() == "1"
    assert versions(client, settings) == [1]


def test_identical_retrain_does_not_beat_the_champion(settings, client):
    backend = LocalBackend(settings)
    backend.train()
    backend.evaluate()
    client.set_registered_model_alias(settings.model.name, CHAMPION_ALIAS,
                                      backend.register())
    backend.train()
    decision = backend.evaluate()
    assert not decision.passed
    assert backend.register() is None
    assert versions(client, settings) == [1]


def test_better_challenger_replaces_a_worse_champion(project, client):
    weak = LocalBackend(load_settings(project / "mlops.toml",
                                      environ={"MLOPS_TRAINING_ALPHA": "1.0"}))
    weak.train()
    weak.evaluate()
    client.set_registered_model_alias(weak.settings.model.name, CHAMPION_ALIAS, weak.register())
    settings = load_settings(project / "mlops.toml", environ={})
    backend = LocalBackend(settings)
    backend.train()
    assert backend.evaluate().passed
    assert backend.register() == "2"
    evaluate_run = client.search_runs(
        [client.get_experiment_by_name(settings.model.experiment).experiment_id],
        "attributes.run_name = 'evaluate'", order_by=["attributes.start_time DESC"])[0]
    assert evaluate_run.data.metrics["champion_rmse"] > evaluate_run.data.metrics["challenger_rmse"]
    assert evaluate_run.data.tags["champion_version"] == "1"


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
