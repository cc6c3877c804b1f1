"""The Azure ML backend: the training pipeline job, submitted, followed and read back.

`submit` builds the job (ml_service/azure/pipeline_job.py), makes sure the compute
cluster exists, submits it, streams its logs and reads the gate's decision and the
registered version from its outputs (ml_service/azure/job_runs.py). The evaluate and
register stages read those results from a finished job. dry_run prints the plan
without credentials or network.
"""
from ml_service import git, report
from ml_service.azure import job_runs
from ml_service.azure.compute import ensure_compute
from ml_service.azure.pipeline_job import (build_pipeline, data_asset_type, data_input,
                                           pipeline_inputs, plan)
from ml_service.azure.workspace import Scope, azure_errors, ml_client
from ml_service.backends.base import publish_gate, publish_rejection
from ml_service.errors import MlopsError
from training.gate import GateDecision


class AzureMLBackend:
    def __init__(self, settings, client=None):
        self.settings = settings
        self.scope = Scope.of(settings)
        self._client = client

    @property
    def client(self):
        """The workspace's MLClient, created on first use (a dry run never needs it)."""
        if self._client is None:
            self._client = ml_client(self.settings)
        return self._client

    def submit(self, dry_run=False, stream=True):
        """Submit the pipeline job; with `stream`, wait for it and return its result.

        Publishes the train result (run_id: the job's name). dry_run prints the plan and
        returns the unsent job.
        """
        settings = self.settings
        git_commit = git.code_version(settings.project_root)
        if dry_run:
            job = build_pipeline(settings, git_commit)
            print(plan(settings, job, pipeline_inputs(settings, git_commit,
                                                      data_input(settings))))
            return job
        job = build_pipeline(settings, git_commit, data_asset_type(self.client, settings))
        ensure_compute(self.client, settings)
        with azure_errors("submit the training pipeline job", self.scope):
            submitted = self.client.jobs.create_or_update(
                job, experiment_name=settings.model.experiment)
        if not stream:
            report.publish("train", f"submitted Azure ML pipeline job {submitted.name} "
                           f"(git {git_commit[:12]}): {submitted.studio_url}",
                           {"run_id": submitted.name, "studio_url": submitted.studio_url})
            return job_runs.PipelineResult(submitted.name, submitted.status,
                                           submitted.studio_url)
        print(f"train: Azure ML pipeline job {submitted.name}: {submitted.studio_url}",
              flush=True)
        finished = job_runs.wait(self.client, submitted.name, self.scope)
        if finished.status != "Completed":
            raise MlopsError(f"Pipeline job {submitted.name} ended {finished.status}.",
                             f"See the failed step's logs in the studio: {submitted.studio_url}")
        decision, version, _ = self._results(submitted.name)
        report.publish("train", f"pipeline job {submitted.name} completed "
                       f"(git {git_commit[:12]}): gate {decision.verdict}"
                       + (f", registered version {version}" if version else ""),
                       {"run_id": submitted.name, "studio_url": submitted.studio_url})
        return job_runs.PipelineResult(submitted.name, finished.status, submitted.studio_url,
                                       decision.verdict, decision.reason, version)

    def _results(self, job_name):
        """(GateDecision, registered version or None, gate report or None) of the job."""
        raw, version, gate_report = job_runs.results(self.client, job_name, self.scope)
        return GateDecision(raw["passed"], raw["reason"]), version, gate_report

    def train(self, dry_run=False):
        result = self.submit(dry_run=dry_run)
        return None if dry_run else result.job_name

    def evaluate(self, run_id=None):
        """Publish the gate's decision and report of a finished pipeline job (the evaluate
        stage); the plots are in the evaluate step's MLflow run."""
        job = job_runs.finished_job(self.client, self.settings, run_id)
        decision, _, gate_report = self._results(job.name)
        publish_gate(self.settings, job.name, decision, gate_report)
        return decision

    def register(self, run_id=None):
        """Publish the version a finished pipeline job registered (the register stage)."""
        job = job_runs.finished_job(self.client, self.settings, run_id)
        decision, version, _ = self._results(job.name)
        if version is None:
            publish_rejection(f"pipeline job {job.name}", decision.reason)
        else:
            report.publish("register", f"{self.settings.model.name} version {version} "
                           f"(pipeline job {job.name})", {"model_version": version})
        return version

    def train_gate_register(self, dry_run=False):
        result = self.submit(dry_run=dry_run)
        return None if dry_run else result.model_version
