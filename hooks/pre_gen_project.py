"""Validate every prompt answer before cookiecutter writes a single file.

Rules follow Azure's published naming rules, so a bad name fails here, at
generation time, instead of twenty minutes into a first deployment.
On failure the hook exits 1 before any template file is rendered, and cookiecutter
removes the project folder it had just created.
"""
import json
import re
import sys
import tempfile
from pathlib import Path

ANSWERS = json.loads(r"""{{ cookiecutter | jsonify }}""")

# `az account list-locations --query "[].name"` (physical regions).
AZURE_LOCATIONS = frozenset("""
australiacentral australiacentral2 australiaeast australiasoutheast austriaeast
belgiumcentral brazilsouth brazilsoutheast canadacentral canadaeast centralindia
centralus chilecentral eastasia eastus eastus2 francecentral francesouth
germanynorth germanywestcentral indonesiacentral israelcentral italynorth
japaneast japanwest jioindiacentral jioindiawest koreacentral koreasouth
malaysiawest mexicocentral newzealandnorth northcentralus northeurope
norwayeast norwaywest polandcentral qatarcentral southafricanorth
southafricawest southcentralus southindia southeastasia spaincentral
swedencentral swedensouth switzerlandnorth switzerlandwest uaecentral uaenorth
uksouth ukwest westcentralus westeurope westindia westus westus2 westus3
""".split())

# Azure ML model names (letters, digits, '-', '_', '.') that are also valid Docker
# image repositories once lowercased (the scoring image is named after the model):
# Docker allows '.', '_', '__' or runs of '-' only between letters and digits.
# 63, not Azure ML's 255: paths are built from the name (build/images/<name>-v<N>, and
# 255 already exceeds a file name's limit) and so is the image reference, which Docker
# caps at 255 characters including the registry host.
MODEL_NAME_PATTERN = r"(?=.{1,63}\Z)[A-Za-z0-9]+(?:(?:[._]|__|-+)[A-Za-z0-9]+)*"
MODEL_NAME_RULE = (
    "1-63 characters: letters and digits, separated by a single '.' or '_', by '__' or by "
    "hyphens, so it starts and ends with a letter or digit (Azure ML's model naming rule "
    "and Docker's image naming rule: the scoring image is named after the lowercased "
    "model name)"
)

# Free text is escaped wherever it lands; it must still be one line (it is also written
# into comments and headings) and hold no template syntax: cookiecutter renders answers
# as templates, so the answers recorded in .cookiecutter.json could not be reused.
TEXT_FIELDS = {"project_name": "Diabetes MLOps", "author": "Jane Doe"}
# This file is rendered before it runs, so the braces in TEXT_RULE are Jinja expressions.
TEXT_RULE = ("one line of text: not blank, no control characters or line breaks, and no "
             "'{{ '{{' }}', '{{ '{%' }}' or '{{ '{#' }}' (cookiecutter would read them as "
             "template syntax when the recorded answers are reused)")
NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]|\{[#%{]")

# field: (pattern, rule in words, valid example)
RULES = {
    "project_slug": (
        r"[a-z][a-z0-9-]{1,27}[a-z0-9]",
        "3-29 characters: lowercase letters, digits and hyphens, starting with a letter "
        "and not ending with a hyphen (it prefixes Azure resource names and the image name; "
        "29 keeps the default workspace name 'mlw-<slug>' within Azure's 33)",
        "diabetes-mlops",
    ),
    # The same rule as MODEL_NAME_PATTERN / MODEL_NAME_RULE in ml_service/config.py.
    "model_name": (MODEL_NAME_PATTERN, MODEL_NAME_RULE, "diabetes-model"),
    "azure_workspace_name": (
        r"[A-Za-z0-9][A-Za-z0-9_-]{2,32}",
        "3-33 characters: letters, digits, '-' and '_', starting with a letter or digit "
        "(Azure ML workspace naming rule)",
        "mlw-diabetes",
    ),
    "azure_subscription_id": (
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        "a GUID as printed by `az account show --query id -o tsv`",
        "3f2c9a1e-8b7d-4c6e-9f0a-1b2c3d4e5f60",
    ),
    "azure_resource_group": (
        r"[\w().-]{0,89}[\w()-]",
        "1-90 characters: letters, digits, '_', '-', '.', '(' and ')', not ending with '.' "
        "(Azure resource group naming rule)",
        "rg-diabetes-mlops",
    ),
    "python_version": (r"3\.1[1-9]", "Python 3.11 or newer", "3.11"),
}


def problems(answers):
    """Return one message per invalid answer."""
    found = []
    for field, (pattern, rule, example) in RULES.items():
        value = answers[field]
        if not re.fullmatch(pattern, value):
            found.append(f"{field}={value!r} is invalid: {rule}. Example: {example!r}.")
    for field, example in TEXT_FIELDS.items():
        value = answers[field]
        if not value.strip() or NOT_TEXT.search(value):
            found.append(f"{field}={value!r} is invalid: {TEXT_RULE}. Example: {example!r}.")
    location = answers["azure_location"]
    if location not in AZURE_LOCATIONS:
        found.append(
            f"azure_location={location!r} is not an Azure region name: use the programmatic "
            "name from `az account list-locations -o table` (lowercase, no spaces). "
            "Example: 'westeurope'."
        )
    slug = answers["project_slug"]
    registry = slug.replace("-", "") + "acr"
    if len(registry) < 5 or len(registry) > 50:
        found.append(
            f"project_slug={slug!r} gives container registry name {registry!r}, which must "
            "be 5-50 letters and digits. Example: 'diabetes-mlops'."
        )
    return found


def main():
    found = problems(ANSWERS)
    if found:
        print("ERROR: the project was not generated because some answers are invalid:",
              file=sys.stderr)
        for message in found:
            print(f"  - {message}", file=sys.stderr)
        print("Run cookiecutter again with corrected answers (or pass them as "
              "key=value arguments).", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    # cookiecutter (2.7.1) runs a rendered copy of this hook from the temporary folder and
    # never removes it: one file with the answers per generation. Removed first, whatever
    # the hook decides; never the template's own file, run by hand.
    if Path(__file__).resolve().parent == Path(tempfile.gettempdir()).resolve():
        Path(__file__).unlink(missing_ok=True)
    main()
