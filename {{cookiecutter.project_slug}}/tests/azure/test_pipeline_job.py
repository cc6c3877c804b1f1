"""The Azure ML pipeline job and schedule: built and checked offline, submitted to fakes.

Compute calls go through the real MLClient to a fake HTTP transport (the request
bodies are the SDK's own); job and schedule operations, which would upload the
code snapshot to blob storage, are recorded by stand-ins at the operations level.
"""
import json
import shutil
import types
from pathlib import Path

import pytest
from azure.ai.ml import load_component, load_environment, load_job
# Not exported by azure.ai.ml (1.35); the az CLI uses it for `az ml schedule create`.
from azure.ai.ml.entities._load_functions import load_schedule
from azure.ai.ml.exceptions import JobException
from azure.core.exceptions import ResourceNotFoundError

from ml_service.azure import pipeline_job, workspace
from ml_service.errors import MlopsError
from tests.helpers.azure_fakes import FakeCredential, FakeTransport, arm_error, azure_settings
from tests.helpers.project import PROJECT_ROOT

COMPONENTS = PROJECT_ROOT / "training" / "components"
COMPUTE = r"/computes/cpu-cluster\?"
WORKSPACE = r"/workspaces/[^/?]+\?"
binding = pipeline_job._shown  # "parent.jobs.x" -> the binding as written in YAML


@pytest.fixture
def az(settings):
    """Settings of the real project (its components), with the Azure keys filled in."""
    return azure_settings(settings, project_root=PROJECT_ROOT)


@pytest.fixture
def job(az):
    return pipeline_job.build_pipeline(az, "0123abc")


class FakeJobs:
    """The jobs operations: records the submission and plays a finished job back."""

    def __init__(self, status="Completed", decision=None, registration=None,
                 experiment="diabetes-mlops"):
        self.submitted, self.streamed, self.downloads = [], [], []
        self.experiment = experiment
        self.status = status
        self.files = {
            "gate": ("decision.json", decision or {"passed": True, "reason": "good enough"}),
            "registration": ("registration.json", registration or {"model_version": "3"}),
        }

    def create_or_update(self, job, experiment_name=None):
        self.submitted.append((job, experiment_name))
        return types.SimpleNamespace(name="sharp_job_42", status="NotStarted",
                                     studio_url="https://ml.azure.com/runs/sharp_job_42")

    def stream(self, name):
        self.streamed.append(name)
        if self.status == "Failed":
            raise JobException(message="Job sharp_job_42 failed", no_personal_data_message="x")

    def get(self, name):
        if name == "no_such_job":
            raise ResourceNotFoundError("The job was not found.")
        return types.SimpleNamespace(name=name, status=self.status,
                                     studio_url=f"https://ml.azure.com/runs/{name}")

    def list(self):
        def job(name, day, experiment=self.experiment, created_by="ml_service"):
            return types.SimpleNamespace(
                name=name, experiment_name=experiment, tags={"created_by": created_by},
                creation_context=types.SimpleNamespace(created_at=f"2026-11-{day}T10:00:00"))

        return [job("older_job", 20), job("newest_job", 22),
                job("someone_elses", 23, created_by="studio"),
                job("other_project", 24, experiment="other")]

    def download(self, name, download_path, output_name):
        self.downloads.append(output_name)
        filename, content = self.files[output_name]
        folder = Path(download_path) / "named-outputs" / output_name
        folder.mkdir(parents=True)
        (folder / filename).write_text(json.dumps(content))


class FakeSchedules:
    def __init__(self):
        self.created = []

    def begin_create_or_update(self, schedule):
        self.created.append(schedule)
        return types.SimpleNamespace(result=lambda: schedule)


def client_with(az, routes, jobs=None, schedules=None):
    """The real MLClient's compute operations over a fake transport, plus stand-ins."""
    transport = FakeTransport(routes)
    real = workspace.ml_client(az, credential=FakeCredential(), transport=transport)
    client = types.SimpleNamespace(compute=real.compute, workspaces=real.workspaces,
                                   jobs=jobs or FakeJobs(), schedules=schedules or FakeSchedules())
    return client, transport


EXISTING_COMPUTE = (200, {"name": "cpu-cluster", "properties": {
    "computeType": "AmlCompute", "properties": {
        "vmSize": "STANDARD_DS3_V2", "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 2}}}})
MISSING_COMPUTE = (404, arm_error("ResourceNotFound", "The compute was not found."))
WORKSPACE_FOUND = (200, {"id": "/subscriptions/s/resourceGroups/rg/providers/"
                               "Microsoft.MachineLearningServices/workspaces/w",
                         "name": "w", "location": "westeurope", "properties": {}})


def created_compute(request):
    body = request.body
    return 200, {**body, "name": "cpu-cluster",
                 "properties": {**body["properties"], "provisioningState": "Succeeded"}}


def test_components_load_with_their_declared_inputs_and_outputs():
    types_of = {}
    for step in pipeline_job.STEPS:
        component = load_component(source=COMPONENTS / f"{step}.yml")
        assert component.code == "../.."
        assert component.environment.image.startswith("mcr.microsoft.com/azureml/")
        types_of[step] = {name: port.type for name, port in
                          {**component.inputs, **component.outputs}.items()}
    assert types_of["prep_data"] == {"test_size": "number", "random_seed": "integer",
                                     "data": "uri_folder"}
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
    assert {"scikit-learn", "skops", "pandas", "pyarrow"} <= {p.split("==")[0] for p in pip}


def test_pipeline_validates_and_wires_the_steps_in_order(job, az):
    assert job._validate().passed
    assert list(job.jobs) == list(pipeline_job.STEPS)
    spec = job._to_dict()
    assert pipeline_job.binding_problems(spec) == []
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
    assert inputs == {"test_size": az.training.test_size,
                      "random_seed": az.training.random_seed, "alpha": 0.7, "min_r2": 0.25,
                      "min_improvement": az.gate.min_improvement,
                      "model_name": az.model.name, "git_commit": "0123abc"}


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
    [problem] = pipeline_job.binding_problems(spec)
    assert complaint in problem and value in problem


def test_a_command_binding_to_an_undeclared_input_stops_the_build(tmp_path, settings):
    shutil.copytree(COMPONENTS, tmp_path / "training" / "components")
    train_yml = tmp_path / "training" / "components" / "train.yml"
    train_yml.write_text(train_yml.read_text().replace("inputs.alpha" + "}", "inputs.alfa}"))
    with pytest.raises(MlopsError, match="alfa") as raised:
        pipeline_job.build_pipeline(azure_settings(settings, project_root=tmp_path), "abc")
    assert "training/components" in raised.value.fix


@pytest.fixture
def az_copy(tmp_path, settings):
    """Settings of a copy of the project's training code (dry runs write build/azureml/)."""
    shutil.copytree(PROJECT_ROOT / "training", tmp_path / "training",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return azure_settings(settings, project_root=tmp_path)


def test_dry_run_prints_the_plan_without_signing_in(az_copy, capsys, monkeypatch):
    def no_credentials():
        raise AssertionError("a dry run must not ask for credentials")

    monkeypatch.setattr(workspace, "default_credential", no_credentials)
    job = pipeline_job.submit_training_pipeline(az_copy, dry_run=True)
    out = capsys.readouterr().out
    assert job.display_name == f"{az_copy.model.name}: train, evaluate, register"
    assert "dry run: nothing is sent to Azure" in out
    assert "cpu-cluster: AmlCompute Standard_DS3_v2, 0 to 2 nodes" in out
    assert "prep_data -> train -> evaluate -> register" in out
    assert "python -m training.components.register" in out
    assert "build/azureml/training-pipeline.yml" in out


def test_the_written_job_definition_loads_and_validates_as_a_job_file(az_copy):
    pipeline_job.submit_training_pipeline(az_copy, dry_run=True)
    path = az_copy.project_root / "build" / "azureml" / "training-pipeline.yml"
    assert str(az_copy.project_root) not in path.read_text()
    job = load_job(source=path)
    assert job._validate().passed
    assert list(job.jobs) == list(pipeline_job.STEPS)
    assert Path(path.parent, job.jobs["train"].component.code).resolve() == \
        az_copy.project_root.resolve()
    assert pipeline_job.binding_problems(job._to_dict()) == []


def test_submit_creates_the_missing_cluster_submits_and_reads_the_results(
        az, capsys, monkeypatch):
    monkeypatch.setattr(pipeline_job, "code_version", lambda root: "0123abc")
    jobs = FakeJobs(decision={"passed": True, "reason": "no model in production yet"},
                    registration={"model_version": "3"})
    client, transport = client_with(az, [("GET", COMPUTE, MISSING_COMPUTE),
                                         ("GET", WORKSPACE, WORKSPACE_FOUND),
                                         ("PUT", COMPUTE, created_compute)], jobs=jobs)
    result = pipeline_job.submit_training_pipeline(az, client=client)

    [put] = transport.calls("PUT", COMPUTE)
    assert put.body["location"] == "westeurope"
    assert put.body["identity"] == {"type": "SystemAssigned"}
    compute = put.body["properties"]["properties"]
    assert compute["vmSize"] == "Standard_DS3_v2"
    assert compute["scaleSettings"]["minNodeCount"] == 0
    assert compute["scaleSettings"]["maxNodeCount"] == az.azure.compute_max_nodes

    [(job, experiment)] = jobs.submitted
    assert experiment == az.model.experiment
    assert job.tags["git_commit"] == "0123abc"
    assert job._to_dict()["inputs"]["git_commit"] == "0123abc"
    assert jobs.streamed == ["sharp_job_42"]
    assert sorted(jobs.downloads) == ["gate", "registration"]
    assert result == pipeline_job.PipelineResult(
        "sharp_job_42", "Completed", "https://ml.azure.com/runs/sharp_job_42", "passed",
        "no model in production yet", "3")
    out = capsys.readouterr().out
    assert "train: pipeline job sharp_job_42 completed (git 0123abc): gate passed, " \
           "registered version 3" in out


def test_submit_without_streaming_returns_at_once(az, capsys, monkeypatch):
    jobs = FakeJobs()
    client, _ = client_with(az, [("GET", COMPUTE, EXISTING_COMPUTE)], jobs=jobs)
    result = pipeline_job.submit_training_pipeline(az, client=client, stream=False)
    assert (result.job_name, result.status, result.gate) == ("sharp_job_42", "NotStarted", None)
    assert jobs.streamed == [] and jobs.downloads == []
    assert "train: submitted Azure ML pipeline job sharp_job_42" in capsys.readouterr().out


def test_evaluate_and_register_stages_publish_the_job_results(az, capsys, tmp_path,
                                                              monkeypatch):
    output = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    jobs = FakeJobs(decision={"passed": True, "reason": "better by 2%"},
                    registration={"model_version": "7"})
    client = types.SimpleNamespace(jobs=jobs)
    assert pipeline_job.gate_result(az, "sharp_job_42", client=client)["passed"]
    assert pipeline_job.registration_result(az, "sharp_job_42", client=client) == "7"
    assert output.read_text().splitlines() == [
        "run_id=sharp_job_42", "gate=passed", "gate_reason=better by 2%", "model_version=7"]


def test_without_a_run_id_the_newest_job_of_this_project_is_used(az):
    client = types.SimpleNamespace(jobs=FakeJobs(experiment=az.model.experiment))
    assert pipeline_job.finished_job(client, az).name == "newest_job"


def test_results_of_an_unfinished_or_unknown_job_are_refused(az):
    client = types.SimpleNamespace(jobs=FakeJobs(status="Running"))
    with pytest.raises(MlopsError, match="is Running, not Completed"):
        pipeline_job.gate_result(az, "sharp_job_42", client=client)
    with pytest.raises(MlopsError, match="no_such_job does not exist") as raised:
        pipeline_job.registration_result(az, "no_such_job", client=client)
    assert "--backend azureml train" in raised.value.fix


def test_an_existing_cluster_is_used_as_it_is(az):
    jobs = FakeJobs(decision={"passed": False, "reason": "worse than production"},
                    registration={"model_version": None})
    client, transport = client_with(az, [("GET", COMPUTE, EXISTING_COMPUTE)], jobs=jobs)
    result = pipeline_job.submit_training_pipeline(az, client=client)
    assert transport.calls("PUT", COMPUTE) == []
    assert (result.gate, result.model_version) == ("rejected", None)


def test_a_failed_job_points_to_its_logs(az):
    client, _ = client_with(az, [("GET", COMPUTE, EXISTING_COMPUTE)],
                            jobs=FakeJobs(status="Failed"))
    with pytest.raises(MlopsError, match="ended Failed") as raised:
        pipeline_job.submit_training_pipeline(az, client=client)
    assert "https://ml.azure.com/runs/sharp_job_42" in raised.value.fix


def test_compute_of_another_kind_is_refused(az):
    client, _ = client_with(az, [("GET", COMPUTE, (200, {"name": "cpu-cluster", "properties": {
        "computeType": "ComputeInstance", "properties": {"vmSize": "STANDARD_DS3_V2"}}}))])
    with pytest.raises(MlopsError, match="not an AmlCompute cluster"):
        pipeline_job.ensure_compute(client, az)


def test_schedule_runs_the_same_pipeline_on_a_cron_trigger(az, capsys):
    schedules = FakeSchedules()
    client, _ = client_with(az, [("GET", COMPUTE, EXISTING_COMPUTE)], schedules=schedules)
    pipeline_job.create_schedule(az, "0 3 * * 1", client=client)
    [schedule] = schedules.created
    assert schedule.name == f"{az.model.experiment}-retraining"
    assert (schedule.trigger.expression, schedule.trigger.time_zone) == ("0 3 * * 1", "UTC")
    assert list(schedule.create_job.jobs) == list(pipeline_job.STEPS)
    assert "runs the training pipeline at '0 3 * * 1'" in capsys.readouterr().out


def test_schedule_dry_run_prints_it_and_writes_a_loadable_definition(az_copy, capsys):
    pipeline_job.create_schedule(az_copy, "30 2 * * *", dry_run=True,
                                 time_zone="W. Europe Standard Time")
    out = capsys.readouterr().out
    assert "'30 2 * * *' (W. Europe Standard Time)" in out and "dry run" in out
    schedule = load_schedule(source=az_copy.project_root / "build" / "azureml" /
                             "retraining-schedule.yml")
    assert schedule.trigger.expression == "30 2 * * *"
    assert list(schedule.create_job.jobs) == list(pipeline_job.STEPS)


@pytest.mark.parametrize("cron", ["daily", "0 3 * *", "0 3 * * 1 2025", "0 3 * * $"])
def test_a_bad_cron_expression_is_refused_before_anything_is_built(az, cron):
    with pytest.raises(MlopsError, match="five fields"):
        pipeline_job.create_schedule(az, cron, dry_run=True)
