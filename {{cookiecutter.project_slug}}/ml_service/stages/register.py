"""register: add the gated model to the registry, tagged with its lineage
(training/lineage.py). On Azure ML registration ran as a step of the job; this
reads its result."""
HELP = "register the evaluated model if the gate passed"


def add_arguments(parser):
    parser.add_argument("--run-id", help="pipeline run to register (default: the newest)")


def run(settings, args):
    from ml_service.backends import get_backend

    get_backend(settings).register(args.run_id)
    return 0
