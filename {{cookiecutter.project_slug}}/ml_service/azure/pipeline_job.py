"""The training pipeline as an Azure ML pipeline job: prep_data -> train -> evaluate -> register.

The steps are the command components in training/components/*.yml; each runs a
plain module of training/components/ in the environment of environment.yml on an
AmlCompute cluster that scales to zero (compute.py). `build_pipeline` builds the
job and checks it offline (the SDK's validation plus bindings.py); `plan` and
`write_definition` show it for a dry run. Submitting and following it is the Azure
ML backend's (ml_service/backends/azureml.py, with job_runs.py); schedule.py runs
the same job on a cron schedule.
"""
import logging
from pathlib import Path

import yaml

from ml_service.azure.bindings import binding_problems
from ml_service.errors import MlopsError

STEPS = ("prep_data", "train", "evaluate", "register")
COMPONENTS_DIR = Path("training") / "components"
# Where --dry-run writes the job and schedule definitions (git-ignored build output).
DEFINITIONS_DIR = Path("build") / "azureml"
# The pipeline's outputs, as the studio and `az ml job download` show them.
OUTPUTS = ("model", "gate", "registration")


def quiet_azure_logging():
    """Hide the SDK's notices (experimental classes, anonymous assets) unless --debug."""
    if logging.getLogger("ml_service").getEffectiveLevel() > logging.DEBUG:
        for name in ("azure", "azure.ai.ml", "azure.identity"):
            logging.getLogger(name).setLevel(logging.ERROR)


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


def check_pipeline(job):
    """The SDK's own validation plus `binding_problems`; raise MlopsError on any problem."""
    result = job._validate()
    problems = [f"{path}: {message}" for path, message in result.error_messages.items()]
    problems += binding_problems(job._to_dict())
    if problems:
        raise MlopsError("The training pipeline is not valid: " + "; ".join(problems) + ".",
                         "Fix training/components/*.yml or ml_service/azure/pipeline_job.py; "
                         "`python -m pytest tests/azure/test_pipeline_job.py` checks it "
                         "offline.")


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
