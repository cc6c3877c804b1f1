"""build-image: the scoring image of a model version (ml_service/releasing/image.py)."""
HELP = "build the scoring image (or its build context) for a model version"


def add_arguments(parser):
    parser.add_argument("--model-version", required=True, help="registered model version")
    parser.add_argument("--push", action="store_true",
                        help="push the image to the [image] registry (needs Docker)")


def run(settings, args):
    from ml_service.releasing import image

    image.build_image(settings, args.model_version, args.push)
    return 0
