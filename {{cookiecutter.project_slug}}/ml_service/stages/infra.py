"""infra: deploy environment_setup/main.bicep (what-if first, create with --apply)."""
HELP = "preview (what-if) or, with --apply, create the Azure resources"


def add_arguments(parser):
    parser.add_argument("--apply", action="store_true",
                        help="create/update the resources after the what-if preview")


def run(settings, args):
    from ml_service.azure import infra
    infra.deploy_infrastructure(settings, what_if=not args.apply, dry_run=args.dry_run)
    return 0
