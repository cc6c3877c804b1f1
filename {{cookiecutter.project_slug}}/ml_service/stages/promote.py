"""promote: the approved move of the staging release to production, the GitOps way
(ml_service/releasing/promotion.py)."""
HELP = "promote the staging release to production (needs --approve)"


def add_arguments(parser):
    parser.add_argument("--approve", action="store_true",
                        help="the release approval; CI passes it only in the approved job")


def run(settings, args):
    from ml_service.releasing import promotion

    promotion.promote(settings, args.approve)
    return 0
