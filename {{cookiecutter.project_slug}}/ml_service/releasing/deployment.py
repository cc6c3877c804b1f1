"""Deploying: make a target run its desired state, and say what runs where.

`deploy` with a version first sets the target's desired state to that version's
release and commits it (the commit is the record of what the target runs: promote
reads staging's from it); without one, the target is reconciled to the desired state
already in deploy/overlays/<target>/ (as promote and rollback leave it). `reconcile`
and `commit_desired_state` are the steps promote and rollback share.
"""
import sys

from ml_service import desired_state, git, report, tracking
from ml_service.client import ScoringClient, ScoringError
from ml_service.config import TARGET_NAMES
from ml_service.errors import MlopsError
from ml_service.release import verify_context
from ml_service.releasing import registry, smoke
from ml_service.releasing.interrupts import signals_held
from ml_service.releasing.lock import environment_lock
from ml_service.targets import get_target


def commit_desired_state(settings, target_name, release, message):
    """Write `release` as the target's desired state and commit it; return the commit.
    Refused before anything is written if git would make the commit wrong; a commit git
    refuses leaves the file as it was, unstaged."""
    overlay = desired_state.overlay_file(settings, target_name)
    git.check_can_commit(settings.project_root, overlay.parent)
    before = overlay.read_text() if overlay.exists() else None
    path = desired_state.write(settings, target_name,
                               desired_state.DesiredState.of_release(release))
    try:
        return desired_state.commit(settings, path, message)
    except BaseException:
        # A refused commit (a failing hook, Ctrl-C) must not leave the new state written
        # and staged: a later deploy would run a version git does not name.
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(before)
        git.run(settings.project_root, "reset", "--quiet", "--", str(path))
        raise


def restore_desired_state(settings, target_name, state, message):
    """Write `state` (a DesiredState, set or not) back as the target's desired state and
    commit it: the undo of an interrupted step."""
    path = (desired_state.write(settings, target_name, state) if state.is_set
            else desired_state.clear(settings, target_name))
    return desired_state.commit(settings, path, message)


def finished_or_undone(settings, target_name, version, previous, what):
    """After `what` was interrupted once git named `version`: if the target runs it, the
    step finished and git is right; otherwise git goes back to `previous`, which the
    target still runs (the target undoes its own half-started deploy)."""
    with signals_held():
        running = get_target(target_name, settings).status()
        if running is not None and running.healthy and registry.same_version(
                running.model_version, version):
            print(f"{what}: interrupted after {target_name} took version {version}; git "
                  "names it", file=sys.stderr)
            return
        restore_desired_state(settings, target_name, previous,
                              f"Undo the interrupted {what} of version {version} to "
                              f"{target_name}")
        print(f"{what}: interrupted; {target_name}'s desired state is back to "
              f"{previous.model_version if previous.is_set else 'no version'}",
              file=sys.stderr)


def check_servable(settings, target_name, release):
    """Refuse, before git names it, a release the target would refuse to start: a local
    process target serves the build context, which must be the one build-image
    recorded (targets/local.py checks it again before every start)."""
    if settings.target_settings(target_name).kind == "local":
        verify_context(release)


def reconcile(settings, client, target_name):
    """Deploy the target's desired state (mirrored as an alias where the registry has
    aliases); return the Deployment."""
    state = desired_state.read(settings, target_name)
    if not state.is_set:
        raise MlopsError(f"No model version is set in the desired state of {target_name}.",
                         f"Deploy one with `python -m ml_service deploy --target {target_name} "
                         "--model-version N`, or promote one from staging.")
    release = registry.release_for(client, settings, state.model_version)
    deployment = get_target(target_name, settings).deploy(release)
    registry.mirror_alias(client, settings, target_name, release.model_version)
    return deployment


def deploy(settings, target_name, version=None, skip_if_unset=False):
    """Deploy `version` (or the desired state) to the target; return the Deployment, or
    None when `skip_if_unset` and the desired state names no version: a fresh project's
    first push to main changes every file, so CI's rollout of the production desired
    state runs before anything was promoted, and must then do nothing, not fail (a
    failure would trigger its revert). (--dry-run: ml_service/releasing/dry_run.py.)"""
    if (skip_if_unset and version is None
            and not desired_state.read(settings, target_name).is_set):
        overlay = desired_state.overlay_file(settings, target_name)
        report.publish("deploy", f"{target_name} rollout skipped: "
                       f"{overlay.relative_to(settings.project_root).as_posix()} names no "
                       "model version (nothing was promoted yet, or the desired state was "
                       "cleared); nothing was deployed", {"skipped": "true"})
        return None
    client, _ = tracking.connect(settings)
    with environment_lock(settings, target_name, "deploy"):
        if version is None:
            deployment = reconcile(settings, client, target_name)
        else:
            previous = desired_state.read(settings, target_name)
            release = registry.release_for(client, settings, version)
            check_servable(settings, target_name, release)
            commit_desired_state(settings, target_name, release,
                                 f"Deploy {settings.model.name} version "
                                 f"{release.model_version} to {target_name}")
            try:
                deployment = reconcile(settings, client, target_name)
            except KeyboardInterrupt:
                finished_or_undone(settings, target_name, release.model_version, previous,
                                   "deploy")
                raise
    report.publish("deploy", f"{target_name} serves {settings.model.name} version "
                   f"{deployment.model_version} at {deployment.scoring_uri}",
                   {"scoring_uri": deployment.scoring_uri,
                    "model_version": deployment.model_version})
    return deployment


def summary(settings):
    """One block saying what runs where, with a sample prediction from each target."""
    rows = smoke.sample_rows(settings)
    lines = ["", "Summary", f"  MLflow store: {settings.tracking.uri}",
             "  Browse it:    make ui  (or: mlflow ui --backend-store-uri "
             f"{settings.tracking.uri})"]
    for name in TARGET_NAMES:
        state = desired_state.read(settings, name)
        target = get_target(name, settings)
        deployment = target.status()
        if deployment is None or not deployment.healthy or not state.is_set:
            lines.append(f"  {name:<10}  not deployed")
            continue
        try:
            sample = [round(prediction, 1) for prediction in
                      ScoringClient.for_deployment(settings, deployment, smoke_test=True)
                      .predict(rows)]
        except ScoringError as error:
            sample = f"failed ({error.what})"
        digest = f"  {deployment.image_digest}" if deployment.image_digest else ""
        lines.append(f"  {name:<10}  version {deployment.model_version}  {state.image}{digest}")
        lines.append(f"  {'':<10}  {deployment.scoring_uri}  sample prediction: {sample}")
    print("\n".join(lines))
