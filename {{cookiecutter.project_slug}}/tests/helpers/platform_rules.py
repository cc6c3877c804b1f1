"""The CI platforms' own event rules, as their documentation states them, for tests that
play the pipelines against a bare remote. tests/ci/test_harness.py's runner plays a job's
steps; these decide which runs a push, a pull request or a dispatch starts, what a
concurrency group or an exclusive lock does with runs that wait, and what a protected
branch refuses. Each rule is hand-modelled here (no platform is reachable from a test).

GitHub Actions
- `on.push` filters: `branches`, then `paths` / `paths-ignore` against the files the push
  changed (shell patterns; the pipelines name exact files). A push that creates the branch
  (`github.event.before` all zeros: the first push of a new repository) compares with
  the parent of its root commit, so every file counts as changed.
- Events caused by the workflow token (GITHUB_TOKEN: its pushes, the pull requests it
  opens) start no workflow run, except `workflow_dispatch` and `repository_dispatch`.
- `workflow_run` runs the workflow file of the default branch, whatever the triggering
  run's branch was.
- A concurrency group holds one running and one pending run or job: a newer pending one
  cancels the older pending one (`cancel-in-progress: false` spares the running one).
- Branch protection requiring pull requests: the remote's pre-receive hook refuses the
  workflow identity's direct pushes to main (GITHUB_ACTIONS / TF_BUILD in the pusher's
  environment, which a local push hands to the hook); people may push.

Azure Pipelines
- A pipeline resource's `trigger.branches` starts the CD pipeline when a run of the named
  pipeline completes on an included branch; a CI trigger's `paths.exclude` works as
  GitHub's paths-ignore. Pushes made with the job's token DO start pipelines (no
  recursion rule), unless the commit message says `[skip ci]`.
- An environment's Exclusive lock with `lockBehavior: sequential` lets every waiting run
  deploy in turn; with `runLatest` only the newest waiting run gets the lock and the
  older waiting ones are cancelled.
"""
import fnmatch

from tests.helpers.project import git

NEW_BRANCH = "0" * 40
WORKFLOW_TOKEN = "github-actions[bot]"


def changed_files(remote, before, sha):
    """The files a push of `sha` after `before` changed, as GitHub's filters see them."""
    if before == NEW_BRANCH:
        return git(remote, "ls-tree", "-r", "--name-only", sha).splitlines()
    return git(remote, "diff", "--name-only", before, sha).splitlines()


def _any_match(paths, patterns):
    return any(fnmatch.fnmatch(path, pattern) for path in paths for pattern in patterns)


def push_fires(workflow, remote, before, sha, branch="main", actor="someone"):
    """Whether a push of `sha` to `branch` (after `before`) by `actor` starts `workflow`:
    a GitHub workflow (its `on.push`) or an Azure Pipelines pipeline (its `trigger`), as
    loaded from YAML. Both platforms skip a push whose commit message says [skip ci]."""
    github = "on" in workflow
    if github and not event_starts_runs("push", actor):
        return False
    trigger = workflow["on"].get("push") if github else workflow.get("trigger")
    if not trigger or trigger == "none":
        return False
    branches = trigger.get("branches", ["*"])
    branches = branches.get("include", ["*"]) if isinstance(branches, dict) else branches
    if not any(fnmatch.fnmatch(branch, pattern) for pattern in branches):
        return False
    if "[skip ci]" in git(remote, "log", "-1", "--format=%B", sha):
        return False
    changed = changed_files(remote, before, sha)
    paths = trigger.get("paths", {})
    included = paths if isinstance(paths, list) else paths.get("include")
    excluded = trigger.get("paths-ignore") if github else paths.get("exclude")
    if included is not None:
        return _any_match(changed, included)
    if excluded is not None:
        return any(not _any_match([path], excluded) for path in changed)
    return True


def event_starts_runs(event_name, actor):
    """GitHub: whether an event caused by `actor` starts workflow runs at all."""
    return actor != WORKFLOW_TOKEN or event_name in ("workflow_dispatch",
                                                     "repository_dispatch")


class ConcurrencyGroups:
    """GitHub's concurrency groups (cancel-in-progress false): per group one running and
    one pending run; a newer pending run cancels the older pending one."""

    def __init__(self):
        self.running, self.pending, self.cancelled = {}, {}, []

    def queue(self, group, run):
        if group not in self.running:
            self.running[group] = run
            return
        if group in self.pending:
            self.cancelled.append(self.pending[group])
        self.pending[group] = run

    def finish(self, group):
        """The running one ends; the pending one, if any, starts."""
        del self.running[group]
        if group in self.pending:
            self.running[group] = self.pending.pop(group)


def exclusive_lock(lock_behavior, waiting):
    """Azure Pipelines: which of the runs `waiting` for an environment's Exclusive lock
    (oldest first) deploy, in order, once the lock is free; the others are cancelled."""
    if lock_behavior == "runLatest":
        return waiting[-1:]
    assert lock_behavior == "sequential", lock_behavior
    return list(waiting)


def protect_main(remote):
    """Branch protection requiring pull requests: the workflow identity's direct pushes
    to main are refused with GitHub's message; people's pushes (merges) go through."""
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        "while read old new ref; do\n"
        "  if [ \"$ref\" = refs/heads/main ] && { [ \"$GITHUB_ACTIONS\" = true ] "
        "|| [ \"$TF_BUILD\" = True ]; }; then\n"
        "    echo 'GH006: Protected branch update failed for refs/heads/main.' >&2\n"
        "    echo 'Changes must be made through a pull request.' >&2\n"
        "    exit 1\n"
        "  fi\n"
        "done\n")
    hook.chmod(0o755)
