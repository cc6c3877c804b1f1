"""Structural checks of the Bicep in environment_setup/, offline.

There is no Bicep compiler here: pycep-parser parses every file (a syntax
check), and these tests check what a compile would let through or what would
only fail on Azure: module wiring, unused parameters, the parameter file,
API versions, role ids, and every resource name against Azure's naming rules.
`az bicep build` and `az deployment group what-if` remain the final word.
"""
import base64
import hashlib
import re
import tomllib

import pytest
import yaml
from pycep import BicepParser

from tests.helpers.project import PROJECT_ROOT

SETUP = PROJECT_ROOT / "environment_setup"
MAIN = SETUP / "main.bicep"
PARAMS_FILE = SETUP / "main.bicepparam"
BICEP_FILES = sorted(SETUP.rglob("*.bicep"))

SETTINGS = tomllib.loads((PROJECT_ROOT / "mlops.toml").read_text())
AZURE = SETTINGS["azure"]

# Built-in role definition ids the templates may use (Azure's ids are the same in every tenant).
BUILTIN_ROLES = {
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": "AcrPull",
    "8311e382-0749-4cb8-b61a-304f252e45ec": "AcrPush",
    "f6c7c914-8db3-469d-8ca1-694a8f32e121": "AzureML Data Scientist",
    "5d977122-f97e-4b4d-a52f-6b43003ddb4d": "Azure Container Instances Contributor Role",
    "f1a07417-d97a-45cb-824c-7a7467783830": "Managed Identity Operator",
    "4abbcc35-e782-43d8-92c5-2d3f1bd2253f": "Azure Kubernetes Service Cluster User Role",
    "a7ffa36f-339b-4b5c-8bdf-e2c188b2c0eb": "Azure Kubernetes Service RBAC Writer",
    "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b": "Azure Kubernetes Service RBAC Cluster Admin",
    "92aaf0da-9dab-42b6-94a3-d43ce8d16293": "Log Analytics Contributor",
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)

# Azure naming rules of every name main.bicep builds (its `var ...Name`) or takes as a parameter.
NAME_RULES = {
    "workspaceName": r"[A-Za-z0-9][A-Za-z0-9_-]{2,32}",
    "registryName": r"[A-Za-z0-9]{5,50}",
    "logAnalyticsName": r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]",
    "appInsightsName": r"[^%&\\?/]{1,260}",
    "storageAccountName": r"[a-z0-9]{3,24}",
    "keyVaultName": r"(?!.*--)[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]",
    "computeName": r"[A-Za-z][A-Za-z0-9-]{0,14}[A-Za-z0-9]",
    # Also the cluster's DNS prefix: 1-54 characters.
    "aksName": r"[A-Za-z0-9][A-Za-z0-9-]{0,52}[A-Za-z0-9]",
    "aksNodeResourceGroupName": r"[\w().-]{0,79}[\w()-]",
    # Flux names its Kubernetes objects <configuration>-<kustomization>: DNS labels.
    "fluxConfigurationName": r"[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?",
    "ciIdentityName": r"[A-Za-z0-9][A-Za-z0-9_-]{2,127}",
    "aciPullIdentityName": r"[A-Za-z0-9][A-Za-z0-9_-]{2,127}",
}


# --- a small evaluator for the Bicep expressions that build names ------------------------------

TOKEN = re.compile(r"""
    (?P<space>[ \t\r]+|//[^\n]*)
  | (?P<newline>\n)
  | (?P<number>\d+)
  | (?P<name>[A-Za-z_]\w*)
  | (?P<punct>[()\[\]{},.:])
""", re.VERBOSE)


def string_end(text, start):
    """Index after the string literal at text[start] (a quote), skipping ${...} parts."""
    position = start + 1
    while text[position] != "'":
        if text[position] == "\\":
            position += 2
        elif text.startswith("${", position):
            position = interpolation_end(text, position)
        else:
            position += 1
    return position + 1


def interpolation_end(text, start):
    """Index after the `${...}` at text[start], skipping the strings nested in it."""
    depth, position = 1, start + 2
    while depth:
        if text[position] == "'":
            position = string_end(text, position) - 1
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        position += 1
    return position


def tokenize(text):
    tokens, position = [], 0
    while position < len(text):
        if text[position] == "'":
            end = string_end(text, position)
            tokens.append(("string", text[position:end]))
            position = end
            continue
        match = TOKEN.match(text, position)
        if not match:
            raise SyntaxError(f"cannot read {text[position:position + 30]!r}")
        position = match.end()
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group()))
    return tokens


def unique_string(*values):
    """Stand-in for Bicep's uniqueString(): 13 lowercase letters and digits, deterministic."""
    digest = hashlib.sha256("|".join(values).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:13]


def split_interpolation(literal):
    """'a${b}c' -> ['a', ('b',), 'c']: text parts and expression sources."""
    parts, position, end = [], 1, len(literal) - 1
    while (start := literal.find("${", position, end)) >= 0:
        close = interpolation_end(literal, start)
        parts += [literal[position:start], (literal[start + 2:close - 1],)]
        position = close
    return [part.replace("\\'", "'") if isinstance(part, str) else part
            for part in parts + [literal[position:end]]]


class Evaluator:
    """Evaluates literals, names, interpolation, property access and a few functions."""

    def __init__(self, names, resource_group):
        self.names = names
        self.resource_group = resource_group
        self.functions = {
            "take": lambda value, count: value[:count],
            "replace": lambda value, old, new: value.replace(old, new),
            "toLower": str.lower,
            "uniqueString": unique_string,
            "resourceGroup": lambda: resource_group,
            "readEnvironmentVariable": lambda name, default="": default,
        }

    def evaluate(self, source):
        self.tokens, self.position = tokenize(source), 0
        value = self.expression()
        self.skip_separators()
        if self.position != len(self.tokens):
            raise SyntaxError(f"unexpected {self.tokens[self.position]} in {source!r}")
        return value

    def peek(self):
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def take(self, expected=None):
        kind, text = self.tokens[self.position]
        if expected is not None and text != expected:
            raise SyntaxError(f"expected {expected!r}, got {text!r}")
        self.position += 1
        return kind, text

    def skip_separators(self):
        while self.peek() in ("\n", ","):
            self.position += 1

    def expression(self):
        value = self.primary()
        while self.peek() in (".", "("):
            if self.take()[1] == ".":
                value = value[self.take()[1]]
            else:
                value = value(*self.items(")"))
        return value

    def items(self, closing):
        """Comma- or newline-separated expressions up to `closing`."""
        values = []
        self.skip_separators()
        while self.peek() != closing:
            values.append(self.expression())
            self.skip_separators()
        self.take(closing)
        return values

    def primary(self):
        kind, text = self.take()
        if kind == "string":
            return "".join(
                part if isinstance(part, str)
                else str(Evaluator(self.names, self.resource_group).evaluate(part[0]))
                for part in split_interpolation(text))
        if kind == "number":
            return int(text)
        if text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        if text == "[":
            return self.items("]")
        if text == "{":
            values = {}
            self.skip_separators()
            while self.peek() != "}":
                key = self.take()[1].strip("'")
                self.take(":")
                values[key] = self.expression()
                self.skip_separators()
            self.take("}")
            return values
        if kind == "name":
            return self.functions[text] if self.peek() == "(" else self.names[text]
        raise SyntaxError(f"unexpected {text!r}")


def read_params_file():
    """`using` target and the parameter values of main.bicepparam."""
    text = PARAMS_FILE.read_text()
    using = re.search(r"^using '([^']+)'", text, re.M).group(1)
    statements = re.split(r"^param\s+", text, flags=re.M)[1:]
    sources = dict(re.match(r"(\w+)\s*=\s*(.*)", s, re.S).groups() for s in statements)
    return using, sources


def evaluate_names(param_values, resource_group_name, location):
    """Parameter values plus every single-line `var` of main.bicep, evaluated in order."""
    resource_group = {
        "id": f"/subscriptions/{AZURE['subscription_id']}/resourceGroups/{resource_group_name}",
        "name": resource_group_name,
        "location": location,
    }
    names = dict(param_values)
    for name, source in re.findall(r"^var (\w+) = (.+)$", MAIN.read_text(), re.M):
        try:
            names[name] = Evaluator(names, resource_group).evaluate(source)
        except (SyntaxError, KeyError, IndexError, TypeError):
            if name in NAME_RULES:  # other vars may use what this evaluator does not know
                raise
    return names


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def parsed():
    parser = BicepParser()
    return {path: parser.parse(file_path=path) for path in BICEP_FILES}


@pytest.fixture(scope="module")
def param_values():
    _, sources = read_params_file()
    evaluator = Evaluator({}, {})
    return {name: evaluator.evaluate(source) for name, source in sources.items()}


def body(declaration):
    """The object of a resource or module, inside its `if (...)` or `[for ...]`."""
    config = declaration["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def is_required(parameter):
    return parameter["default"] is None and not str(parameter["type"]).endswith("?")


def strip_comments_descriptions_and_keys(text):
    """What is left can mention a parameter only by using it."""
    text = re.sub(r"^\s*@description\(.*\)\s*$", "", text, flags=re.M)
    text = re.sub(r"^(\s*)\w+:", r"\1", text, flags=re.M)
    return re.sub(r"//[^\n]*", "", text)


# --- tests ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(SETUP)))
def test_bicep_file_parses(path):
    BicepParser().parse(file_path=path)


def test_modules_exist_and_get_exactly_their_parameters(parsed):
    used = set()
    for path, template in parsed.items():
        for symbol, module in template.get("modules", {}).items():
            target = (path.parent / module["detail"]["path"]).resolve()
            assert target in parsed, f"{path.name}: module {symbol} -> missing {target}"
            used.add(target)
            declared = parsed[target]["parameters"]
            passed = set(body(module).get("params", {}))
            assert passed <= set(declared), f"{symbol}: unknown {passed - set(declared)}"
            required = {name for name, p in declared.items() if is_required(p)}
            assert required <= passed, f"{symbol}: missing {required - passed}"
    assert used == {path.resolve() for path in BICEP_FILES if path != MAIN}, "unused modules"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(SETUP)))
def test_every_parameter_is_used(parsed, path):
    text = strip_comments_descriptions_and_keys(path.read_text())
    for name in parsed[path]["parameters"]:
        uses = re.findall(rf"(?<![\w.]){name}\b", text)
        assert len(uses) >= 2, f"{path.name}: parameter {name} is declared but never used"


def test_params_file_sets_declared_parameters_within_their_limits(parsed, param_values):
    using, _ = read_params_file()
    assert (PARAMS_FILE.parent / using).resolve() == MAIN.resolve()
    declared = parsed[MAIN]["parameters"]
    assert set(param_values) <= set(declared), set(param_values) - set(declared)
    required = {name for name, p in declared.items() if is_required(p)}
    assert required <= set(param_values), f"required but not set: {required - set(param_values)}"
    checks = {
        "allowed": lambda value, allowed: value in allowed,
        "min_length": lambda value, limit: len(value) >= limit,
        "max_length": lambda value, limit: len(value) <= limit,
        "min_value": lambda value, limit: value >= limit,
        "max_value": lambda value, limit: value <= limit,
    }
    for name, value in param_values.items():
        for decorator in declared[name]["decorators"]:
            check = checks.get(decorator["type"])
            assert check is None or check(value, decorator["argument"]), (
                f"{name}={value!r} violates @{decorator['type']}({decorator['argument']})")


def test_params_file_matches_the_project_settings(param_values):
    assert param_values["workspaceName"] == AZURE["workspace_name"]
    assert param_values["location"] == AZURE["location"]


def test_registry_is_the_one_images_are_pushed_to_and_pulled_from(param_values):
    login_server = f"{param_values['registryName']}.azurecr.io"
    assert SETTINGS["image"]["registry"] == login_server, "mlops.toml [image] registry"
    deployment = yaml.safe_load((PROJECT_ROOT / "deploy/base/deployment.yaml").read_text())
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split("/")[0] == login_server, "deploy/base/deployment.yaml"


def test_api_versions_are_stable_and_one_per_type(parsed):
    versions = {}
    for path, template in parsed.items():
        for symbol, resource in template.get("resources", {}).items():
            version = resource["api_version"]
            assert re.fullmatch(r"20(2\d)-\d\d-\d\d", version), (
                f"{path.name}: {symbol} uses {resource['type']}@{version}: "
                "use a stable (non-preview) API version from 2020 on")
            versions.setdefault(resource["type"], set()).add(version)
    mixed = {kind: found for kind, found in versions.items() if len(found) > 1}
    assert not mixed, f"one API version per resource type, please: {mixed}"


def test_role_ids_are_known_builtin_roles():
    for path in BICEP_FILES:
        for guid in GUID.findall(path.read_text()):
            assert guid.lower() in BUILTIN_ROLES, f"{path.name}: unknown role id {guid}"


def test_role_assignment_names_are_deterministic(parsed):
    for path, template in parsed.items():
        for symbol, resource in template.get("resources", {}).items():
            if resource["type"] == "Microsoft.Authorization/roleAssignments":
                name = body(resource)["name"]
                function = name.get("function", {}) if isinstance(name, dict) else {}
                assert function.get("type") == "guid", (
                    f"{path.name}: {symbol} must be named with guid(scope, principal, role) "
                    "so that a second deployment updates it instead of failing")


def test_no_role_assignment_repeats_one_azure_ml_makes_itself():
    # Azure ML grants a workspace's compute identity AcrPull on the workspace registry;
    # a second assignment of the same principal, role and scope fails the whole
    # deployment with RoleAssignmentExists.
    text = (SETUP / "modules" / "workspace.bicep").read_text()
    assert "roleAssignments" not in text
    assert "compute.identity.principalId" not in text


def test_flux_follows_the_production_overlay(parsed):
    (flux,) = [resource for resource in parsed[SETUP / "modules/aks.bicep"]["resources"].values()
               if resource["type"] == "Microsoft.KubernetesConfiguration/fluxConfigurations"]
    kustomizations = body(flux)["properties"]["kustomizations"]
    assert kustomizations["production"]["path"] == "./deploy/overlays/production"
    assert (PROJECT_ROOT / "deploy/overlays/production/kustomization.yaml").is_file()


def test_flux_grants_the_ci_identity_its_read_of_flux(parsed):
    """deploy/flux/ci-access binds ${CI_PRINCIPAL_ID}: the Flux configuration applies it
    with the CI identity's object id (tests/targets/test_aks.py checks the Role)."""
    aks_module = parsed[SETUP / "modules/aks.bicep"]
    (flux,) = [resource for resource in aks_module["resources"].values()
               if resource["type"] == "Microsoft.KubernetesConfiguration/fluxConfigurations"]
    access = body(flux)["properties"]["kustomizations"]["access"]
    assert access["path"] == "./deploy/flux/ci-access"
    assert access["postBuild"]["substitute"] == {"CI_PRINCIPAL_ID": "ciPrincipalId"}
    assert "${CI_PRINCIPAL_ID}" in (
        PROJECT_ROOT / "deploy/flux/ci-access/rolebinding.yaml").read_text()
    text = (SETUP / "main.bicep").read_text()
    assert "ciPrincipalId: identities.outputs.ciPrincipalId" in text


def test_outputs_the_project_needs(parsed):
    assert {"workspaceName", "computeName", "registryLoginServer", "aksName", "ciClientId",
            "aciPullIdentityId", "tenantId", "subscriptionId"} <= set(parsed[MAIN]["outputs"])


def test_every_name_has_a_naming_rule():
    built = set(re.findall(r"^var (\w+Name) = ", MAIN.read_text(), re.M))
    assert built <= set(NAME_RULES), f"add Azure naming rules for {built - set(NAME_RULES)}"


LONGEST_SLUGS = ("a" * 29, "ab-" * 9 + "ab", "abc")  # the hook allows 3-29 characters


@pytest.mark.parametrize("slug", (None,) + LONGEST_SLUGS, ids=lambda s: s or "project")
def test_names_fit_azure_rules(param_values, slug):
    """This project's names, and those of the longest (and shortest) slugs with a 90-character
    resource group: long slugs must never produce an invalid storage account or vault name."""
    values = dict(param_values)
    resource_group = AZURE["resource_group"]
    if slug is not None:
        values.update(projectSlug=slug, registryName=slug.replace("-", "") + "acr")
        resource_group = ("rg-" + slug + "-" * 90)[:89] + "x"
    names = evaluate_names(values, resource_group, values["location"])
    for name, rule in NAME_RULES.items():
        assert re.fullmatch(rule, names[name]), f"{name}={names[name]!r} breaks {rule}"


def test_aks_sends_container_logs_to_the_monitoring_workspace(parsed):
    """Container Insights (the monitoring addon and its data collection rule) sends the
    scoring servers' stdout, the prediction records `monitor` reads, to Log Analytics."""
    resources = parsed[SETUP / "modules/aks.bicep"]["resources"]
    text = (SETUP / "modules/aks.bicep").read_text()
    types = {resource["type"] for resource in resources.values()}
    assert {"Microsoft.Insights/dataCollectionRules",
            "Microsoft.Insights/dataCollectionRuleAssociations"} <= types
    assert "omsagent" in text and "logAnalyticsWorkspaceResourceID: logAnalyticsWorkspaceId" in text
    assert "enableContainerLogV2: true" in text
    main = MAIN.read_text()
    assert "logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId" in main
    assert "logAnalyticsName: monitoring.outputs.logAnalyticsName" in main


def test_monitor_queries_the_workspace_environment_setup_creates():
    assert "var logAnalyticsName = 'log-${projectSlug}'" in MAIN.read_text()
    settings = tomllib.loads((PROJECT_ROOT / "mlops.toml").read_text())
    slug = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert settings["monitoring"]["log_analytics_workspace"] == f"log-{slug}"
