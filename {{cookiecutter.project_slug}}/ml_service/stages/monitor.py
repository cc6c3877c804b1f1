"""monitor: check a target's recent traffic for drift (ml_service/monitoring/check.py)."""
from ml_service.config import TARGET_NAMES

HELP = ("compare a target's recent requests and predictions with its model's training data; "
        "exit 3 on drift")


def add_arguments(parser):
    parser.add_argument("--target", required=True, choices=TARGET_NAMES,
                        help="the environment whose recorded requests are compared")


def run(settings, args):
    from ml_service.monitoring import check

    return check.monitor(settings, args.target, dry_run=args.dry_run)
