"""The baked .devcontainer/devcontainer.json is valid and sets up what the project needs.

Validated offline against the Dev Container specification's schema, vendored in
tests/schemas/ (see its README for source and licence).
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import COMBINATIONS

SCHEMA = Path(__file__).parent / "schemas" / "devContainer.base.schema.json"
DOCKER_FEATURES = ("ghcr.io/devcontainers/features/docker-in-docker:",
                   "ghcr.io/devcontainers/features/docker-outside-of-docker:")
CI_EXTENSIONS = {"github": "github.vscode-github-actions",
                 "azure-devops": "ms-azure-devops.azure-pipelines"}


def check_jsonschema(*paths):
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert tool, "check-jsonschema is not installed next to Python: pip install -r " \
                 "requirements-test.txt"
    return subprocess.run([tool, "--schemafile", str(SCHEMA), *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def devcontainer(project):
    return json.loads((project / ".devcontainer" / "devcontainer.json").read_text())


def test_devcontainer_matches_the_specification(project):
    result = check_jsonschema(project / ".devcontainer" / "devcontainer.json")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("mistake", [
    {"imagee": "typo of image"},
    {"forwardPorts": ["not a port"]},
    {"postCreateCommand": 42},
])
def test_the_schema_rejects_a_broken_devcontainer(project, tmp_path, mistake):
    broken = tmp_path / "devcontainer.json"
    broken.write_text(json.dumps({**devcontainer(project), **mistake}))
    assert check_jsonschema(broken).returncode != 0


def test_devcontainer_has_the_chosen_python_azure_cli_and_docker(project, combination):
    answers = COMBINATIONS[combination]
    config = devcontainer(project)
    image = re.fullmatch(r"mcr\.microsoft\.com/devcontainers/python:(\d+\.\d+)-\w+",
                         config["image"])
    assert image and image.group(1) == answers["python_version"]
    features = config["features"]
    assert any(name.startswith("ghcr.io/devcontainers/features/azure-cli:") for name in features)
    assert any(name.startswith(DOCKER_FEATURES) for name in features), "a Docker engine"
    assert config["name"] == answers.get("project_name", "Diabetes MLOps")


def test_devcontainer_installs_the_project_as_the_makefile_does(project):
    """postCreateCommand runs `make install`, whose recipe installs the project with its
    dev extras; the editor's interpreter is that virtualenv's."""
    config = devcontainer(project)
    assert re.match(r"make install\b", config["postCreateCommand"])
    recipe = subprocess.run(["make", "-n", "-B", "install"], cwd=project, capture_output=True,
                            text=True, check=True).stdout
    assert re.search(r"pip install .*-e \"\.\[dev\]\"", recipe), recipe
    settings = config["customizations"]["vscode"]["settings"]
    assert settings["python.defaultInterpreterPath"].endswith("/.venv/bin/python")


def test_devcontainer_extensions_follow_the_ci_platform(project, combination):
    platform = COMBINATIONS[combination]["ci_platform"]
    chosen = {"github", "azure-devops"} if platform == "both" else {platform}
    extensions = set(devcontainer(project)["customizations"]["vscode"]["extensions"])
    assert {"ms-python.python", "ms-python.flake8", "ms-azuretools.vscode-bicep"} <= extensions
    for ci, extension in CI_EXTENSIONS.items():
        assert (extension in extensions) == (ci in chosen), extension
