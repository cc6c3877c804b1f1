"""Every baked combination is complete, clean, parseable and passes its own checks."""
import ast
import json
import random
import re
import shutil
import subprocess
import sys
import tomllib
from types import SimpleNamespace

import pytest

from conftest import (COMBINATIONS, FULL_SUITE, WORKING_STATE, changed_files, files,
                      inner_basetemp, parse_structured_files, pytest_collection_modifyitems)

TOP_LEVEL = {"ml_service", "training", "scoring", "environment_setup", "tests",
             "README.md", "pyproject.toml", "Makefile", ".gitignore", "mlops.toml"}
CI_FOLDERS = {"github": {".github"}, "azure-devops": {".azure-pipelines"},
              "both": {".github", ".azure-pipelines"}}
# `${{ ... }}` is GitHub Actions / Azure ML expression syntax, not a leftover.
LEFTOVER = re.compile(r"(?<!\$)\{\{|\{%|(?<![.\w])cookiecutter\.(?!json)")
# Third-party files kept byte for byte (cookiecutter.json: _copy_without_render), whose
# own text may contain "{{" (an IoT Edge schema's example "{{iot:identity}}").
VENDORED = ("deploy/edge/schemas/",)
# Files in another tool's template syntax, kept from cookiecutter by {% raw %}: Flagger
# fills in the "{{ namespace }}" of its MetricTemplate queries.
FOREIGN_TEMPLATES = ("deploy/canary/metric-templates.yaml",)

# The options the full suite is run for, besides the names: the other combinations run
# only the tests that can see what their values of these options change.
SHAPING_OPTIONS = ("ci_platform", "python_version")


@pytest.mark.slow
def test_own_test_suite_passes(project, combination, baked, tmp_path, request):
    """The baked project's own suite passes in a checkout of it, as a user runs it: in
    random order (the template run's seed, so one seed repeats both orders), bytecode
    written, and in a copy, so what the suite leaves behind never reaches the bake the
    other tests inspect."""
    checkout = tmp_path / project.name
    shutil.copytree(project, checkout)
    for command in (["init", "-q"], ["add", "-A"],
                    # --allow-empty: the generation hook may have committed it all.
                    ["-c", "user.name=t", "-c", "user.email=t@example.com",
                     "commit", "-q", "--allow-empty", "-m", "Baked from the template"]):
        subprocess.run(["git", *command], cwd=checkout, check=True, capture_output=True)
    # No seed where the template run has pytest-randomly off (-p no:randomly): then the
    # baked suite runs in its own order too.
    seed = request.config.getoption("randomly_seed", None)
    order = (["-p", "randomly", f"--randomly-seed={seed}"] if seed is not None
             else ["-p", "no:randomly"])
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *order,
               *inner_basetemp(checkout)]
    # The full suite runs on three workers of its own: its tests wait on servers,
    # containers and probes, and on two workers a core stood idle for a sixth of its run.
    # The short ones share the template run's workers, and run only the fast tests their
    # options can change.
    if combination == FULL_SUITE:
        command += ["-n", "3"]
    else:
        reference = baked(combination, **{option: COMBINATIONS[FULL_SUITE][option]
                                          for option in SHAPING_OPTIONS})
        selected = option_dependent_tests(project, changed_files(project, reference))
        assert selected, "the options change files no test reads: is the selection broken?"
        command += ["-n", "0", "-m", "not slow", *selected]
    result = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
    assert result.returncode == 0, (f"seed {seed}\n" + failed_assertions(result.stdout)
                                    + result.stdout[-3000:] + result.stderr[-2000:])


def failed_assertions(output, limit=6000):
    """The tracebacks of pytest's report of failures (each test's header, its `>` and `E`
    lines, where it was raised), without the output each failing test captured: that can
    be thousands of lines (progress bars, server logs) and push them out of a report's
    tail."""
    _, _, failures = output.partition("= FAILURES =")
    lines = [line for line in failures.splitlines()
             if line.startswith(("_", ">", "E ")) or re.match(r"\S+\.py:\d+: ", line)]
    return "\n".join(lines)[:limit] + "\n"


def option_dependent_tests(project, changed):
    """The baked project's test modules (relative paths) that can see a file of `changed`.

    Selected by what a module names, not by a marker it must remember to carry: a test
    module sees a changed file if a string literal in it, in a conftest.py above it or in
    a tests.* module it imports (transitively) names the file, its top-level folder (e.g.
    ".github", "scoring") or its file name (e.g. "Dockerfile"), as a path or one part of
    one. So a new test that reads a CI file, the Dockerfile or pyproject.toml is selected
    without anyone deciding it; a test that reaches them only through the project's own
    code is not (none does today: ml_service reads no file an option changes but
    mlops.toml, and the names it holds are the full suite's concern)."""
    wanted = {part for path in changed for part in (path.split("/")[0], path.split("/")[-1])}

    def named(module, seen):
        if module in seen or not module.is_file():
            return set()
        seen.add(module)
        tree = ast.parse(module.read_text())
        found = {part for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and isinstance(node.value, str)
                 for part in node.value.split("/")} & wanted
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests"):
                imported = project.joinpath(*node.module.split("."))
                found |= named(imported.with_suffix(".py"), seen)
                found |= named(imported / "__init__.py", seen)
        return found

    tests = project / "tests"
    return sorted(
        module.relative_to(project).as_posix() for module in tests.rglob("test_*.py")
        if any(named(folder / "conftest.py", set())
               for folder in [module.parent, *module.parent.parents]
               if folder.is_relative_to(tests))
        or named(module, set()))


def test_short_combinations_select_what_their_options_change(baked):
    project = baked("azure-devops-py312")
    reference = baked("azure-devops-py312", ci_platform="both", python_version="3.11")
    changed = changed_files(project, reference)
    assert {".github/workflows/ci.yml", "scoring/Dockerfile", "pyproject.toml"} <= changed
    selected = option_dependent_tests(project, changed)
    # CI definitions (by a helper's path), the Dockerfile's Python, the tooling's files:
    assert {"tests/ci/test_definitions.py", "tests/ci/test_harness.py",
            "tests/releasing/test_image.py", "tests/test_tooling.py"} <= set(selected)
    # Release logic reads none of them.
    assert "tests/releasing/test_release_flow.py" not in selected
    assert option_dependent_tests(project, set()) == []


def test_layout_and_ci_pruning(project, combination):
    names = {path.name for path in project.iterdir()}
    assert TOP_LEVEL <= names
    expected_ci = CI_FOLDERS[COMBINATIONS[combination]["ci_platform"]]
    assert names & {".github", ".azure-pipelines"} == expected_ci
    # The Azure Pipelines check (its pre-commit hook) goes with the pipelines.
    assert ((project / "tools" / "check_azure_pipelines.py").exists()
            == (".azure-pipelines" in expected_ci))
    empty = [path for path in project.rglob("*") if path.is_dir() and not any(path.iterdir())
             and not WORKING_STATE & set(path.relative_to(project).parts)]
    assert empty == []


def test_no_template_syntax_left(project):
    leftovers = [f"{path.relative_to(project)}: {match.group(0)!r}"
                 for path in files(project)
                 if not path.relative_to(project).as_posix().startswith(
                     VENDORED + FOREIGN_TEMPLATES)
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


def test_the_full_suite_starts_first_and_its_worker_holds_a_fast_test_next():
    """The order conftest.py's pytest_collection_modifyitems gives shuffled tests: the
    full suite's run first, then the other slow tests, then the fast ones; on two workers,
    a fast one third: the test `--dist loadgroup` gives the full suite's worker to start
    after it."""
    def item(name, slow, combination=None):
        return SimpleNamespace(
            name=name, get_closest_marker=lambda marker: slow if marker == "slow" else None,
            callspec=SimpleNamespace(params={"combination": combination} if combination else {}))
    tests = [item("full", True, FULL_SUITE), item("slow", True, "github-py311"),
             item("slow", True), *(item("fast", False, FULL_SUITE) for _ in range(6))]
    for seed in range(10):
        random.Random(seed).shuffle(tests)
        pytest_collection_modifyitems(SimpleNamespace(), tests)
        assert [test.name for test in tests[:4]] == ["full", "slow", "slow", "fast"]
        random.Random(seed).shuffle(tests)
        pytest_collection_modifyitems(SimpleNamespace(workerinput={"workercount": 2}), tests)
        assert [test.name for test in tests[:5]] == ["full", "slow", "fast", "slow", "fast"]


def test_a_failed_suite_reports_its_assertions_ahead_of_what_the_test_captured():
    output = "\n".join([
        "..F.", "=================== FAILURES ===================",
        "_____ test_rollback _____", "    def test_rollback():", ">       assert failures == []",
        "E       AssertionError: assert ['reset'] == []", "tests/test_x.py:7: AssertionError",
        "----- Captured stderr call -----", *(["Downloading artifacts: 100%"] * 500),
        "=========== short test summary info ===========", "FAILED tests/test_x.py"])
    assert failed_assertions(output).splitlines() == [
        "_____ test_rollback _____", ">       assert failures == []",
        "E       AssertionError: assert ['reset'] == []", "tests/test_x.py:7: AssertionError"]
    assert failed_assertions("1 passed") == "\n"
