"""Loading, checking and splitting the training data.

The data is a table: the bundled diabetes sample, or CSV / Parquet files (one file, or
every *.csv and *.parquet of a folder, in name order). The configured feature and
target columns are taken from it after a schema check that fails fast, naming the
column; everything downstream only sees a feature DataFrame and a target Series.
Plain values in, no settings object: ml_service resolves [data] source to a path.
"""
import hashlib
import logging
import re
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

# [data] source for the bundled sample, and its columns (the defaults of [data]).
SAMPLE = "sample"
SAMPLE_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
SAMPLE_TARGET = "target"
READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet}
# A registered data version: "data:<name>:<version>" (register-data on this machine) or
# "azureml:<name>:<version>" (an Azure ML data asset). Names as Azure ML allows them.
ASSET_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}"
ASSET_REFERENCE = re.compile(rf"(data|azureml):({ASSET_NAME_PATTERN}):([A-Za-z0-9._-]+)")


class DataError(ValueError):
    """The data cannot be used: `what` went wrong, `fix` says what to do."""

    def __init__(self, what, fix):
        super().__init__(f"{what} {fix}")
        self.what = what
        self.fix = fix


def asset_reference(source):
    """(scheme, name, version) if `source` names a registered data version, else None."""
    match = ASSET_REFERENCE.fullmatch(source)
    return match.groups() if match else None


def data_tags(data_source):
    """The data's lineage tags: [data] source as configured and, for a registered data
    version (data:<name>:<version> or azureml:<name>:<version>), its name and version."""
    tags = {"data_source": data_source}
    reference = asset_reference(data_source)
    if reference:
        _, tags["data_asset_name"], tags["data_asset_version"] = reference
    return tags


def data_files(path):
    """The files a source path stands for: the file itself, or a folder's *.csv and
    *.parquet files in name order."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in READERS:
            raise DataError(f"The data file {path} is neither .csv nor .parquet.",
                            "Save it as CSV or Parquet, or point [data] source at another "
                            "file.")
        return [path]
    if path.is_dir():
        files = sorted(item for item in path.iterdir()
                       if item.is_file() and item.suffix.lower() in READERS)
        if not files:
            raise DataError(f"The data folder {path} has no .csv or .parquet file.",
                            "Put the data files in it, or point [data] source elsewhere.")
        return files
    raise DataError(f"The data source {path} does not exist.",
                    "Fix [data] source in mlops.toml (relative paths are relative to it) "
                    "or MLOPS_DATA_SOURCE.")


def read_table(path):
    """All rows of the files at `path` as one DataFrame."""
    frames = []
    files = data_files(path)
    for file in files:
        try:
            frames.append(READERS[file.suffix.lower()](file))
        except Exception as error:  # pandas' and pyarrow's parse errors vary by format
            raise DataError(f"Cannot read the data file {file}: {error}",
                            "Check that it is a valid CSV (with a header row) or Parquet "
                            "file.") from error
    for file, frame in zip(files, frames):
        if list(frame.columns) != list(frames[0].columns):
            raise DataError(
                f"The data files of {path} have different columns: {files[0].name} has "
                f"{', '.join(map(str, frames[0].columns))}; {file.name} has "
                f"{', '.join(map(str, frame.columns))}.",
                "Give every file of the folder the same columns, or move the odd one out.")
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if table.empty:
        raise DataError(f"The data in {path} has no rows.",
                        "Point it at data with a header row and at least one row.")
    return table


def sample_table():
    """scikit-learn's bundled diabetes data set, features and target in one table."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True)
    return pd.concat([bunch.data, bunch.target.rename(SAMPLE_TARGET)], axis=1)


def check_schema(frame, features, target, origin):
    """Raise DataError unless every configured column is in `frame`, numeric and complete;
    `origin` (the file or folder) is named in the message."""
    columns = [*features, target]
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataError(
            f"The data in {origin} has no column(s) {', '.join(map(repr, missing))} "
            f"(it has: {', '.join(map(str, frame.columns))}).",
            "Rename the columns in the data, or set [data] features and target in "
            "mlops.toml to the data's column names.")
    not_numeric = [column for column in columns
                   if not pd.api.types.is_numeric_dtype(frame[column])
                   or pd.api.types.is_bool_dtype(frame[column])]
    if not_numeric:
        raise DataError(
            f"Column(s) {', '.join(map(repr, not_numeric))} of the data in {origin} are not "
            f"numeric ({', '.join(str(frame[c].dtype) for c in not_numeric)}).",
            "Encode them as numbers before training (the model takes numbers only), or "
            "leave them out of [data] features.")
    incomplete = {column: int(frame[column].isna().sum()) for column in columns
                  if frame[column].isna().any()}
    if incomplete:
        raise DataError(
            f"Column(s) of the data in {origin} have missing values: "
            + ", ".join(f"{column!r} ({count} rows)" for column, count in incomplete.items())
            + ".",
            "Fill or drop those rows in the data before training.")
    extra = [str(column) for column in frame.columns if column not in columns]
    if extra:
        log.info("Ignoring column(s) of %s that [data] does not name: %s", origin,
                 ", ".join(extra))


def load_dataset(source=SAMPLE, features=SAMPLE_FEATURES, target=SAMPLE_TARGET):
    """Return (features, target) from `source`: SAMPLE or the path of a CSV / Parquet file
    or folder. Raises DataError, naming the column and file, if the schema check fails."""
    frame = sample_table() if source == SAMPLE else read_table(source)
    check_schema(frame, features, target, "the bundled sample" if source == SAMPLE else source)
    return frame[list(features)].astype(float), frame[target].astype(float).rename(target)


def split_dataset(features, target, test_size, random_seed):
    """Seeded split, so every model is scored on the same held-out rows."""
    # Here, not at the top: the releasing verbs read this module's tags through
    # training.lineage, and scikit-learn's import is about 1 CPU-s of each of them.
    from sklearn.model_selection import train_test_split

    return train_test_split(features, target, test_size=test_size, random_state=random_seed)


def fingerprint(features, target):
    """SHA-256 of the data's values and column names: identifies the data a model saw."""
    frame = pd.concat([features, target], axis=1)
    digest = hashlib.sha256()
    digest.update(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).values.tobytes())
    return digest.hexdigest()
