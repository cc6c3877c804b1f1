"""use-data: train on your own table. Points [data] of mlops.toml at a CSV or Parquet
file (or folder), with the numeric columns as features, and writes
scoring/sample-request.json from its first rows (ml_service/data_assets.py)."""
HELP = "set [data] and the sample request from your own CSV/Parquet file or folder"


def add_arguments(parser):
    parser.add_argument("path", metavar="FILE_OR_FOLDER",
                        help="a CSV or Parquet file, or a folder of them")
    parser.add_argument("--target", required=True,
                        help="the column to predict (numeric)")


def run(settings, args):
    import os
    from pathlib import Path

    from ml_service import data_assets
    from ml_service.config import CONFIG_ENV, DEFAULT_CONFIG

    config = Path(args.config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    source, features, left_out, request = data_assets.use_data(settings, config, args.path,
                                                               args.target)
    print(f"use-data: {config.name} [data] source = \"{source}\", target = "
          f"\"{args.target}\", features = {', '.join(features)}")
    for column, why in left_out.items():
        print(f"use-data: left out {column!r}: {why}")
    print(f"use-data: wrote {len(features)}-feature rows to {request}")
    print("next: python -m ml_service train  (or make pipeline)")
    return 0
