"""evaluate: the champion/challenger gate (training/gate.py) on a pipeline run.

The challenger is the model trained in the pipeline run; the champion is the
registered version holding the `production` alias, if any. The decision is
recorded on the pipeline run, where `register` reads it: the gate's decision is
the one acted on. On Azure ML the gate ran as a step of the job; this reads it.
"""
HELP = "compare the trained model with the production model (the gate)"


def add_arguments(parser):
    parser.add_argument("--run-id", help="pipeline run to evaluate (default: the newest)")


def run(settings, args):
    from ml_service.backends import get_backend

    get_backend(settings).evaluate(args.run_id)
    return 0
