"""stop: stop the local scoring servers that deploy started (ml_service/targets/), and
with --clear-desired-state also forget what the environment should run.

Clearing writes "none" into the target's overlay (deploy/overlays/<target>) and commits
it, as the template ships it: the way out when production runs a version that can no
longer be the gate's champion or be rolled back to (e.g. the oldest release), so the
next pipeline starts as the first one did.
"""
from ml_service.config import DEPLOY_TARGETS, TARGET_NAMES

HELP = "stop a target's deployment (local: the server process)"


def add_arguments(parser):
    parser.add_argument("--target", default="all", choices=[*DEPLOY_TARGETS, "all"],
                        help="the environment to stop (default: all = staging and "
                             "production; an edge device only when named)")
    parser.add_argument("--clear-desired-state", action="store_true",
                        help="also set the target's committed desired state (its overlay "
                             "in deploy/overlays/) back to no model version, and commit it")


def run(settings, args):
    from ml_service import targets

    if args.clear_desired_state and args.target not in (*TARGET_NAMES, "all"):
        from ml_service.errors import MlopsError
        raise MlopsError(f"--clear-desired-state applies to {' and '.join(TARGET_NAMES)}; "
                         f"{args.target}'s desired state is its deployment manifest.",
                         "Delete deploy/edge/deployment.json and commit that instead.")
    targets.stop(settings, args.target)
    if args.clear_desired_state:
        from ml_service import desired_state

        for name in TARGET_NAMES if args.target == "all" else [args.target]:
            path = desired_state.clear(settings, name)
            desired_state.commit(settings, path,
                                 f"Clear {name}'s desired state (no model version)")
            print(f"stop: {name}'s desired state cleared "
                  f"({path.relative_to(settings.project_root)})")
    return 0
