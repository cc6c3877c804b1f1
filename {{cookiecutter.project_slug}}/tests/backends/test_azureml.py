"""The Azure ML backend: the training pipeline job submitted, followed and read back.

Compute calls go through the real MLClient to a fake HTTP transport; job operations
are recorded by stand-ins (tests/helpers/azureml_fakes.py).
"""
import types

import pytest
from azure.ai.ml.entities import Data

from ml_service import git
from ml_service.azure import workspace
from ml_service.azure.job_runs import PipelineResult, finished_job
from ml_service.backends.azureml import AzureMLBackend
from ml_service.backends.base import GATE_REPORT
from ml_service.errors import MlopsError
from tests.helpers.azure_fakes import FakeCredential, FakeTransport, azure_settings
from tests.helpers.azureml_fakes import (COMPUTE, EXISTING_COMPUTE, MISSING_COMPUTE,
                                         WORKSPACE, WORKSPACE_FOUND, FakeData, FakeJobs,
                                         client_with, created_compute)
from tests.helpers.project import PROJECT_ROOT


@pytest.fixture
def az(settings):
    """Settings of the real project (its components), with the Azure keys filled in."""
    return azure_settings(settings, project_root=PROJECT_ROOT)


def test_submit_creates_the_missing_cluster_submits_and_reads_the_results(
        az, capsys, monkeypatch):
    monkeypatch.setattr(git, "code_version", lambda root: "0123abc")
    jobs = FakeJobs(decision={"passed": True, "reason": "no model in production yet"},
                    registration={"model_version": "3"})
    client, transport = client_with(az, [("GET", COMPUTE, MISSING_COMPUTE),
                                         ("GET", WORKSPACE, WORKSPACE_FOUND),
                                         ("PUT", COMPUTE, created_compute)], jobs=jobs)
    result = AzureMLBackend(az, client=client).submit()

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
    assert result == PipelineResult(
        "sharp_job_42", "Completed", "https://ml.azure.com/runs/sharp_job_42", "passed",
        "no model in production yet", "3")
    out = capsys.readouterr().out
    assert "train: pipeline job sharp_job_42 completed (git 0123abc): gate passed, " \
           "registered version 3" in out


def test_submit_without_streaming_returns_at_once(az, capsys, monkeypatch):
    jobs = FakeJobs()
    client, _ = client_with(az, [("GET", COMPUTE, EXISTING_COMPUTE)], jobs=jobs)
    result = AzureMLBackend(az, client=client).submit(stream=False)
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
    backend = AzureMLBackend(az, client=client)
    assert backend.evaluate("sharp_job_42").passed
    assert backend.register("sharp_job_42") == "7"
    assert output.read_text().splitlines() == [
        "run_id=sharp_job_42", "gate=passed", "gate_reason=better by 2%", "model_version=7"]


def test_evaluate_shows_the_gate_report_the_step_wrote(settings, tmp_path, capsys,
                                                       monkeypatch):
    """The evaluate step ran remotely: its gate_report.md comes back with decision.json
    and is shown in CI as the local stage shows its own."""
    summary = tmp_path / "step_summary"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    markdown = "### Gate report: PASSED\n\nbetter by 2%\n"
    jobs = FakeJobs(decision={"passed": True, "reason": "better by 2%"},
                    gate_report=markdown)
    az = azure_settings(settings, project_root=tmp_path)
    assert AzureMLBackend(az, client=types.SimpleNamespace(jobs=jobs)).evaluate(
        "sharp_job_42").passed
    assert jobs.downloads == ["gate", "registration"]  # decision and report: one download
    report = tmp_path / GATE_REPORT
    assert report.read_text() == markdown
    assert summary.read_text().endswith(markdown + "\n")
    assert f"evaluate: report {report}" in capsys.readouterr().out


def test_a_job_from_before_gate_reports_is_still_evaluated(settings, tmp_path, capsys):
    az = azure_settings(settings, project_root=tmp_path)
    decision = AzureMLBackend(az, client=types.SimpleNamespace(jobs=FakeJobs())).evaluate(
        "sharp_job_42")
    assert decision.passed
    assert "sharp_job_42 has no gate report" in capsys.readouterr().out
    assert not (tmp_path / GATE_REPORT).exists()


def test_without_a_run_id_the_newest_job_of_this_project_is_used(az):
    jobs = FakeJobs(experiment=az.model.experiment)
    assert finished_job(types.SimpleNamespace(jobs=jobs), az).name == "newest_job"
    # Narrowed by the service, not read in full: the workspace holds other teams' jobs.
    assert jobs.listed == ("Pipeline", "created_by")


def test_the_job_listing_is_narrowed_in_the_request_the_sdk_sends(az):
    transport = FakeTransport([("GET", r"/jobs\?", (200, {"value": []}))])
    client = workspace.ml_client(az, credential=FakeCredential(), transport=transport)
    with pytest.raises(MlopsError, match="No training pipeline job"):
        finished_job(client, az)
    [listing] = transport.calls("GET", r"/jobs\?")
    assert "jobType=Pipeline" in listing.url and "tag=created_by" in listing.url


def test_results_of_an_unfinished_or_unknown_job_are_refused(az):
    client = types.SimpleNamespace(jobs=FakeJobs(status="Running"))
    with pytest.raises(MlopsError, match="is Running, not Completed"):
        AzureMLBackend(az, client=client).evaluate("sharp_job_42")
    with pytest.raises(MlopsError, match="no_such_job does not exist") as raised:
        AzureMLBackend(az, client=client).register("no_such_job")
    assert "--backend azureml train" in raised.value.fix


def test_an_existing_cluster_is_used_as_it_is(az):
    jobs = FakeJobs(decision={"passed": False, "reason": "worse than production"},
                    registration={"model_version": None})
    client, transport = client_with(az, [("GET", COMPUTE, EXISTING_COMPUTE)], jobs=jobs)
    result = AzureMLBackend(az, client=client).submit()
    assert transport.calls("PUT", COMPUTE) == []
    assert (result.gate, result.model_version) == ("rejected", None)


def test_a_failed_job_points_to_its_logs(az):
    client, _ = client_with(az, [("GET", COMPUTE, EXISTING_COMPUTE)],
                            jobs=FakeJobs(status="Failed"))
    with pytest.raises(MlopsError, match="ended Failed") as raised:
        AzureMLBackend(az, client=client).submit()
    assert "https://ml.azure.com/runs/sharp_job_42" in raised.value.fix


def test_a_data_asset_source_is_looked_up_and_passed_as_the_jobs_input(az, settings):
    """The asset's type comes from the workspace, which also proves the version exists."""
    jobs = FakeJobs()
    data = FakeData([Data(name="diabetes", version="4", type="uri_file",
                          path="azureml://datastores/workspaceblobstore/paths/d.csv")])
    client, _ = client_with(az, [("GET", COMPUTE, EXISTING_COMPUTE)], jobs=jobs, data=data)

    def with_source(source):
        return azure_settings(settings, project_root=PROJECT_ROOT, data={"source": source},
                              pipeline={"backend": "azureml"})

    asset = with_source("azureml:diabetes:4")
    AzureMLBackend(asset, client=client).submit()
    [(job, _)] = jobs.submitted
    assert (job.inputs.data._data.type, job.inputs.data._data.path) == (
        "uri_file", "azureml:diabetes:4")
    assert job.tags["data_asset_version"] == "4"
    missing = with_source("azureml:diabetes:5")
    with pytest.raises(MlopsError, match="azureml:diabetes:5 is not a data asset") as raised:
        AzureMLBackend(missing, client=client).submit()
    assert "register-data" in raised.value.fix
