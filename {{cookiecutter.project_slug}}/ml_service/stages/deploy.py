"""deploy: make a target run its desired state (ml_service/releasing/deployment.py)."""
from ml_service.config import DEPLOY_TARGETS

HELP = "deploy a model version's image to staging, production or an IoT Edge device"


def add_arguments(parser):
    parser.add_argument("--target", required=True, choices=DEPLOY_TARGETS,
                        help="the environment to deploy to (mlops.toml section of that name)")
    parser.add_argument("--model-version", help="set the desired state to this version first")
    parser.add_argument("--skip-if-unset", action="store_true",
                        help="exit 0 with a notice, deploying nothing, when the target's "
                        "desired state names no model version (a fresh project); CI's "
                        "rollout of a pushed desired state uses it")


def run(settings, args):
    if args.dry_run:
        from ml_service.releasing.dry_run import deploy_plan

        print(deploy_plan(settings, args.target, args.model_version))
        return 0
    from ml_service.releasing import deployment

    deployment.deploy(settings, args.target, args.model_version,
                      skip_if_unset=args.skip_if_unset)
    return 0
