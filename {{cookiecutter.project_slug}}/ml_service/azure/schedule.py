"""The retraining schedule: the training pipeline job on a cron trigger."""
import re

from ml_service import desired_state, git, report
from ml_service.azure.compute import ensure_compute
from ml_service.azure.pipeline_job import build_pipeline, data_asset_type, write_definition
from ml_service.azure.workspace import Scope, azure_errors, ml_client
from ml_service.errors import MlopsError

CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?]+$")


def check_cron(expression):
    fields = expression.split()
    if len(fields) != 5 or not all(CRON_FIELD.match(field) for field in fields):
        raise MlopsError(f"{expression!r} is not a cron expression with five fields.",
                         "Use minute hour day-of-month month day-of-week, e.g. '0 3 * * 1' "
                         "for Mondays at 03:00.")
    return " ".join(fields)


def schedule_name(settings):
    return f"{settings.model.experiment}-retraining"


def create_schedule(settings, cron, dry_run=False, client=None, time_zone="UTC"):
    """Create or update the retraining schedule: the pipeline job on a cron trigger.

    Each scheduled run registers its model only if the gate passes; deploying stays a
    reviewed step. The gate's champion is an input of the job: the version production's
    git desired state named when the schedule was created (Azure ML's registry has no
    aliases to look it up by when the job runs), so run `schedule` again after a
    promotion.
    """
    from azure.ai.ml.entities import CronTrigger, JobSchedule

    cron = check_cron(cron)
    git_commit = git.code_version(settings.project_root)
    if not dry_run:
        client = client or ml_client(settings)
    job = build_pipeline(settings, git_commit,
                         None if dry_run else data_asset_type(client, settings))
    schedule = JobSchedule(
        name=schedule_name(settings), trigger=CronTrigger(expression=cron, time_zone=time_zone),
        create_job=job, display_name=f"Retrain {settings.model.name}",
        description=f"Retrain, gate and register {settings.model.name} ({cron} {time_zone}); "
                    f"code at git {git_commit}.",
        tags={"git_commit": git_commit, "model_name": settings.model.name})
    if dry_run:
        job_path = write_definition(settings, job._to_dict(), "training-pipeline.yml")
        # A schedule file names its job file (an inline job does not load back).
        path = write_definition(settings, {**schedule._to_dict(),
                                           "create_job": f"./{job_path.name}"},
                                "retraining-schedule.yml")
        print(f"Schedule {schedule.name}: '{cron}' ({time_zone}) in workspace "
              f"{settings.azure.workspace_name}, compute {settings.azure.compute_name} "
              "(dry run: nothing is sent to Azure)\n"
              f"  steps       {' -> '.join(job.jobs)}\n"
              f"  definition  {path.relative_to(settings.project_root)} "
              "(`az ml schedule create --file` takes it too)")
        return schedule
    scope = Scope.of(settings)
    ensure_compute(client, settings)
    with azure_errors(f"create the schedule {schedule.name}", scope):
        created = client.schedules.begin_create_or_update(schedule).result()
    champion = desired_state.read(settings, "production").model_version
    report.publish("schedule", f"{created.name} runs the training pipeline at '{cron}' "
                   f"({time_zone}) with the code of git {git_commit[:12]}, against "
                   f"production version {champion} (run `schedule` again after a promotion)",
                   {"schedule": created.name, "cron": cron})
    return created
