"""Bad answers stop generation before any file is written, with an actionable message."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cookiecutter.environment import StrictEnvironment

TEMPLATE = Path(__file__).resolve().parents[1]

BAD_ANSWERS = [
    ("project_slug", "My Project", "lowercase letters"),
    ("project_slug", "ab", "3-29 characters"),
    ("project_slug", "a" * 30, "3-29 characters"),
    ("project_slug", "trailing-", "not ending with a hyphen"),
    ("model_name", "-model", "Azure ML's model naming rule"),
    # Valid for Azure ML, but not as a Docker image name once lowercased.
    ("model_name", "Model.v1-", "starts and ends with a letter or digit"),
    ("model_name", "m..x", "a single '.' or '_'"),
    ("model_name", "x_", "starts and ends with a letter or digit"),
    ("model_name", "a_.b", "a single '.' or '_'"),
    ("model_name", "a___b", "by '__'"),
    ("model_name", "a" * 64, "1-63 characters"),
    ("model_name", "a" * 255, "1-63 characters"),
    ("model_name", "churn model", "Docker's image naming rule"),
    ("author", "  ", "not blank"),
    ("author", "Jane\tDoe", "no control characters"),
    ("author", "Jane\u2028Doe", "line breaks"),
    ("project_name", "Two\nlines", "one line of text"),
    ("azure_workspace_name", "ws", "3-33 characters"),
    ("azure_workspace_name", "_ws-name", "starting with a letter or digit"),
    ("azure_workspace_name", "w" * 34, "3-33 characters"),
    ("azure_subscription_id", "my-subscription", "GUID"),
    ("azure_subscription_id", "3f2c9a1e-8b7d-4c6e-9f0a-1b2c3d4e5f6", "GUID"),
    ("azure_resource_group", "rg-name.", "not ending with '.'"),
    ("azure_resource_group", "rg name", "Azure resource group naming rule"),
    ("azure_resource_group", "r" * 91, "1-90 characters"),
    ("azure_location", "West Europe", "az account list-locations"),
    ("azure_location", "mars", "az account list-locations"),
]


@pytest.mark.parametrize("field, value, rule", BAD_ANSWERS,
                         ids=[f"{field}={value[:12]!r}" for field, value, _ in BAD_ANSWERS])
def test_bad_answer_stops_generation(cookies, capfd, tmp_path, field, value, rule):
    result = cookies.bake(extra_context={field: value})
    assert result.exit_code != 0
    # pytest-cookies bakes into <tmp_path>/cookies/bake00: it must be left empty.
    assert list((tmp_path / "cookies" / "bake00").iterdir()) == []
    message = capfd.readouterr().err
    assert f"{field}={value!r}" in message
    assert rule in message
    assert "Example:" in message


def test_several_bad_answers_are_reported_together(cookies, capfd):
    result = cookies.bake(extra_context={"azure_location": "mars",
                                         "azure_subscription_id": "x"})
    assert result.exit_code != 0
    message = capfd.readouterr().err
    assert "azure_location='mars'" in message and "azure_subscription_id='x'" in message


def test_cli_leaves_nothing_behind_and_speaks_first(tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "--output-dir", str(out),
         str(TEMPLATE), "azure_location=West Europe"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode != 0
    assert not out.exists() or list(out.iterdir()) == []
    # Nor the rendered hook (the answers in it) in the temporary folder.
    assert list(scratch.iterdir()) == []
    assert result.stdout.startswith("ERROR: the project was not generated")
    assert "azure_location='West Europe'" in result.stdout.splitlines()[1]
    # cookiecutter's own line follows, without a traceback of its code under the message.
    assert "Stopping generation because pre_gen_project hook" in result.stdout
    assert "Traceback" not in result.stdout and "hooks.py" not in result.stdout


def test_default_answers_bake_the_whole_card(cookies):
    result = cookies.bake()
    assert result.exit_code == 0
    # The card's top level: both CI platforms unless the user picks one.
    names = {path.name for path in result.project_path.iterdir()}
    assert {".azure-pipelines", ".github", "ml_service", "training", "scoring",
            "environment_setup", "tests"} <= names


def test_template_syntax_in_an_answer_is_refused(cookies, capfd):
    # Cookiecutter renders answers as templates: only `{% raw %}` brings `{{` this far.
    result = cookies.bake(extra_context={"author": "{% raw %}{{ x }}{% endraw %}"})
    assert result.exit_code != 0
    message = capfd.readouterr().err
    assert "author='{{ x }}' is invalid" in message
    assert "no '{{', '{%' or '{#' (cookiecutter would read them as template syntax" in message


def hook_module():
    """The pre-generation hook rendered as cookiecutter renders it, loaded as a module."""
    source = (TEMPLATE / "hooks" / "pre_gen_project.py").read_text()
    namespace = {"__name__": "pre_gen_project"}
    exec(StrictEnvironment().from_string(source).render(cookiecutter={}), namespace)
    return namespace


def test_baked_config_checks_the_hooks_model_name_rule(cookies):
    # A user who edits [model] name in mlops.toml gets the rule the hook applied.
    project = cookies.bake().project_path
    baked = subprocess.run(
        [sys.executable, "-c", "import json; from ml_service import config; "
         "print(json.dumps([config.MODEL_NAME_PATTERN, config.MODEL_NAME_RULE]))"],
        cwd=project, capture_output=True, text=True, check=True)
    hook = hook_module()
    assert json.loads(baked.stdout) == [hook["MODEL_NAME_PATTERN"], hook["MODEL_NAME_RULE"]]


def generate(tmp_path, git_identity):
    """Run cookiecutter as a user does, with a git configuration of our own (`git_identity`
    or none); return (its output, the project folder)."""
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n  name = Jane Doe\n  email = jane@example.com\n"
                      if git_identity else "")
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "--output-dir", str(out),
         str(TEMPLATE)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "GIT_CONFIG_GLOBAL": str(config), "GIT_CONFIG_NOSYSTEM": "1",
             "TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr
    # Neither rendered hook (the answers in them) is left in the temporary folder.
    assert list(scratch.iterdir()) == []
    return result.stdout, out / "diabetes-mlops"


def test_generation_makes_the_first_commit_and_says_what_to_run_next(tmp_path):
    output, project = generate(tmp_path, git_identity=True)
    assert output.startswith("Generated diabetes-mlops/ (git repository with the first "
                             "commit). Next:\n  cd diabetes-mlops\n  make install")
    assert "make pipeline" in output and "make ui" in output
    log = subprocess.run(["git", "log", "--format=%s"], cwd=project, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert log == ["Generated from cookiecutter-azure-mlops"]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project,
                            capture_output=True, text=True, check=True).stdout
    assert status == ""  # everything generated is committed (.gitignore keeps the rest out)


def test_without_a_git_identity_generation_says_how_to_commit(tmp_path):
    output, project = generate(tmp_path, git_identity=False)
    assert "no git identity (git config user.name / user.email): set it, then run `git init " \
           '&& git add -A && git commit -m "Generated from cookiecutter-azure-mlops"`' in output
    assert not (project / ".git").exists()
