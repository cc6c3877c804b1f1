"""`monitor --target T`: compare T's recent traffic with its served version's training
sample, write the HTML report, log it to MLflow and give one verdict.

Exit codes (documented in README.md): 0 no drift, or not enough traffic for a verdict;
DRIFT_EXIT_CODE (3) drift; 1 and 2 errors, as every verb (1 also when the server could not
record its traffic: `<log>.failed`, written by scoring/score.py).
"""
import logging
import shlex
from pathlib import Path

import mlflow

from ml_service import desired_state, report, tracking
from ml_service.errors import MlopsError
from ml_service.monitoring import log_analytics, records
from ml_service.monitoring.prediction_log import log_folder
from training import artifacts, reference

log = logging.getLogger(__name__)

DRIFT_EXIT_CODE = 3
LOG_ANALYTICS_KINDS = ("aci", "aks")


def served_version(settings, target):
    """The model version `target` serves: its desired state, else what it reports
    running; None when nothing is deployed there."""
    state = desired_state.read(settings, target)
    if state.is_set:
        return state.model_version
    from ml_service.targets import get_target

    deployment = get_target(target, settings).status()
    return deployment.model_version if deployment is not None else None


def load_reference(client, settings, version):
    """The training sample of `version` (training/reference.py), as a DataFrame."""
    name = settings.model.name
    run_id = client.get_model_version(name, version).tags.get("run_id")
    how = (f"Train and register a new version (`python -m ml_service pipeline`), which logs "
           f"{reference.ARTIFACT_PATH} with its train run, and deploy it.")
    if not run_id or run_id == "unknown":
        raise MlopsError(f"{name} version {version} has no run_id tag: its training sample "
                         "cannot be found.", how)
    try:
        return artifacts.read_csv(run_id, reference.ARTIFACT_PATH)
    except Exception as error:  # the artifact stores' errors vary by store type
        raise MlopsError(f"{name} version {version} (train run {run_id}) has no "
                         f"{reference.ARTIFACT_PATH} ({type(error).__name__}).", how) from None


def recent_records(settings, target):
    """`target`'s recent prediction records: from Log Analytics on Azure, else its files."""
    monitoring = settings.monitoring
    if settings.target_settings(target).kind in LOG_ANALYTICS_KINDS:
        return log_analytics.read_records(settings, target, monitoring.window_rows,
                                          monitoring.window_hours)
    return records.read_log_files(log_folder(settings, target))


def plan(settings, target):
    """What `monitor` would read, for --dry-run."""
    monitoring = settings.monitoring
    if settings.target_settings(target).kind in LOG_ANALYTICS_KINDS:
        steps = log_analytics.commands(settings, target, monitoring.window_rows,
                                       monitoring.window_hours)
        return "monitor: would run " + " ; ".join(shlex.join(step) for step in steps)
    return f"monitor: would read {log_folder(settings, target) / 'predictions.jsonl*'}"


def report_path(settings, target):
    return settings.project_root / "build" / "reports" / f"monitor-{target}.html"


def monitor(settings, target, dry_run=False):
    """Run the drift check of `target`; return the exit code."""
    if dry_run:
        print(plan(settings, target))
        return 0
    monitoring = settings.monitoring
    version = served_version(settings, target)
    if not version:
        # Normal until the first promotion: the daily check must not go red for it.
        report.publish("monitor", f"nothing deployed to {target}: no model version in its "
                       "desired state and no running deployment; no drift verdict",
                       {"drift": "unknown", "recent_rows": 0})
        return 0
    recorded = records.to_frame(recent_records(settings, target))
    skipped = recorded.attrs["skipped"]
    if skipped:
        print(f"monitor: skipped {skipped} malformed prediction record(s) of {target} (not "
              "written by score.py: not JSON, a partial line, a time without its zone, or "
              "an input or prediction that is not a finite number)")
    frame = records.window(recorded, version, monitoring.window_rows, monitoring.window_hours)
    failure = (None if settings.target_settings(target).kind in LOG_ANALYTICS_KINDS
               else records.recording_failure(log_folder(settings, target)))
    if failure:
        lost = (f"{failure['records']} request(s) not recorded ({failure.get('error')})"
                if "records" in failure else
                "the server could not even write how many requests it lost: is the disk full?")
        report.publish("monitor", f"recording failed since {failure['since']} on {target}: "
                       f"{lost}; no drift verdict. "
                       f"Free the disk or restore {log_folder(settings, target)}: recording "
                       "resumes by itself with the next request",
                       {"drift": "unknown", "recent_rows": len(frame),
                        "recording_failed_since": failure["since"]})
        return 1
    if len(frame) < monitoring.min_rows:
        report.publish("monitor", f"not enough traffic: {len(frame)} recent rows of version "
                       f"{version} on {target} (at least {monitoring.min_rows} needed, "
                       f"[monitoring] min_rows); no drift verdict",
                       {"drift": "unknown", "recent_rows": len(frame)})
        return 0
    # Here, not at the top: the tests' scipy.stats and the page's matplotlib are about
    # 1 CPU-s, which the checks that end above (no release yet, too little traffic) need not pay.
    from ml_service.monitoring import drift, page

    client, _ = tracking.connect(settings)
    training_sample = load_reference(client, settings, version)
    result = drift.compare(training_sample, frame, list(training_sample.columns),
                           monitoring.p_value)
    columns = ", ".join(result.drifted_columns)
    verdict = (f"drift: yes (features {columns}; p<{result.threshold:.2g})" if result.drifted
               else f"drift: no ({len(result.tests)} tests, all p>={result.threshold:.2g})")
    path = report_path(settings, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page.render(
        f"Drift of {settings.model.name} version {version} on {target}",
        f"{verdict}; {len(frame)} recent rows", result, training_sample, frame,
        window_text(monitoring, version, len(frame))))
    with mlflow.start_run(run_name=f"monitor-{target}",
                          tags={"mlops.monitor": target, "model_version": version}):
        mlflow.log_params({"target": target, "model_version": version,
                           "recent_rows": len(frame), "threshold": result.threshold})
        mlflow.log_metrics({f"p_value.{test.column}": test.p_value for test in result.tests})
        mlflow.log_metric("drift", int(result.drifted))
        mlflow.log_artifact(str(path), artifact_path="monitor")
    shown = _relative(path, settings.project_root)
    report.publish("monitor", f"{verdict} report {shown}",
                   {"drift": "yes" if result.drifted else "no", "drifted_features": columns,
                    "report": shown, "model_version": version})
    return DRIFT_EXIT_CODE if result.drifted else 0


def window_text(monitoring, version, rows):
    """Which records the check compared, and what the servers record, in one sentence."""
    return (f"Compared: the newest {rows} recorded rows of version {version}, at most "
            f"{monitoring.window_rows} rows and none older than {monitoring.window_hours:g} "
            "hours ([monitoring] window_rows, window_hours). The scoring servers record "
            f"{monitoring.sample_rate:.0%} of the requests ([monitoring] sample_rate) and at "
            "most 100 rows of each, drawn at random (MLOPS_PREDICTION_LOG_MAX_ROWS), so a "
            "large batch weighs no more than 100 rows.")


def _relative(path, root):
    try:
        return Path(path).relative_to(root)
    except ValueError:
        return path
