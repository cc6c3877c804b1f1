"""Prediction records of the Azure targets, from the Log Analytics workspace.

score.py prints each record on stdout; on AKS, Container Insights collects it into the
ContainerLogV2 table, on ACI the container group's diagnostics into
ContainerInstanceLog_CL (environment_setup/). The query runs through the Azure CLI
(`az monitor log-analytics query`), signed in as CI already is (azure/login with OIDC):
no new Python dependency, and `--dry-run` can show the exact commands.
"""
import json
import subprocess

import yaml

from ml_service.errors import MlopsError
from ml_service.monitoring.prediction_log import MARKER
from ml_service.monitoring.records import parse_lines

# ContainerInstanceLog_CL's columns the query reads, as an empty table.
ACI_EMPTY_TABLE = "datatable(TimeGenerated: datetime, ContainerGroup_s: string, Message: string)[]"


def query_text(settings, target, max_records, hours):
    """The KQL query for `target`'s newest records: (table filter per kind) newest first."""
    kind = settings.target_settings(target).kind
    if kind == "aks":
        overlay = settings.project_root / "deploy" / "overlays" / target / "kustomization.yaml"
        namespace = yaml.safe_load(overlay.read_text())["namespace"]
        source = (f"ContainerLogV2 | where PodNamespace == '{namespace}' "
                  "| extend Line = tostring(LogMessage)")
    elif kind == "aci":
        group = settings.target_settings(target).dns_label  # the container group's name
        # The custom table exists only once the first logs arrived (up to 10 minutes after
        # the first deploy): a fuzzy union with an empty table of the same columns makes a
        # missing table "no records yet" instead of a KQL error.
        source = (f"union isfuzzy=true ({ACI_EMPTY_TABLE}), ContainerInstanceLog_CL "
                  f"| where ContainerGroup_s == '{group}' | extend Line = Message")
    else:
        raise MlopsError(f"{target} (kind {kind}) does not log to Log Analytics.",
                         "Read its records from .mlops/ instead (records.read_log_files).")
    return (f"{source} | where TimeGenerated > ago({hours:g}h) | where Line has '{MARKER}' "
            f"| project TimeGenerated, Line | order by TimeGenerated desc | take {max_records}")


def commands(settings, target, max_records, hours):
    """The az commands: look up the workspace's id, then query it (the id as {workspace})."""
    azure, workspace = settings.azure, settings.monitoring.log_analytics_workspace
    return [
        ["az", "monitor", "log-analytics", "workspace", "show",
         "--subscription", azure.subscription_id, "--resource-group", azure.resource_group,
         "--workspace-name", workspace, "--query", "customerId", "--output", "tsv"],
        ["az", "monitor", "log-analytics", "query", "--workspace", "{workspace}",
         "--analytics-query", query_text(settings, target, max_records, hours),
         "--output", "json"],
    ]


def _az(command, run):
    try:
        result = run(command, capture_output=True, text=True, check=False, timeout=300)
    except FileNotFoundError:
        raise MlopsError("The Azure CLI (az) is not installed.",
                         "Install it (https://aka.ms/azure-cli) and sign in with `az login`.",
                         ) from None
    except subprocess.TimeoutExpired:
        raise MlopsError(f"`{' '.join(command[:4])}` did not answer within 300 s.",
                         "Check the network and run again.") from None
    if result.returncode != 0:
        text = " ".join(result.stderr.split())[-600:] or "(no output)"
        fix = ("Sign in with `az login` (CI: azure/login with OIDC) and run again."
               if "az login" in text.lower() else
               "Check that environment_setup/ created the workspace ([monitoring] "
               "log_analytics_workspace) and that the signed-in identity may read it "
               "(environment_setup/ gives the CI identity Log Analytics Contributor on it).")
        raise MlopsError(f"`{' '.join(command[:4])}` failed: {text}", fix)
    return result.stdout


def read_records(settings, target, max_records, hours, run=subprocess.run):
    """The prediction records of `target` in the workspace (the newest `max_records`)."""
    show, query = commands(settings, target, max_records, hours)
    workspace_id = _az(show, run).strip()
    output = _az([workspace_id if part == "{workspace}" else part for part in query], run)
    try:
        rows = json.loads(output)
    except ValueError:
        raise MlopsError("`az monitor log-analytics query` answered with something other than "
                         "JSON.", "Run the query yourself (--dry-run shows it).") from None
    return parse_lines(str(row.get("Line", "")) for row in rows if isinstance(row, dict))
