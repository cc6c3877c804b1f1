"""Remove the CI/CD definitions of the platform the user did not choose, record the
answers so the project can be updated from newer template versions, make the project a
git repository with its first commit (deploys and registered versions name the commit),
and say what to run next."""
import json
import shutil
import subprocess
from pathlib import Path

CI_PLATFORM = "{{ cookiecutter.ci_platform }}"
# The folders, and the files that serve only them, of the platform not chosen.
UNUSED_CI_PATHS = {
    "github": [".azure-pipelines", "tools/check_azure_pipelines.py"],
    "azure-devops": [".github"],
    "both": [],
}

# The answers the user gave, without cookiecutter's private keys (paths of this machine).
ANSWERS = {
    key: value
    for key, value in json.loads(r"""{{ cookiecutter | jsonify }}""").items()
    if not key.startswith("_")
}


COMMIT_MESSAGE = "Generated from cookiecutter-azure-mlops"
FIRST_COMMIT = (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", COMMIT_MESSAGE])
# What to run when the hook cannot make the first commit itself.
MANUAL = f'git init && git add -A && git commit -m "{COMMIT_MESSAGE}"'


def git(*args):
    """Run git here; its output, or None when it fails (or git is not installed)."""
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def first_commit():
    """Make the project a git repository with one commit; return what was done, in words.
    Left to the user (and said how) without git, without a git identity, or inside
    another git work tree (the project is then part of that repository)."""
    if git("--version") is None:
        return f"git is not installed: install it, then run `{MANUAL}`"
    if git("rev-parse", "--is-inside-work-tree") == "true":
        return "inside another git work tree: no repository made (the project is part of it)"
    if not (git("config", "user.name") and git("config", "user.email")):
        return (f"no git identity (git config user.name / user.email): set it, then run "
                f"`{MANUAL}`")
    for command in FIRST_COMMIT:
        if git(*command) is None:
            return f"git could not make the first commit: run `{MANUAL}`"
    return "git repository with the first commit"


def main():
    for name in UNUSED_CI_PATHS[CI_PLATFORM]:
        path = Path(name)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    Path(".cookiecutter.json").write_text(json.dumps(ANSWERS, indent=2, sort_keys=True) + "\n")
    print(f"Generated {Path.cwd().name}/ ({first_commit()}). Next:\n"
          f"  cd {Path.cwd().name}\n"
          "  make install     # .venv with the project and its dev tools\n"
          "  make pipeline    # train, gate, register, image, staging (no Azure needed)\n"
          "  make ui          # the runs and model versions in MLflow (UI_PORT=5000)\n"
          "  see README.md, Quick start")


if __name__ == "__main__":
    main()
