"""Every baked combination is complete, clean, parseable and passes its own checks."""
import json
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from conftest import COMBINATIONS, parse_structured_files

TOP_LEVEL = {"ml_service", "training", "scoring", "environment_setup", "tests",
             "README.md", "pyproject.toml", "Makefile", ".gitignore", "mlops.toml"}
CI_FOLDERS = {"github": {".github"}, "azure-devops": {".azure-pipelines"},
              "both": {".github", ".azure-pipelines"}}
# `${{ ... }}` is GitHub Actions / Azure ML expression syntax, not a leftover.
LEFTOVER = re.compile(r"(?<!\$)\{\{|\{%|(?<![.\w])cookiecutter\.(?!json)")
# Third-party files kept byte for byte (cookiecutter.json: _copy_without_render), whose
# own text may contain "{{" (an IoT Edge schema's example "{{iot:identity}}").
VENDORED = ("deploy/edge/schemas/",)


# The slow tests (real scoring servers, replayed CI jobs) take minutes and depend on no
# option but the names and the CI files, so they run in full for the combination with
# unusual names and both CI platforms only.
FULL_SUITE = "both-custom-names"
# What running a project leaves in it (caches, virtualenvs, stores, build contexts):
# never part of what the generator wrote, so never scanned.
WORKING_STATE = {"__pycache__", ".pytest_cache", ".venv", "build", "mlruns", ".mlops", ".git"}


@pytest.mark.slow
def test_own_test_suite_passes(project, combination, tmp_path, request):
    """The baked project's own suite passes in a checkout of it, as a user runs it: in
    random order (the template run's seed, so one seed repeats both orders), bytecode
    written, and in a copy, so what the suite leaves behind never reaches the bake the
    other tests inspect."""
    checkout = tmp_path / project.name
    shutil.copytree(project, checkout)
    for command in (["init", "-q"], ["add", "-A"],
                    ["-c", "user.name=t", "-c", "user.email=t@example.com",
                     "commit", "-q", "-m", "Baked from the template"]):
        subprocess.run(["git", *command], cwd=checkout, check=True, capture_output=True)
    seed = request.config.getoption("randomly_seed")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-p", "randomly", f"--randomly-seed={seed}"]
    # The full suite runs on two workers of its own; the short ones share the template
    # run's workers.
    command += ["-n", "2"] if combination == FULL_SUITE else ["-n", "0", "-m", "not slow"]
    result = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
    assert result.returncode == 0, (f"seed {seed}\n" + result.stdout[-5000:]
                                    + result.stderr[-2000:])


def files(project):
    return [path for path in project.rglob("*")
            if path.is_file() and not WORKING_STATE & set(path.relative_to(project).parts)]


def test_layout_and_ci_pruning(project, combination):
    names = {path.name for path in project.iterdir()}
    assert TOP_LEVEL <= names
    expected_ci = CI_FOLDERS[COMBINATIONS[combination]["ci_platform"]]
    assert names & {".github", ".azure-pipelines"} == expected_ci
    empty = [path for path in project.rglob("*") if path.is_dir() and not any(path.iterdir())]
    assert empty == []


def test_no_template_syntax_left(project):
    leftovers = [f"{path.relative_to(project)}: {match.group(0)!r}"
                 for path in files(project)
                 if not path.relative_to(project).as_posix().startswith(VENDORED)
                 for match in [LEFTOVER.search(path.read_text(errors="ignore"))] if match]
    assert leftovers == []


def test_every_file_parses_for_its_type(project):
    assert len(parse_structured_files(project)) > 10


def test_answers_are_recorded_for_updates(project, combination):
    answers = json.loads((project / ".cookiecutter.json").read_text())
    for key, value in COMBINATIONS[combination].items():
        assert answers[key] == value
    assert not [key for key in answers if key.startswith("_")]
    config = tomllib.loads((project / "mlops.toml").read_text())
    assert config["azure"]["workspace_name"] == answers["azure_workspace_name"]
    assert config["model"]["name"] == answers["model_name"]


def test_flake8_clean(project):
    result = subprocess.run([sys.executable, "-m", "flake8"], cwd=project,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
