"""stop: stop the local scoring servers that deploy started (ml_service/targets/)."""
from ml_service.config import DEPLOY_TARGETS

HELP = "stop a target's deployment (local: the server process)"


def add_arguments(parser):
    parser.add_argument("--target", default="all", choices=[*DEPLOY_TARGETS, "all"])


def run(settings, args):
    from ml_service import targets

    targets.stop(settings, args.target)
    return 0
