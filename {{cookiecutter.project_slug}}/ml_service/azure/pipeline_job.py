"""The training pipeline as an Azure ML pipeline job: prep_data -> train -> evaluate -> register.

The steps are the command components in training/components/*.yml; each runs a
plain module of training/components/ in the environment of environment.yml on an
AmlCompute cluster that scales to zero. `submit_training_pipeline` builds the job,
checks it offline (the SDK's validation plus our check of every step binding),
makes sure the cluster exists, submits, streams the logs and reads back the gate's
decision and the registered version. `create_schedule` runs the same job on a cron
schedule, for retraining. Both take dry_run=True to print the plan without
credentials or network.
"""
import dataclasses
import json
import logging
import re
import subprocess
import tempfile
from pathlib import Path

import yaml

from ml_service import report
from ml_service.azure.workspace import Scope, azure_errors, ml_client
from ml_service.errors import MlopsError

STEPS = ("prep_data", "train", "evaluate", "register")
COMPONENTS_DIR = Path("training") / "components"
# Where --dry-run writes the job and schedule definitions (git-ignored build output).
DEFINITIONS_DIR = Path("build") / "azureml"
# The pipeline's outputs, as the studio and `az ml job download` show them.
OUTPUTS = ("model", "gate", "registration")
BINDING = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")
CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?]+$")


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    job_name: str
    status: str
    studio_url: str
    gate: str | None = None          # "passed" / "rejected"; None when not waited for
    gate_reason: str | None = None
    model_version: str | None = None


def quiet_azure_logging():
    """Hide the SDK's notices (experimental classes, anonymous assets) unless --debug."""
    if logging.getLogger("ml_service").getEffectiveLevel() > logging.DEBUG:
        for name in ("azure", "azure.ai.ml", "azure.identity"):
            logging.getLogger(name).setLevel(logging.ERROR)


def code_version(root):
    """The git commit of the code Azure ML will upload, marked -dirty if files changed."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + ("-dirty" if dirty else "")


def load_components(settings):
    """The four command components, loaded (and schema-checked) from their YAML files."""
    from azure.ai.ml import load_component

    quiet_azure_logging()
    folder = settings.project_root / COMPONENTS_DIR
    components = {}
    for step in STEPS:
        path = folder / f"{step}.yml"
        try:
            components[step] = load_component(source=path)
        except FileNotFoundError:
            raise MlopsError(f"The component file {path} is missing.",
                             "Restore it from the template (training/components/).") from None
        except Exception as error:  # the SDK's schema errors name the field
            raise MlopsError(f"The component file {path} is not valid: {error}",
                             "Fix the field named above; the schema is the $schema URL at "
                             "the top of the file.") from error
    return components


def pipeline_inputs(settings, git_commit):
    """The pipeline job's inputs: everything the steps need from mlops.toml."""
    return {
        "test_size": settings.training.test_size,
        "random_seed": settings.training.random_seed,
        "alpha": settings.training.alpha,
        "min_r2": settings.gate.min_r2,
        "min_improvement": settings.gate.min_improvement,
        "model_name": settings.model.name,
        "git_commit": git_commit,
    }


def build_pipeline(settings, git_commit):
    """The pipeline job, checked offline; raises MlopsError if it is not valid."""
    from azure.ai.ml import dsl

    steps = load_components(settings)

    @dsl.pipeline(name=f"{settings.model.experiment}-training",
                  display_name=f"{settings.model.name}: train, evaluate, register",
                  description="Train a challenger, gate it against the production model "
                              "and register it if it passes.",
                  default_compute=settings.azure.compute_name)
    def training_pipeline(test_size: float, random_seed: int, alpha: float, min_r2: float,
                          min_improvement: float, model_name: str, git_commit: str):
        prep_data = steps["prep_data"](test_size=test_size, random_seed=random_seed)
        train = steps["train"](data=prep_data.outputs.data, alpha=alpha)
        evaluate = steps["evaluate"](data=prep_data.outputs.data, model=train.outputs.model,
                                     model_name=model_name, min_r2=min_r2,
                                     min_improvement=min_improvement)
        register = steps["register"](data=prep_data.outputs.data, model=train.outputs.model,
                                     info=train.outputs.info, gate=evaluate.outputs.gate,
                                     model_name=model_name, git_commit=git_commit)
        return {"model": train.outputs.model, "gate": evaluate.outputs.gate,
                "registration": register.outputs.registration}

    job = training_pipeline(**pipeline_inputs(settings, git_commit))
    job.experiment_name = settings.model.experiment
    job.tags = {"git_commit": git_commit, "model_name": settings.model.name,
                "created_by": "ml_service"}
    check_pipeline(job)
    return job


def _shown(expression):
    """`expression` as written in a YAML file, inside Azure ML's binding braces."""
    return "$" + "{" * 2 + expression + "}" * 2


def binding_problems(job_dict):
    """Every Azure ML binding (dollar sign, two braces) in a job dict that refers to nothing.

    Azure ML's local validation does not check that `parent.jobs.<step>` exists, nor
    that a command's `inputs.<name>` is declared; a typo would only fail in the cloud.
    """
    steps = job_dict.get("jobs", {})
    parent_inputs = set(job_dict.get("inputs", {}))
    parent_outputs = set(job_dict.get("outputs", {}))
    problems = []

    def check(text, where, component=None):
        for expression in BINDING.findall(text):
            parts = expression.split(".")
            if parts[0] == "parent" and len(parts) >= 3 and parts[1] == "jobs":
                step = parts[2]
                if step not in steps:
                    problems.append(f"{where}: {_shown(expression)} names no step "
                                    f"(steps: {', '.join(steps)})")
                    continue
                side = parts[3] if len(parts) > 3 else ""
                declared = steps[step].get("component", {}).get(side, {})
                if len(parts) != 5 or parts[3] not in ("inputs", "outputs") or (
                        parts[4] not in declared):
                    problems.append(f"{where}: {_shown(expression)} is not an input or "
                                    f"output of step {step}")
            elif parts[0] == "parent" and len(parts) == 3 and parts[1] in ("inputs", "outputs"):
                known = parent_inputs if parts[1] == "inputs" else parent_outputs
                if parts[2] not in known:
                    problems.append(f"{where}: {_shown(expression)} is not a pipeline "
                                    f"{parts[1][:-1]}")
            elif parts[0] in ("inputs", "outputs") and len(parts) == 2 and component is not None:
                if parts[1] not in component.get(parts[0], {}):
                    problems.append(f"{where}: {_shown(expression)} is not declared in the "
                                    f"component's {parts[0]}")
            else:
                problems.append(f"{where}: {_shown(expression)} is not a binding this "
                                "pipeline uses")

    def walk(value, where, component=None):
        if isinstance(value, str):
            check(value, where, component)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}", component)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]", component)

    for name, step in steps.items():
        component = step.get("component", {})
        walk(step.get("inputs", {}), f"jobs.{name}.inputs")
        walk(step.get("outputs", {}), f"jobs.{name}.outputs")
        walk(component.get("command", ""), f"jobs.{name}.component.command", component)
    return problems


def check_pipeline(job):
    """The SDK's own validation plus `binding_problems`; raise MlopsError on any problem."""
    result = job._validate()
    problems = [f"{path}: {message}" for path, message in result.error_messages.items()]
    problems += binding_problems(job._to_dict())
    if problems:
        raise MlopsError("The training pipeline is not valid: " + "; ".join(problems) + ".",
                         "Fix training/components/*.yml or ml_service/azure/pipeline_job.py; "
                         "`python -m pytest tests/azure/test_pipeline_job.py` checks it offline.")


def compute_spec(settings):
    """The AmlCompute cluster the steps run on: 0 nodes when idle."""
    from azure.ai.ml.entities import AmlCompute, IdentityConfiguration

    azure = settings.azure
    return AmlCompute(name=azure.compute_name, size=azure.compute_vm_size, min_instances=0,
                      max_instances=azure.compute_max_nodes, idle_time_before_scale_down=120,
                      tier="dedicated",
                      # Pulls environment images from a registry without an admin user.
                      identity=IdentityConfiguration(type="system_assigned"))


def ensure_compute(client, settings):
    """Use the configured cluster, creating it if it does not exist; return it."""
    from azure.core.exceptions import ResourceNotFoundError

    name = settings.azure.compute_name
    scope = Scope.of(settings)
    with azure_errors(f"look up the compute cluster {name}", scope):
        try:
            compute = client.compute.get(name)
        except ResourceNotFoundError:
            # (If the workspace itself is missing, creating the cluster says so.)
            compute = None
    if compute is not None:
        if str(getattr(compute, "type", "")).lower() != "amlcompute":
            raise MlopsError(f"The compute {name} exists but is a {compute.type}, not an "
                             "AmlCompute cluster.",
                             "Set [azure] compute_name to a compute cluster, or remove it.")
        return compute
    spec = compute_spec(settings)
    print(f"compute: creating the compute cluster {name} ({spec.size}, 0 to "
          f"{spec.max_instances} nodes); this takes a minute or two.")
    with azure_errors(f"create the compute cluster {name}", scope):
        compute = client.compute.begin_create_or_update(spec).result()
    print(f"compute: created {name}. Its identity needs AcrPull on the workspace's "
          "registry to pull environment images (environment_setup/main.bicep grants it to "
          "the cluster it creates).")
    return compute


def write_definition(settings, spec, filename):
    """Write a job or schedule dict as YAML under build/azureml/; return the path.

    The code folder is made relative to the file, so the file also works with the
    Azure CLI: `az ml job create --file build/azureml/training-pipeline.yml`.
    """
    folder = settings.project_root / DEFINITIONS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    relative = Path(*[".."] * len(DEFINITIONS_DIR.parts)).as_posix()
    root = str(settings.project_root)

    def relocate(value):
        if isinstance(value, dict):
            return {key: relative if key == "code" and item == root else relocate(item)
                    for key, item in value.items()}
        if isinstance(value, list):
            return [relocate(item) for item in value]
        return value

    path = folder / filename
    path.write_text(yaml.safe_dump(relocate(spec), sort_keys=False, width=100))
    return path


def plan(settings, job, inputs):
    """What submitting `job` would do, as text for --dry-run."""
    azure = settings.azure
    steps = job.jobs
    environment = next(iter(steps.values())).component.environment
    lines = [
        "Azure ML training pipeline (dry run: nothing is sent to Azure)",
        f"  workspace    {azure.workspace_name} (resource group {azure.resource_group}, "
        f"subscription {azure.subscription_id})",
        f"  compute      {azure.compute_name}: AmlCompute {azure.compute_vm_size}, 0 to "
        f"{azure.compute_max_nodes} nodes (created if missing)",
        f"  experiment   {job.experiment_name}",
        f"  environment  {environment.image} + {COMPONENTS_DIR / 'conda.yml'}",
        f"  steps        {' -> '.join(steps)}",
    ]
    for name, step in steps.items():
        lines.append(f"    {name:<10} {' '.join(step.component.command.split())}")
    lines.append("  inputs       " + ", ".join(f"{k}={v}" for k, v in inputs.items()))
    lines.append(f"  outputs      {', '.join(job.outputs)}")
    path = write_definition(settings, job._to_dict(), "training-pipeline.yml")
    lines.append(f"  definition   {path.relative_to(settings.project_root)} (the whole job; "
                 "`az ml job create --file` takes it too)")
    return "\n".join(lines)


def _read_output(client, job_name, output, filename):
    """The JSON file `filename` from the named output of the finished job."""
    with tempfile.TemporaryDirectory() as folder:
        client.jobs.download(name=job_name, download_path=folder, output_name=output)
        found = sorted(Path(folder).rglob(filename))
        if not found:
            raise MlopsError(f"Pipeline job {job_name} has no {filename} in its output "
                             f"{output}.",
                             "Open the job in the studio and check the step's logs.")
        return json.loads(found[0].read_text())


def _wait(client, name, scope):
    """Stream the job's logs until it ends; return the finished job."""
    with azure_errors(f"follow the pipeline job {name}", scope):
        try:
            client.jobs.stream(name)
        except Exception as error:
            if type(error).__name__ != "JobException":
                raise
            # The job failed; its final state, read next, says how.
        return client.jobs.get(name)


def submit_training_pipeline(settings, dry_run=False, client=None, stream=True):
    """Submit the pipeline job; with `stream`, wait for it and return its result.

    Publishes the train result (run_id: the job's name). The gate's decision and the
    registered version are published by `gate_result` and `registration_result`
    (the evaluate and register stages of the azureml backend).
    dry_run prints the plan and returns the unsent job: no credentials needed.
    """
    git_commit = code_version(settings.project_root)
    job = build_pipeline(settings, git_commit)
    if dry_run:
        print(plan(settings, job, pipeline_inputs(settings, git_commit)))
        return job
    client = client or ml_client(settings)
    scope = Scope.of(settings)
    ensure_compute(client, settings)
    with azure_errors("submit the training pipeline job", scope):
        submitted = client.jobs.create_or_update(job, experiment_name=settings.model.experiment)
    outputs = {"run_id": submitted.name, "studio_url": submitted.studio_url}
    if not stream:
        report.publish("train", f"submitted Azure ML pipeline job {submitted.name} "
                       f"(git {git_commit[:12]}): {submitted.studio_url}", outputs)
        return PipelineResult(submitted.name, submitted.status, submitted.studio_url)
    print(f"train: Azure ML pipeline job {submitted.name}: {submitted.studio_url}", flush=True)
    finished = _wait(client, submitted.name, scope)
    if finished.status != "Completed":
        raise MlopsError(f"Pipeline job {submitted.name} ended {finished.status}.",
                         f"See the failed step's logs in the studio: {submitted.studio_url}")
    decision, version = _results(client, submitted.name, scope)
    report.publish("train", f"pipeline job {submitted.name} completed (git {git_commit[:12]}): "
                   f"gate {'passed' if decision['passed'] else 'rejected'}"
                   + (f", registered version {version}" if version else ""), outputs)
    return PipelineResult(submitted.name, finished.status, submitted.studio_url,
                          "passed" if decision["passed"] else "rejected", decision["reason"],
                          version)


def _results(client, job_name, scope):
    with azure_errors(f"download the results of pipeline job {job_name}", scope):
        decision = _read_output(client, job_name, "gate", "decision.json")
        registration = _read_output(client, job_name, "registration", "registration.json")
    return decision, registration["model_version"]


def finished_job(client, settings, job_name=None):
    """The completed pipeline job `job_name`, or the newest one this project submitted."""
    scope = Scope.of(settings)
    if job_name is None:
        with azure_errors("list the pipeline jobs", scope):
            ours = [job for job in client.jobs.list()
                    if getattr(job, "experiment_name", None) == settings.model.experiment
                    and (job.tags or {}).get("created_by") == "ml_service"]
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


def gate_result(settings, job_name=None, client=None):
    """Publish the gate's decision of a finished pipeline job (the evaluate stage)."""
    client = client or ml_client(settings)
    job = finished_job(client, settings, job_name)
    decision, _ = _results(client, job.name, Scope.of(settings))
    gate = "passed" if decision["passed"] else "rejected"
    report.publish("evaluate", f"gate {gate.upper()} - {decision['reason']}",
                   {"run_id": job.name, "gate": gate, "gate_reason": decision["reason"]})
    return decision


def registration_result(settings, job_name=None, client=None):
    """Publish the version a finished pipeline job registered (the register stage)."""
    client = client or ml_client(settings)
    job = finished_job(client, settings, job_name)
    decision, version = _results(client, job.name, Scope.of(settings))
    if version is None:
        report.publish("register", f"skipped, the gate rejected pipeline job {job.name}: "
                       f"{decision['reason']}", {"model_version": None})
    else:
        report.publish("register", f"{settings.model.name} version {version} "
                       f"(pipeline job {job.name})", {"model_version": version})
    return version


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

    Each scheduled run compares its model with the production model of that moment
    and registers it only if the gate passes; deploying stays a reviewed step.
    """
    from azure.ai.ml.entities import CronTrigger, JobSchedule

    cron = check_cron(cron)
    git_commit = code_version(settings.project_root)
    job = build_pipeline(settings, git_commit)
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
    client = client or ml_client(settings)
    scope = Scope.of(settings)
    ensure_compute(client, settings)
    with azure_errors(f"create the schedule {schedule.name}", scope):
        created = client.schedules.begin_create_or_update(schedule).result()
    report.publish("schedule", f"{created.name} runs the training pipeline at '{cron}' "
                   f"({time_zone}) with the code of git {git_commit[:12]}",
                   {"schedule": created.name, "cron": cron})
    return created
