"""The training data as a versioned input: [data] source resolved, and register-data.

[data] source is one of:
- "sample": scikit-learn's diabetes set (offline; the default);
- a CSV or Parquet file, or a folder of them (relative to mlops.toml);
- "data:<name>:<version>": a version that `register-data` copied into the local store,
  mlruns/data/ next to the MLflow artifacts. The copy is content-addressed
  (objects/<sha256>/), and assets/<name>.json lists the versions: registering the same
  content again gives the same version, new content the next one (1, 2, 3, ...);
- "azureml:<name>:<version>": an Azure ML data asset (uri_file or uri_folder), which
  only the azureml backend can read: it becomes the pipeline job's input.

The local backend reads the data with training/data.py, whose schema check names the
column and the file; the Azure pipeline job's prep_data step does the same in Azure ML.
"""
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from ml_service import report
from ml_service.errors import ConfigError, MlopsError
from training import data as training_data

log = logging.getLogger(__name__)

STORE_FOLDER = "data"  # under the local store's folder: mlruns/data/
URI_FILE, URI_FOLDER = "uri_file", "uri_folder"
CREATED_BY_TAG, CREATED_BY = "created_by", "ml_service"
DIGEST_TAG = "content_sha256"


@dataclasses.dataclass(frozen=True)
class DataSource:
    """What [data] source names. `reference` is the setting as written (recorded on the
    lineage run and the model version); `path` the local file or folder to read, or None
    for the sample and for an Azure ML asset."""

    reference: str
    path: Path | None = None

    @property
    def is_sample(self):
        return self.reference == training_data.SAMPLE

    @property
    def azureml_asset(self):
        """(name, version) of an Azure ML data asset, else None."""
        parsed = training_data.asset_reference(self.reference)
        return parsed[1:] if parsed and parsed[0] == "azureml" else None

    @property
    def asset_type(self):
        """uri_file or uri_folder for a local path (what Azure ML calls it)."""
        return URI_FILE if self.path and self.path.is_file() else URI_FOLDER

    def tags(self):
        """data_source, and data_asset_name / data_asset_version for a registered one."""
        return training_data.data_tags(self.reference)


def store_folder(settings):
    """mlruns/data/: the local data versions, next to the MLflow artifacts."""
    return Path(settings.tracking.artifact_root).parent / STORE_FOLDER


def resolve(settings):
    """The DataSource of [data] source; raises ConfigError if it names nothing usable."""
    source = settings.data.source.strip()
    if source == training_data.SAMPLE:
        return DataSource(source)
    parsed = training_data.asset_reference(source)
    if parsed and parsed[0] == "azureml":
        if settings.pipeline.backend != "azureml":
            raise ConfigError(
                f"[data] source {source!r} is an Azure ML data asset, which only the azureml "
                "backend can read.",
                "Run with --backend azureml (or [pipeline] backend = \"azureml\"), or use a "
                "local file, folder or data:<name>:<version> from `register-data`.")
        return DataSource(source)
    if parsed:
        return DataSource(source, _local_version_path(settings, *parsed[1:]))
    if source.startswith(("data:", "azureml:")):
        raise ConfigError(f"[data] source {source!r} is not a valid data reference.",
                          "Write data:<name>:<version> or azureml:<name>:<version> with an "
                          "explicit version (e.g. data:diabetes:1), as register-data prints.")
    path = Path(source).expanduser()
    path = path if path.is_absolute() else settings.project_root / path
    if not path.exists():
        raise ConfigError(f"[data] source {source!r} does not exist ({path}).",
                          "Fix [data] source in mlops.toml (relative paths are relative to "
                          "it) or MLOPS_DATA_SOURCE; \"sample\" is the bundled data set.")
    return DataSource(source, path)


def load(settings, source=None):
    """(features, target) of the configured data, schema-checked; MlopsError if unusable."""
    source = source or resolve(settings)
    data = settings.data
    try:
        return training_data.load_dataset(
            str(source.path) if source.path else training_data.SAMPLE, data.features,
            data.target)
    except training_data.DataError as error:
        raise MlopsError(f"[data] source {source.reference}: {error.what}", error.fix) from None


def sample_request_path(project_root):
    """scoring/sample-request.json: rows of [data] features that register scores and the
    smoke tests send."""
    return Path(project_root) / "scoring" / "sample-request.json"


def check_sample_request(settings):
    """Refuse to train when scoring/sample-request.json does not fit [data] features:
    register records the model's answers to it, and the smoke tests send it."""
    path = sample_request_path(settings.project_root)
    features = settings.data.features
    try:
        rows = json.loads(path.read_text())["data"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise MlopsError(f"Cannot read {path} ({error}).",
                         'Restore it: {"data": [[...], ...]}, rows of the features of '
                         "[data] features, in that order.") from None
    wrong = [number for number, row in enumerate(rows, 1) if len(row) != len(features)]
    if wrong:
        raise MlopsError(
            f"Row(s) {', '.join(map(str, wrong))} of {path} do not have one value per "
            f"feature of [data] features ({len(features)}: {', '.join(features)}).",
            "Replace its rows with a few rows of your data's features, in the order of "
            "[data] features (`python -m ml_service use-data FILE --target COLUMN` writes "
            "them from your data's first rows): register records the model's answers to "
            "them and the smoke tests send them.")


# -- register-data -------------------------------------------------------------------

def _check_name(name):
    if not re.fullmatch(training_data.ASSET_NAME_PATTERN, name):
        raise MlopsError(f"{name!r} is not a valid data asset name.",
                         "Use 1-255 letters, digits, '.', '_' or '-', starting with a letter "
                         "or digit (Azure ML's rule for data asset names).")


def _source_files(path):
    """(folder the names are relative to, files): what register-data copies, after
    reading them as training would (no rows, or files with different columns, are
    refused now rather than when a teammate trains on the version)."""
    try:
        path = Path(path).resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop (RuntimeError before 3.13)
        raise MlopsError(f"Cannot register {path}: {error}.",
                         "Pass --path an existing CSV or Parquet file, or a folder of them "
                         "(not a symlink that points back at itself).") from None
    try:
        files = training_data.data_files(path)
        training_data.read_table(path)
    except training_data.DataError as error:
        raise MlopsError(error.what, error.fix) from None
    return (path.parent if path.is_file() else path), files


def content_digest(path):
    """SHA-256 over each data file's name (relative to the folder) and content: the same
    files give the same digest, wherever they are."""
    return _files_digest(*_source_files(path))


def _files_digest(base, files):
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(base).as_posix().encode() + b"\0")
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _index_path(settings, name):
    return store_folder(settings) / "assets" / f"{name}.json"


def _read_index(settings, name):
    path = _index_path(settings, name)
    return json.loads(path.read_text())["versions"] if path.exists() else []


def _local_version_path(settings, name, version):
    versions = {entry["version"]: entry for entry in _read_index(settings, name)}
    if version not in versions:
        known = ", ".join(versions) or "none"
        raise ConfigError(
            f"[data] source data:{name}:{version} is not registered in {store_folder(settings)} "
            f"(versions of {name!r}: {known}).",
            "Register it with `python -m ml_service register-data --name NAME --path FILE` "
            "and use the reference it prints, or check MLFLOW_TRACKING_URI/[tracking].")
    path = store_folder(settings) / versions[version]["path"]
    if not path.exists():
        raise ConfigError(f"The copy of data:{name}:{version} ({path}) is missing.",
                          "Register the data again with `register-data`; the store's "
                          "objects/ folder must not be edited by hand.")
    return path


@contextlib.contextmanager
def _registration_lock(settings, name):
    """Hold `name`'s registration lock (flock on assets/<name>.lock, released by the
    kernel when its holder ends): the next version number is read and then written, so
    two register-data runs at once must take turns, not both take the same number."""
    path = _index_path(settings, name).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def register_local(settings, name, path):
    """Copy `path` into the local store; return (reference, created). The same content
    under the same name is the same version (created False)."""
    _check_name(name)
    base, files = _source_files(path)
    digest = _files_digest(base, files)
    is_file = Path(path).is_file()
    with _registration_lock(settings, name):
        versions = _read_index(settings, name)
        for entry in versions:
            if entry["digest"] == digest:
                return f"data:{name}:{entry['version']}", False
        relative = _store_object(settings, digest, base, files, is_file)
        version = str(len(versions) + 1)
        versions.append({"version": version, "digest": digest,
                         "type": URI_FILE if is_file else URI_FOLDER,
                         "path": relative,
                         "registered_from": str(Path(path).resolve())})
        index = _index_path(settings, name)
        written = index.with_suffix(".json.tmp")
        written.write_text(json.dumps({"name": name, "versions": versions}, indent=2))
        os.replace(written, index)
    log.info("Registered %s as data:%s:%s (%s)", path, name, version, digest)
    return f"data:{name}:{version}", True


def _store_object(settings, digest, base, files, is_file):
    """Copy `files` to objects/<digest>/ unless there already; return the path to read
    (the file, or the folder), relative to the store."""
    store = store_folder(settings)
    objects = store / "objects"
    target = objects / digest
    if not target.exists():
        objects.mkdir(parents=True, exist_ok=True)
        # Copied beside its final place and renamed: a failed copy leaves no half object.
        staging = Path(tempfile.mkdtemp(dir=objects, prefix=".incoming-"))
        try:
            for file in files:
                shutil.copy2(file, staging / file.relative_to(base))
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ((target / files[0].name) if is_file else target).relative_to(store).as_posix()


def data_entity(name, path, digest):
    """The Azure ML Data entity register-data creates: uri_file or uri_folder, tagged
    with its content digest. The version is left to Azure ML (the next number)."""
    from azure.ai.ml.entities import Data

    path = Path(path).resolve()
    return Data(name=name, path=str(path), type=URI_FILE if path.is_file() else URI_FOLDER,
                description=f"Training data registered from {path.name} by ml_service "
                            "register-data",
                tags={DIGEST_TAG: digest, CREATED_BY_TAG: CREATED_BY})


def register_azure(settings, name, path, dry_run=False, client=None):
    """Create an Azure ML data asset version of `path`; return (reference, created), or
    (None, False) for a dry run, which prints the planned entity. An existing version
    with the same content digest is reused."""
    import yaml

    from ml_service.azure.workspace import Scope, azure_errors, ml_client

    _check_name(name)
    entity = data_entity(name, path, content_digest(path))
    if dry_run:
        azure = settings.azure
        print(f"Azure ML data asset (dry run: nothing is sent to Azure)\n"
              f"  workspace  {azure.workspace_name} (resource group {azure.resource_group}, "
              f"subscription {azure.subscription_id})\n"
              f"  uploads    {entity.path} to the workspace's default datastore\n"
              f"  version    the next version of {name!r}, unless one has the same "
              f"{DIGEST_TAG}\n  entity\n"
              + "\n".join(f"    {line}" for line in yaml.safe_dump(
                  dict(entity._to_dict()), sort_keys=False).splitlines()))
        return None, False
    scope = Scope.of(settings)
    client = client or ml_client(settings)
    with azure_errors(f"list the versions of data asset {name}", scope):
        existing = [asset for asset in _azure_versions(client, name)
                    if (asset.tags or {}).get(DIGEST_TAG) == entity.tags[DIGEST_TAG]]
    if existing:
        return f"azureml:{name}:{existing[0].version}", False
    with azure_errors(f"create data asset {name}", scope):
        created = client.data.create_or_update(entity)
    return f"azureml:{name}:{created.version}", True


def _azure_versions(client, name):
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return list(client.data.list(name=name))
    except ResourceNotFoundError:  # no version of this name yet
        return []


def register_data(settings, name, path, dry_run=False):
    """register-data: a new data version of `path` where the backend keeps data; publish
    and return the reference to put in [data] source."""
    if settings.pipeline.backend == "azureml":
        reference, created = register_azure(settings, name, path, dry_run=dry_run)
        if reference is None:
            return None
    else:
        reference, created = register_local(settings, name, path)
    _, asset_name, version = training_data.asset_reference(reference)
    report.publish("register-data",
                   f"{reference} ({'new version' if created else 'same content as before'})"
                   f"; set [data] source = \"{reference}\" (or MLOPS_DATA_SOURCE) to train "
                   "on it" + ("" if settings.pipeline.backend == "azureml" else
                              f". Local only: the copy is in {store_folder(settings)}, which "
                              "git ignores, so a teammate or CI cannot resolve this reference; "
                              "for them, commit the file and name its path in [data] source, "
                              "or register it on Azure ML (--backend azureml)"),
                   {"data_source": reference, "data_asset_name": asset_name,
                    "data_asset_version": version})
    return reference


# -- use-data ------------------------------------------------------------------------

SAMPLE_REQUEST_ROWS = 2


def choose_features(frame, target):
    """(features, left out {column: why}) of `frame` for predicting `target`: the numeric,
    complete columns other than the target, in the data's order."""
    features, left_out = [], {}
    for column in frame.columns:
        if column == target:
            continue
        series = frame[column]
        if not is_number_column(series):
            left_out[str(column)] = f"not numeric ({series.dtype}): encode it as numbers"
        elif series.isna().any():
            left_out[str(column)] = f"{int(series.isna().sum())} missing values"
        else:
            features.append(str(column))
    return features, left_out


def is_number_column(series):
    """Numeric and not boolean: what the model can learn from (as [data] requires)."""
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def use_data(settings, config_path, path, target):
    """use-data: point [data] of `config_path` at the file or folder `path`, predicting
    `target` from its numeric, complete columns, and write scoring/sample-request.json
    from its first rows; return ([data] source as written, features, left out
    {column: why}, the sample request's path)."""
    source = Path(path).expanduser()
    try:
        frame = training_data.read_table(source)
    except training_data.DataError as error:
        raise MlopsError(error.what, error.fix) from None
    columns = ", ".join(map(str, frame.columns))
    if target not in frame.columns:
        raise MlopsError(f"{source} has no column {target!r} (it has: {columns}).",
                         "Pass --target the name of the column to predict.")
    if not is_number_column(frame[target]):
        raise MlopsError(f"The target column {target!r} of {source} is not numeric "
                         f"({frame[target].dtype}).",
                         "The model is a regressor: pass --target a numeric column.")
    features, left_out = choose_features(frame, target)
    if not features:
        raise MlopsError(f"{source} has no numeric column without missing values besides "
                         f"{target!r} (it has: {columns}).",
                         "Encode the columns to learn from as numbers, or fill their gaps.")
    rows = frame[features].head(SAMPLE_REQUEST_ROWS).values.tolist()
    config_path = Path(config_path)
    absolute = source.resolve()
    reference = (absolute.relative_to(config_path.parent.resolve()).as_posix()
                 if absolute.is_relative_to(config_path.parent.resolve()) else str(absolute))
    _write_data_section(config_path, reference, target, features)
    request = sample_request_path(settings.project_root)
    request.write_text(json.dumps({"data": rows}) + "\n")
    return reference, features, left_out, request


def _write_data_section(config_path, source, target, features):
    """Set source, target and features of [data] in `config_path`, line by line: the
    comments and the other sections stay as written."""
    text = config_path.read_text()
    section = re.search(r"(?ms)^\[data\]\n(.*?)(?=^\[|\Z)", text)
    if section is None:
        raise ConfigError(f"{config_path} has no [data] section.",
                          "Restore it from the template (see README, Your own data).")
    body = section.group(1)
    values = {"source": json.dumps(source), "target": json.dumps(target),
              "features": json.dumps(features)}
    for key, value in values.items():
        # A key's value may span lines (a long features list): up to its closing bracket.
        pattern = rf"(?ms)^{key}\s*=\s*(\[.*?\]|[^\n]*)$"
        body, count = re.subn(pattern, lambda _: f"{key} = {value}", body, count=1)
        if count == 0:
            body = body.rstrip("\n") + f"\n{key} = {value}\n\n"
    config_path.write_text(text[:section.start(1)] + body + text[section.end(1):])
