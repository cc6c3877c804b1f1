"""Batch predictions from a file: read rows, score them on a target through
ml_service.client, write the predictions.

Input: CSV (the header names the columns; every other cell is a number) or JSON, either
`{"data": [...]}` as scoring/sample-request.json or a bare list of rows (lists in the
model signature's column order, or objects with named columns).
Output, by its suffix: CSV is the input table with a `prediction` column appended (only
that column for positional JSON rows, which name no columns); JSON is
`{"predictions": [...], "model_versions": [...]}`. It is written whole or not at all.
"""
import csv
import io
import json
import os
from pathlib import Path

from ml_service import report
from ml_service.client import PREDICTION_COLUMN, ScoringClient
from ml_service.errors import MlopsError

FORMATS = (".csv", ".json")


def default_output(input_path):
    """rows.csv -> rows.predictions.csv, beside the input."""
    return input_path.with_name(f"{input_path.stem}.predictions{input_path.suffix}")


def _check_format(path, role):
    if path.suffix.lower() not in FORMATS:
        raise MlopsError(f"The {role} file {path} is neither .csv nor .json.",
                         "Name it with one of these suffixes: the format follows the suffix.")
    return path.suffix.lower()


def read_rows(path):
    """(column names or None, rows to score, the input's cells for a CSV output)."""
    path = Path(path)
    kind = _check_format(path, "input")
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate Excel's byte order mark
    except (OSError, UnicodeDecodeError) as error:
        raise MlopsError(f"Cannot read the input file {path}: {error}.",
                         "Pass a readable UTF-8 .csv or .json file with --input.") from None
    columns, rows, cells = _read_csv(path, text) if kind == ".csv" else _read_json(path, text)
    if not rows:
        raise MlopsError(f"The input file {path} has no rows to score.",
                         "Add rows below the header (CSV) or to the \"data\" list (JSON).")
    return columns, rows, cells


def _read_csv(path, text):
    """Blank lines are skipped; line numbers in errors are the file's."""
    lines = [(number, line) for number, line in
             enumerate(csv.reader(io.StringIO(text, newline="")), start=1) if line]
    if not lines:
        return None, [], []
    header, rows, cells = lines[0][1], [], []
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise MlopsError(f"{path}: the header names the columns {duplicates} more than once.",
                         "Name each column once, as the model's input columns are named.")
    for number, line in lines[1:]:
        if len(line) != len(header):
            raise MlopsError(f"{path}, line {number}: {len(line)} cells, but the header has "
                             f"{len(header)} columns.", "Give every line one cell per column.")
        values = [_number(cell) for cell in line]
        if None in values:
            column, value = next((name, cell) for name, cell, parsed in
                                 zip(header, line, values) if parsed is None)
            raise MlopsError(f"{path}, line {number}, column {column!r}: {value!r} is not a "
                             "finite number.", "Give every feature as a number; fill or drop "
                             "rows with missing values.")
        rows.append(dict(zip(header, values)))
        cells.append(line)
    return header, rows, cells


def _number(text):
    """The finite number in `text`, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value - value == 0 else None


def _read_json(path, text):
    try:
        body = json.loads(text)
    except ValueError as error:
        raise MlopsError(f"The input file {path} is not valid JSON ({error}).",
                         'Write {"data": [[...], ...]} as scoring/sample-request.json, or a '
                         "list of rows.") from None
    rows = body.get("data") if isinstance(body, dict) else body
    if not isinstance(rows, list):
        raise MlopsError(f"The input file {path} holds no list of rows.",
                         'Write {"data": [[...], ...]} as scoring/sample-request.json, or a '
                         "list of rows.")
    if rows and all(isinstance(row, dict) for row in rows):
        columns = list(rows[0])
        return columns, rows, [[_cell(row.get(name)) for name in columns] for row in rows]
    return None, rows, [[] for _ in rows]


def _cell(value):
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def write_predictions(path, columns, cells, scores):
    """Write the predictions to `path` (CSV or JSON by suffix), atomically."""
    buffer = io.StringIO(newline="")
    if _check_format(path, "output") == ".csv":
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([*(columns or []), PREDICTION_COLUMN])
        writer.writerows([*row, _cell(prediction)]
                         for row, prediction in zip(cells, scores.predictions))
    else:
        json.dump({"predictions": scores.predictions,
                   "model_versions": list(scores.model_versions)}, buffer)
        buffer.write("\n")
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    os.replace(partial, path)


def predict_file(settings, target_name, input_path, output_path=None):
    """Score the rows of `input_path` on the target; write them to `output_path` (default:
    <input>.predictions.<suffix>); return the output path."""
    input_path = Path(input_path)
    _check_format(input_path, "input")
    output_path = Path(output_path) if output_path else default_output(input_path)
    _check_format(output_path, "output")
    if output_path.resolve() == input_path.resolve():
        raise MlopsError(f"The output file {output_path} is the input file.",
                         "Write the predictions to another file (--output).")
    columns, rows, cells = read_rows(input_path)
    scores = ScoringClient.for_target(settings, target_name).score(rows)
    write_predictions(output_path, columns, cells, scores)
    versions = ", ".join(map(str, scores.model_versions))
    report.publish("predict", f"{len(rows)} rows -> {output_path} ({target_name}, model "
                   f"version {versions})", {"predictions_file": output_path,
                                            "model_version": versions})
    if len(scores.model_versions) > 1:
        print(f"predict: warning: {target_name} changed versions while the rows were scored "
              f"({versions}): the predictions mix them; run again for one version",
              flush=True)
    return output_path
