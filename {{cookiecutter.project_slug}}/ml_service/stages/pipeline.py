"""pipeline: the whole CI+CD chain in one process, as CI runs it step by step.

train -> evaluate -> register -> build-image -> deploy staging -> smoke-test,
then, only with --approve, promote to production (which smoke-tests it).
The image is pushed when a target runs containers (they run it by digest).
"""
import dataclasses
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
    parser.add_argument("--prefer-containers", action="store_true",
                        help="run staging and production as containers of the image pushed "
                             "to the local registry when Docker, that registry and the base "
                             "image are available here; else as processes (says which)")


def container_settings(settings):
    """`settings` with staging and production as containers of an image built here and
    pushed to the local registry; or None and why they cannot run here."""
    from ml_service.targets.container import LOCAL_REGISTRY, engine_blocker, registry_blocker

    candidate = dataclasses.replace(
        settings,
        image=dataclasses.replace(settings.image, registry=LOCAL_REGISTRY, build="auto"),
        staging=dataclasses.replace(settings.staging, kind="container"),
        production=dataclasses.replace(settings.production, kind="container"))
    blocker = (engine_blocker() or registry_blocker(LOCAL_REGISTRY)
               or build_image.build_blocker(candidate,
                                            settings.project_root / "scoring" / "Dockerfile"))
    return (None, blocker) if blocker else (candidate, None)


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
        digest = f"  {deployment.image_digest}" if deployment.image_digest else ""
        lines.append(f"  {name:<10}  version {deployment.model_version}  {state.image}{digest}")
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
    if args.prefer_containers:
        containers, blocker = container_settings(settings)
        if containers:
            settings = containers
            print(f"pipeline: containers mode: staging and production run the image pushed "
                  f"to {settings.image.registry}, by digest")
        else:
            print(f"pipeline: processes mode: containers cannot run here ({blocker}); "
                  "scripts/container-engine.sh sets them up")
    version = registered_version(settings)
    if version is None:
        print("pipeline: the gate rejected the new model, so nothing was built or deployed.")
    else:
        push = "container" in {settings.target(name).kind for name in TARGET_NAMES}
        build_image.build_image(settings, version, push=push)
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
