"""predict: score a CSV or JSON file on a deployed target (ml_service/releasing/prediction.py)."""
from ml_service.config import TARGET_NAMES

HELP = "score the rows of a CSV or JSON file on a deployed target; write the predictions"


def add_arguments(parser):
    parser.add_argument("--target", required=True, choices=TARGET_NAMES,
                        help="the deployed environment that scores the rows")
    parser.add_argument("--input", required=True,
                        help="rows to score: .csv with a header naming the columns, or .json "
                             "like scoring/sample-request.json")
    parser.add_argument("--output",
                        help=".csv (the input plus a prediction column) or .json (default: "
                             "<input>.predictions.<suffix> beside the input)")


def run(settings, args):
    from ml_service.releasing import prediction

    prediction.predict_file(settings, args.target, args.input, args.output)
    return 0
