"""Remove the CI/CD definitions of the platform the user did not choose, and
record the answers so the project can be updated from newer template versions."""
import json
import shutil
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


def main():
    for name in UNUSED_CI_PATHS[CI_PLATFORM]:
        path = Path(name)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    Path(".cookiecutter.json").write_text(json.dumps(ANSWERS, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
