"""Play one Azure Pipelines job's own steps here, in order, as an agent runs them: the
Azure Pipelines counterpart of tests/ci/test_harness.py's GitHub runner.

Templates are expanded as tests/ci/test_definitions.py expands them; each step's
`condition:` is evaluated (and, or, not, eq, ne and the status functions over
`variables['...']`); `$(name)` macros in script text are replaced by the variables set
so far, predefined ones included, and an unknown macro stays as written, as the agent
leaves it; `script:` and AzureCLI@2 inline scripts run with bash in the checkout, with
the variables as environment variables (upper case, dots as underscores) plus the
step's `env:`. `##vso[task.setvariable ...]` lines set variables (an output variable as
<step name>.<variable>). Skipped by rule, and recorded as such: `checkout` and
`download` (the test makes the checkout), tasks other than AzureCLI@2 (UsePythonVersion,
Cache: this interpreter is the Python) and `pip install`; AzureCLI@2 runs its script
without the Azure sign-in. The harness's substitutions (local backend and targets) are
given as variables of the run, which win over the pipeline's own.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.ci.test_definitions import azure_expanded_steps, azure_variables

STEP_TIMEOUT = 300
SET_VARIABLE = re.compile(r"##vso\[task\.setvariable variable=([^;\]]+)((?:;[^\]]*)?)\](.*)")
MACRO = re.compile(r"\$\(([A-Za-z_][\w.]*)\)")
CONDITION_TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<name>[A-Za-z_][\w.]*)"
                             r"|(?P<punct>[(),\[\]]))")


def _tokens(text):
    position, tokens = 0, []
    text = text.strip()
    while position < len(text):
        match = CONDITION_TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ValueError(f"cannot parse condition {text!r} at {text[position:]!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    return tokens


def condition_holds(condition, variables, failed):
    """An Azure Pipelines condition; without one, `succeeded()`."""
    tokens = _tokens(condition or "succeeded()")

    def value():
        kind, token = tokens.pop(0)
        if kind == "string":
            return token[1:-1].replace("''", "'")
        if token == "variables":
            assert tokens.pop(0)[1] == "["
            name = value()
            assert tokens.pop(0)[1] == "]"
            return variables.get(name, "")
        assert tokens.pop(0)[1] == "(", f"{token} is not a function call"
        arguments = []
        while tokens[0][1] != ")":
            arguments.append(value())
            if tokens[0][1] == ",":
                tokens.pop(0)
        tokens.pop(0)
        functions = {"succeeded": lambda: not failed, "failed": lambda: failed,
                     "succeededOrFailed": lambda: True, "always": lambda: True,
                     "and": lambda *a: all(a), "or": lambda *a: any(a),
                     "not": lambda a: not a,
                     "eq": lambda a, b: str(a).casefold() == str(b).casefold(),
                     "ne": lambda a, b: str(a).casefold() != str(b).casefold()}
        if token not in functions:
            raise ValueError(f"the player does not know the function {token}()")
        return functions[token](*arguments)

    result = value()
    assert not tokens, f"unexpected {tokens} in {condition!r}"
    return bool(result)


class AzureJob:
    """Plays the steps of `pipeline` (one job) in `workspace`; records what happened."""

    def __init__(self, pipeline, workspace, variables, secrets):
        """`variables`: predefined ones and those given when the run was queued (they win
        over the pipeline's); `secrets`: secret variables, which reach a script only
        through a step's `env:` or a macro."""
        self.pipeline = Path(pipeline)
        self.workspace = workspace
        self.variables = {**azure_variables(), **variables}
        self.secrets = secrets
        self.records = {}  # display name: what happened
        self.failed = False

    def environment(self, step):
        inherited = ("MLOPS_", "MLFLOW_", "GITHUB_", "PYTEST_", "TF_BUILD", "SYSTEM_",
                     "BUILD_")
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(inherited)}
        env.pop("PYTHONPATH", None)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
        env.update({name.upper().replace(".", "_"): value
                    for name, value in self.variables.items()})
        env.update({name: self.expand(str(value)) for name, value in step.get("env", {}).items()})
        env["TF_BUILD"] = "True"
        return env

    def expand(self, text):
        known = {**self.variables, **self.secrets}
        return MACRO.sub(lambda match: known.get(match.group(1), match.group(0)), text)

    def run(self):
        for _, step, _ in azure_expanded_steps(self.pipeline):
            name = step.get("displayName") or step.get("name") or next(iter(step))
            if not condition_holds(step.get("condition"), self.variables, self.failed):
                self.records[name] = "skipped by its condition"
                continue
            task = str(step.get("task", ""))
            if "checkout" in step or "download" in step:
                self.records[name] = "skipped: checkout"
            elif task and not task.startswith("AzureCLI@"):
                self.records[name] = "skipped: task"
            elif re.match(r"\s*python3? -m pip install\b", step.get("script", "")):
                self.records[name] = "skipped: install"
            else:
                script = step["inputs"]["inlineScript"] if task else step["script"]
                self.run_script(name, step, self.expand(script))
        return self

    def run_script(self, name, step, script):
        result = subprocess.run(["bash", "--noprofile", "--norc", "-c", script],
                                cwd=self.workspace, env=self.environment(step),
                                capture_output=True, text=True, timeout=STEP_TIMEOUT,
                                stdin=subprocess.DEVNULL)
        for variable, options, value in SET_VARIABLE.findall(result.stdout):
            output = "isOutput=true" in options
            self.variables[f"{step['name']}.{variable}" if output else variable] = value
        self.failed |= result.returncode != 0
        self.records[name] = "ran" if result.returncode == 0 else (
            f"FAILED with exit {result.returncode}:\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-3000:]}")
