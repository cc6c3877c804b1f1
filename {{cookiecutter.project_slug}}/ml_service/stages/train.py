"""train: fit the model and log it, with its metrics, to a new pipeline run
(where: ml_service/backends/)."""
HELP = "train a model and log it to a new pipeline run"


def add_arguments(parser):
    """train takes no options: everything comes from mlops.toml."""


def run(settings, args):
    from ml_service.backends import get_backend

    get_backend(settings).train(dry_run=args.dry_run)
    return 0
