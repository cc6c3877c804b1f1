"""The update path, with the real cruft: a project created from the template takes a
later template change with `cruft update`, keeps its own edits, and `cruft check`
says whether it is behind."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[1]
PROJECT_README = "{{cookiecutter.project_slug}}/README.md"
TEMPLATE_CHANGE = "\nA line the template added after the project was created.\n"
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "tests", "GIT_AUTHOR_EMAIL": "tests@localhost",
           "GIT_COMMITTER_NAME": "tests", "GIT_COMMITTER_EMAIL": "tests@localhost"}


def git(folder, *arguments):
    return subprocess.run(["git", *arguments], cwd=folder, env=GIT_ENV, check=True,
                          capture_output=True, text=True).stdout.strip()


def commit_all(folder, message):
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", message)


def cruft(folder, *arguments):
    tool = shutil.which("cruft", path=str(Path(sys.executable).parent))
    assert tool, "cruft is not installed next to Python: pip install -r requirements-test.txt"
    return subprocess.run([tool, *arguments], cwd=folder, env=GIT_ENV, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture
def template_repo(tmp_path):
    """This template, committed in a git repository of its own (cruft clones templates)."""
    copy = tmp_path / "template"
    shutil.copytree(TEMPLATE, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "__pycache__", ".pytest_cache"))
    git(copy, "init", "-q")
    commit_all(copy, "template v1")
    return copy


def test_cruft_update_applies_a_template_change_and_keeps_the_projects_own(
        template_repo, tmp_path):
    created = cruft(tmp_path, "create", str(template_repo), "--no-input", "--output-dir",
                    str(tmp_path / "projects"), "--extra-context",
                    json.dumps({"ci_platform": "azure-devops"}))
    assert created.returncode == 0, created.stdout + created.stderr
    project = tmp_path / "projects" / "diabetes-mlops"
    assert not (project / ".github").exists(), "the post-generation hook ran"
    git(project, "init", "-q")
    commit_all(project, "created from the template")
    settings = project / "mlops.toml"
    settings.write_text(settings.read_text().replace("alpha = 0.1", "alpha = 0.5"))
    commit_all(project, "the project's own change")
    assert cruft(project, "check").returncode == 0

    readme = template_repo / PROJECT_README
    readme.write_text(readme.read_text() + TEMPLATE_CHANGE)
    commit_all(template_repo, "template v2")
    behind = cruft(project, "check")
    assert behind.returncode != 0, behind.stdout + behind.stderr

    updated = cruft(project, "update", "-y")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert (project / "README.md").read_text().endswith(TEMPLATE_CHANGE)
    assert "alpha = 0.5" in settings.read_text()
    assert json.loads((project / ".cruft.json").read_text())["commit"] == git(
        template_repo, "rev-parse", "HEAD")
    commit_all(project, "update from the template")
    current = cruft(project, "check")
    assert current.returncode == 0, current.stdout + current.stderr
