"""A submitted pipeline job: followed until it ends, and its results read back.

The gate's decision, its report and the registered version are files in the job's
outputs `gate` (decision.json, gate_report.md) and `registration` (registration.json),
written by the steps in training/components/.
"""
import dataclasses
import json
import tempfile
from pathlib import Path

from ml_service.azure.pipeline_job import CREATED_BY, CREATED_BY_TAG
from ml_service.azure.workspace import Scope, azure_errors
from ml_service.errors import MlopsError
from training import evaluation_report


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    job_name: str
    status: str
    studio_url: str
    gate: str | None = None          # "passed" / "rejected"; None when not waited for
    gate_reason: str | None = None
    model_version: str | None = None


def read_outputs(client, job_name, output, filenames, optional=()):
    """{filename: text} of the files `filenames` (each required) and `optional` (those
    present) in the named output of the finished job, downloaded once."""
    with tempfile.TemporaryDirectory() as folder:
        client.jobs.download(name=job_name, download_path=folder, output_name=output)
        found = {}
        for filename in (*filenames, *optional):
            paths = sorted(Path(folder).rglob(filename))
            if paths:
                found[filename] = paths[0].read_text()
            elif filename in filenames:
                raise MlopsError(f"Pipeline job {job_name} has no {filename} in its output "
                                 f"{output}.",
                                 "Open the job in the studio and check the step's logs.")
        return found


def wait(client, name, scope):
    """Stream the job's logs until it ends; return the finished job."""
    with azure_errors(f"follow the pipeline job {name}", scope):
        try:
            client.jobs.stream(name)
        except Exception as error:
            if type(error).__name__ != "JobException":
                raise
            # The job failed; its final state, read next, says how.
        return client.jobs.get(name)


def results(client, job_name, scope):
    """(the gate's decision, the registered version or None, the gate report's markdown or
    None for a job submitted before the evaluate step wrote one) of a finished job."""
    with azure_errors(f"download the results of pipeline job {job_name}", scope):
        gate = read_outputs(client, job_name, "gate", ["decision.json"],
                            optional=[evaluation_report.REPORT_FILE])
        registration = read_outputs(client, job_name, "registration", ["registration.json"])
    return (json.loads(gate["decision.json"]),
            json.loads(registration["registration.json"])["model_version"],
            gate.get(evaluation_report.REPORT_FILE))


def finished_job(client, settings, job_name=None):
    """The completed pipeline job `job_name`, or the newest one this project submitted."""
    scope = Scope.of(settings)
    if job_name is None:
        with azure_errors("list the pipeline jobs", scope):
            # The service filters by job type and by tag *key* only (Jobs - List: `jobType`,
            # `tag`), so it returns the pipeline jobs pipeline_job.py tagged, not every job
            # of the workspace; the experiment and the tag's value are checked here.
            listed = client.jobs.list(job_type="Pipeline", tag=CREATED_BY_TAG)
            ours = [job for job in listed
                    if getattr(job, "experiment_name", None) == settings.model.experiment
                    and (job.tags or {}).get(CREATED_BY_TAG) == CREATED_BY]
        if not ours:
            raise MlopsError(f"No training pipeline job of experiment "
                             f"{settings.model.experiment} exists in workspace "
                             f"{settings.azure.workspace_name}.",
                             "Run `python -m ml_service --backend azureml train` first.")
        job_name = max(ours, key=lambda job: job.creation_context.created_at).name
    missing = (f"Pipeline job {job_name} does not exist in workspace "
               f"{settings.azure.workspace_name}",
               "Pass the run_id that `python -m ml_service --backend azureml train` printed.")
    with azure_errors(f"read the pipeline job {job_name}", scope, missing):
        job = client.jobs.get(job_name)
    if job.status != "Completed":
        raise MlopsError(f"Pipeline job {job_name} is {job.status}, not Completed.",
                         "Wait for it to finish (`az ml job stream --name "
                         f"{job_name}`), or train again if it failed: {job.studio_url}")
    return job
