"""train: fit the model on the training rows and save it as an MLflow model.

    python -m training.components.train --data DATA --alpha 0.1 --model OUT --info OUT
"""
import argparse

import mlflow

from training import lineage, reference
from training.components import read_json, read_split, tracking_configured, write_json
from training.data import data_tags
from training.model import regression_metrics, train_model


def train(data_dir, model_dir, info_dir, alpha):
    """Save the fitted model to `model_dir` and its metrics to info/train.json; return them."""
    x_train, y_train = read_split(data_dir, "train")
    x_test, y_test = read_split(data_dir, "test")
    model = train_model(x_train, y_train, alpha)
    metrics = regression_metrics(model, x_test, y_test)
    lineage.save_model(model, x_train, model_dir)
    run_id = None
    if tracking_configured():
        # Inside Azure ML this is the step's own run (MLFLOW_RUN_ID is set for the job).
        with mlflow.start_run() as run:
            data = read_json(data_dir, "data.json")
            mlflow.log_params({"alpha": alpha, "train_rows": len(x_train),
                               "test_rows": len(x_test),
                               "data_fingerprint": data["data_fingerprint"]})
            mlflow.set_tags(data_tags(data["data_source"]))
            mlflow.log_metrics(metrics)
            reference.log_reference(model, x_train)
            run_id = run.info.run_id
    info = {"run_id": run_id, "alpha": alpha, "metrics": metrics}
    write_json(info_dir, "train.json", info)
    print("train: held-out " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prep_data's output folder")
    parser.add_argument("--alpha", type=float, required=True)
    parser.add_argument("--model", required=True, help="output folder of the MLflow model")
    parser.add_argument("--info", required=True, help="output folder of train.json")
    args = parser.parse_args(argv)
    train(args.data, args.model, args.info, args.alpha)


if __name__ == "__main__":
    main()
