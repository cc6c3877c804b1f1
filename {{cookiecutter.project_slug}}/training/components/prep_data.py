"""prep_data: load the data set and split it into train and test rows (seeded).

    python -m training.components.prep_data --test-size 0.2 --random-seed 42 --data OUT
"""
import argparse

from training.components import write_json, write_split
from training.data import fingerprint, load_dataset, split_dataset


def prep_data(data_dir, test_size, random_seed):
    """Write train.parquet, test.parquet and data.json to `data_dir`; return data.json's content."""
    features, target = load_dataset()
    x_train, x_test, y_train, y_test = split_dataset(features, target, test_size, random_seed)
    write_split(data_dir, "train", x_train, y_train)
    write_split(data_dir, "test", x_test, y_test)
    summary = {"data_fingerprint": fingerprint(features, target), "train_rows": len(x_train),
               "test_rows": len(x_test), "test_size": test_size, "random_seed": random_seed}
    write_json(data_dir, "data.json", summary)
    print(f"prep_data: {len(x_train)} training and {len(x_test)} test rows, "
          f"fingerprint {summary['data_fingerprint'][:12]}")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-size", type=float, required=True)
    parser.add_argument("--random-seed", type=int, required=True)
    parser.add_argument("--data", required=True, help="output folder")
    args = parser.parse_args(argv)
    prep_data(args.data, args.test_size, args.random_seed)


if __name__ == "__main__":
    main()
