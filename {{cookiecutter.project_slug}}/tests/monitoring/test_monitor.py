"""`monitor`: the drift verdict on shifted and unshifted traffic against a really trained and
registered version (real MLflow store, real JSONL logs), exit codes, the HTML report, and
the Log Analytics path with a stand-in `az` at the process edge."""
import base64
import datetime
import json
import os
import re
import stat
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ml_service import desired_state
from ml_service.backends.local import LocalBackend
from ml_service.config import load_settings
from ml_service.errors import MlopsError
from ml_service.monitoring import check, drift, log_analytics
from ml_service.monitoring.prediction_log import LOG_NAME, MARKER, log_folder
from tests.conftest import cli_env
from tests.helpers.project import copy_checkout, copy_project, git, kept_unchanged
from training import reference

TARGET = "staging"


@pytest.fixture(scope="module")
def registered(tmp_path_factory, migrated_database):
    """(project, version, training sample): one version trained, registered and named by
    staging's desired state, once for the module; tests work on copies (`trained`)."""
    project = copy_project(tmp_path_factory.mktemp("monitor") / "project", migrated_database)
    for command in (["init", "-q"], ["add", "-A"],
                    ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "i"]):
        git(project, *command)
    settings = load_settings(project / "mlops.toml", environ={})
    version = LocalBackend(settings).train_gate_register()
    desired_state.write(settings, TARGET, desired_state.DesiredState(
        model_version=version, image="example.azurecr.io/m:1", image_digest=""))
    client = MlflowClient(settings.tracking.uri, settings.tracking.uri)
    sample = check.load_reference(client, settings, version)
    with kept_unchanged(project):
        yield project, version, sample


@pytest.fixture
def trained(registered, tmp_path):
    """(project, settings, version, training sample) of this test's own copy of
    `registered`: the traffic logs, reports and monitor runs it writes are its own."""
    source, version, sample = registered
    project = copy_checkout(source, tmp_path / "project")
    return project, load_settings(project / "mlops.toml", environ={}), version, sample


def write_traffic(settings, version, frame, rows_per_record=5, hours_ago=0.0, mode="w",
                  **marks):
    """Records of `frame` (features and prediction) in the form score.py writes them, with
    `marks` (e.g. smoke_test=True); `mode` "a" adds them to the records already written."""
    folder = log_folder(settings, TARGET)
    folder.mkdir(parents=True, exist_ok=True)
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=hours_ago)
    features = [c for c in frame.columns if c != reference.PREDICTION_COLUMN]
    with open(folder / LOG_NAME, mode) as handle:
        for start in range(0, len(frame), rows_per_record):
            chunk = frame.iloc[start:start + rows_per_record]
            handle.write(json.dumps({
                MARKER: 1, "time": when.isoformat().replace("+00:00", "Z"),
                "model_version": version, "rows": len(chunk),
                "inputs": {name: chunk[name].tolist() for name in features},
                "predictions": chunk[reference.PREDICTION_COLUMN].tolist(), **marks}) + "\n")


def like_training(sample, rows, seed):
    """Traffic drawn from the training sample itself: no drift."""
    return sample.sample(n=rows, replace=True, random_state=seed).reset_index(drop=True)


def test_the_train_run_logs_a_bounded_training_sample_with_predictions(trained):
    _, _, _, sample = trained
    assert reference.PREDICTION_COLUMN in sample.columns
    assert 0 < len(sample) <= reference.MAX_ROWS
    assert {"bmi", "s5"} <= set(sample.columns)


def test_traffic_like_the_training_data_is_no_drift(trained, capsys):
    project, settings, version, sample = trained
    write_traffic(settings, version, like_training(sample, 400, seed=1))
    assert check.monitor(settings, TARGET) == 0
    out = capsys.readouterr().out
    assert out.startswith("monitor: drift: no (")
    assert "report build/reports/monitor-staging.html" in out


def test_shifted_traffic_is_drift_in_the_shifted_feature_and_exits_3(trained, capsys):
    project, settings, version, sample = trained
    traffic = like_training(sample, 400, seed=2)
    traffic["bmi"] += 2 * sample["bmi"].std()
    write_traffic(settings, version, traffic)
    assert check.monitor(settings, TARGET) == check.DRIFT_EXIT_CODE
    out = capsys.readouterr().out.strip()
    assert out.startswith("monitor: drift: yes (features bmi")
    assert "age" not in out.partition(";")[0]
    page = (project / "build" / "reports" / "monitor-staging.html").read_text()
    # The drifted feature first, coloured; the window and the servers' row cap stated.
    table = page.split("<table>", 1)[1]
    assert table.index('<tr class="drift"><td>bmi</td>') < table.index('class="no-drift"')
    assert ".drift {background:" in page
    assert "at most 5000 rows and none older than 168 hours" in page
    assert "at most 100 rows of each" in page
    images = page.count('src="data:image/png;base64,')
    assert images == len(sample.columns)  # every feature and the predictions
    first = page.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(first).startswith(b"\x89PNG")
    client = MlflowClient(settings.tracking.uri, settings.tracking.uri)
    # The newest drift run: another test of this module may have made one before.
    run = client.search_runs([client.get_experiment_by_name(settings.model.experiment)
                              .experiment_id], "tags.`mlops.monitor` = 'staging' and "
                             "metrics.drift = 1", order_by=["attributes.start_time DESC"],
                             max_results=1)[0]
    assert run.data.metrics["p_value.bmi"] < 1e-6
    assert [a.path for a in client.list_artifacts(run.info.run_id, "monitor")] == [
        "monitor/monitor-staging.html"]


def test_the_cli_exits_3_on_drift_and_says_so(trained, tmp_path):
    project, settings, version, sample = trained
    traffic = like_training(sample, 300, seed=3)
    traffic["s5"] -= 2 * sample["s5"].std()
    write_traffic(settings, version, traffic)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run([sys.executable, "-m", "ml_service", "monitor", "--target", TARGET],
                            cwd=project, env=cli_env(TMPDIR=str(scratch)), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 3, result.stderr
    assert "drift: yes (features s5" in result.stdout
    # The reference sample MLflow downloaded is not left in the temporary folder.
    assert list(scratch.iterdir()) == []


def test_little_traffic_is_no_verdict_and_no_alarm(trained, capsys):
    _, settings, version, sample = trained
    write_traffic(settings, version, like_training(sample, 40, seed=4))
    assert check.monitor(settings, TARGET) == 0
    assert "not enough traffic: 40 recent rows" in capsys.readouterr().out


def test_malformed_records_are_skipped_and_counted_not_fatal(trained, capsys):
    _, settings, version, sample = trained
    write_traffic(settings, version, like_training(sample, 400, seed=6))
    good = json.loads((log_folder(settings, TARGET) / LOG_NAME).read_text().splitlines()[0])
    bad = [{**good, "time": good["time"].rstrip("Z")},  # a naive timestamp
           {**good, "inputs": {**good["inputs"], "bmi": [None] * good["rows"]}},
           {**good, "inputs": {**good["inputs"], "bmi": ["high"] * good["rows"]}},
           {**good, "predictions": good["predictions"][:-1]}]
    with open(log_folder(settings, TARGET) / LOG_NAME, "a") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in bad)
        handle.write("Traceback (most recent call last):\n")  # not JSON
        handle.write('{"mlops_prediction_log": 1, "time": "2026-')  # a partial last line
    assert check.monitor(settings, TARGET) == 0
    out = capsys.readouterr().out
    assert "skipped 6 malformed prediction record(s) of staging" in out
    assert "drift: no (" in out


def test_a_server_that_cannot_record_is_reported_not_taken_for_quiet(trained, capsys):
    _, settings, version, sample = trained
    write_traffic(settings, version, like_training(sample, 40, seed=7))
    (log_folder(settings, TARGET) / f"{LOG_NAME}.failed").write_text(json.dumps({
        "since": "2026-12-05T06:00:00Z", "records": 12,
        "error": "[Errno 28] No space left on device"}))
    assert check.monitor(settings, TARGET) == 1
    out = capsys.readouterr().out
    assert "recording failed since 2026-12-05T06:00:00Z on staging: 12 request(s) not " \
           "recorded ([Errno 28] No space left on device)" in out
    assert "not enough traffic" not in out


def test_a_failure_file_a_full_disk_left_empty_still_says_since_when(trained, capsys):
    """On a full disk score.py creates <log>.failed but its text does not fit: the file's
    time (score.py sets it to when the failures began) says since when."""
    _, settings, version, sample = trained
    write_traffic(settings, version, like_training(sample, 400, seed=8))
    failed = log_folder(settings, TARGET) / f"{LOG_NAME}.failed"
    failed.write_text("")
    began = datetime.datetime(2026, 12, 5, 6, 0, tzinfo=datetime.timezone.utc).timestamp()
    os.utime(failed, (began, began))
    assert check.monitor(settings, TARGET) == 1
    out = capsys.readouterr().out
    assert "recording failed since 2026-12-05T06:00:00Z on staging: the server could not " \
           "even write how many requests it lost: is the disk full?" in out


def test_smoke_test_records_are_not_traffic(trained, capsys):
    """The smoke test's requests (far from the training data here) are left out: without
    the mark they would be drift."""
    project, settings, version, sample = trained
    write_traffic(settings, version, like_training(sample, 400, seed=9))
    shifted = like_training(sample, 400, seed=10)
    shifted["bmi"] += 3 * sample["bmi"].std()
    write_traffic(settings, version, shifted, mode="a", smoke_test=True)
    assert check.monitor(settings, TARGET) == 0
    assert capsys.readouterr().out.startswith("monitor: drift: no (")
    page = (project / "build" / "reports" / "monitor-staging.html").read_text()
    assert "; 400 recent rows" in page


def test_records_outside_the_window_or_of_another_version_do_not_count(trained, capsys):
    _, settings, version, sample = trained
    write_traffic(settings, version, like_training(sample, 400, seed=5),
                  hours_ago=settings.monitoring.window_hours + 1)
    assert check.monitor(settings, TARGET) == 0
    assert "not enough traffic: 0 recent rows" in capsys.readouterr().out
    write_traffic(settings, "999", like_training(sample, 400, seed=5))
    assert check.monitor(settings, TARGET) == 0
    assert "not enough traffic: 0 recent rows" in capsys.readouterr().out


def test_a_version_without_a_training_sample_is_refused_with_the_fix(trained):
    _, settings, version, _ = trained
    client = MlflowClient(settings.tracking.uri, settings.tracking.uri)
    run_id = client.get_model_version(settings.model.name, version).tags["run_id"]
    client.delete_model_version_tag(settings.model.name, version, "run_id")
    try:
        with pytest.raises(MlopsError, match="no run_id tag.*Train and register"):
            check.load_reference(client, settings, version)
    finally:
        client.set_model_version_tag(settings.model.name, version, "run_id", run_id)


# -- Log Analytics (ACI, AKS): the az commands, with a stand-in az at the process edge --------

FAKE_AZ = """#!{python}
import json, os, sys
with open(os.environ["AZ_CALLS"], "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:4] == ["monitor", "log-analytics", "workspace"]:
    print("11111111-2222-3333-4444-555555555555")
else:
    print(open(os.environ["AZ_ROWS"]).read())
"""


@pytest.fixture
def fake_az(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "az"
    script.write_text(FAKE_AZ.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("AZ_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("AZ_ROWS", str(tmp_path / "rows.json"))
    return tmp_path


@pytest.mark.parametrize("kind, table, where", [
    ("aks", "ContainerLogV2", "-production' | extend Line = tostring(LogMessage)"),
    ("aci", "union isfuzzy=true (datatable(", "-staging' | extend Line = Message"),
])
def test_azure_targets_query_their_table_for_marked_lines(trained, fake_az, kind, table, where):
    project, _, _, _ = trained
    target = "production" if kind == "aks" else "staging"
    settings = load_settings(project / "mlops.toml",
                             environ={f"MLOPS_{target.upper()}_KIND": kind})
    record = {MARKER: 1, "time": "2026-01-01T00:00:00.000Z", "model_version": "1", "rows": 1,
              "inputs": {"bmi": [0.1]}, "predictions": [150.0]}
    (fake_az / "rows.json").write_text(json.dumps([
        {"TimeGenerated": "2026-01-01T00:00:00Z", "Line": json.dumps(record)},
        {"TimeGenerated": "2026-01-01T00:00:00Z", "Line": "not a record " + MARKER}]))
    found = log_analytics.read_records(settings, target, 500, 24.0)
    assert found == [record]
    calls = (fake_az / "calls.jsonl").read_text().splitlines()
    show, query = [json.loads(line) for line in calls]
    assert show[:4] == ["monitor", "log-analytics", "workspace", "show"]
    assert show[show.index("--workspace-name") + 1] == settings.monitoring.log_analytics_workspace
    assert query[query.index("--workspace") + 1] == "11111111-2222-3333-4444-555555555555"
    kql = query[query.index("--analytics-query") + 1]
    assert kql.startswith(table) and where in kql
    assert "ago(24h)" in kql and "take 500" in kql and f"has '{MARKER}'" in kql


def test_aci_table_missing_before_the_first_logs_is_no_records_yet(trained, fake_az):
    """Log Analytics creates the custom table ContainerInstanceLog_CL with the first logs;
    a fuzzy union (Kusto union operator docs) skips a missing table, and needs one table
    that resolves: the empty datatable, with every column the query reads."""
    project, _, _, _ = trained
    settings = load_settings(project / "mlops.toml", environ={"MLOPS_STAGING_KIND": "aci"})
    kql = log_analytics.query_text(settings, "staging", 10, 1.0)
    fuzzy, rest = kql.split(", ContainerInstanceLog_CL ", 1)
    declared = re.findall(r"(\w+): \w+", fuzzy)
    assert fuzzy.startswith("union isfuzzy=true (datatable(") and fuzzy.endswith(")[])")
    assert set(re.findall(r"\b(TimeGenerated|ContainerGroup_s|Message)\b", rest)) \
        == set(declared)
    (fake_az / "rows.json").write_text("[]")  # the answer to a union of nothing
    assert log_analytics.read_records(settings, "staging", 10, 1.0) == []


def test_a_failing_az_is_an_actionable_error(trained, tmp_path, monkeypatch):
    project, _, _, _ = trained
    settings = load_settings(project / "mlops.toml", environ={"MLOPS_STAGING_KIND": "aci"})
    failing = tmp_path / "az"
    failing.write_text("#!/bin/sh\necho 'Please run az login to setup account.' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(MlopsError, match="failed: Please run az login.*Sign in"):
        log_analytics.read_records(settings, "staging", 10, 1.0)


def test_dry_run_shows_the_az_commands_and_sends_nothing(trained, capsys):
    project, _, _, _ = trained
    settings = load_settings(project / "mlops.toml", environ={"MLOPS_PRODUCTION_KIND": "aks"})
    assert check.monitor(settings, "production", dry_run=True) == 0
    out = capsys.readouterr().out
    assert out.startswith("monitor: would run az monitor log-analytics workspace show")
    assert "ContainerLogV2" in out


def test_drift_statistics_flag_only_the_shifted_column():
    rng = np.random.default_rng(0)
    reference_frame = pd.DataFrame({"a": rng.normal(size=500), "b": rng.normal(size=500)})
    recent = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(0.5, 1, size=300)})
    result = drift.compare(reference_frame, recent, ["a", "b"], 0.01)
    assert result.drifted_columns == ["b"] and result.threshold == 0.005
    with pytest.raises(MlopsError, match="no column"):
        drift.compare(reference_frame, recent.drop(columns="a"), ["a", "b"], 0.01)
