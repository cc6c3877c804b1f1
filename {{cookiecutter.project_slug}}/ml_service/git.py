"""git, called one way: the commit the code runs from, and the desired-state commits.

Every git command of ml_service goes through `run`, which names the command and its
output when it fails. Outside a git checkout nothing fails: the callers say so.
"""
import shlex
import subprocess

from ml_service.errors import MlopsError

UNKNOWN = "unknown"
# Used only when git has no identity configured (a fresh CI runner or container).
FALLBACK_IDENTITY = ("-c", "user.name=ml_service", "-c", "user.email=ml-service@localhost")


def run(root, *args, check=False, runner=subprocess.run, timeout=600):
    """`git <args>` in `root`, output captured as text. With `check`, a failure is an
    MlopsError. `runner` is subprocess.run, or a stand-in that records the commands."""
    command = ["git", *args]
    try:
        result = runner(command, cwd=root, capture_output=True, text=True, timeout=timeout,
                        check=False)
    except FileNotFoundError:
        raise MlopsError("`git` is not installed.", "Install git and run again.") from None
    except subprocess.TimeoutExpired:
        raise MlopsError(f"`{shlex.join(command)}` did not finish within {timeout} s.",
                         "Check the connection to the remote and run again.") from None
    if check and result.returncode != 0:
        output = " ".join((result.stderr or result.stdout).split())[-600:] or "(no output)"
        raise MlopsError(f"`{shlex.join(command)}` failed: {output}",
                         "Run the command yourself to see the whole output.")
    return result


def is_checkout(root):
    return run(root, "rev-parse", "--is-inside-work-tree").returncode == 0


def head(root):
    """The commit checked out in `root`, or 'unknown' outside a git checkout."""
    result = run(root, "rev-parse", "HEAD")
    return result.stdout.strip() if result.returncode == 0 else UNKNOWN


def code_version(root):
    """The commit of the code, marked -dirty if tracked files changed since."""
    commit = head(root)
    if commit == UNKNOWN:
        return commit
    dirty = run(root, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    return commit + ("-dirty" if dirty else "")


def commit_file(root, path, message):
    """Commit `path` alone with `message`; return HEAD afterwards (unchanged if the file
    was), or None outside a git checkout."""
    if not is_checkout(root):
        return None
    identity = [] if run(root, "config", "user.email").stdout.strip() else FALLBACK_IDENTITY
    run(root, "add", str(path), check=True)
    if run(root, "diff", "--cached", "--quiet", "--", str(path)).returncode != 0:
        run(root, *identity, "commit", "--quiet", "-m", message, "--", str(path), check=True)
    return head(root)
