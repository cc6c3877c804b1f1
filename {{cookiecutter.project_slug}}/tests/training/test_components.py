"""The training pipeline's steps, run here exactly as their component YAML makes Azure ML run them.

Each step's command is read from training/components/<step>.yml, its bindings are
replaced with local folders and values, and the module's main() is called with the
resulting arguments, against a local MLflow store in place of the workspace's.
"""
import dataclasses
import json
import re
import shlex
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from training.components import evaluate, prep_data, register, train
from training.gate import ChampionUnavailable
from tests.helpers.data import write_table
from tests.helpers.project import PROJECT_ROOT

COMPONENTS = PROJECT_ROOT / "training" / "components"
MODULES = {"prep_data": prep_data, "train": train, "evaluate": evaluate, "register": register}
BINDING = re.compile(r"\$\{\{\s*(inputs|outputs)\.(\w+)\s*\}\}")
OPTIONAL = re.compile(r"\$\[\[(.*?)\]\]", re.S)  # Azure ML drops it if its input is unset


def component(step):
    return yaml.safe_load((COMPONENTS / f"{step}.yml").read_text())


def arguments(step, values):
    """The step's command from its YAML, bindings replaced by `values`; returns (module, argv)."""
    spec = component(step)
    declared = {**spec.get("inputs", {}), **spec.get("outputs", {})}

    def optional(match):
        names = [name for _, name in BINDING.findall(match.group(1))]
        assert all(declared[name].get("optional") for name in names), match.group(0)
        return match.group(1) if all(name in values for name in names) else ""

    def fill(match):
        name = match.group(2)
        assert name in declared, f"{step}.yml binds {name}, which it does not declare"
        return shlex.quote(str(values[name]))

    words = shlex.split(BINDING.sub(fill, OPTIONAL.sub(optional, spec["command"])))
    assert words[:2] == ["python", "-m"]
    return words[2], words[3:]


def run_step(step, values):
    module, argv = arguments(step, values)
    assert module == f"training.components.{step}"
    MODULES[step].main(argv)


@pytest.fixture
def store(tmp_path, migrated_database, monkeypatch):
    """A local MLflow store standing in for the workspace's (Azure ML sets this variable)."""
    database = tmp_path / "mlflow.db"
    database.write_bytes(migrated_database.read_bytes())
    uri = f"sqlite:///{database}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("AZUREML_ROOT_RUN_ID", "pipeline-job-1")
    monkeypatch.chdir(tmp_path)  # MLflow puts local run artifacts under the working folder
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def data_values(settings, **data):
    """prep_data's data inputs as the pipeline job passes them from [data]; `data` is the
    mounted file or folder (data_file=... or data_folder=...), none for the sample."""
    return {"data_source": settings.data.source, "target": settings.data.target,
            "features": ",".join(settings.data.features), **data}


def run_pipeline(folder, settings, git_commit="0123456789abcdef", champion_version="none",
                 **data):
    """The four steps in order, as the pipeline job wires them (`champion_version` as the
    submitter reads it from production's desired state; `data` as in data_values);
    returns the output folders."""
    out = {name: folder / name for name in ("data", "model", "info", "gate", "registration")}
    out["model"].mkdir(parents=True)  # Azure ML creates output folders before the step runs
    training, gate = settings.training, settings.gate
    run_step("prep_data", {"test_size": training.test_size, "random_seed": training.random_seed,
                           "data": out["data"], **data_values(settings, **data)})
    run_step("train", {"data": out["data"], "alpha": training.alpha, "model": out["model"],
                       "info": out["info"]})
    run_step("evaluate", {"data": out["data"], "model": out["model"],
                          "model_name": settings.model.name,
                          "champion_version": champion_version, "min_r2": gate.min_r2,
                          "min_improvement": gate.min_improvement, "gate": out["gate"]})
    run_step("register", {"data": out["data"], "model": out["model"], "info": out["info"],
                          "gate": out["gate"], "model_name": settings.model.name,
                          "git_commit": git_commit, "registration": out["registration"]})
    return out


def read(folder, name):
    return json.loads((folder / name).read_text())


def test_every_binding_of_every_command_is_declared():
    for step in MODULES:
        spec = component(step)
        names = {name for _, name in BINDING.findall(spec["command"])}
        assert names == set(spec.get("inputs", {})) | set(spec.get("outputs", {})), step


def test_first_run_registers_a_version_with_the_local_lineage_tags(tmp_path, settings, store):
    out = run_pipeline(tmp_path / "run1", settings)
    assert read(out["gate"], "decision.json")["passed"] is True
    assert read(out["registration"], "registration.json")["model_version"] == "1"
    version = store.get_model_version(settings.model.name, "1")
    # The same tags as a version registered by the local `register` stage.
    assert {"git_commit", "pipeline_run_id", "run_id", "data_fingerprint", "gate_reason",
            "rmse", "mae", "r2"} <= set(version.tags)
    assert version.tags["pipeline_run_id"] == "pipeline-job-1"
    # The version page shows the evaluate step's gate report first.
    assert version.description == (out["gate"] / "gate_report.md").read_text()
    assert version.tags["data_fingerprint"] == read(out["data"], "data.json")["data_fingerprint"]
    train_run = store.get_run(version.tags["run_id"])
    assert float(version.tags["rmse"]) == pytest.approx(train_run.data.metrics["rmse"])
    assert (out["model"] / "MLmodel").is_file()
    # The training sample `monitor` compares traffic with, as the local backend logs it.
    assert [entry.path for entry in store.list_artifacts(train_run.info.run_id, "reference")] \
        == ["reference/reference.csv"]


def test_an_azure_ml_data_asset_input_is_read_and_named_on_the_version(
        tmp_path, settings, store):
    """The job mounts the asset (here a folder) and passes [data] source along, which
    the version carries as its asset name and version."""
    mounted = tmp_path / "mounted"
    write_table(mounted / "part-1.parquet", change=lambda frame: frame.iloc[:200])
    write_table(mounted / "part-2.csv", change=lambda frame: frame.iloc[200:])
    az = dataclasses.replace(settings, data=dataclasses.replace(
        settings.data, source="azureml:diabetes:4"))
    out = run_pipeline(tmp_path / "run1", az, data_folder=mounted)
    summary = read(out["data"], "data.json")
    assert summary["data_source"] == "azureml:diabetes:4"
    assert summary["train_rows"] + summary["test_rows"] == 442
    tags = store.get_model_version(settings.model.name, "1").tags
    assert (tags["data_source"], tags["data_asset_name"], tags["data_asset_version"]) == (
        "azureml:diabetes:4", "diabetes", "4")
    assert store.get_run(tags["run_id"]).data.tags["data_asset_version"] == "4"


def test_prep_data_stops_on_a_schema_problem_naming_the_column(tmp_path, settings):
    path = write_table(tmp_path / "upload.csv", change=lambda frame: frame.drop(columns="bp"))
    with pytest.raises(SystemExit, match=r"upload.csv has no column\(s\) 'bp'"):
        run_step("prep_data", {"test_size": 0.2, "random_seed": 1, "data": tmp_path / "out",
                               **data_values(settings, data_file=path)})
    assert not (tmp_path / "out" / "data.json").exists()


def test_identical_retrain_is_rejected_against_the_production_champion(
        tmp_path, settings, store):
    run_pipeline(tmp_path / "run1", settings)
    out = run_pipeline(tmp_path / "run2", settings, champion_version="1")
    decision = read(out["gate"], "decision.json")
    assert decision["passed"] is False and decision["champion_version"] == "1"
    assert decision["champion"]["rmse"] == pytest.approx(decision["challenger"]["rmse"])
    # The report CI reads back from the step's output, also logged with the plots in the
    # step's MLflow run.
    report = (out["gate"] / "gate_report.md").read_text()
    assert report.startswith("### Gate report: REJECTED") and decision["reason"] in report
    assert f"`{read(out['data'], 'data.json')['data_fingerprint']}`" in report
    [evaluate_run] = store.search_runs([store.get_experiment_by_name("Default").experiment_id],
                                       "metrics.champion_rmse > 0")
    assert {entry.path for entry in store.list_artifacts(evaluate_run.info.run_id, "plots")} \
        == {"plots/predicted_vs_actual.png", "plots/residuals.png",
            "plots/champion_vs_challenger.png"}
    assert f"MLflow run `{evaluate_run.info.run_id}`" in report
    assert read(out["registration"], "registration.json") == {
        "model_version": None, "gate": "rejected", "reason": decision["reason"]}
    assert [str(mv.version) for mv in store.search_model_versions(
        f"name='{settings.model.name}'")] == ["1"]


def test_register_obeys_a_rejecting_gate_whatever_the_model(tmp_path, settings, store):
    """Unlike templates that force the flag on, nothing here overrides the decision."""
    out = run_pipeline(tmp_path / "run1", settings)
    (out["gate"] / "decision.json").write_text(json.dumps({"passed": False,
                                                           "reason": "rejected by a test"}))
    registration = tmp_path / "again"
    assert register.register(out["data"], out["model"], out["info"], out["gate"],
                             registration, settings.model.name, "abc") is None
    assert read(registration, "registration.json")["model_version"] is None
    assert len(store.search_model_versions(f"name='{settings.model.name}'")) == 1


def test_quality_floor_rejects_without_a_champion(tmp_path, settings, store):
    out = tmp_path / "out"
    prep_data.prep_data(out / "data", 0.2, 42)
    train.train(out / "data", out / "model", out / "info", alpha=0.1)
    decision = evaluate.evaluate(out / "data", out / "model", out / "gate",
                                 settings.model.name, "none", min_r2=0.99,
                                 min_improvement=0.005)
    assert decision["passed"] is False and "below the floor" in decision["reason"]
    assert decision["champion"] is None


def test_a_champion_missing_from_the_registry_fails_the_step(tmp_path, settings, store):
    """Production names a version the registry cannot give: no decision is written, as
    judging against nothing would pass any model."""
    out = tmp_path / "out"
    prep_data.prep_data(out / "data", 0.2, 42)
    train.train(out / "data", out / "model", out / "info", alpha=0.1)
    with pytest.raises(ChampionUnavailable, match="version 5"):
        evaluate.evaluate(out / "data", out / "model", out / "gate", settings.model.name,
                          "5", min_r2=0.3, min_improvement=0.005)
    assert not (out / "gate" / "decision.json").exists()


def test_evaluate_without_a_tracking_store_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit, match="MLFLOW_TRACKING_URI"):
        evaluate.evaluate(tmp_path, tmp_path, tmp_path, "m", "none", 0.3, 0.005)


def test_prep_data_runs_as_the_module_command_azure_ml_starts(tmp_path, settings):
    module, argv = arguments("prep_data", {"test_size": 0.25, "random_seed": 7,
                                           "data": tmp_path / "data",
                                           **data_values(settings)})
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = read(tmp_path / "data", "data.json")
    assert summary["test_size"] == 0.25 and summary["random_seed"] == 7
    assert summary["train_rows"] + summary["test_rows"] == 442
