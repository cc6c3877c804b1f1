"""Open a pull request from CI for a branch already pushed, and print its web address.

    python tools/open_pull_request.py BRANCH BASE TITLE BODY

The same call promote makes for a promotion pull request (ml_service/releasing/
pull_request.py: GitHub with GITHUB_TOKEN, Azure Pipelines with SYSTEM_ACCESSTOKEN),
for the pull requests the pipelines' own scripts propose: the revert of a failed
production rollout when main takes pull requests only (tools/revert_rollout.sh).
"""
import sys
from pathlib import Path

# The project's own package, whether or not this checkout is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ml_service.errors import MlopsError  # noqa: E402
from ml_service.releasing.pull_request import open_pull_request  # noqa: E402


def main(argv):
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    branch, base, title, body = argv
    try:
        print(open_pull_request(branch, base, title, body))
    except MlopsError as error:
        print(f"error: {error.what}\n  fix: {error.fix}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
