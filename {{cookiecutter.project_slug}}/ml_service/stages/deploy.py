"""deploy: make a target run its desired state (ml_service/releasing/deployment.py)."""
from ml_service.config import TARGET_NAMES

HELP = "deploy a model version's image to staging or production"


def add_arguments(parser):
    parser.add_argument("--target", required=True, choices=TARGET_NAMES)
    parser.add_argument("--model-version", help="set the desired state to this version first")


def run(settings, args):
    from ml_service.releasing import deployment

    deployment.deploy(settings, args.target, args.model_version, args.dry_run)
    return 0
