"""train: fit the model and log it, with its metrics, to a new pipeline run."""
import logging
import time

import mlflow
import mlflow.sklearn
from mlflow.models import infer_signature

from ml_service import report, tracking
from training.data import fingerprint, load_dataset, split_dataset
from training.model import regression_metrics, train_model

HELP = "train a model and log it to a new pipeline run"
log = logging.getLogger(__name__)


def add_arguments(parser):
    """train takes no options: everything comes from mlops.toml."""


def train(settings):
    """Train on the configured data; return the new lineage run id."""
    client, experiment_id = tracking.connect(settings)
    features, target = load_dataset()
    data_fingerprint = fingerprint(features, target)
    x_train, x_test, y_train, y_test = split_dataset(
        features, target, settings.training.test_size, settings.training.random_seed)
    lineage_id = tracking.start_lineage(client, experiment_id,
                                        time.strftime("pipeline-%Y%m%d-%H%M%S"))
    with tracking.stage_run(lineage_id, "train") as run:
        log.info("Training Ridge(alpha=%s) on %d rows", settings.training.alpha, len(x_train))
        mlflow.log_params({
            "alpha": settings.training.alpha,
            "test_size": settings.training.test_size,
            "random_seed": settings.training.random_seed,
            "train_rows": len(x_train),
            "test_rows": len(x_test),
            "data_fingerprint": data_fingerprint,
        })
        model = train_model(x_train, y_train, settings.training.alpha)
        metrics = regression_metrics(model, x_test, y_test)
        mlflow.log_metrics(metrics)
        log.info("Held-out metrics: %s", metrics)
        # Explicit requirements: inferring them costs ~20 s and picks up unrelated packages.
        model_info = mlflow.sklearn.log_model(
            model, name="model",
            signature=infer_signature(x_train, model.predict(x_train)),
            input_example=x_train.head(3),
            pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
        )
        train_run_id = run.info.run_id
    for tag, value in {
        tracking.TRAIN_RUN_ID: train_run_id,
        tracking.MODEL_URI: model_info.model_uri,
        tracking.DATA_FINGERPRINT: data_fingerprint,
    }.items():
        client.set_tag(lineage_id, tag, value)
    report.publish("train", f"pipeline run {lineage_id}; held-out " + ", ".join(
        f"{name}={value:.4f}" for name, value in metrics.items()),
        {"run_id": lineage_id, **metrics})
    return lineage_id


def run(settings, args):
    if settings.pipeline.backend == "azureml":
        from ml_service.azure import pipeline_job
        pipeline_job.submit_training_pipeline(settings, dry_run=args.dry_run)
    else:
        train(settings)
    return 0
