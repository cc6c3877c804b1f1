"""Where the scoring servers of a target record their requests, and the environment
variables that tell scoring/score.py so (its module docstring describes the records).

Targets on this machine (local processes, containers) write a rotating JSONL file in
.mlops/<target>/ (git-ignored); ACI and AKS write to stdout, which Log Analytics collects.
"""
import contextlib
import fcntl
from pathlib import Path

LOG_NAME = "predictions.jsonl"
# The key that marks a record among a container's other output (as in score.py).
MARKER = "mlops_prediction_log"
# The header of the pipeline's own requests (the smoke test's), which score.py records
# with "smoke_test": true; `monitor` leaves them out.
SMOKE_TEST_HEADER = "X-MLOPS-Smoke-Test"
# Written by score.py beside the log while it cannot record (JSON: since, records, error;
# the file's time is when the failures began).
FAILED_SUFFIX = ".failed"
# Beside a rotating log: the lock its writers append and rotate under (scoring/server_log.py).
LOCK_SUFFIX = ".lock"


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


@contextlib.contextmanager
def rotated_files(log_file):
    """The files of the rotating log `log_file` (the current one and its backups
    `<log_file>.1`, `.2`, ...), opened for reading in binary, oldest first.

    They are listed and opened under the lock the writers rotate under, and read after it
    is released: a rotation renames them one by one (removing the oldest first), so a
    listing without the lock could name a file gone by its opening, or let a line move
    into a file already read; an open file keeps its lines whatever is renamed after.
    Where no lock file exists yet, nothing has rotated the log."""
    log_file = Path(log_file)
    with contextlib.ExitStack() as stack:
        try:
            lock = stack.enter_context(open(f"{log_file}{LOCK_SUFFIX}", "rb"))
            fcntl.flock(lock, fcntl.LOCK_SH)  # read access is enough for flock
        except FileNotFoundError:
            lock = None
        backups = [path for path in log_file.parent.glob(f"{log_file.name}.*")
                   if path.suffix[1:].isdigit()]
        handles = []
        for path in [*sorted(backups, key=lambda path: -int(path.suffix[1:])), log_file]:
            try:
                handles.append(stack.enter_context(open(path, "rb")))
            except FileNotFoundError:
                continue
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_UN)
        yield handles
