"""rollback: return production to the release it ran before the current one.

The previous version is recorded on each promoted version (tag
`previous_production`). Rolling back rewrites and commits the desired state,
reconciles production and moves the `production` alias back.
"""
from ml_service import desired_state, releases, report, tracking
from ml_service.errors import MlopsError
from ml_service.stages.deploy import reconcile, state_of

HELP = "return production to its previous model version"
PREVIOUS_TAG = "previous_production"


def add_arguments(parser):
    parser.add_argument("--target", default="production", choices=["production"])


def roll_back(settings, client, version, message):
    """Make `version` production's desired state and deploy it; return the version."""
    release = releases.release_for(client, settings, version)
    path = desired_state.write(settings, "production", state_of(release))
    desired_state.commit(settings, path, message)
    reconcile(settings, client, "production")
    return version


def rollback(settings):
    client, _ = tracking.connect(settings)
    current = desired_state.read(settings, "production")
    previous = None
    if current.is_set:
        tags = releases.model_version(client, settings, current.model_version).tags
        previous = tags.get(PREVIOUS_TAG)
    if previous is None:
        raise MlopsError("Production has no earlier version to roll back to.",
                         "Deploy a specific version instead: `python -m ml_service deploy "
                         "--target production --model-version N`.")
    roll_back(settings, client, previous,
              f"Roll back production from version {current.model_version} to {previous}")
    report.publish("rollback", f"production serves {settings.model.name} version {previous} "
                   f"again (was {current.model_version})", {"model_version": previous})
    return previous


def run(settings, args):
    rollback(settings)
    return 0
