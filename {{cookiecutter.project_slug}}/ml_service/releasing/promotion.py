"""Promotion and rollback: production's desired state, committed, reconciled and checked.

`promote` is the approved move of the staging release to production, the GitOps way.
"The staging release" is the version staging's committed desired state names
(deploy/overlays/staging, committed by `deploy`) whose staging smoke test passed (tag
smoke_test.staging); with --model-version N it must also be N; where staging runs an
image by digest, the version's recorded digest must be the one staging runs. promote
refuses without approval or otherwise, before changing anything. It writes
production's desired state (same image, same digest) and commits it, reconciles
production, smoke-tests it, and rolls back automatically if that fails: production
ends on either the old or the new release, never in between. Promoting the version
production already runs changes nothing.

With [production] strategy = "canary", production takes the new release gradually:
on a local process or container target, promote runs the canary (canary.py) through the
target's traffic split before production serves the new release alone, and a failed
step rolls back as a failed smoke test does, with a commit naming the failed check; on
AKS, Flagger runs it and reconcile waits for its verdict (targets/aks.py).

`rollback` returns production to the release it ran before the current one. The
previous version is recorded on each promoted version (tag `previous_production`).
Both end in `restore_production`, which rewrites and commits the desired state and
reconciles production. No registry alias is read anywhere (see registry.py).
"""
import sys

from ml_service import desired_state, report, tracking
from ml_service.errors import CanaryFailed, MlopsError
from ml_service.releasing import canary, registry
from ml_service.releasing.deployment import (check_servable, commit_desired_state,
                                             finished_or_undone, reconcile,
                                             restore_desired_state)
from ml_service.releasing.interrupts import signals_held
from ml_service.releasing.lock import locked
from ml_service.releasing.smoke import smoke_test
from ml_service.targets import get_target


def commit_production(settings, release, message):
    """Write `release` as production's desired state and commit it; return the commit.
    Refused before anything is written if the commit could not reach production."""
    get_target("production", settings).check_ready()
    return commit_desired_state(settings, "production", release, message)


def restore_production(settings, client, version, message):
    """Make `version` production's desired state (committed) and deploy it; return it."""
    current = desired_state.read(settings, "production")
    commit_production(settings, registry.release_for(client, settings, version), message)
    try:
        reconcile(settings, client, "production")
    except KeyboardInterrupt:
        finished_or_undone(settings, "production", version, current, "rollback")
        raise
    return version


def approval_required(approved):
    if not approved:
        raise MlopsError("Promotion to production needs an explicit approval; production "
                         "was not changed.",
                         "Re-run with --approve (in CI, the production environment's "
                         "reviewers give it).")


def staging_release(settings, client, requested=None):
    """The version that passed staging: the one staging's desired state names, whose
    staging smoke test passed, and (when given) the `requested` one. Raises otherwise."""
    staging = desired_state.read(settings, "staging")
    if not staging.is_set:
        raise MlopsError("No model version is deployed to staging (its desired state in "
                         "deploy/overlays/staging names none); production was not changed.",
                         "Deploy and smoke-test one first: `python -m ml_service deploy "
                         "--target staging --model-version N`.")
    version = staging.model_version
    if requested is not None and not registry.same_version(requested, version):
        raise MlopsError(
            f"Version {requested} is not the staging release: staging's desired state names "
            f"version {version}; production was not changed.",
            f"Deploy and smoke-test version {requested} on staging first (`python -m "
            f"ml_service deploy --target staging --model-version {requested}`, then "
            "`smoke-test --target staging`), and make sure that commit of "
            "deploy/overlays/staging is in this checkout.")
    smoke = registry.model_version(client, settings, version).tags.get(
        registry.smoke_tag("staging"), "not run")
    if smoke != "passed":
        raise MlopsError(
            f"Version {version} has not passed its staging smoke test "
            f"({registry.smoke_tag('staging')}={smoke}); production was not changed.",
            "Run `python -m ml_service smoke-test --target staging` and promote once it passes.")
    return version


def already_in_production(settings, client, version):
    """The promote of the version production already runs: nothing changes, so its
    rollback target stays what it was."""
    previous = registry.model_version(client, settings, version).tags.get(
        registry.PREVIOUS_PRODUCTION_TAG, "none")
    deployment = get_target("production", settings).status()
    scoring_uri = deployment.scoring_uri if deployment else ""
    report.publish("promote", f"production already runs {settings.model.name} version "
                   f"{version}; nothing was changed (rollback would return to version "
                   f"{previous})", {"model_version": version, "scoring_uri": scoring_uri,
                                    "gitops_commit": ""})
    return deployment


def staged_digest_matches(settings, release):
    """Refuse a release whose recorded image or build context is not the one staging runs
    (rebuilt after the smoke test). A target that runs images by digest reports the image
    (kind = "container"); a local process target the context it started from."""
    staged = get_target("staging", settings).status()
    if staged is None:
        return
    for artifact, running, recorded, shown, rebuilt in (
            ("build context", staged.context_digest, release.context_digest,
             release.context_digest, "build-image ran again after the smoke test"),
            ("image", staged.image_digest, release.image_digest,
             release.image_digest or "no pushed image",
             "its image was rebuilt after the smoke test")):
        if running not in ("", recorded):
            raise MlopsError(
                f"Staging runs the {artifact} {running}, but version {release.model_version} "
                f"now records {shown} ({rebuilt}); production was not changed.",
                "Deploy and smoke-test it on staging first: `python -m ml_service deploy "
                f"--target staging --model-version {release.model_version}`.")


def canary_first(settings, previous):
    """Whether promote runs a canary on this machine before production serves the new
    release alone: strategy = "canary" on a local process or container target (through
    its traffic split) with a release to compare with. On AKS, Flagger runs it."""
    production = settings.production
    if production.strategy != "canary":
        return False
    if not previous.is_set:
        print("promote: no release in production yet, so nothing to compare a canary with: "
              "production takes this one directly", flush=True)
    return production.kind in canary.SPLIT_KINDS and previous.is_set


def canary_report_path(settings):
    return settings.project_root / ".mlops" / "production-canary.md"


def report_flagger_canary(settings, client, previous, version, failure=None):
    """On AKS with strategy = "canary": Flagger's verdict on the CI run's summary, as a
    local canary's report is, and a failure on the version's `canary` tag (canary.run
    tags a local one)."""
    production = settings.production
    if production.strategy != "canary" or production.kind != "aks" or not previous.is_set:
        return
    if failure is not None:
        client.set_model_version_tag(settings.model.name, version, canary.CANARY_TAG,
                                     f"failed: {failure.reason}")
    path = canary_report_path(settings)
    canary.write_flagger_report(path, settings, previous.model_version, version,
                                failure.reason if failure else None)
    report.publish_document("promote", path)


def run_canary(settings, client, previous, release):
    """Production's traffic split between `previous` (a desired state) and `release`,
    through every step; the report goes to the CI run's summary. Raises CanaryFailed."""
    current = registry.release_for(client, settings, previous.model_version)
    report_path = canary_report_path(settings)
    report_path.unlink(missing_ok=True)
    split = get_target("production", settings).start_split(current, release)
    try:
        canary.run(settings, client, split, current, release, report_path)
    finally:
        if report_path.exists():
            report.publish_document("promote", report_path)


@locked("production", "promote")
def promote(settings, approved, model_version=None):
    """Promote the staging release (it must be `model_version` when given); return the
    production Deployment."""
    approval_required(approved)
    client, _ = tracking.connect(settings)
    version = staging_release(settings, client, model_version)
    previous = desired_state.read(settings, "production")
    with_canary = canary_first(settings, previous)
    if previous.is_set and registry.same_version(previous.model_version, version):
        return already_in_production(settings, client, version)
    release = registry.release_for(client, settings, version)
    staged_digest_matches(settings, release)
    check_servable(settings, "production", release)
    if settings.production.promotion == "pr":
        return propose_by_pull_request(settings, client, release, previous)
    commit = commit_production(settings, release,
                               f"Promote {settings.model.name} version {version} to production")
    if previous.is_set:
        client.set_model_version_tag(settings.model.name, version,
                                     registry.PREVIOUS_PRODUCTION_TAG, previous.model_version)
    try:
        if with_canary:
            run_canary(settings, client, previous, release)
        reconcile(settings, client, "production")
        report_flagger_canary(settings, client, previous, version)
        deployment = smoke_test(settings, "production")
    except KeyboardInterrupt:
        # Undone like a failed smoke test: production goes back to what it ran before.
        with signals_held():
            if previous.is_set:
                restore_production(
                    settings, client, previous.model_version,
                    f"Roll back production to version {previous.model_version}: the "
                    f"promotion of version {version} was interrupted")
            else:
                get_target("production", settings).stop()
                restore_desired_state(settings, "production", previous,
                                      f"Undo the interrupted promotion of version {version}")
        print(f"promote: interrupted; production is back to "
              f"{previous.model_version if previous.is_set else 'nothing'}", file=sys.stderr)
        raise
    except MlopsError as failure:
        if isinstance(failure, CanaryFailed):
            report_flagger_canary(settings, client, previous, version, failure)
        if not previous.is_set:
            raise MlopsError(f"Promotion of version {version} failed: {failure.what}",
                             "There was no earlier production version to roll back to. "
                             + failure.fix) from failure
        restored = restore_production(
            settings, client, previous.model_version,
            f"Revert the canary of version {version}: {failure.reason}"
            if isinstance(failure, CanaryFailed) else
            f"Roll back production to version {previous.model_version}: "
            f"version {version} failed its production smoke test")
        raise MlopsError(f"Promotion of version {version} failed and was rolled back: "
                         f"{failure.what} Production serves version {restored} again.",
                         "Fix the release, then deploy and promote again.") from failure
    report.publish("promote", f"production serves {settings.model.name} version {version} "
                   f"at {deployment.scoring_uri}" + (f" (commit {commit[:12]})" if commit else ""),
                   {"model_version": version, "scoring_uri": deployment.scoring_uri,
                    "gitops_commit": commit})
    return deployment


def propose_by_pull_request(settings, client, release, previous):
    """promotion = "pr": open the pull request whose merge promotes `release`; production
    is not touched until then. Returns None (nothing deployed yet)."""
    from ml_service.releasing import pull_request

    get_target("production", settings).check_ready()
    tags = registry.model_version(client, settings, release.model_version).tags
    run_id = tags.get("run_id")
    evidence = {
        "metrics": client.get_run(run_id).data.metrics if run_id else {},
        "gate_reason": tags.get("gate_reason", ""),
        "staging_smoke_test": tags.get(registry.smoke_tag("staging")),
        "production_version": previous.model_version,
    }
    url, commit = pull_request.propose(settings, release, evidence)
    report.publish("promote", f"pull request to promote {settings.model.name} version "
                   f"{release.model_version}: {url}; merging it is the approval",
                   {"model_version": release.model_version, "pull_request": url,
                    # CD starts CI on it: a pull request opened by CI starts none on GitHub.
                    "pull_request_branch": pull_request.branch_name(
                        settings, release.model_version),
                    "gitops_commit": commit})
    return None


@locked("production", "rollback")
def rollback(settings):
    """Return production to the version it ran before the current one; return that version."""
    client, _ = tracking.connect(settings)
    current = desired_state.read(settings, "production")
    if not current.is_set:
        raise MlopsError("Nothing is in production (its desired state names no version), "
                         "so there is nothing to roll back.",
                         "Promote a version first: `python -m ml_service promote --approve`.")
    tags = registry.model_version(client, settings, current.model_version).tags
    previous = tags.get(registry.PREVIOUS_PRODUCTION_TAG)
    # A version recorded as its own predecessor (by older releases of this code) has none.
    if previous is None or registry.same_version(previous, current.model_version):
        raise MlopsError(f"Production runs version {current.model_version}, the oldest "
                         "production release on record: there is no earlier version to "
                         "roll back to. Production was not changed.",
                         "Deploy a specific version instead: `python -m ml_service deploy "
                         "--target production --model-version N`.")
    restore_production(settings, client, previous,
                       f"Roll back production from version {current.model_version} to {previous}")
    report.publish("rollback", f"production serves {settings.model.name} version {previous} "
                   f"again (was {current.model_version})", {"model_version": previous})
    return previous
