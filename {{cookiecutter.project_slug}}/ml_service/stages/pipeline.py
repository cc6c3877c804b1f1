"""pipeline: the whole CI+CD chain in one process, as CI runs it step by step.

train -> evaluate -> register (where the backend says) -> build-image -> deploy
staging -> smoke-test, then, only with --approve, promote to production (which
smoke-tests it). The steps are the operations the single stages call.
"""
HELP = "run every stage in order: train to staging, and to production with --approve"


def add_arguments(parser):
    parser.add_argument("--approve", action="store_true", help="also promote to production")
    parser.add_argument("--stop-servers", action="store_true",
                        help="stop the local scoring servers at the end")


def run(settings, args):
    from ml_service import targets
    from ml_service.backends import get_backend
    from ml_service.releasing import deployment, image, promotion, smoke

    version = get_backend(settings).train_gate_register(dry_run=args.dry_run)
    if args.dry_run:
        print("pipeline: dry run: only the Azure ML training job can be planned; the later "
              "stages need the version it registers.")
        return 0
    if version is None:
        print("pipeline: the gate rejected the new model, so nothing was built or deployed.")
    else:
        image.build_image(settings, version)
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
