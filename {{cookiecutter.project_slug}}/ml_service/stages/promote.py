"""promote: the approved move of the staging release to production, the GitOps way
(ml_service/releasing/promotion.py)."""
HELP = "promote the staging release to production (needs --approve)"


def add_arguments(parser):
    parser.add_argument("--approve", action="store_true",
                        help="the release approval; CI passes it only in the approved job")
    parser.add_argument("--model-version", metavar="N",
                        help="refuse unless N is the version staging's committed desired "
                             "state names and its staging smoke test passed (CD passes the "
                             "version it deployed to staging)")


def run(settings, args):
    if args.dry_run:
        from ml_service.releasing.dry_run import promote_plan

        print(promote_plan(settings))
        return 0
    from ml_service.releasing import promotion

    promotion.promote(settings, args.approve, model_version=args.model_version)
    return 0
