"""Where the scoring servers of a target record their requests, and the environment
variables that tell scoring/score.py so (its module docstring describes the records).

Targets on this machine (local processes, containers) write a rotating JSONL file in
.mlops/<target>/ (git-ignored); ACI and AKS write to stdout, which Log Analytics collects.
"""
LOG_NAME = "predictions.jsonl"
# The key that marks a record among a container's other output (as in score.py).
MARKER = "mlops_prediction_log"
# The header of the pipeline's own requests (the smoke test's), which score.py records
# with "smoke_test": true; `monitor` leaves them out.
SMOKE_TEST_HEADER = "X-MLOPS-Smoke-Test"
# Written by score.py beside the log while it cannot record (JSON: since, records, error;
# the file's time is when the failures began).
FAILED_SUFFIX = ".failed"


def log_folder(settings, target):
    """The folder holding `target`'s prediction log on this machine."""
    return settings.project_root / ".mlops" / target


def server_environment(monitoring, log_file=None):
    """The scoring server's environment variables for the [monitoring] settings: records
    go to `log_file` when given, else to stdout."""
    return {
        "MLOPS_PREDICTION_LOG_SAMPLE": str(monitoring.sample_rate),
        **({"MLOPS_PREDICTION_LOG": str(log_file),
            "MLOPS_PREDICTION_LOG_MAX_BYTES": str(monitoring.log_max_bytes),
            "MLOPS_PREDICTION_LOG_BACKUPS": str(monitoring.log_backups)} if log_file else {}),
    }
