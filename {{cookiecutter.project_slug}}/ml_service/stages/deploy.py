"""deploy: make a target run its desired state.

With --model-version the target's desired state is first set to that version's
release; without it, the target is reconciled to the desired state already in
deploy/overlays/<target>/ (as promote and rollback leave it).
"""
from ml_service import desired_state, releases, report, tracking
from ml_service.config import TARGET_NAMES
from ml_service.errors import MlopsError
from ml_service.targets import get_target

HELP = "deploy a model version's image to staging or production"


def add_arguments(parser):
    parser.add_argument("--target", required=True, choices=TARGET_NAMES)
    parser.add_argument("--model-version", help="set the desired state to this version first")


def state_of(release):
    return desired_state.DesiredState(model_version=release.model_version,
                                      image=release.image, image_digest=release.image_digest)


def reconcile(settings, client, target_name):
    """Deploy the target's desired state; move its alias; return the Deployment."""
    state = desired_state.read(settings, target_name)
    if not state.is_set:
        raise MlopsError(f"No model version is set in the desired state of {target_name}.",
                         f"Deploy one with `python -m ml_service deploy --target {target_name} "
                         "--model-version N`, or promote one from staging.")
    release = releases.release_for(client, settings, state.model_version)
    deployment = get_target(target_name, settings).deploy(release)
    client.set_registered_model_alias(settings.model.name, target_name, release.model_version)
    return deployment


def deploy(settings, target_name, version=None, dry_run=False):
    client, _ = tracking.connect(settings)
    if dry_run:
        state = desired_state.read(settings, target_name)
        release = releases.release_for(client, settings, version or state.model_version)
        print(get_target(target_name, settings).plan(release))
        return None
    if version is not None:
        release = releases.release_for(client, settings, version)
        desired_state.write(settings, target_name, state_of(release))
    deployment = reconcile(settings, client, target_name)
    report.publish("deploy", f"{target_name} serves {settings.model.name} version "
                   f"{deployment.model_version} at {deployment.scoring_uri}",
                   {"scoring_uri": deployment.scoring_uri,
                    "model_version": deployment.model_version})
    return deployment


def run(settings, args):
    deploy(settings, args.target, args.model_version, args.dry_run)
    return 0
