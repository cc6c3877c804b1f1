import dataclasses
import os
import subprocess

import pytest

from ml_service.config import load_settings
from ml_service.errors import MlopsError
from ml_service.stages.build_image import build_image
from ml_service.stages.evaluate import CHAMPION_ALIAS, evaluate
from ml_service.stages.register import register
from ml_service.stages.train import train


def versions(client, settings):
    return sorted(int(mv.version) for mv in
                  client.search_model_versions(f"name='{settings.model.name}'"))


def git_repository(folder):
    """Make `folder` a git checkout with one commit; return the commit id."""
    for command in (["init", "-q"], ["add", "-A"],
                    ["-c", "user.name=t", "-c", "user.email=t@example.com",
                     "commit", "-q", "-m", "init"]):
        subprocess.run(["git", *command], cwd=folder, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_first_run_registers_a_version_with_lineage_tags(project, settings, client):
    commit = git_repository(project)
    lineage_id = train(settings)
    assert evaluate(settings).passed
    version = register(settings)
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
    train(settings)
    evaluate(settings)
    assert register(settings) == register(settings) == "1"
    assert versions(client, settings) == [1]


def test_identical_retrain_does_not_beat_the_champion(settings, client):
    train(settings)
    evaluate(settings)
    client.set_registered_model_alias(settings.model.name, CHAMPION_ALIAS, register(settings))
    train(settings)
    decision = evaluate(settings)
    assert not decision.passed
    assert register(settings) is None
    assert versions(client, settings) == [1]


def test_better_challenger_replaces_a_worse_champion(project, client):
    weak = load_settings(project / "mlops.toml", environ={"MLOPS_TRAINING_ALPHA": "1.0"})
    train(weak)
    evaluate(weak)
    client.set_registered_model_alias(weak.model.name, CHAMPION_ALIAS, register(weak))
    settings = load_settings(project / "mlops.toml", environ={})
    train(settings)
    assert evaluate(settings).passed
    assert register(settings) == "2"
    evaluate_run = client.search_runs(
        [client.get_experiment_by_name(settings.model.experiment).experiment_id],
        "attributes.run_name = 'evaluate'", order_by=["attributes.start_time DESC"])[0]
    assert evaluate_run.data.metrics["champion_rmse"] > evaluate_run.data.metrics["challenger_rmse"]
    assert evaluate_run.data.tags["champion_version"] == "1"


def test_quality_floor_blocks_registration_without_a_champion(settings, client):
    strict = dataclasses.replace(settings, gate=dataclasses.replace(settings.gate, min_r2=0.99))
    train(strict)
    assert not evaluate(strict).passed
    assert register(strict) is None
    assert versions(client, settings) == []


def test_evaluate_before_train_says_to_train(settings):
    with pytest.raises(MlopsError, match="ml_service train"):
        evaluate(settings)


def test_register_before_evaluate_says_to_evaluate(settings):
    train(settings)
    with pytest.raises(MlopsError, match="ml_service evaluate"):
        register(settings)


@pytest.fixture
def docker_that_cannot_pull(tmp_path, monkeypatch):
    """A `docker` on PATH whose engine answers but can neither find nor pull the base
    image, as on a machine with Docker and no registry access; it logs every call."""
    calls = tmp_path / "docker-calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
case "$1" in
  info) exit 0 ;;
  image) echo "Error: No such image: $3" >&2; exit 1 ;;
  pull) echo 'Error response from daemon: lookup registry-1.docker.io: no such host' >&2
        exit 1 ;;
  *) exit 99 ;;
esac
""")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return calls


def test_build_image_prepares_the_context_and_says_why_when_docker_cannot_build(
        project, capsys, docker_that_cannot_pull):
    settings = load_settings(project / "mlops.toml", environ={"MLOPS_IMAGE_BUILD": "auto"})
    train(settings)
    evaluate(settings)
    version = register(settings)
    release = build_image(settings, version)
    out = capsys.readouterr().out
    assert "the image was not built" in out
    assert "cannot be pulled (Error response from daemon: lookup registry-1.docker.io" in out
    assert (release.context_dir / "Dockerfile").is_file()
    commands = [line.split()[0] for line in docker_that_cannot_pull.read_text().splitlines()]
    assert "build" not in commands
    with pytest.raises(MlopsError, match="--push needs an image built here, but the base"):
        build_image(settings, version, push=True)


def test_context_only_never_calls_docker(settings, capsys, docker_that_cannot_pull):
    train(settings)
    evaluate(settings)
    release = build_image(settings, register(settings))
    assert '[image] build is "context-only"' in capsys.readouterr().out
    assert (release.context_dir / "Dockerfile").is_file()
    assert release.image_digest == ""
    assert not docker_that_cannot_pull.exists()
