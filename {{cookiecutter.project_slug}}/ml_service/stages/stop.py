"""stop: stop the local scoring servers that deploy started."""
from ml_service.config import TARGET_NAMES
from ml_service.targets import get_target

HELP = "stop a target's deployment (local: the server process)"


def add_arguments(parser):
    parser.add_argument("--target", default="all", choices=[*TARGET_NAMES, "all"])


def stop(settings, target_name="all"):
    for name in TARGET_NAMES if target_name == "all" else [target_name]:
        get_target(name, settings).stop()
        print(f"stop: {name} stopped")


def run(settings, args):
    stop(settings, args.target)
    return 0
