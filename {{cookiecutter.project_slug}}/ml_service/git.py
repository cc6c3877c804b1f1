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
    """Commit `path` alone with `message`; return (HEAD afterwards, whether a commit was
    made: not when the file was unchanged), or None outside a git checkout."""
    if not is_checkout(root):
        return None
    identity = [] if run(root, "config", "user.email").stdout.strip() else FALLBACK_IDENTITY
    run(root, "add", str(path), check=True)
    changed = run(root, "diff", "--cached", "--quiet", "--", str(path)).returncode != 0
    if changed:
        run(root, *identity, "commit", "--quiet", "-m", message, "--", str(path), check=True)
    return head(root), changed


def check_can_commit(root, folder):
    """Refuse, before anything is written, what would make a commit of `folder` wrong:
    uncommitted changes in it (they would go into the commit), a detached HEAD (the
    commit would be on no branch) or another git command's index.lock."""
    if not is_checkout(root):
        return
    lock = root / run(root, "rev-parse", "--git-path", "index.lock", check=True).stdout.strip()
    if lock.exists():
        raise MlopsError(f"git cannot commit in {root}: {lock} exists (another git command "
                         "is running, or one was killed).",
                         f"Wait for it to finish; if no git command runs, delete {lock}.")
    branch = run(root, "symbolic-ref", "--quiet", "HEAD")
    if branch.returncode != 0:
        raise MlopsError(f"{root} is on a detached HEAD ({head(root)[:12]}): a commit "
                         "would be on no branch.",
                         "Check out the branch the deployments are recorded on "
                         "(`git switch main`) and run again.")
    # Untracked files are not edits: a new checkout commits its overlay the first time.
    changes = run(root, "status", "--porcelain", "--untracked-files=no", "--", str(folder),
                  check=True).stdout
    if changes.strip():
        raise MlopsError(f"{folder} has uncommitted changes, which would go into the "
                         f"deployment commit: {' '.join(changes.split())}",
                         f"Commit or discard them first (`git -C {root} diff -- {folder}`).")
