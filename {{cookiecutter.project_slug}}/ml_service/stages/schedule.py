"""schedule: retrain on Azure ML on a cron schedule (ml_service/azure/schedule.py)."""
HELP = "create or update the Azure ML retraining schedule"


def add_arguments(parser):
    parser.add_argument("--cron", required=True, help="five-field cron, e.g. '0 3 * * 1'")
    parser.add_argument("--time-zone", default="UTC",
                        help="time zone of the cron expression (default: UTC)")


def run(settings, args):
    from ml_service.azure import schedule

    schedule.create_schedule(settings, args.cron, dry_run=args.dry_run,
                             time_zone=args.time_zone)
    return 0
