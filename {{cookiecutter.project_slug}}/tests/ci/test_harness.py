"""Run CI's own steps (.github/workflows/ci.yml) here, in order, against the local backend.

The harness plays a push to main: jobs in `needs` order, each job's and step's `if:`
evaluated, every `run:` script executed with `bash -eo pipefail` as the runner does,
in a git copy of this project, with GITHUB_OUTPUT / GITHUB_STEP_SUMMARY / GITHUB_ENV
pointing at temporary files and GitHub expressions (dollar, double braces) evaluated
from the outputs collected so far. So what CI runs is what was tested here, output
names included.

Skipped, by these rules only (the tests assert exactly which steps each rule skipped,
so a new step cannot be skipped silently):
  uses         steps that run an action (checkout, setup-python, azure/login,
               upload-artifact): the copy is the checkout, this interpreter the Python;
  install      `python -m pip install ...`: this environment is already installed;
  unit-tests   `python -m pytest ...`: this harness is itself one of those tests;
  azure-cli    scripts that call the Azure CLI (`az ...`): they need Azure;
  network      the dependency audit: it asks a vulnerability service on the internet
               (tests/test_tooling.py runs it against a local one).
Substituted, also by rule: MLOPS_PIPELINE_BACKEND=local replaces the workflow's azureml,
and `--push` is dropped from build-image (pushing needs the Azure registry).
Expressions are evaluated by tests/helpers/ci_expressions.py, which fails the test on
anything it does not know rather than guessing.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.ci_expressions import condition_holds, render
from tests.helpers.project import PROJECT_ROOT, copy_project

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"

pytestmark = [
    pytest.mark.skipif(not WORKFLOW.is_file(),
                       reason="no .github/ in this project (ci_platform=azure-devops)"),
    pytest.mark.slow,
]

SKIP_RULES = (
    ("install", lambda run: re.match(r"\s*python3? -m pip install\b", run)),
    ("unit-tests", lambda run: re.match(r"\s*python3? -m pytest\b", run)),
    ("azure-cli", lambda run: re.search(r"(?m)^\s*az\s", run)),
    ("network", lambda run: re.match(r"\s*python3? tools/dependency_audit\.py\b", run)),
)
HARNESS_ENV = {"MLOPS_PIPELINE_BACKEND": "local"}
STEP_TIMEOUT = 300


# --- the runner ------------------------------------------------------------------------

def read_outputs(path):
    """name=value lines and name<<DELIMITER blocks, as the runner reads $GITHUB_OUTPUT."""
    outputs = {}
    lines = iter(path.read_text().splitlines()) if path.exists() else iter(())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block = []
            for inner in lines:
                if inner == delimiter:
                    break
                block.append(inner)
            outputs[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def job_order(jobs):
    ordered, pending = [], dict(jobs)
    while pending:
        ready = [job_id for job_id, job in pending.items()
                 if set(_needs(job)) <= set(ordered)]
        assert ready, f"cycle or unknown job in needs: {sorted(pending)}"
        ordered.append(ready[0])
        del pending[ready[0]]
    return ordered


def _needs(job):
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else needs


class Harness:
    """Plays ci.yml for a push to main in `workspace`; records what ran and why not."""

    def __init__(self, workspace, temp, extra_env=None):
        self.workspace = workspace
        self.temp = temp
        self.extra_env = extra_env or {}
        self.records = []  # (job, step name, what happened)
        self.summary = []
        self.needs = {}
        self.durations = {}  # (job, step name): seconds

    def base_env(self):
        # Nothing of the machine's own CI (GitHub, Azure Pipelines) or settings leaks in.
        inherited = ("MLOPS_", "MLFLOW_", "GITHUB_", "PYTEST_", "TF_BUILD")
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(inherited)}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.pop("PYTHONPATH", None)
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=self.workspace, text=True,
                             capture_output=True, check=True).stdout.strip()
        env.update({"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push",
                    "GITHUB_REF": "refs/heads/main", "GITHUB_SHA": sha,
                    "GITHUB_WORKSPACE": str(self.workspace), "RUNNER_TEMP": str(self.temp)})
        return env

    def run(self, workflow):
        env = self.base_env()
        github = {"event_name": "push", "ref": "refs/heads/main", "sha": env["GITHUB_SHA"],
                  "repository": "example/project", "workspace": str(self.workspace),
                  "event": {}}
        for job_id in job_order(workflow["jobs"]):
            job = workflow["jobs"][job_id]
            needs = {name: self.needs[name] for name in _needs(job)}
            contexts = {"github": github, "vars": {}, "inputs": {}, "needs": needs,
                        "env": {}, "runner": {"os": "Linux", "temp": str(self.temp)}}
            contexts["env"] = {name: render(value, contexts, {"failed": False})
                               for name, value in workflow.get("env", {}).items()}
            failed_needs = any(result["result"] != "success" for result in needs.values())
            if not condition_holds(job.get("if"), contexts, {"failed": failed_needs}):
                self.needs[job_id] = {"result": "skipped", "outputs": {}}
                self.records.append((job_id, None, "job skipped by its if"))
                continue
            self.needs[job_id] = self.run_job(job_id, job, contexts, dict(env))
        return self

    def run_job(self, job_id, job, contexts, env):
        contexts["env"].update({name: render(value, contexts, {"failed": False})
                                for name, value in job.get("env", {}).items()})
        contexts["steps"] = {}
        status = {"failed": False}
        for number, step in enumerate(job["steps"]):
            name = step.get("name") or step.get("uses") or step["run"].splitlines()[0]
            step_env = {**contexts["env"],
                        **{key: render(value, contexts, status)
                           for key, value in step.get("env", {}).items()}}
            if not condition_holds(step.get("if"), {**contexts, "env": step_env}, status):
                self._done(contexts, step, job_id, name, "skipped by its if", "skipped")
                continue
            rule = "uses" if "uses" in step else next(
                (rule for rule, matches in SKIP_RULES if matches(step["run"])), None)
            if rule:
                self._done(contexts, step, job_id, name, f"skipped: {rule}", "success")
                continue
            outcome = self.run_step(job_id, number, step, name, contexts, env, step_env)
            status["failed"] |= outcome != "success"
        outputs = {name: render(value, contexts, status)
                   for name, value in job.get("outputs", {}).items()}
        return {"result": "failure" if status["failed"] else "success", "outputs": outputs}

    def _done(self, contexts, step, job_id, name, record, outcome, outputs=None):
        self.records.append((job_id, name, record))
        if "id" in step:
            contexts["steps"][step["id"]] = {"outputs": outputs or {}, "outcome": outcome,
                                             "conclusion": outcome}

    def run_step(self, job_id, number, step, name, contexts, env, step_env):
        files = {key: self.temp / f"{job_id}-{number}-{key.lower()}"
                 for key in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV",
                             "GITHUB_PATH")}
        for path in files.values():
            path.write_text("")
        script = render(step["run"], contexts, {"failed": False})
        if "build-image" in script:
            script = re.sub(r"\s--push\b", "", script)
        script_file = self.temp / f"{job_id}-{number}.sh"
        script_file.write_text(script)
        process_env = {**env, **step_env, **{k: str(v) for k, v in files.items()},
                       **HARNESS_ENV, **self.extra_env}
        started = time.monotonic()
        result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail",
                                 str(script_file)], cwd=self.workspace, env=process_env,
                                capture_output=True, text=True, timeout=STEP_TIMEOUT,
                                stdin=subprocess.DEVNULL)
        self.durations[job_id, name] = round(time.monotonic() - started, 1)
        outcome = "success" if result.returncode == 0 else "failure"
        outputs = read_outputs(files["GITHUB_OUTPUT"])
        self.summary.append(files["GITHUB_STEP_SUMMARY"].read_text())
        env.update(read_outputs(files["GITHUB_ENV"]))
        for line in files["GITHUB_PATH"].read_text().splitlines():
            env["PATH"] = os.pathsep.join([line, env["PATH"]])
        detail = "ran" if outcome == "success" else (
            f"FAILED with exit {result.returncode}:\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-3000:]}")
        self._done(contexts, step, job_id, name, detail, outcome, outputs)
        return outcome


# --- the tests -------------------------------------------------------------------------

@pytest.fixture
def workspace(tmp_path, migrated_database):
    """A fresh checkout of this project: its files, committed, with an empty store."""
    copy = copy_project(tmp_path / "checkout", migrated_database)
    git = ["git", "-c", "user.name=harness", "-c", "user.email=harness@localhost"]
    for command in (["init", "-q", "-b", "main"], ["add", "-A"],
                    ["commit", "-q", "-m", "checkout"]):
        subprocess.run([*git, *command], cwd=copy, check=True, capture_output=True)
    temp = tmp_path / "runner"
    temp.mkdir()
    return copy, temp


def load_workflow():
    class Loader(yaml.SafeLoader):
        pass
    # YAML 1.2 booleans: the `on:` key stays a string.
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    return yaml.load(WORKFLOW.read_text(), Loader=Loader)


def play(workspace, **extra_env):
    copy, temp = workspace
    return Harness(copy, temp, extra_env).run(load_workflow())


def what_happened(harness):
    return {(job, step): record.removeprefix("skipped: ")
            for job, step, record in harness.records}


# Steps each skip rule must skip, by job and name: a change to ci.yml that adds a
# step the harness would not run has to be acknowledged here.
EXPECTED_SKIPS = {
    ("lint-and-test", "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1"): "uses",
    ("lint-and-test", "actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97"):
        "uses",
    ("lint-and-test", "Install"): "install",
    ("lint-and-test", "Unit tests"): "unit-tests",
    ("lint-and-test", "Publish test results and coverage"): "uses",
    ("lint-and-test", "Dependency audit (pip-audit)"): "network",
    ("model", "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1"): "uses",
    ("model", "actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97"): "uses",
    ("model", "Install"): "install",
    ("model", "Sign in to Azure (OIDC, no secret)"): "uses",
    ("model", "actions/upload-artifact@bbbca2ddaa5d8feaa63e36b76fdaad77386f024f"): "uses",
    ("image", "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1"): "uses",
    ("image", "actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97"): "uses",
    ("image", "Install"): "install",
    ("image", "Sign in to Azure (OIDC, no secret)"): "uses",
    ("image", "Sign in to the container registry"): "azure-cli",
    ("image", "actions/upload-artifact@bbbca2ddaa5d8feaa63e36b76fdaad77386f024f"): "uses",
}
LINT_AND_SCANS = [
    ("lint-and-test", "Lint"),
    ("lint-and-test", "Secrets (detect-secrets, against .secrets.baseline)"),
    ("lint-and-test", "Security lint (bandit, fails on medium and high)"),
]
RAN_WHEN_GATE_PASSES = [
    *LINT_AND_SCANS,
    ("model", "Train"),
    ("model", "Evaluate (the gate)"),
    ("model", "Register (only if the gate passed)"),
    ("model", "Record the model release"),
    ("image", "Build and push"),
    ("image", "Record the image release"),
]


def assert_ran(happened, steps):
    failures = {step: record for step, record in happened.items()
                if record.startswith("FAILED")}
    assert not failures, "\n\n".join(f"{job} / {name}: {record}"
                                     for (job, name), record in failures.items())
    assert [step for step in happened if happened[step] == "ran"] == steps


def test_ci_steps_pass_and_publish_the_release(workspace):
    harness = play(workspace)
    print("step seconds:", harness.durations)
    happened = what_happened(harness)
    assert_ran(happened, RAN_WHEN_GATE_PASSES)
    skips = {step: record for step, record in happened.items()
             if record in ("uses", "install", "unit-tests", "azure-cli", "network")}
    assert skips == EXPECTED_SKIPS
    assert happened[("model", "Gate rejected, nothing to build")] == "skipped by its if"

    model = harness.needs["model"]
    assert model["result"] == "success"
    assert model["outputs"]["gate"] == "passed"
    assert model["outputs"]["model_version"] == "1"
    assert model["outputs"]["run_id"]
    image = harness.needs["image"]
    assert image["result"] == "success"
    assert image["outputs"]["model_version"] == "1"
    assert image["outputs"]["image"]
    assert image["outputs"]["context_digest"].startswith("sha256:")

    copy, _ = workspace
    release = (copy / "release" / "model.env").read_text()
    assert "gate=passed" in release and "model_version=1\n" in release
    assert "context_digest=sha256:" in (copy / "release" / "image.env").read_text()
    summary = "".join(harness.summary)
    assert "### evaluate" in summary and "### register" in summary


def test_a_rejected_gate_ends_cleanly_with_a_summary(workspace):
    # A floor no model reaches: the gate rejects, as it would on Azure.
    harness = play(workspace, MLOPS_GATE_MIN_R2="0.99")
    print("step seconds:", harness.durations)
    happened = what_happened(harness)
    assert_ran(happened, [
        *LINT_AND_SCANS,
        ("model", "Train"),
        ("model", "Evaluate (the gate)"),
        ("model", "Register (only if the gate passed)"),
        ("model", "Gate rejected, nothing to build"),
        ("model", "Record the model release"),
    ])
    assert harness.needs["model"]["result"] == "success"
    assert harness.needs["model"]["outputs"]["gate"] == "rejected"
    assert harness.needs["model"]["outputs"]["model_version"] == ""
    assert harness.needs["image"]["result"] == "skipped"
    copy, _ = workspace
    assert "model_version=\n" in (copy / "release" / "model.env").read_text()
    assert "**Gate rejected**" in "".join(harness.summary)
