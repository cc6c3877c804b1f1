"""pipeline: every stage in order, in one process, as CI runs them one by one."""
from ml_service.stages import evaluate, register, train

HELP = "run train, evaluate and register in order"


def add_arguments(parser):
    """pipeline takes no options of its own."""


def run(settings, args):
    lineage_id = train.train(settings)
    evaluate.evaluate(settings, lineage_id)
    register.register(settings, lineage_id)
    print(f"pipeline: done. MLflow store: {settings.tracking.uri}\n"
          f"  browse it with: mlflow ui --backend-store-uri {settings.tracking.uri}")
    return 0
