"""Promotion and rollback: production's desired state, committed, reconciled and checked.

`promote` is the approved move of the staging release to production, the GitOps way.
It refuses without approval, refuses a version whose staging smoke test did not
pass and, where staging runs an image by digest, one whose recorded digest is not
the one staging runs. It writes production's desired state (same image, same digest) and commits it,
reconciles production, smoke-tests it, and rolls back automatically if that fails:
production ends on either the old or the new release, never in between.

`rollback` returns production to the release it ran before the current one. The
previous version is recorded on each promoted version (tag `previous_production`).
Both end in `restore_production`, which rewrites and commits the desired state,
reconciles production and moves the `production` alias.
"""
from mlflow.exceptions import MlflowException

from ml_service import desired_state, report, tracking
from ml_service.errors import MlopsError
from ml_service.releasing import registry
from ml_service.releasing.deployment import reconcile
from ml_service.releasing.smoke import smoke_test
from ml_service.targets import get_target

PREVIOUS_TAG = "previous_production"


def commit_production(settings, release, message):
    """Write `release` as production's desired state and commit it; return the commit."""
    state = desired_state.DesiredState.of_release(release)
    path = desired_state.write(settings, "production", state)
    return desired_state.commit(settings, path, message)


def restore_production(settings, client, version, message):
    """Make `version` production's desired state (committed) and deploy it; return it."""
    commit_production(settings, registry.release_for(client, settings, version), message)
    reconcile(settings, client, "production")
    return version


def promote(settings, approved):
    if not approved:
        raise MlopsError("Promotion to production needs an explicit approval; production "
                         "was not changed.",
                         "Re-run with --approve (in CI, the production environment's "
                         "reviewers give it).")
    client, _ = tracking.connect(settings)
    try:
        staging = client.get_model_version_by_alias(settings.model.name, "staging")
    except MlflowException:
        raise MlopsError("No model version is deployed to staging.",
                         "Deploy and smoke-test one first: `python -m ml_service deploy "
                         "--target staging --model-version N`.") from None
    version = staging.version
    if staging.tags.get("smoke_test.staging") != "passed":
        raise MlopsError(
            f"Version {version} has not passed its staging smoke test "
            f"(smoke_test.staging={staging.tags.get('smoke_test.staging', 'not run')}); "
            "production was not changed.",
            "Run `python -m ml_service smoke-test --target staging` and promote once it passes.")
    release = registry.release_for(client, settings, version)
    staged = get_target("staging", settings).status()
    if staged is not None and staged.image_digest not in ("", release.image_digest):
        # Only a target that runs images by digest reports one (kind = "container").
        raise MlopsError(
            f"Staging runs the image {staged.image_digest}, but version {version} now records "
            f"{release.image_digest or 'no pushed image'} (its image was rebuilt after the "
            "smoke test); production was not changed.",
            f"Deploy and smoke-test it on staging first: `python -m ml_service deploy --target "
            f"staging --model-version {version}`.")
    previous = desired_state.read(settings, "production")
    commit = commit_production(settings, release,
                               f"Promote {settings.model.name} version {version} to production")
    if previous.is_set and previous.model_version != version:
        client.set_model_version_tag(settings.model.name, version, PREVIOUS_TAG,
                                     previous.model_version)
    try:
        reconcile(settings, client, "production")
        deployment = smoke_test(settings, "production")
    except MlopsError as failure:
        if not previous.is_set:
            raise MlopsError(f"Promotion of version {version} failed: {failure.what}",
                             "There was no earlier production version to roll back to. "
                             + failure.fix) from failure
        restored = restore_production(
            settings, client, previous.model_version,
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


def rollback(settings):
    """Return production to the version it ran before the current one; return that version."""
    client, _ = tracking.connect(settings)
    current = desired_state.read(settings, "production")
    previous = None
    if current.is_set:
        tags = registry.model_version(client, settings, current.model_version).tags
        previous = tags.get(PREVIOUS_TAG)
    if previous is None:
        raise MlopsError("Production has no earlier version to roll back to.",
                         "Deploy a specific version instead: `python -m ml_service deploy "
                         "--target production --model-version N`.")
    restore_production(settings, client, previous,
                       f"Roll back production from version {current.model_version} to {previous}")
    report.publish("rollback", f"production serves {settings.model.name} version {previous} "
                   f"again (was {current.model_version})", {"model_version": previous})
    return previous
