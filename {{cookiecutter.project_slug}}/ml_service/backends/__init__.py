"""Where training runs: one module per backend, chosen by [pipeline] backend (or --backend).

`local` (local.py) trains, gates and registers in this process against the MLflow
store of mlops.toml; `azureml` (azureml.py) runs the same steps as an Azure ML
pipeline job and reads its results back. Both implement the Backend interface of
base.py, so the train, evaluate, register and pipeline stages never ask which one
they have.
"""


def get_backend(settings):
    """The Backend configured by [pipeline] backend."""
    # Imported on use: the Azure SDKs take seconds to import and are optional locally.
    if settings.pipeline.backend == "azureml":
        from ml_service.backends.azureml import AzureMLBackend
        return AzureMLBackend(settings)
    from ml_service.backends.local import LocalBackend
    return LocalBackend(settings)
