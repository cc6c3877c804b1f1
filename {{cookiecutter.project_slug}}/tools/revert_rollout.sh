#!/usr/bin/env bash
# Revert a production rollout whose deployment or smoke test failed, run by the rollout
# pipeline (.github/workflows/production.yml, .azure-pipelines/production.yml):
#
#     bash tools/revert_rollout.sh COMMIT
#
# Reverts exactly COMMIT, the one the pipeline rolled out (a merge against its first
# parent), on top of main's current tip, not main's tip itself: main may have moved while
# the run waited. The push is retried on that new tip when another push wins the race
# (five attempts), then production is deployed as main names it.
# [production] promotion = "pr": main takes pull requests only, so the revert is pushed
# as the branch revert/<commit> and proposed as a pull request (on GitHub, CI is started
# on it: see .github/run-ci-on-branch.sh); its merge rolls production back. The script
# then fails, saying so: production still runs COMMIT's release until the merge.
set -euo pipefail
rolled_out="$1"

error() {
  if [ "${GITHUB_ACTIONS:-}" = true ]; then
    echo "::error::$1"
  elif [ "${TF_BUILD:-}" = True ]; then
    echo "##vso[task.logissue type=error]$1"
  else
    echo "error: $1" >&2
  fi
}

promotion="$(python -c 'from ml_service.config import load_settings as s; print(s().production.promotion)')"
mainline=()
if git rev-parse --quiet --verify "$rolled_out^2" > /dev/null; then
  mainline=(--mainline 1)
fi
for attempt in 1 2 3 4 5; do
  # No --depth: it would cut history at the new tip and hide the parent the revert
  # needs; the fetch stops at the commits this checkout already has. main tracks
  # origin/main: deploy (gitops mode) pushes to and waits on its upstream.
  git fetch --quiet origin +refs/heads/main:refs/remotes/origin/main
  git checkout --quiet --force -B main --track origin/main
  git revert --no-edit "${mainline[@]}" "$rolled_out"
  if [ "$promotion" = pr ]; then
    branch="revert/${rolled_out:0:12}"
    git push --quiet --force origin "HEAD:refs/heads/$branch"
    url="$(python tools/open_pull_request.py "$branch" main "$(git log -1 --format=%s)" \
      "Production failed after $rolled_out was rolled out; merging this pull request reverts it and rolls production back.")"
    if [ "${GITHUB_ACTIONS:-}" = true ]; then
      bash .github/run-ci-on-branch.sh "$branch"
    fi
    error "production failed after $rolled_out and still runs it: merge $url to roll it back"
    exit 1
  fi
  if git push --quiet origin HEAD:main; then
    python -m ml_service deploy --target production --skip-if-unset
    exit 0
  fi
  echo "main moved while reverting (attempt $attempt); trying again on its new tip"
  sleep $((attempt * 2))
done
error "could not push the revert of $rolled_out after 5 attempts"
exit 1
