"""The Azure ML pipeline job: built from the component files and checked offline.

Nothing is sent: the job is built with the real SDK, validated, and written as the
definition file a dry run leaves for `az ml job create`.
"""
import shutil
from pathlib import Path

import pytest
from azure.ai.ml import load_component, load_environment, load_job

from ml_service import desired_state
from ml_service.azure import bindings, pipeline_job, workspace
from ml_service.backends.azureml import AzureMLBackend
from ml_service.errors import MlopsError
from tests.helpers.azure_fakes import azure_settings
from tests.helpers.azureml_fakes import settings_of_a_copy
from tests.helpers.data import write_table
from tests.helpers.project import PROJECT_ROOT

COMPONENTS = PROJECT_ROOT / "training" / "components"
binding = bindings.shown  # "parent.jobs.x" -> the binding as written in YAML


@pytest.fixture
def az(settings):
    """Settings of the real project (its components), with the Azure keys filled in."""
    return azure_settings(settings, project_root=PROJECT_ROOT)


@pytest.fixture
def job(az):
    return pipeline_job.build_pipeline(az, "0123abc")


def test_components_load_with_their_declared_inputs_and_outputs():
    types_of = {}
    for step in pipeline_job.STEPS:
        component = load_component(source=COMPONENTS / f"{step}.yml")
        assert component.code == "../.."
        assert component.environment.image.startswith("mcr.microsoft.com/azureml/")
        types_of[step] = {name: port.type for name, port in
                          {**component.inputs, **component.outputs}.items()}
    assert types_of["prep_data"] == {"test_size": "number", "random_seed": "integer",
                                     "data_file": "uri_file", "data_folder": "uri_folder",
                                     "data_source": "string", "target": "string",
                                     "features": "string", "data": "uri_folder"}
    assert types_of["train"]["model"] == "mlflow_model"
    assert types_of["evaluate"]["model"] == "mlflow_model"
    assert types_of["evaluate"]["gate"] == "uri_folder"
    assert types_of["register"]["registration"] == "uri_folder"


def test_environment_loads_and_pins_what_azureml_mlflow_accepts():
    environment = load_environment(source=COMPONENTS / "environment.yml")
    pip = next(dep["pip"] for dep in environment.conda_file["dependencies"]
               if isinstance(dep, dict))
    assert "mlflow-skinny==3.15.0" in pip  # azureml-mlflow requires mlflow-skinny <= 3.15.0
    assert any(package.startswith("azureml-mlflow==") for package in pip)
    assert {"scikit-learn", "skops", "pandas", "pyarrow", "matplotlib"} <= {
        p.split("==")[0] for p in pip}


def test_pipeline_validates_and_wires_the_steps_in_order(job, az):
    assert job._validate().passed
    assert list(job.jobs) == list(pipeline_job.STEPS)
    spec = job._to_dict()
    assert bindings.binding_problems(spec) == []
    steps = spec["jobs"]
    assert steps["train"]["inputs"]["data"]["path"] == binding(
        "parent.jobs.prep_data.outputs.data")
    assert steps["evaluate"]["inputs"]["model"]["path"] == binding(
        "parent.jobs.train.outputs.model")
    # register acts on evaluate's decision: its gate input is evaluate's output.
    assert steps["register"]["inputs"]["gate"]["path"] == binding(
        "parent.jobs.evaluate.outputs.gate")
    assert spec["settings"]["default_compute"] == f"azureml:{az.azure.compute_name}"
    assert spec["experiment_name"] == az.model.experiment
    assert set(spec["outputs"]) == set(pipeline_job.OUTPUTS)


def test_pipeline_inputs_come_from_the_settings(settings):
    az = azure_settings(settings, project_root=PROJECT_ROOT, training={"alpha": 0.7},
                        gate={"min_r2": 0.25})
    inputs = pipeline_job.build_pipeline(az, "0123abc")._to_dict()["inputs"]
    assert inputs == {"data_source": "sample", "target": "target",
                      "features": "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6",
                      "test_size": az.training.test_size,
                      "random_seed": az.training.random_seed, "alpha": 0.7, "min_r2": 0.25,
                      "min_improvement": az.gate.min_improvement,
                      "model_name": az.model.name, "git_commit": "0123abc",
                      "champion_version": desired_state.read(az, "production").model_version}


def test_the_champion_is_the_version_production_desired_state_names(settings):
    """Azure ML's registry has no aliases: the job is told production's version when it
    is submitted, "none" before the first promotion."""
    az = azure_settings(settings)
    assert pipeline_job.pipeline_inputs(az, "abc")["champion_version"] == "none"
    desired_state.write(settings, "production", desired_state.DesiredState(
        model_version="4", image="example.azurecr.io/model:4", image_digest=""))
    job = pipeline_job.build_pipeline(az, "abc")
    assert job._to_dict()["inputs"]["champion_version"] == "4"
    assert job._to_dict()["jobs"]["evaluate"]["inputs"]["champion_version"]["path"] == \
        binding("parent.inputs.champion_version")


@pytest.mark.parametrize("path, value, complaint", [
    (("jobs", "register", "inputs", "gate", "path"), "parent.jobs.evaluat.outputs.gate",
     "names no step"),
    (("jobs", "register", "inputs", "gate", "path"), "parent.jobs.evaluate.outputs.gates",
     "is not an input or output of step evaluate"),
    (("jobs", "train", "inputs", "alpha", "path"), "parent.inputs.alfa", "not a pipeline input"),
    (("jobs", "train", "outputs", "model"), "parent.outputs.modle", "not a pipeline output"),
])
def test_binding_check_catches_references_to_nothing(job, path, value, complaint):
    spec = job._to_dict()
    node = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = binding(value)
    [problem] = bindings.binding_problems(spec)
    assert complaint in problem and value in problem


def test_a_command_binding_to_an_undeclared_input_stops_the_build(tmp_path, settings):
    shutil.copytree(COMPONENTS, tmp_path / "training" / "components")
    shutil.copytree(settings.project_root / "deploy", tmp_path / "deploy")
    train_yml = tmp_path / "training" / "components" / "train.yml"
    train_yml.write_text(train_yml.read_text().replace("inputs.alpha" + "}", "inputs.alfa}"))
    with pytest.raises(MlopsError, match="alfa") as raised:
        pipeline_job.build_pipeline(azure_settings(settings, project_root=tmp_path), "abc")
    assert "training/components" in raised.value.fix


@pytest.fixture
def az_copy(tmp_path, settings):
    return settings_of_a_copy(settings, tmp_path)


def test_dry_run_prints_the_plan_without_signing_in(az_copy, capsys, monkeypatch):
    def no_credentials():
        raise AssertionError("a dry run must not ask for credentials")

    monkeypatch.setattr(workspace, "default_credential", no_credentials)
    job = AzureMLBackend(az_copy).submit(dry_run=True)
    out = capsys.readouterr().out
    assert job.display_name == f"{az_copy.model.name}: train, evaluate, register"
    assert "dry run: nothing is sent to Azure" in out
    assert "cpu-cluster: AmlCompute Standard_DS3_v2, 0 to 2 nodes" in out
    assert "prep_data -> train -> evaluate -> register" in out
    assert "python -m training.components.register" in out
    assert "build/azureml/training-pipeline.yml" in out


def test_the_written_job_definition_loads_and_validates_as_a_job_file(az_copy):
    AzureMLBackend(az_copy).submit(dry_run=True)
    path = az_copy.project_root / "build" / "azureml" / "training-pipeline.yml"
    assert str(az_copy.project_root) not in path.read_text()
    job = load_job(source=path)
    assert job._validate().passed
    assert list(job.jobs) == list(pipeline_job.STEPS)
    assert Path(path.parent, job.jobs["train"].component.code).resolve() == \
        az_copy.project_root.resolve()
    assert bindings.binding_problems(job._to_dict()) == []


def test_the_sample_needs_no_data_input(job):
    spec = job._to_dict()
    assert "data" not in spec["inputs"]
    assert not {"data_file", "data_folder"} & set(spec["jobs"]["prep_data"]["inputs"])
    assert spec["tags"]["data_source"] == "sample"


@pytest.mark.parametrize("source, asset_type, port, path", [
    ("azureml:diabetes:4", "uri_file", "data_file", "azureml:diabetes:4"),
    ("azureml:diabetes:4", "uri_folder", "data_folder", "azureml:diabetes:4"),
    ("data/diabetes.csv", None, "data_file", "{root}/data/diabetes.csv"),
    ("data", None, "data_folder", "{root}/data"),
])
def test_the_data_source_is_the_pipeline_jobs_input_to_prep_data(
        settings, source, asset_type, port, path):
    """A data asset goes in by reference, a local file or folder by path (the SDK uploads
    it); either reaches prep_data's input of its type, with [data] for the lineage."""
    write_table(settings.project_root / "data" / "diabetes.csv", rows=50)
    az = azure_settings(settings, pipeline={"backend": "azureml"},
                        data={"source": source, "features": ("bmi", "bp")})
    job = pipeline_job.build_pipeline(az, "abc", asset_type)
    data = job.inputs.data._data
    assert (data.type, data.path) == (asset_type or ("uri_file" if port == "data_file"
                                                     else "uri_folder"),
                                      path.format(root=settings.project_root))
    spec = job._to_dict()
    prep = spec["jobs"]["prep_data"]["inputs"]
    assert prep[port]["path"] == binding("parent.inputs.data")
    assert ({"data_file", "data_folder"} - {port}).isdisjoint(prep)
    assert spec["inputs"]["features"] == "bmi,bp"
    assert spec["inputs"]["data_source"] == source
    assert spec["tags"]["data_source"] == source
    if source.startswith("azureml:"):
        assert (spec["tags"]["data_asset_name"], spec["tags"]["data_asset_version"]) == (
            "diabetes", "4")


def test_an_azure_ml_data_asset_needs_the_azureml_backend(settings):
    local = azure_settings(settings, data={"source": "azureml:diabetes:4"})
    with pytest.raises(MlopsError, match="only the azureml backend") as raised:
        pipeline_job.build_pipeline(local, "abc")
    assert "--backend azureml" in raised.value.fix


def test_dry_run_of_a_csv_source_writes_a_definition_that_uploads_it(
        settings, az_copy, capsys):
    csv = write_table(az_copy.project_root / "data" / "diabetes.csv", rows=50)
    az = azure_settings(settings, project_root=az_copy.project_root,
                        data={"source": "data/diabetes.csv"})
    AzureMLBackend(az).submit(dry_run=True)
    assert f"data         uri_file {csv} (uploaded on submission)" in capsys.readouterr().out
    path = az.project_root / "build" / "azureml" / "training-pipeline.yml"
    job = load_job(source=path)
    assert job._validate().passed
    assert Path(path.parent, job.inputs["data"].path).resolve() == csv.resolve()
