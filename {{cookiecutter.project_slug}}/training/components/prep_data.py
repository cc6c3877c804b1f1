"""prep_data: load the data set, check its schema and split it into train and test rows.

    python -m training.components.prep_data --test-size 0.2 --random-seed 42
        [--source FILE_OR_FOLDER] --data-source REFERENCE --target COLUMN
        --features A,B,C --data OUT
"""
import argparse

from training.components import write_json, write_split
from training.data import (SAMPLE, SAMPLE_FEATURES, SAMPLE_TARGET, DataError, fingerprint,
                           load_dataset, split_dataset)


def prep_data(data_dir, test_size, random_seed, source=SAMPLE, features=SAMPLE_FEATURES,
              target=SAMPLE_TARGET, data_source=SAMPLE):
    """Write train.parquet, test.parquet and data.json to `data_dir`; return data.json's
    content. `source` is the file or folder read (SAMPLE: the bundled sample),
    `data_source` the reference it was given as ([data] source), recorded for lineage."""
    try:
        x, y = load_dataset(source, features, target)
    except DataError as error:
        raise SystemExit(f"prep_data: {error}") from None
    x_train, x_test, y_train, y_test = split_dataset(x, y, test_size, random_seed)
    write_split(data_dir, "train", x_train, y_train)
    write_split(data_dir, "test", x_test, y_test)
    summary = {"data_fingerprint": fingerprint(x, y), "data_source": data_source,
               "train_rows": len(x_train), "test_rows": len(x_test), "test_size": test_size,
               "random_seed": random_seed}
    write_json(data_dir, "data.json", summary)
    print(f"prep_data: {len(x_train)} training and {len(x_test)} test rows from "
          f"{data_source}, fingerprint {summary['data_fingerprint'][:12]}")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-size", type=float, required=True)
    parser.add_argument("--random-seed", type=int, required=True)
    parser.add_argument("--source", default=SAMPLE,
                        help="data file or folder (default: the bundled sample)")
    parser.add_argument("--data-source", default=SAMPLE, help="[data] source, for lineage")
    parser.add_argument("--target", required=True, help="target column")
    parser.add_argument("--features", required=True, help="feature columns, comma-separated")
    parser.add_argument("--data", required=True, help="output folder")
    args = parser.parse_args(argv)
    prep_data(args.data, args.test_size, args.random_seed, args.source,
              [name.strip() for name in args.features.split(",")], args.target,
              args.data_source)


if __name__ == "__main__":
    main()
