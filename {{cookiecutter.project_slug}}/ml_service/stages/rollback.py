"""rollback: return production to the release it ran before the current one
(ml_service/releasing/promotion.py)."""
HELP = "return production to its previous model version"


def add_arguments(parser):
    """rollback takes no options: it always acts on production."""


def run(settings, args):
    from ml_service.releasing import promotion

    promotion.rollback(settings)
    return 0
