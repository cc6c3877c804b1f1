"""pipeline: the whole CI+CD chain in one process, as CI runs it step by step.

train -> evaluate -> register -> build-image -> deploy staging -> smoke-test,
then, only with --approve, promote to production (which smoke-tests it).
"""
import json

from ml_service import desired_state
from ml_service.config import TARGET_NAMES
from ml_service.stages import build_image, deploy, evaluate, promote, register, smoke_test
from ml_service.stages import stop as stop_stage
from ml_service.stages import train
from ml_service.targets import get_target

HELP = "run every stage in order: train to staging, and to production with --approve"


def add_arguments(parser):
    parser.add_argument("--approve", action="store_true", help="also promote to production")
    parser.add_argument("--stop-servers", action="store_true",
                        help="stop the local scoring servers at the end")


def summary(settings):
    """One block saying what runs where, with a sample prediction from each target."""
    payload = json.loads((settings.project_root / smoke_test.SAMPLE_REQUEST).read_text())
    lines = ["", "Summary", f"  MLflow store: {settings.tracking.uri}",
             "  Browse it:    make ui  (or: mlflow ui --backend-store-uri "
             f"{settings.tracking.uri})"]
    for name in TARGET_NAMES:
        state = desired_state.read(settings, name)
        target = get_target(name, settings)
        deployment = target.status()
        if deployment is None or not deployment.healthy or not state.is_set:
            lines.append(f"  {name:<10}  not deployed")
            continue
        _, body, _ = smoke_test.score(deployment, target.request_headers(), payload)
        lines.append(f"  {name:<10}  version {deployment.model_version}  {state.image}")
        lines.append(f"  {'':<10}  {deployment.scoring_uri}  sample prediction: "
                     f"{[round(p, 1) for p in body['predictions']]}")
    print("\n".join(lines))


def registered_version(settings):
    """Train, gate and register where the backend says; the new version or None."""
    if settings.pipeline.backend == "azureml":
        from ml_service.azure import pipeline_job
        return pipeline_job.submit_training_pipeline(settings).model_version
    lineage_id = train.train(settings)
    evaluate.evaluate(settings, lineage_id)
    return register.register(settings, lineage_id)


def run(settings, args):
    if args.dry_run:
        if settings.pipeline.backend == "azureml":
            from ml_service.azure import pipeline_job
            pipeline_job.submit_training_pipeline(settings, dry_run=True)
        print("pipeline: dry run: only the Azure ML training job can be planned; the later "
              "stages need the version it registers.")
        return 0
    version = registered_version(settings)
    if version is None:
        print("pipeline: the gate rejected the new model, so nothing was built or deployed.")
    else:
        build_image.build_image(settings, version)
        deploy.deploy(settings, "staging", version)
        smoke_test.smoke_test(settings, "staging")
        if args.approve:
            promote.promote(settings, approved=True)
        else:
            print("pipeline: production unchanged; promote with "
                  "`python -m ml_service promote --approve`.")
    summary(settings)
    if args.stop_servers:
        stop_stage.stop(settings)
    return 0
