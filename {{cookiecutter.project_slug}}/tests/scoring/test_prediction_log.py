"""score.py's prediction log: real records in real rotating files (several processes at
once), on stdout otherwise, sampled, and never at the cost of an answer."""
import errno
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from ml_service.monitoring import records
from ml_service.monitoring.prediction_log import (LOG_NAME, MARKER, SMOKE_TEST_HEADER,
                                                  rotated_files)
from tests.helpers.project import PROJECT_ROOT
from tests.helpers.scoring import COLUMNS, body, load_score_module, saved_model
from tests.scoring.test_score import post
from tests.scoring.test_server import request as send
from tests.scoring.test_server import start_server

KEY = "prediction-log-key-0123456789"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    yield from saved_model(tmp_path_factory)


def started(monkeypatch, model_dir, **env):
    """score.py initialised with MODEL_VERSION=7, a scoring key and `env`."""
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("MODEL_VERSION", "7")
    monkeypatch.setenv("SCORING_KEY", KEY)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    module = load_score_module()
    module.init()
    return module


def score_rows(score, rows):
    status, answer, _ = post(score, body(rows), headers={"Authorization": f"Bearer {KEY}"})
    assert status == 200, answer
    return answer["predictions"]


def log_lines(folder):
    """The lines of the prediction log in `folder`, oldest first (current and old files)."""
    with rotated_files(folder / LOG_NAME) as handles:
        return [line for handle in handles for line in handle.read().decode().splitlines()]


def test_records_name_the_inputs_and_predictions_and_nothing_secret(
        monkeypatch, model_dir, tmp_path):
    log_file = tmp_path / "log" / "predictions.jsonl"
    score = started(monkeypatch, model_dir, MLOPS_PREDICTION_LOG=log_file)
    rows = [[0.01 * (index + column) for column in range(len(COLUMNS))] for index in range(3)]
    predictions = score_rows(score, rows)
    [line] = log_file.read_text().splitlines()
    record = json.loads(line)
    assert record[MARKER] == 1 and record["model_version"] == "7" and record["rows"] == 3
    assert record["inputs"] == {name: [row[i] for row in rows] for i, name in enumerate(COLUMNS)}
    assert record["predictions"] == predictions
    assert record["time"].endswith("Z")
    assert KEY not in line and "Bearer" not in line and "Authorization" not in line


def test_a_smoke_test_request_is_recorded_marked_and_no_header_value_is(
        monkeypatch, model_dir, tmp_path):
    log_file = tmp_path / "predictions.jsonl"
    score = started(monkeypatch, model_dir, MLOPS_PREDICTION_LOG=log_file)
    headers = {"Authorization": f"Bearer {KEY}"}
    for extra in ({SMOKE_TEST_HEADER: "1"}, {}):
        status, answer, _ = post(score, body([[0.02] * len(COLUMNS)]),
                                 headers={**headers, **extra})
        assert status == 200, answer
    smoke, traffic = (json.loads(line) for line in log_file.read_text().splitlines())
    assert smoke["smoke_test"] is True and "smoke_test" not in traffic
    assert SMOKE_TEST_HEADER not in log_file.read_text()


def test_a_previous_servers_failure_file_is_not_this_servers(monkeypatch, model_dir, tmp_path):
    failed = tmp_path / "predictions.jsonl.failed"
    failed.write_text('{"since": "2026-01-01T00:00:00Z", "records": 5, "error": "disk full"}')
    started(monkeypatch, model_dir, MLOPS_PREDICTION_LOG=tmp_path / "predictions.jsonl")
    assert not failed.exists()


def test_a_large_batch_is_recorded_as_an_ordered_uniform_sample_up_to_the_row_limit(
        monkeypatch, model_dir, tmp_path):
    """Row i has age i / 1000, so the recorded ages tell which rows were kept."""
    score = started(monkeypatch, model_dir, MLOPS_PREDICTION_LOG=tmp_path / "predictions.jsonl",
                    MLOPS_PREDICTION_LOG_MAX_ROWS=5)
    rows = [[index / 1000] + [0.02] * (len(COLUMNS) - 1) for index in range(200)]
    predictions = score_rows(score, rows)
    for _ in range(9):
        assert score_rows(score, rows) == predictions
    kept = set()
    for record in records.read_log_files(tmp_path):
        indices = [round(age * 1000) for age in record["inputs"]["age"]]
        assert record["rows"] == 5 and record["request_rows"] == 200
        assert all(len(values) == 5 for values in record["inputs"].values())
        assert indices == sorted(set(indices))
        assert record["predictions"] == [predictions[index] for index in indices]
        kept.update(indices)
    # The first five rows every time would be a skewed record of sorted batches.
    assert max(kept) >= 100 and len(kept) > 10


def test_files_rotate_and_stay_within_their_bounds(monkeypatch, model_dir, tmp_path):
    score = started(monkeypatch, model_dir, MLOPS_PREDICTION_LOG=tmp_path / "predictions.jsonl",
                    MLOPS_PREDICTION_LOG_MAX_BYTES=2000, MLOPS_PREDICTION_LOG_BACKUPS=2)
    for index in range(60):
        score_rows(score, [[0.001 * index] * len(COLUMNS)])
    files = sorted(path.name for path in tmp_path.glob("predictions.jsonl*"))
    assert files == ["predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.2",
                     "predictions.jsonl.lock"]
    assert all((tmp_path / name).stat().st_size <= 2000 for name in files)
    kept = records.read_log_files(tmp_path)
    # The newest records survive, the oldest were rotated away.
    assert 0 < len(kept) < 60
    assert kept[-1]["inputs"]["age"] == [pytest.approx(0.059)]


def _write_from_a_worker(score, count):
    rng = np.random.default_rng()
    for _ in range(count):
        score._record_prediction(rng.normal(size=(2, len(COLUMNS))), [1.0, 2.0])


def test_several_worker_processes_share_one_file_without_losing_records(
        monkeypatch, model_dir, tmp_path):
    """Forked like gunicorn's workers: the lock keeps every record whole and rotation
    consistent (backups enough to keep everything)."""
    score = started(monkeypatch, model_dir, MLOPS_PREDICTION_LOG=tmp_path / "predictions.jsonl",
                    MLOPS_PREDICTION_LOG_MAX_BYTES=20_000, MLOPS_PREDICTION_LOG_BACKUPS=50)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_from_a_worker, args=(score, 150))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    lines = log_lines(tmp_path)
    assert len(lines) == 450
    assert all(json.loads(line)["rows"] == 2 for line in lines)
    assert len(list(tmp_path.glob("predictions.jsonl.*"))) > 3  # it did rotate


def _write_numbered_records(score, stop):
    """Record predictions 0, 1, 2, ... until `stop` is set."""
    number = 0
    while not stop.is_set():
        score._record_prediction(np.zeros((1, len(COLUMNS))), [float(number)])
        number += 1


def test_a_reader_sees_one_consistent_log_while_a_server_rotates_it(
        monkeypatch, model_dir, tmp_path):
    """What monitor and a canary read while the servers write: each read is every record
    from its oldest to its newest, once each and in order, however often the files rotate
    meanwhile (a listing read file by file could find a file gone, or a record twice)."""
    score = started(monkeypatch, model_dir, MLOPS_PREDICTION_LOG=tmp_path / "predictions.jsonl",
                    MLOPS_PREDICTION_LOG_MAX_BYTES=2000, MLOPS_PREDICTION_LOG_BACKUPS=3)
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    writer = context.Process(target=_write_numbered_records, args=(score, stop))
    writer.start()
    # Reads go on until the writer's rotations have dropped record 0 (the fourth rotation
    # with three backups), however slowly a loaded machine schedules the writer: a count of
    # backups alone is reached one rotation early, while record 0 is still in the last one.
    deadline = time.monotonic() + 120
    try:
        reads = []
        while ((len(reads) < 300 or not reads[-1] or reads[-1][0] == 0)
               and time.monotonic() < deadline):
            numbers = [int(record["predictions"][0])
                       for record in records.read_log_files(tmp_path)]
            reads.append(numbers)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert writer.exitcode == 0
    assert [numbers for numbers in reads
            if numbers and numbers != list(range(numbers[0], numbers[-1] + 1))] == []
    assert reads[-1] and reads[-1][0] > 0  # the oldest records were rotated away as it read


def test_without_a_file_records_go_to_stdout_as_one_marked_line(monkeypatch, model_dir,
                                                                capsys):
    score = started(monkeypatch, model_dir)
    score_rows(score, [[0.03] * len(COLUMNS)])
    lines = [line for line in capsys.readouterr().out.splitlines() if MARKER in line]
    assert len(lines) == 1
    assert records.parse_lines(lines)[0]["model_version"] == "7"


def test_stdout_records_of_the_largest_request_stay_under_16_kb_per_line(
        monkeypatch, model_dir, capsys):
    """Container Insights cuts a log line at 16 KB, which leaves invalid JSON the monitor
    drops: the largest request (SCORING_MAX_BATCH_SIZE rows, all recorded, full-precision
    values) is written in parts of one request id that together hold every row once."""
    score = started(monkeypatch, model_dir, SCORING_MAX_BATCH_SIZE=1000,
                    MLOPS_PREDICTION_LOG_MAX_ROWS=1000)
    rows = [[random.uniform(-1, 1) for _ in COLUMNS] for _ in range(1000)]
    predictions = score_rows(score, rows)
    lines = [line for line in capsys.readouterr().out.splitlines() if MARKER in line]
    assert max(len(line.encode()) + 1 for line in lines) <= 16 * 1024  # with its newline
    parts = records.parse_lines(lines)
    assert len(parts) == len(lines) > 1
    assert {(part["request_id"], part["parts"], part["request_rows"]) for part in parts} == {
        (parts[0]["request_id"], len(parts), 1000)}
    assert [part["part"] for part in parts] == list(range(len(parts)))
    assert sum(part["rows"] for part in parts) == 1000
    frame = records.to_frame(parts)
    assert frame["prediction"].tolist() == predictions
    assert np.allclose(frame[COLUMNS].to_numpy(), rows)


@pytest.mark.parametrize("share", [0.0, 0.3])
def test_sampling_records_about_the_configured_share(monkeypatch, model_dir, tmp_path, share):
    log_file = tmp_path / "predictions.jsonl"
    score = started(monkeypatch, model_dir, MLOPS_PREDICTION_LOG=log_file,
                    MLOPS_PREDICTION_LOG_SAMPLE=share)
    random.seed(1)
    for _ in range(200):
        score_rows(score, [[0.01] * len(COLUMNS)])
    recorded = len(log_lines(tmp_path))
    if share == 0:
        assert recorded == 0 and not log_file.exists()
    else:
        assert 40 <= recorded <= 80  # 60 expected


def test_a_failing_log_never_fails_the_request(monkeypatch, model_dir, tmp_path, caplog):
    log_file = tmp_path / "predictions.jsonl"
    score = started(monkeypatch, model_dir, MLOPS_PREDICTION_LOG=log_file)
    log_file.mkdir()  # the log cannot be opened any more (even by root)
    for _ in range(3):
        assert len(score_rows(score, [[0.01] * len(COLUMNS)])) == 1
    warnings = [r.getMessage() for r in caplog.records if "recording failed" in r.getMessage()]
    assert len(warnings) == 1 and "Is a directory" in warnings[0]  # at most once a minute
    assert json.loads((tmp_path / "predictions.jsonl.failed").read_text())["records"] == 3


@pytest.mark.parametrize("share", ["1.5", "nan", "half"])
def test_a_sample_share_outside_0_to_1_stops_the_start_with_the_variable_named(
        monkeypatch, model_dir, share):
    with pytest.raises(ValueError, match=f"MLOPS_PREDICTION_LOG_SAMPLE='{share}'.*from 0 to 1"):
        started(monkeypatch, model_dir, MLOPS_PREDICTION_LOG_SAMPLE=share)


def test_recording_resumes_when_its_folder_was_deleted(monkeypatch, model_dir, tmp_path):
    folder = tmp_path / ".mlops" / "staging"
    score = started(monkeypatch, model_dir, MLOPS_PREDICTION_LOG=folder / "predictions.jsonl")
    rows = [[0.01] * len(COLUMNS)]
    score_rows(score, rows)
    shutil.rmtree(folder)
    score_rows(score, rows)
    score_rows(score, rows)
    assert len(log_lines(folder)) == 2
    assert not (folder / "predictions.jsonl.failed").exists()


# A real write failure (EFBIG: the file size limit, as a full disk gives ENOSPC) in a
# process of its own, then the limit lifted: recording must resume by itself.
FULL_DISK = """
import json, resource, signal, sys
import numpy as np
from tests.helpers.scoring import COLUMNS, load_score_module
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
score = load_score_module()
score.init()
rows = np.full((1, len(COLUMNS)), 0.01)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
for _ in range(20):
    score._record_prediction(rows, [1.5])
failed = open(sys.argv[1] + ".failed").read()
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
score._record_prediction(rows, [2.5])
print(json.dumps({"failed": json.loads(failed)}))
"""


def test_recording_resumes_after_a_write_failure_which_is_counted(model_dir, tmp_path):
    log_file = tmp_path / "predictions.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(log_file)], cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=120,
        env={"AZUREML_MODEL_DIR": str(model_dir), "MODEL_VERSION": "7", "PATH": "/usr/bin:/bin",
             "MLOPS_PREDICTION_LOG": str(log_file), "PYTHONPATH": str(PROJECT_ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    failed = json.loads(result.stdout.splitlines()[-1])["failed"]
    assert failed["records"] > 0 and "File too large" in failed["error"]
    assert failed["since"].endswith("Z")
    assert "recording failed since" in result.stderr  # the rate-limited warning
    assert "recording resumed" in result.stderr
    lines = log_lines(tmp_path)
    # The write the limit cut off left a partial line; the next record starts a new one.
    assert json.loads(lines[-1])["predictions"] == [2.5]
    assert [record["predictions"] for record in records.read_log_files(tmp_path)][-1] == [2.5]
    assert not (tmp_path / "predictions.jsonl.failed").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KB tmpfs: a disk that really fills up. Mounting one needs root: skipped where
    that is refused."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"no 64 KB tmpfs here (mounting needs root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=False, timeout=30)


def fill(disk):
    """Write to a file on `disk` until it is full (ENOSPC); return the file."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\0" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    return filler


@pytest.mark.slow
def test_a_real_server_on_a_full_disk_answers_reports_and_resumes_recording(
        model_dir, small_disk, request):
    folder = small_disk / ".mlops" / "staging"
    state = small_disk.parent / "server"
    state.mkdir()
    port, log = start_server(model_dir, state, request,
                             MLOPS_PREDICTION_LOG=str(folder / "predictions.jsonl"))

    def score(age):
        status, _, answer = send(port, payload=body([[age] + [0.01] * (len(COLUMNS) - 1)]))
        assert status == 200, answer

    sent = [0.001 * index for index in range(3)]
    for age in sent:
        score(age)
    filler = fill(small_disk)
    # The log's last page still has room for a few records: answered, recorded until the
    # disk refuses (score.py then writes <log>.failed, which monitor reports).
    while records.recording_failure(folder) is None:
        assert len(sent) < 60, "recording never failed on the full disk"
        sent.append(0.001 * len(sent))
        score(sent[-1])
    assert records.recording_failure(folder)["since"].endswith("Z")
    filler.unlink()
    for age in (0.5, 0.6):
        score(age)
    assert records.recording_failure(folder) is None
    recorded = records.read_log_files(folder)
    ages = [record["inputs"]["age"][0] for record in recorded]
    # Those before the disk filled, then recording resumed on its own; the record the
    # full disk cut off is one malformed line.
    assert ages[-2:] == [0.5, 0.6] and ages[:-2] == sent[:len(ages) - 2]
    assert len(ages) - 2 < len(sent) and recorded.malformed <= 1
    assert "recording failed since" in log.wait_for(0, "recording resumed")
