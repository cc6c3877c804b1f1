"""register-data: a new version of the training data, to name in [data] source
(where: ml_service/data_assets.py)."""
HELP = "register a data file or folder as a new data version (locally or in Azure ML)"


def add_arguments(parser):
    parser.add_argument("--name", required=True, help="data asset name, e.g. diabetes")
    parser.add_argument("--path", required=True,
                        help="a CSV or Parquet file, or a folder of them")


def run(settings, args):
    from ml_service import data_assets

    data_assets.register_data(settings, args.name, args.path, dry_run=args.dry_run)
    return 0
