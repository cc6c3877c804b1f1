"""smoke-test: check a deployed target's answers (ml_service/releasing/smoke.py)."""
from ml_service.config import DEPLOY_TARGETS

HELP = "send sample requests to a deployed target and check the answers"


def add_arguments(parser):
    parser.add_argument("--target", required=True, choices=DEPLOY_TARGETS,
                        help="the environment whose deployment is tested")


def run(settings, args):
    from ml_service.releasing import smoke

    smoke.smoke_test(settings, args.target)
    return 0
