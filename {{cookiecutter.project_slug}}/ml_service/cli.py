"""`python -m ml_service <stage>`: the thin CLI that CI steps and people call."""
import argparse
import dataclasses
import logging
import os
import sys
import warnings

from ml_service.config import BACKENDS, PipelineSettings, load_settings
from ml_service.errors import MlopsError
from ml_service.stages import (build_image, deploy, evaluate, infra, monitor, pipeline,
                               predict, promote, register, register_data, rollback, schedule,
                               smoke_test, stop, train)

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
    "register-data": register_data,
    "predict": predict,
    "monitor": monitor,
}


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m ml_service", description=__doc__)
    parser.add_argument("--config", help="settings file (default: $MLOPS_CONFIG or ./mlops.toml)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="where training runs (default: [pipeline] backend in mlops.toml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="Azure commands: print the exact plan; send nothing, need no login")
    commands = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, module in STAGES.items():
        module.add_arguments(commands.add_parser(name, help=module.HELP, description=module.HELP))
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    configure_logging(args.debug)
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
    except Exception as error:  # an MLflow or driver failure we did not anticipate
        if args.debug:
            raise
        print(f"error: {args.stage} failed with {type(error).__name__}: {error}. "
              "Run again with --debug for the full traceback.", file=sys.stderr)
        return 1
