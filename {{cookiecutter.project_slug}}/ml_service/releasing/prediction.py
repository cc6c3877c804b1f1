"""Batch predictions from a file: read rows, score them on a target through
ml_service.client, write the predictions.

Input: a regular file (not a pipe or device), CSV (the header names the columns; the
cells of the [data] features are numbers, other columns are not sent to the model but
kept in the output, with a note) or JSON, either `{"data": [...]}` as
scoring/sample-request.json or a bare list of rows (lists in the model signature's
column order, or objects with named columns). A CSV is streamed: read, scored and
written CHUNK_ROWS rows at a time, so memory does not grow with the file.
Output, by its suffix: CSV is the input table with a `prediction` column appended (only
that column for positional JSON rows, which name no columns); JSON is
`{"predictions": [...], "model_versions": [...]}`. It is written whole or not at all.
"""
import csv
import io
import json
import os
import stat
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


# CSV rows are read, scored and written this many at a time: memory stays bounded
# whatever the file's size (the client splits each chunk into max_batch_size requests).
CHUNK_ROWS = 10_000


def require_regular_file(path):
    """Refuse anything but a regular file (after symlinks): a FIFO would block the read
    and a device such as /dev/zero never ends."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise MlopsError(f"Cannot read the input file {path}: {error.strerror}.",
                         "Pass an existing .csv or .json file with --input.") from None
    if not stat.S_ISREG(mode):
        raise MlopsError(f"The input file {path} is not a regular file (a pipe, device, "
                         "socket or folder).",
                         "Save the rows to a .csv or .json file and pass that with --input.")


def read_rows(path, features=None):
    """(column names or None, rows to score, the input's cells for a CSV output), all at
    once; `features`: CSV columns not among them are kept in the cells but not sent."""
    path = Path(path)
    kind = _check_format(path, "input")
    require_regular_file(path)
    if kind == ".csv":
        columns, rows, cells = None, [], []
        for columns, _, chunk_rows, chunk_cells in csv_chunks(path, features):
            rows += chunk_rows
            cells += chunk_cells
    else:
        columns, rows, cells = _read_json(path, _read_text(path))
    if not rows:
        raise MlopsError(f"The input file {path} has no rows to score.",
                         "Add rows below the header (CSV) or to the \"data\" list (JSON).")
    return columns, rows, cells


def _read_text(path):
    try:
        return path.read_text(encoding="utf-8-sig")  # tolerate Excel's byte order mark
    except (OSError, UnicodeDecodeError) as error:
        raise MlopsError(f"Cannot read the input file {path}: {error}.",
                         "Pass a readable UTF-8 .csv or .json file with --input.") from None


def csv_chunks(path, features=None, chunk_rows=CHUNK_ROWS):
    """Yield (header, sent columns, rows, cells) for each `chunk_rows` rows of the CSV at
    `path`, reading it as it goes. With `features`, the columns not among them are not
    sent (nor parsed as numbers), unless none of the header is a feature (then the
    server says which columns it wants). Blank lines are skipped; line numbers in errors
    are the file's."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            header = next((line for line in reader if line), None)
            if header is None:
                return
            sent = _sent_columns(path, header, features)
            positions = [header.index(name) for name in sent]
            rows, cells = [], []
            for line in reader:
                if not line:
                    continue
                rows.append(_parse_line(path, reader.line_num, header, line, sent, positions))
                cells.append(line)
                if len(rows) == chunk_rows:
                    yield header, sent, rows, cells
                    rows, cells = [], []
            if rows:
                yield header, sent, rows, cells
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise MlopsError(f"Cannot read the input file {path}: {error}.",
                         "Pass a readable UTF-8 .csv or .json file with --input.") from None


def _sent_columns(path, header, features):
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise MlopsError(f"{path}: the header names the columns {duplicates} more than once.",
                         "Name each column once, as the model's input columns are named.")
    if not features or not set(header) & set(features):
        return list(header)
    return [name for name in header if name in features]


def _parse_line(path, number, header, line, sent, positions):
    if len(line) != len(header):
        raise MlopsError(f"{path}, line {number}: {len(line)} cells, but the header has "
                         f"{len(header)} columns.", "Give every line one cell per column.")
    row = {}
    for name, position in zip(sent, positions):
        value = _number(line[position])
        if value is None:
            raise MlopsError(f"{path}, line {number}, column {name!r}: {line[position]!r} is "
                             "not a finite number.", "Give every feature as a number; fill "
                             "or drop rows with missing values.")
        row[name] = value
    return row


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
    <input>.predictions.<suffix>); return the output path. A CSV is read, scored and
    written CHUNK_ROWS rows at a time; a JSON file at once."""
    input_path = Path(input_path)
    kind = _check_format(input_path, "input")
    output_path = Path(output_path) if output_path else default_output(input_path)
    _check_format(output_path, "output")
    if output_path.resolve() == input_path.resolve():
        raise MlopsError(f"The output file {output_path} is the input file.",
                         "Write the predictions to another file (--output).")
    require_regular_file(input_path)
    features = settings.data.features
    if kind == ".csv" and output_path.suffix.lower() == ".csv":
        client = ScoringClient.for_target(settings, target_name)
        rows, versions = _stream_csv(client, input_path, output_path, features)
    else:
        columns, rows, cells = read_rows(input_path, features)
        _note_ignored(input_path, columns, features)
        scores = ScoringClient.for_target(settings, target_name).score(rows)
        write_predictions(output_path, columns, cells, scores)
        rows, versions = len(rows), list(scores.model_versions)
    versions = ", ".join(map(str, dict.fromkeys(versions)))
    report.publish("predict", f"{rows} rows -> {output_path} ({target_name}, model "
                   f"version {versions})", {"predictions_file": output_path,
                                            "model_version": versions})
    if "," in versions:
        print(f"predict: warning: {target_name} changed versions while the rows were scored "
              f"({versions}): the predictions mix them; run again for one version",
              flush=True)
    return output_path


def _note_ignored(path, columns, features):
    ignored = [name for name in columns or [] if name not in features]
    if columns and len(ignored) < len(columns) and ignored:
        print(f"predict: note: {path.name}'s column(s) {', '.join(map(repr, ignored))} are "
              "not [data] features: not sent to the model, kept in the output", flush=True)


def _stream_csv(client, input_path, output_path, features):
    """Score a CSV chunk by chunk into a CSV output (written beside it, then renamed):
    return (rows scored, model versions)."""
    partial = output_path.with_name(f".{output_path.name}.partial")
    count, versions = 0, []
    try:
        with partial.open("w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            for header, _, rows, cells in csv_chunks(input_path, features):
                if count == 0:
                    _note_ignored(input_path, header, features)
                    writer.writerow([*header, PREDICTION_COLUMN])
                scores = client.score(rows)
                writer.writerows([*row, _cell(prediction)]
                                 for row, prediction in zip(cells, scores.predictions))
                count += len(rows)
                versions += scores.model_versions
        if count == 0:
            raise MlopsError(f"The input file {input_path} has no rows to score.",
                             "Add rows below the header (CSV).")
        os.replace(partial, output_path)
    finally:
        partial.unlink(missing_ok=True)
    return count, versions
