"""Hostile but valid answers bake a project whose every structured file parses and
holds the answer unchanged: free text is escaped for the format it lands in."""
import re
import subprocess
import sys

import pytest

from conftest import changed_files, parse_structured_files

BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
PLACEHOLDER = re.compile(r"<[^<>\n]+>")  # e.g. <key vault name>: the reader fills it in

# Each case is baked once; ci_platform "both" keeps every file that takes an answer.
HOSTILE_ANSWERS = {
    "quotes-and-backslashes": {
        "project_name": 'Churn "Model" \\ v2\'s', "project_slug": "churn-model",
        "author": 'Jane "JD" O\'Brien \\',
    },
    "yaml-and-toml-syntax": {
        "project_name": "Churn Model: v2 # beta", "project_slug": "churn-model-v2",
        "author": "- [x]: {y} & *z | >a ! %b @c `d` ${e} 100%",
        "model_name": "Churn__Model.v2--beta", "azure_resource_group": "rg.churn(prod)",
    },
    "triple-quotes": {
        "project_name": '"""x""" \'\'\'y\'\'\'', "project_slug": "triple-quotes",
        "author": '"""',
    },
    "unicode": {
        "project_name": "Modèle de désabonnement ✓ 😀", "project_slug": "modele-churn",
        "author": "Zoë Ωmega 李雷 👩‍🔬", "azure_resource_group": "rg-données",
    },
    # YAML 1.1 reads a bare `null`, `true` or `yes` as a null or a boolean, not a name.
    "yaml-keyword-slug-null": {"project_name": "Null"},
    "yaml-keyword-slug-yes": {"project_name": "yes"},
    "longest-model-name": {"model_name": "A" * 31 + "__" + "b" * 30},
}


@pytest.fixture(scope="module")
def baked_hostile(cookies_session):
    """Return a function giving the baked project folder of a hostile case (baked once)."""
    projects = {}

    def bake(case):
        if case not in projects:
            result = cookies_session.bake(
                extra_context={"ci_platform": "both", **HOSTILE_ANSWERS[case]})
            assert result.exit_code == 0, result.exception
            projects[case] = result.project_path
        return projects[case]
    return bake


@pytest.fixture(scope="module")
def baked_default(cookies_session):
    """The default answers, with every file that takes an answer (ci_platform "both")."""
    result = cookies_session.bake(extra_context={"ci_platform": "both"})
    assert result.exit_code == 0, result.exception
    return result.project_path


@pytest.fixture(params=list(HOSTILE_ANSWERS))
def case(request):
    return request.param


def values_of(key, node):
    """Every value stored under `key` anywhere in a parsed YAML/JSON/TOML tree."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                yield value
            yield from values_of(key, value)
    elif isinstance(node, list):
        for item in node:
            yield from values_of(key, item)


def test_every_structured_file_parses_and_keeps_the_answers(baked_hostile, case):
    project = baked_hostile(case)
    parsed = parse_structured_files(project)
    answers = parsed[".cookiecutter.json"]
    for key, value in HOSTILE_ANSWERS[case].items():
        assert answers[key] == value

    name, author = answers["project_name"], answers["author"]
    pyproject = parsed["pyproject.toml"]["project"]
    assert pyproject["authors"] == [{"name": author}]
    assert pyproject["description"].startswith(f"{name}: ")
    environment = parsed["training/components/environment.yml"][0]
    assert environment["description"] == f"Training environment of {name}"
    assert (project / "README.md").read_text().splitlines()[0] == f"# {name}"

    config = parsed["mlops.toml"]
    assert config["model"]["name"] == answers["model_name"]
    assert config["azure"]["resource_group"] == answers["azure_resource_group"]
    pipeline_variables = parsed[".azure-pipelines/variables-template.yml"][0]["variables"]
    assert pipeline_variables["MODEL_NAME"] == answers["model_name"]
    assert pipeline_variables["AZURE_RESOURCE_GROUP"] == answers["azure_resource_group"]

    slug = answers["project_slug"]
    manifests = [document for path, documents in parsed.items()
                 if path.startswith("deploy/") for document in documents]
    labels = [value for document in manifests
              for value in values_of("app.kubernetes.io/part-of", document)]
    assert labels and set(labels) == {slug}
    flux_source = parsed["deploy/flux/gitrepository.yaml"][0]
    assert flux_source["metadata"]["name"] == slug
    flux_sync = parsed["deploy/flux/production.yaml"][0]
    assert flux_sync["spec"]["sourceRef"]["name"] == slug


def test_flake8_clean(baked_hostile, case, baked_default):
    """The Python files an answer lands in stay flake8 clean (flake8 judges each file on
    its own; test_bake.py lints whole bakes)."""
    project = baked_hostile(case)
    holding_answers = sorted(path for path in changed_files(project, baked_default)
                             if path.endswith(".py") and (project / path).exists())
    if not holding_answers:
        pytest.skip("no Python file holds an answer of this case")
    result = subprocess.run([sys.executable, "-m", "flake8", *holding_answers], cwd=project,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shell_commands_in_the_docs_stay_valid_shell(baked_hostile, case):
    # The docs' commands embed answers (the resource group may hold parentheses).
    project = baked_hostile(case)
    blocks = [(path, block) for path in project.rglob("*.md")
              for block in BASH_BLOCK.findall(path.read_text())]
    assert blocks
    for path, block in blocks:
        result = subprocess.run(["bash", "-n"], input=PLACEHOLDER.sub("VALUE", block),
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{path.relative_to(project)}:\n{block}\n{result.stderr}"
