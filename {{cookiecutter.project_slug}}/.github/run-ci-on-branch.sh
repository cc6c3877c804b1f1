#!/usr/bin/env bash
# Start CI (.github/workflows/ci.yml) on a branch a workflow pushed, for its pull request.
# A pull request opened, or a branch pushed, with the workflow token (GITHUB_TOKEN) starts
# no workflow run: GitHub's rule against recursive runs, to which workflow_dispatch is the
# exception. So CI is dispatched on the branch, and its check runs ("Lint, scan and unit
# tests", the required one in docs/ci-cd.md) report on the pull request's head commit.
# The job needs `permissions: actions: write`; GH_TOKEN is its token.
set -euo pipefail
branch="$1"
curl --fail-with-body --silent --show-error --request POST \
  --header "Authorization: Bearer $GH_TOKEN" \
  --header "Accept: application/vnd.github+json" \
  "$GITHUB_API_URL/repos/$GITHUB_REPOSITORY/actions/workflows/ci.yml/dispatches" \
  --data "{\"ref\": \"$branch\"}"
echo "CI started on $branch for its pull request." >> "$GITHUB_STEP_SUMMARY"
