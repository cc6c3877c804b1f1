"""Stand-ins for the Azure ML job, schedule and data operations, and the compute routes.

Compute calls go through the real MLClient to azure_fakes.FakeTransport (the request
bodies are the SDK's own); job, schedule and data asset operations, which would upload
the code snapshot or the data to blob storage, are recorded by stand-ins at the
operations level.
"""
import copy
import json
import shutil
import types
from pathlib import Path

from azure.ai.ml.exceptions import JobException
from azure.core.exceptions import ResourceNotFoundError

from ml_service.azure import workspace
from tests.helpers.azure_fakes import FakeCredential, FakeTransport, arm_error, azure_settings
from tests.helpers.project import PROJECT_ROOT

COMPUTE = r"/computes/cpu-cluster\?"
WORKSPACE = r"/workspaces/[^/?]+\?"


def settings_of_a_copy(settings, folder):
    """Azure settings of a copy of the project's training code and desired state (the
    gate's champion) in `folder` (dry runs write build/azureml/ there)."""
    for part in ("training", "deploy"):
        shutil.copytree(PROJECT_ROOT / part, folder / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return azure_settings(settings, project_root=folder)


class FakeJobs:
    """The jobs operations: records the submission and plays a finished job back."""

    def __init__(self, status="Completed", decision=None, registration=None,
                 experiment="diabetes-mlops", gate_report=None):
        """`gate_report`: the markdown of the evaluate step's gate_report.md (None: the
        job has none, as a job submitted before the step wrote it)."""
        self.submitted, self.streamed, self.downloads = [], [], []
        self.experiment = experiment
        self.status = status
        decision = decision or {"passed": True, "reason": "good enough"}
        self.files = {
            "gate": {"decision.json": json.dumps(decision),
                     **({"gate_report.md": gate_report} if gate_report else {})},
            "registration": {"registration.json": json.dumps(
                registration or {"model_version": "3"})},
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

    def list(self, job_type=None, tag=None):
        """The workspace's jobs, filtered as the service filters them (Jobs - List: by
        job type, and by tag key only)."""
        def job(name, day, experiment=self.experiment, tags=None, job_type="Pipeline"):
            return types.SimpleNamespace(
                name=name, experiment_name=experiment, type=job_type,
                tags={"created_by": "ml_service"} if tags is None else tags,
                creation_context=types.SimpleNamespace(created_at=f"2026-11-{day}T10:00:00"))

        workspace_jobs = [job("older_job", 20), job("newest_job", 22),
                          job("someone_elses", 23, tags={"created_by": "studio"}),
                          job("untagged", 24, tags={}),
                          job("a_command_job", 24, job_type="Command"),
                          job("other_project", 24, experiment="other")]
        self.listed = (job_type, tag)
        return [j for j in workspace_jobs if (job_type is None or j.type == job_type)
                and (tag is None or tag in j.tags)]

    def download(self, name, download_path, output_name):
        self.downloads.append(output_name)
        folder = Path(download_path) / "named-outputs" / output_name
        folder.mkdir(parents=True)
        for filename, content in self.files[output_name].items():
            (folder / filename).write_text(content)


class FakeSchedules:
    def __init__(self):
        self.created = []

    def begin_create_or_update(self, schedule):
        self.created.append(schedule)
        return types.SimpleNamespace(result=lambda: schedule)


class FakeData:
    """The data asset operations: `assets` are the workspace's versions (Data entities);
    create_or_update records the entity and gives it the next version, as Azure ML does."""

    def __init__(self, assets=()):
        self.assets = list(assets)
        self.created = []

    def list(self, name):
        found = [asset for asset in self.assets if asset.name == name]
        if not found:
            raise ResourceNotFoundError(f"Data asset {name} was not found.")
        return iter(found)

    def get(self, name, version):
        for asset in self.assets:
            if (asset.name, asset.version) == (name, version):
                return asset
        raise ResourceNotFoundError(f"Data asset {name}:{version} was not found.")

    def create_or_update(self, data):
        self.created.append(data)
        version = str(1 + sum(asset.name == data.name for asset in self.assets))
        created = copy.copy(data)
        created.version = version
        self.assets.append(created)
        return created


def client_with(az, routes, jobs=None, schedules=None, data=None):
    """The real MLClient's compute operations over a fake transport, plus stand-ins."""
    transport = FakeTransport(routes)
    real = workspace.ml_client(az, credential=FakeCredential(), transport=transport)
    client = types.SimpleNamespace(compute=real.compute, workspaces=real.workspaces,
                                   jobs=jobs or FakeJobs(), schedules=schedules or FakeSchedules(),
                                   data=data or FakeData())
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
