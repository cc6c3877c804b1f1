"""The recent prediction records of a target as one table: a row per scored input row,
the feature columns, `prediction`, `model_version` and `time`."""
import datetime
import json
import logging

import pandas as pd

from ml_service.monitoring.prediction_log import LOG_NAME, MARKER
from training.reference import PREDICTION_COLUMN

log = logging.getLogger(__name__)


def parse_lines(lines):
    """The records among `lines` (JSON text, possibly with other output around it); lines
    that are not a well-formed record are skipped and counted in the debug log."""
    records, skipped = [], 0
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
            skipped += 1
    if skipped:
        log.debug("Skipped %d line(s) that are not prediction records", skipped)
    return records


def to_frame(records):
    """One row per recorded input row, oldest first."""
    frames = []
    for record in records:
        try:
            frame = pd.DataFrame(record["inputs"]).assign(**{
                PREDICTION_COLUMN: record["predictions"],
                "model_version": str(record.get("model_version")),
                "time": pd.Timestamp(record["time"])})
        except (ValueError, KeyError, TypeError):  # a truncated or hand-edited record
            continue
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[PREDICTION_COLUMN, "model_version", "time"])
    return pd.concat(frames, ignore_index=True).sort_values("time", kind="stable",
                                                            ignore_index=True)


def window(frame, model_version, max_rows, hours, now=None):
    """The newest `max_rows` rows of `model_version` recorded within the last `hours`."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    since = pd.Timestamp(now) - pd.Timedelta(hours=hours)
    recent = frame[(frame["model_version"] == str(model_version)) & (frame["time"] >= since)]
    return recent.tail(max_rows).reset_index(drop=True)


def read_log_files(folder):
    """The records in the rotating log files in `folder` (current and old)."""
    lines = []
    # Oldest file first (the highest backup number); the order is fixed by sorting on time.
    for path in sorted(folder.glob(f"{LOG_NAME}*"), reverse=True):
        if path.suffix == ".lock":
            continue
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines.extend(handle)
    return parse_lines(lines)
