"""`python -m ml_service <stage>`: the thin CLI that CI steps and people call."""
import argparse
import dataclasses
import gc
import logging
import os
import signal
import sys
import warnings

from ml_service.config import BACKENDS, PipelineSettings, load_settings
from ml_service.errors import MlopsError
from ml_service.stages import (build_image, deploy, evaluate, infra, monitor, pipeline,
                               predict, promote, register, register_data, rollback, schedule,
                               smoke_test, stop, train, use_data)

STAGES = {
    "train": train,
    "evaluate": evaluate,
    "register": register,
    "build-image": build_image,
    "deploy": deploy,
    "smoke-test": smoke_test,
    "promote": promote,
    "rollback": rollback,
    "stop": stop,
    "pipeline": pipeline,
    "schedule": schedule,
    "infra": infra,
    "use-data": use_data,
    "register-data": register_data,
    "predict": predict,
    "monitor": monitor,
}

# A stage runs in a process of its own, whose objects are mostly the libraries it imports
# (MLflow, scikit-learn, pandas, SQLAlchemy), alive until it exits. Python's full garbage
# collection walks them all again whenever they have grown by a quarter and the middle
# generation has been collected 10 times: 15-20 % of a stage's CPU (evaluate: 1.2-1.4 of
# 6.5-7.5 CPU-s, timed with gc.callbacks). After every 100th it is 0.2 CPU-s, at the same
# peak memory; the young generations still free the cycles a stage discards.
FULL_COLLECTION_AFTER = 100


def collect_less_often():
    """In this process, a full garbage collection only after every FULL_COLLECTION_AFTER-th
    collection of the middle generation (see above)."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)


def add_global_options(parser, default=None):
    """The options of every verb, accepted before the verb and after it: after it they
    default to argparse.SUPPRESS, so they do not overwrite a value given before it."""
    parser.add_argument("--config", default=default,
                        help="settings file (default: $MLOPS_CONFIG or ./mlops.toml)")
    parser.add_argument("--debug", action="store_true", default=default or False,
                        help="show tracebacks and debug logs")
    parser.add_argument("--backend", choices=BACKENDS, default=default,
                        help="where training runs (default: [pipeline] backend in mlops.toml)")
    parser.add_argument("--dry-run", action="store_true", default=default or False,
                        help="Azure commands: print the exact plan; send nothing, need no login")


def program_name(argv0=None):
    """The command the user typed: `mlops` (the installed script) or
    `python -m ml_service`, for usage lines and help."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    name = os.path.basename(argv0)
    return "python -m ml_service" if name in ("__main__.py", "") else name


def build_parser(prog=None):
    parser = argparse.ArgumentParser(prog=prog or program_name(), description=__doc__)
    add_global_options(parser)
    commands = parser.add_subparsers(dest="stage", required=True, metavar="STAGE",
                                     help="the step to run (STAGE --help: its options)")
    for name, module in STAGES.items():
        command = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        add_global_options(command.add_argument_group("global options"), argparse.SUPPRESS)
    return parser


def configure_logging(debug):
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if debug else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[console])
    # Our own INFO lines reach the stage log artifacts (tracking.stage_run), not the console.
    logging.getLogger("ml_service").setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        # Library chatter (database migrations, deprecation notices, download progress
        # bars, and azure-identity's screen listing every credential it tried before
        # our own sign-in error) hides the result lines.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for noisy in ("alembic", "mlflow", "azure"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv=None):
    collect_less_often()
    args = build_parser().parse_args(argv)
    configure_logging(args.debug)
    # SIGTERM (CI cancelling a job, `kill`) unwinds like Ctrl-C, so the release steps'
    # undo runs for both (ml_service/releasing/interrupts.py).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        settings = load_settings(args.config)
        if args.backend:
            settings = dataclasses.replace(settings, pipeline=PipelineSettings(args.backend))
        return STAGES[args.stage].run(settings, args)
    except MlopsError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{args.stage}: interrupted; what it had started was undone (see above)",
              file=sys.stderr)
        return 130
    except Exception as error:  # an MLflow or driver failure we did not anticipate
        if args.debug:
            raise
        print(f"error: {args.stage} failed with {type(error).__name__}: {error}. "
              "Run again with --debug for the full traceback.", file=sys.stderr)
        return 1
