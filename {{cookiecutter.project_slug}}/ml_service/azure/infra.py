"""environment_setup/main.bicep through the Azure CLI: what-if first, then create.

    deploy_infrastructure(settings)                  az deployment group what-if
    deploy_infrastructure(settings, what_if=False)   what-if, then create, then the outputs
    dry_run=True prints the exact commands and runs nothing.

Before anything runs, the values main.bicepparam shares with mlops.toml are compared
(workspace, registry, compute), since a difference means the pipeline would look
for resources under names the deployment did not use.
"""
import json
import re
import shlex
import subprocess

from ml_service import report
from ml_service.errors import MlopsError

DEPLOYMENT_NAME = "environment-setup"
TEMPLATE = "environment_setup/main.bicep"
PARAMETERS = "environment_setup/main.bicepparam"
# Bicep names fixed in main.bicep, not parameters.
BICEP_COMPUTE_NAME = "cpu-cluster"
PARAM = re.compile(r"^param\s+(\w+)\s*=\s*(?:'([^']*)'|(\d+)|(true|false))\s*$", re.M)


def bicep_parameters(settings):
    """The literal values set in main.bicepparam (strings, integers, booleans)."""
    text = (settings.project_root / PARAMETERS).read_text()
    values = {}
    for name, string, number, boolean in PARAM.findall(text):
        values[name] = string if number == "" and boolean == "" else (
            int(number) if number else boolean == "true")
    return values


def mismatches(settings):
    """Where main.bicepparam and mlops.toml disagree, one line each."""
    params = bicep_parameters(settings)
    azure = settings.azure
    registry = settings.image.registry.split(".", 1)[0]
    pairs = [
        ("workspaceName", params.get("workspaceName"), "[azure] workspace_name",
         azure.workspace_name),
        ("registryName", params.get("registryName"), "[image] registry", registry),
        ("computeVmSize", params.get("computeVmSize"), "[azure] compute_vm_size",
         azure.compute_vm_size),
        ("computeMaxNodes", params.get("computeMaxNodes"), "[azure] compute_max_nodes",
         azure.compute_max_nodes),
        ("(compute name)", BICEP_COMPUTE_NAME, "[azure] compute_name", azure.compute_name),
        ("location", params.get("location"), "[azure] location", azure.location),
    ]
    return [f"main.bicepparam {bicep} = {value!r} but mlops.toml {key} = {ours!r}"
            for bicep, value, key, ours in pairs if value is not None and value != ours]


def commands(settings):
    """The az commands: what-if, create, and the outputs query."""
    azure = settings.azure
    common = ["--subscription", azure.subscription_id, "--resource-group", azure.resource_group,
              "--name", DEPLOYMENT_NAME]
    files = ["--template-file", TEMPLATE, "--parameters", PARAMETERS]
    return {
        "what-if": ["az", "deployment", "group", "what-if", *common, *files],
        "create": ["az", "deployment", "group", "create", *common, *files],
        "outputs": ["az", "deployment", "group", "show", *common,
                    "--query", "properties.outputs", "--output", "json"],
    }


def _explain(command, stderr, settings):
    text = " ".join((stderr or "").split())[-800:] or "(no error output)"
    lowered = text.lower()
    azure = settings.azure
    if "az login" in lowered or "not logged in" in lowered:
        fix = (f"Sign in: `az login`, then `az account set --subscription "
               f"{azure.subscription_id}`.")
    elif "resourcegroupnotfound" in lowered:
        fix = (f"Create the resource group once: `az group create --name "
               f"{azure.resource_group} --location {azure.location}`.")
    elif "authorizationfailed" in lowered or "does not have authorization" in lowered:
        fix = ("Deploying needs Owner, or Contributor plus Role Based Access Control "
               "Administrator, on the resource group (it creates role assignments).")
    elif "missingsubscriptionregistration" in lowered:
        fix = ("Register the resource providers once per subscription (the `az provider "
               "register` loop in environment_setup/README.md).")
    elif "bicep" in lowered and ("not found" in lowered or "install" in lowered):
        fix = "Install Bicep: `az bicep install` (Azure CLI 2.61+ brings it along)."
    else:
        fix = "Fix the error above; `az deployment group show` and the portal's deployment " \
              "history have the details."
    return MlopsError(f"`{shlex.join(command)}` failed: {text}", fix)


def deploy_infrastructure(settings, what_if=True, dry_run=False, run=subprocess.run):
    """Preview (what-if) or apply environment_setup/main.bicep; return the outputs if applied."""
    steps = commands(settings)
    differences = mismatches(settings)
    for line in differences:
        print(f"infra: warning: {line}")
    chosen = ["what-if"] if what_if else ["what-if", "create", "outputs"]
    if dry_run:
        print("infra: dry run, nothing is sent to Azure. The commands, from "
              f"{settings.project_root}:")
        for name in chosen:
            print(f"  {shlex.join(steps[name])}")
        return None
    outputs = None
    for name in chosen:
        command = steps[name]
        print(f"infra: {shlex.join(command)}", flush=True)
        capture = {"stdout": subprocess.PIPE} if name == "outputs" else {}
        try:
            result = run(command, cwd=settings.project_root, stderr=subprocess.PIPE, text=True,
                         check=False, **capture)
        except FileNotFoundError:
            raise MlopsError("The Azure CLI (`az`) is not installed.",
                             "Install it (2.61 or newer, it brings Bicep): "
                             "https://learn.microsoft.com/cli/azure/install-azure-cli") from None
        if result.returncode != 0:
            raise _explain(command, result.stderr, settings)
        if name == "outputs":
            outputs = {key: item.get("value") for key, item in
                       json.loads(result.stdout or "{}").items()}
    if what_if:
        report.publish("infra", "what-if shown above; nothing was changed. Apply it with "
                       "`python -m ml_service infra --apply`.", {"applied": "false"})
        return None
    report.publish("infra", f"deployment {DEPLOYMENT_NAME} applied to resource group "
                   f"{settings.azure.resource_group}",
                   {"applied": "true", **{key: value for key, value in outputs.items()
                                          if isinstance(value, (str, int))}})
    _compare_outputs(settings, outputs)
    return outputs


def _compare_outputs(settings, outputs):
    """Say which mlops.toml values the deployment's outputs contradict."""
    expected = {
        "workspaceName": ("[azure] workspace_name", settings.azure.workspace_name),
        "computeName": ("[azure] compute_name", settings.azure.compute_name),
        "registryLoginServer": ("[image] registry", settings.image.registry),
    }
    for output, (key, ours) in expected.items():
        value = outputs.get(output)
        if value is not None and value != ours:
            print(f"infra: warning: the deployment output {output} is {value!r} but "
                  f"mlops.toml {key} is {ours!r}: set {key} = {value!r}")
    if outputs.get("ciClientId"):
        print(f"infra: CI signs in as client id {outputs['ciClientId']} (AZURE_CLIENT_ID); "
              "see environment_setup/README.md for the CI's repository variables.")
