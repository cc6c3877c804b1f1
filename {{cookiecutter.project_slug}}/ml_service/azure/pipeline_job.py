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
import os
from pathlib import Path

import yaml

from ml_service import data_assets, desired_state
from ml_service.azure.bindings import binding_problems
from ml_service.azure.workspace import Scope, azure_errors
from ml_service.errors import MlopsError
from training.data import data_tags

STEPS = ("prep_data", "train", "evaluate", "register")
COMPONENTS_DIR = Path("training") / "components"
# Where --dry-run writes the job and schedule definitions (git-ignored build output).
DEFINITIONS_DIR = Path("build") / "azureml"
# The pipeline's outputs, as the studio and `az ml job download` show them.
OUTPUTS = ("model", "gate", "registration")
# prep_data's input port for each kind of data ([data] source; none: the bundled sample).
DATA_PORTS = {data_assets.URI_FILE: "data_file", data_assets.URI_FOLDER: "data_folder"}
# The tag that marks the jobs this project submits (job_runs.finished_job lists by it).
CREATED_BY_TAG, CREATED_BY = "created_by", "ml_service"


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


def data_input(settings, asset_type=None):
    """The pipeline job's `data` input for [data] source, or None for the bundled sample:
    an Azure ML data asset by reference, or a local file or folder, which the SDK uploads
    on submission. An asset's type (uri_file or uri_folder) is the workspace's to say:
    the submitter looks it up and passes it as `asset_type` (a dry run assumes
    uri_folder)."""
    from azure.ai.ml import Input

    source = data_assets.resolve(settings)
    if source.is_sample:
        return None
    if source.azureml_asset:
        return Input(type=asset_type or data_assets.URI_FOLDER, path=source.reference)
    return Input(type=source.asset_type, path=str(source.path))


def data_asset_type(client, settings):
    """uri_file or uri_folder: the type of the Azure ML data asset [data] source names
    (None when it names none). Asking also checks that the version exists."""
    asset = data_assets.resolve(settings).azureml_asset
    if asset is None:
        return None
    name, version = asset
    scope = Scope.of(settings)
    missing = (f"[data] source azureml:{name}:{version} is not a data asset version of "
               f"workspace {scope.workspace}",
               "Register it (`python -m ml_service --backend azureml register-data --name "
               f"{name} --path FILE`) and use the reference it prints, or fix [data] source.")
    with azure_errors(f"find data asset {name} version {version}", scope, missing):
        return client.data.get(name=name, version=version).type


def pipeline_inputs(settings, git_commit, data=None):
    """The pipeline job's inputs: everything the steps need from mlops.toml, the data
    (`data`: data_input's, absent for the sample) and the gate's champion: the version
    production's git desired state names now (Azure ML's MLflow registry has no aliases
    to look it up by inside the job). An unset production state is passed as "none"
    (desired_state.UNSET_VERSION), which the step reads as no champion."""
    production = desired_state.read(settings, "production")
    return {
        "data_source": settings.data.source,
        "target": settings.data.target,
        "features": ",".join(settings.data.features),
        **({"data": data} if data is not None else {}),
        "test_size": settings.training.test_size,
        "random_seed": settings.training.random_seed,
        "alpha": settings.training.alpha,
        "min_r2": settings.gate.min_r2,
        "min_improvement": settings.gate.min_improvement,
        "model_name": settings.model.name,
        "git_commit": git_commit,
        "champion_version": production.model_version,
    }


def build_pipeline(settings, git_commit, asset_type=None):
    """The pipeline job, checked offline; raises MlopsError if it is not valid.
    `asset_type`: the type of an Azure ML data asset in [data] source (see data_input)."""
    from azure.ai.ml import dsl

    steps = load_components(settings)
    data = data_input(settings, asset_type)
    data_port = DATA_PORTS[data.type] if data is not None else None

    @dsl.pipeline(name=f"{settings.model.experiment}-training",
                  display_name=f"{settings.model.name}: train, evaluate, register",
                  description="Train a challenger, gate it against the production model "
                              "and register it if it passes.",
                  default_compute=settings.azure.compute_name)
    def training_pipeline(data_source: str, target: str, features: str, test_size: float,
                          random_seed: int, alpha: float, min_r2: float,
                          min_improvement: float, model_name: str, git_commit: str,
                          champion_version: str, data=None):
        prep_data = steps["prep_data"](
            test_size=test_size, random_seed=random_seed, data_source=data_source,
            target=target, features=features, **({data_port: data} if data_port else {}))
        train = steps["train"](data=prep_data.outputs.data, alpha=alpha)
        evaluate = steps["evaluate"](data=prep_data.outputs.data, model=train.outputs.model,
                                     model_name=model_name,
                                     champion_version=champion_version, min_r2=min_r2,
                                     min_improvement=min_improvement)
        register = steps["register"](data=prep_data.outputs.data, model=train.outputs.model,
                                     info=train.outputs.info, gate=evaluate.outputs.gate,
                                     model_name=model_name, git_commit=git_commit)
        return {"model": train.outputs.model, "gate": evaluate.outputs.gate,
                "registration": register.outputs.registration}

    job = training_pipeline(**pipeline_inputs(settings, git_commit, data))
    job.experiment_name = settings.model.experiment
    job.tags = {"git_commit": git_commit, "model_name": settings.model.name,
                CREATED_BY_TAG: CREATED_BY, **data_tags(settings.data.source)}
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
    data = inputs.get("data")
    if data is not None:
        lines.append(f"  data         {data.type} {data.path}" + (
            " (its type is read from the workspace on submission)"
            if data.path.startswith("azureml:") else " (uploaded on submission)"))
    lines.append("  inputs       " + ", ".join(
        f"{k}={v}" for k, v in inputs.items() if k != "data"))
    lines.append(f"  outputs      {', '.join(job.outputs)}")
    spec = job._to_dict()
    if data is not None and not data.path.startswith("azureml:"):
        # The SDK shows a local path as azureml:<path>; the file needs it relative to itself.
        spec["inputs"]["data"]["path"] = Path(os.path.relpath(
            data.path, settings.project_root / DEFINITIONS_DIR)).as_posix()
    path = write_definition(settings, spec, "training-pipeline.yml")
    lines.append(f"  definition   {path.relative_to(settings.project_root)} (the whole job; "
                 "`az ml job create --file` takes it too)")
    return "\n".join(lines)
