"""rollback: return production to the release it ran before the current one
(ml_service/releasing/promotion.py)."""
HELP = "return production to its previous model version"


def add_arguments(parser):
    """rollback takes no options: it always acts on production."""


def run(settings, args):
    if args.dry_run:
        from ml_service.releasing.dry_run import rollback_plan

        print(rollback_plan(settings))
        return 0
    from ml_service.releasing import promotion

    promotion.rollback(settings)
    return 0
