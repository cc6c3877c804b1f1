"""The recent prediction records of a target as one table: a row per scored input row,
the feature columns, `prediction`, `model_version` and `time`."""
import datetime
import json
import math

import pandas as pd

from ml_service.monitoring.prediction_log import (FAILED_SUFFIX, LOG_NAME, MARKER,
                                                  rotated_files)
from training.reference import PREDICTION_COLUMN


class Records(list):
    """Prediction records, and how many of the lines read were not one (`malformed`: not
    JSON, a partial line a full disk or a crash left, a record without its fields)."""

    malformed = 0


def parse_lines(lines):
    """The records among `lines` (JSON text, possibly with other output around it); the
    non-empty lines that are not a record are counted as malformed."""
    records = Records()
    for line in lines:
        start = line.find("{")
        try:
            record = json.loads(line[start:]) if start >= 0 else None
        except ValueError:
            record = None
        if (isinstance(record, dict) and MARKER in record
                and isinstance(record.get("inputs"), dict)
                and isinstance(record.get("predictions"), list)):
            records.append(record)
        elif line.strip():
            records.malformed += 1
    return records


def _well_formed(record):
    """Whether a record can be compared: a time with its zone, and as many finite numbers
    per input column as there are predictions (score.py never writes anything else; a
    hand-edited or foreign record must not stop the check)."""
    def numbers(values):
        return isinstance(values, list) and all(
            isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) for value in values)
    predictions = record["predictions"]
    try:
        aware = pd.Timestamp(record["time"]).tzinfo is not None
    except (ValueError, TypeError, KeyError):
        return False
    return (aware and numbers(predictions) and bool(record["inputs"])
            and all(numbers(values) and len(values) == len(predictions)
                    for values in record["inputs"].values()))


def to_frame(records):
    """One row per recorded input row, oldest first, without the smoke test's requests
    (not traffic); `frame.attrs["skipped"]` counts the records and lines that were not
    well formed (skipped)."""
    frames, skipped = [], getattr(records, "malformed", 0)
    for record in records:
        if record.get("smoke_test") is True:
            continue
        if not _well_formed(record):
            skipped += 1
            continue
        frames.append(pd.DataFrame(record["inputs"]).assign(**{
            PREDICTION_COLUMN: record["predictions"],
            "model_version": str(record.get("model_version")),
            "time": pd.Timestamp(record["time"])}))
    if not frames:
        frame = pd.DataFrame(columns=[PREDICTION_COLUMN, "model_version", "time"])
    else:
        frame = pd.concat(frames, ignore_index=True).sort_values("time", kind="stable",
                                                                 ignore_index=True)
    frame.attrs["skipped"] = skipped
    return frame


def window(frame, model_version, max_rows, hours, now=None):
    """The newest `max_rows` rows of `model_version` recorded within the last `hours`."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    since = pd.Timestamp(now) - pd.Timedelta(hours=hours)
    recent = frame[(frame["model_version"] == str(model_version)) & (frame["time"] >= since)]
    return recent.tail(max_rows).reset_index(drop=True)


def read_log_files(folder):
    """The records in the rotating log files in `folder` (current and old), read as one
    consistent set while the servers may be writing and rotating them."""
    with rotated_files(folder / LOG_NAME) as handles:
        # Oldest file first; the order is fixed by sorting on time.
        return parse_lines([line.decode("utf-8", "replace") for handle in handles
                            for line in handle])


def recording_failure(folder):
    """What the scoring server wrote to `<log>.failed` while it could not record
    (scoring/score.py): {"since", "records", "error"}, or None. On a disk too full for
    its text, {"since"} from the file's time, which score.py sets to when they began."""
    path = folder / f"{LOG_NAME}{FAILED_SUFFIX}"
    try:
        text, changed = path.read_text(errors="replace"), path.stat().st_mtime
    except OSError:
        return None
    try:
        failure = json.loads(text)
    except ValueError:
        failure = None
    if isinstance(failure, dict) and "since" in failure:
        return failure
    return {"since": datetime.datetime.fromtimestamp(changed, datetime.timezone.utc).isoformat(
        timespec="seconds").replace("+00:00", "Z")}
