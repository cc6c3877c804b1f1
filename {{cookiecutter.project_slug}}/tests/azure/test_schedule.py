"""The retraining schedule: the training pipeline job on a cron trigger."""
import pytest
from azure.ai.ml.entities import Data
# Not exported by azure.ai.ml (1.35); the az CLI uses it for `az ml schedule create`.
from azure.ai.ml.entities._load_functions import load_schedule

from ml_service.azure import pipeline_job, schedule
from ml_service.errors import MlopsError
from tests.helpers.azure_fakes import azure_settings
from tests.helpers.azureml_fakes import (COMPUTE, EXISTING_COMPUTE, FakeData, FakeSchedules,
                                         client_with, settings_of_a_copy)
from tests.helpers.project import PROJECT_ROOT


@pytest.fixture
def az(settings):
    """Settings of the real project (its components), with the Azure keys filled in."""
    return azure_settings(settings, project_root=PROJECT_ROOT)


@pytest.fixture
def az_copy(tmp_path, settings):
    return settings_of_a_copy(settings, tmp_path)


def test_schedule_runs_the_same_pipeline_on_a_cron_trigger(az, capsys):
    schedules = FakeSchedules()
    client, _ = client_with(az, [("GET", COMPUTE, EXISTING_COMPUTE)], schedules=schedules)
    schedule.create_schedule(az, "0 3 * * 1", client=client)
    [created] = schedules.created
    assert created.name == f"{az.model.experiment}-retraining"
    assert (created.trigger.expression, created.trigger.time_zone) == ("0 3 * * 1", "UTC")
    assert list(created.create_job.jobs) == list(pipeline_job.STEPS)
    assert "runs the training pipeline at '0 3 * * 1'" in capsys.readouterr().out


def test_a_scheduled_job_reads_the_data_asset_of_its_type(settings):
    """The asset's type is looked up when the schedule is created, as for a submission."""
    az = azure_settings(settings, project_root=PROJECT_ROOT, pipeline={"backend": "azureml"},
                        data={"source": "azureml:diabetes:2"})
    schedules = FakeSchedules()
    data = FakeData([Data(name="diabetes", version="2", type="uri_file",
                          path="azureml://datastores/workspaceblobstore/paths/d.csv")])
    client, _ = client_with(az, [("GET", COMPUTE, EXISTING_COMPUTE)], schedules=schedules,
                            data=data)
    schedule.create_schedule(az, "0 3 * * 1", client=client)
    [created] = schedules.created
    prep = created.create_job._to_dict()["jobs"]["prep_data"]["inputs"]
    assert "data_file" in prep and "data_folder" not in prep
    assert created.create_job.inputs.data._data.path == "azureml:diabetes:2"


def test_schedule_dry_run_prints_it_and_writes_a_loadable_definition(az_copy, capsys):
    schedule.create_schedule(az_copy, "30 2 * * *", dry_run=True,
                             time_zone="W. Europe Standard Time")
    out = capsys.readouterr().out
    assert "'30 2 * * *' (W. Europe Standard Time)" in out and "dry run" in out
    loaded = load_schedule(source=az_copy.project_root / "build" / "azureml" /
                           "retraining-schedule.yml")
    assert loaded.trigger.expression == "30 2 * * *"
    assert list(loaded.create_job.jobs) == list(pipeline_job.STEPS)


@pytest.mark.parametrize("cron", ["daily", "0 3 * *", "0 3 * * 1 2025", "0 3 * * $"])
def test_a_bad_cron_expression_is_refused_before_anything_is_built(az, cron):
    with pytest.raises(MlopsError, match="five fields"):
        schedule.create_schedule(az, cron, dry_run=True)
