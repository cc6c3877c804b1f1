"""pipeline: the whole CI+CD chain in one process, as CI runs it step by step.

train -> evaluate -> register (where the backend says) -> build-image -> deploy
staging -> smoke-test, then, only with --approve, promote to production (which
smoke-tests it). The steps are the operations the single stages call. The image
is pushed when a target runs containers (they run it by digest).
"""
import dataclasses

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
    from ml_service.releasing.image import build_blocker
    from ml_service.targets.container import LOCAL_REGISTRY, engine_blocker, registry_blocker

    candidate = dataclasses.replace(
        settings,
        image=dataclasses.replace(settings.image, registry=LOCAL_REGISTRY, build="auto"),
        staging=dataclasses.replace(settings.staging, kind="container"),
        production=dataclasses.replace(settings.production, kind="container"))
    blocker = (engine_blocker() or registry_blocker(LOCAL_REGISTRY)
               or build_blocker(candidate, settings.project_root / "scoring" / "Dockerfile"))
    return (None, blocker) if blocker else (candidate, None)


def run(settings, args):
    from ml_service import targets
    from ml_service.backends import get_backend
    from ml_service.config import TARGET_NAMES
    from ml_service.releasing import deployment, image, promotion, smoke

    if args.prefer_containers and not args.dry_run:
        containers, blocker = container_settings(settings)
        if containers:
            settings = containers
            print(f"pipeline: containers mode: staging and production run the image pushed "
                  f"to {settings.image.registry}, by digest")
        else:
            print(f"pipeline: processes mode: containers cannot run here ({blocker}); "
                  "scripts/container-engine.sh sets them up")
    version = get_backend(settings).train_gate_register(dry_run=args.dry_run)
    if args.dry_run:
        print("pipeline: dry run: only the Azure ML training job can be planned; the later "
              "stages need the version it registers.")
        return 0
    if version is None:
        print("pipeline: the gate rejected the new model, so nothing was built or deployed.")
    else:
        push = "container" in {settings.target_settings(name).kind for name in TARGET_NAMES}
        image.build_image(settings, version, push=push)
        deployment.deploy(settings, "staging", version)
        smoke.smoke_test(settings, "staging")
        if args.approve:
            promotion.promote(settings, approved=True, model_version=version)
        else:
            print("pipeline: production unchanged; promote with "
                  "`python -m ml_service promote --approve`.")
    deployment.summary(settings)
    if args.stop_servers:
        targets.stop(settings)
    return 0
