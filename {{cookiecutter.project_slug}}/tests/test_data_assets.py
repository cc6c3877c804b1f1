"""[data] source resolved and loaded, register-data (local store and Azure ML), and the
data lineage of a local train, evaluate and register on a CSV file."""
import dataclasses
import json
import multiprocessing
import shutil

import pandas as pd
import pytest
import yaml
from azure.ai.ml import load_data

from ml_service import data_assets
from ml_service.backends.local import LocalBackend
from ml_service.config import load_settings
from ml_service.errors import ConfigError, MlopsError
from training.data import SAMPLE, SAMPLE_FEATURES, SAMPLE_TARGET, fingerprint, load_dataset
from tests.helpers.azure_fakes import azure_settings
from tests.helpers.azureml_fakes import FakeData
from tests.helpers.data import write_table


def with_data(settings, **data):
    return dataclasses.replace(settings, data=dataclasses.replace(settings.data, **data))


@pytest.fixture(scope="module")
def sample_fingerprint():
    return fingerprint(*load_dataset(SAMPLE, SAMPLE_FEATURES, SAMPLE_TARGET))


def test_the_default_is_the_bundled_sample(settings, sample_fingerprint):
    source = data_assets.resolve(settings)
    assert source.is_sample and source.path is None
    assert source.tags() == {"data_source": "sample"}
    assert fingerprint(*data_assets.load(settings)) == sample_fingerprint


def test_a_relative_path_is_relative_to_mlops_toml_and_overridable(project, tmp_path,
                                                                   monkeypatch):
    write_table(project / "data" / "diabetes.parquet", rows=30)
    monkeypatch.chdir(tmp_path)  # not the project folder
    settings = load_settings(project / "mlops.toml",
                             environ={"MLOPS_DATA_SOURCE": "data/diabetes.parquet",
                                      "MLOPS_DATA_FEATURES": "bmi, bp"})
    assert data_assets.resolve(settings).path == project / "data" / "diabetes.parquet"
    features, target = data_assets.load(settings)
    assert list(features.columns) == ["bmi", "bp"] and len(target) == 30


@pytest.mark.parametrize("source, backend, complaint, fix", [
    ("data/none.csv", "local", "does not exist", "relative to it"),
    ("azureml:diabetes:3", "local", "only the azureml backend", "--backend azureml"),
    ("data:diabetes", "local", "not a valid data reference", "data:<name>:<version>"),
    ("data:diabetes:1", "local", "is not registered", "register-data"),
])
def test_a_source_that_names_nothing_usable_is_a_config_error(settings, source, backend,
                                                              complaint, fix):
    settings = with_data(settings, source=source)
    settings = dataclasses.replace(settings, pipeline=dataclasses.replace(
        settings.pipeline, backend=backend))
    with pytest.raises(ConfigError, match=complaint) as raised:
        data_assets.resolve(settings)
    assert fix in raised.value.fix


def test_a_schema_problem_names_the_source_the_column_and_the_file(settings, project):
    path = write_table(project / "data" / "d.csv", change=lambda frame: frame.drop(
        columns="s5"))
    with pytest.raises(MlopsError, match=r"\[data\] source data/d.csv: .*'s5'") as raised:
        data_assets.load(with_data(settings, source="data/d.csv"))
    assert str(path) in raised.value.what and "[data] features" in raised.value.fix


def test_config_rejects_bad_data_settings(project):
    for environ, named in [({"MLOPS_DATA_FEATURES": "bmi,bmi"}, "MLOPS_DATA_FEATURES"),
                           ({"MLOPS_DATA_TARGET": " "}, "MLOPS_DATA_TARGET")]:
        with pytest.raises(ConfigError, match=named):
            load_settings(project / "mlops.toml", environ=environ)
    config = project / "mlops.toml"
    config.write_text(config.read_text().replace('features = ["age"', 'features = [1, "age"'))
    with pytest.raises(ConfigError, match=r"\[data\] features .* list of strings"):
        load_settings(config, environ={})


# -- register-data, local ------------------------------------------------------------

def test_register_data_copies_by_content_and_numbers_versions(settings, project, tmp_path):
    upload = write_table(tmp_path / "incoming" / "diabetes.csv", rows=100)
    assert data_assets.register_local(settings, "diabetes", upload) == ("data:diabetes:1", True)
    # The same content from elsewhere is the same version; nothing is copied again.
    again = shutil.copy(upload, tmp_path / "diabetes.csv")
    assert data_assets.register_local(settings, "diabetes", again) == ("data:diabetes:1", False)
    write_table(upload, rows=120)
    assert data_assets.register_local(settings, "diabetes", upload) == ("data:diabetes:2", True)

    store = project / "mlruns" / "data"
    index = json.loads((store / "assets" / "diabetes.json").read_text())
    assert [entry["version"] for entry in index["versions"]] == ["1", "2"]
    assert len(list((store / "objects").iterdir())) == 2
    first = data_assets.resolve(with_data(settings, source="data:diabetes:1"))
    assert first.path == store / "objects" / index["versions"][0]["digest"] / "diabetes.csv"
    assert first.tags() == {"data_source": "data:diabetes:1", "data_asset_name": "diabetes",
                            "data_asset_version": "1"}
    # Version 1 is the copy, unchanged by later edits of the file it came from.
    features, _ = data_assets.load(with_data(settings, source="data:diabetes:1"))
    assert len(features) == 100


def _register_in_a_process(settings, upload, results):
    results.put(data_assets.register_local(settings, "diabetes", upload)[0])


def test_concurrent_registrations_take_distinct_versions(settings, project, tmp_path):
    """Processes registering different content at the same moment each get their own
    version number, and the index keeps every one of them."""
    uploads = [write_table(tmp_path / f"upload-{rows}" / "diabetes.csv", rows=rows)
               for rows in range(50, 58)]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_register_in_a_process, args=(settings, upload, results))
               for upload in uploads]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * len(workers)
    references = sorted(results.get(timeout=5) for _ in workers)
    assert references == sorted(f"data:diabetes:{number}" for number in range(1, 9))
    index = json.loads((project / "mlruns" / "data" / "assets" / "diabetes.json").read_text())
    assert sorted(int(entry["version"]) for entry in index["versions"]) == list(range(1, 9))
    assert len({entry["digest"] for entry in index["versions"]}) == 8


def test_a_registered_folder_is_one_version_of_all_its_data_files(settings, tmp_path,
                                                                  sample_fingerprint):
    folder = tmp_path / "parts"
    write_table(folder / "a.csv", change=lambda frame: frame.iloc[:200])
    write_table(folder / "b.parquet", change=lambda frame: frame.iloc[200:])
    reference, created = data_assets.register_local(settings, "parts", folder)
    assert (reference, created) == ("data:parts:1", True)
    source = data_assets.resolve(with_data(settings, source=reference))
    assert source.asset_type == "uri_folder"
    assert sorted(path.name for path in source.path.iterdir()) == ["a.csv", "b.parquet"]
    assert fingerprint(*data_assets.load(with_data(settings, source=reference))) == \
        sample_fingerprint


@pytest.mark.parametrize("name, path, complaint", [
    ("-bad", "data.csv", "not a valid data asset name"),
    ("ok", "missing.csv", "does not exist"),
])
def test_register_data_refuses_bad_names_and_paths(settings, tmp_path, name, path, complaint):
    write_table(tmp_path / "data.csv", rows=5)
    with pytest.raises(MlopsError, match=complaint):
        data_assets.register_local(settings, name, tmp_path / path)


def header_only(folder):
    (folder / "empty.csv").write_text("age,bmi,target\n")


def mixed_schema(folder):
    write_table(folder / "a.csv", rows=5)
    write_table(folder / "b.parquet", rows=5, change=lambda frame: frame.drop(columns="s6"))


def symlink_loop(folder):
    (folder / "loop.csv").symlink_to(folder / "loop.csv")


@pytest.mark.parametrize("make, path, complaint", [
    (lambda folder: (folder / "zero.csv").write_bytes(b""), "zero.csv",
     "Cannot read the data file .*zero.csv"),
    (header_only, "empty.csv", "has no rows"),
    (mixed_schema, "",
     "have different columns: a.csv has age, .*s6, target; b.parquet has age, .*s5, target"),
    (symlink_loop, "loop.csv", "(?i)Cannot register .*loop"),
])
def test_register_data_checks_the_data_before_it_makes_a_version(settings, tmp_path, make,
                                                                 path, complaint):
    """Refused now, with the reason, rather than when a teammate trains on the version."""
    make(tmp_path)
    with pytest.raises(MlopsError, match=complaint):
        data_assets.register_local(settings, "bad", tmp_path / path)
    assert not data_assets.store_folder(settings).joinpath("assets", "bad.json").exists()


def test_use_data_sets_features_from_numeric_columns_and_the_sample_request(
        settings, project):
    frame = pd.DataFrame({"rooms": [3.0, 4.0, 2.0], "town": ["a", "b", "a"],
                          "area": [80.5, 120.0, 55.0], "garden": [1.0, None, 0.0],
                          "price": [300.0, 420.0, 210.0]})
    frame.to_csv(project / "houses.csv", index=False)
    config = project / "mlops.toml"
    before = config.read_text()
    source, features, left_out, request = data_assets.use_data(
        settings, config, project / "houses.csv", "price")
    assert (source, features) == ("houses.csv", ["rooms", "area"])
    assert list(left_out) == ["town", "garden"]
    assert left_out["town"].startswith("not numeric (") and "encode it as numbers" in \
        left_out["town"]
    assert left_out["garden"] == "1 missing values"
    assert json.loads(request.read_text()) == {"data": [[3.0, 80.5], [4.0, 120.0]]}
    updated = load_settings(config, environ={})
    assert updated.data == dataclasses.replace(settings.data, source="houses.csv",
                                               target="price", features=("rooms", "area"))
    # Only the three keys changed: comments and other sections are as written.
    changed = [line for line in config.read_text().splitlines()
               if line not in before.splitlines()]
    assert changed == ['source = "houses.csv"', 'target = "price"',
                       'features = ["rooms", "area"]']
    data_assets.check_sample_request(updated)  # train would accept it
    with pytest.raises(MlopsError, match="has no column 'cost' \\(it has: rooms, town"):
        data_assets.use_data(settings, config, project / "houses.csv", "cost")
    with pytest.raises(MlopsError, match="target column 'town' .* is not numeric"):
        data_assets.use_data(settings, config, project / "houses.csv", "town")


# -- register-data, Azure ML ---------------------------------------------------------

@pytest.fixture
def az(settings):
    return azure_settings(settings, pipeline={"backend": "azureml"})


def test_azure_dry_run_prints_the_data_entity_and_sends_nothing(az, tmp_path, capsys):
    upload = write_table(tmp_path / "diabetes.csv", rows=10)
    assert data_assets.register_azure(az, "diabetes", upload, dry_run=True) == (None, False)
    out = capsys.readouterr().out
    assert "dry run: nothing is sent to Azure" in out
    entity = yaml.safe_load(out.split("  entity\n", 1)[1])
    assert entity["type"] == "uri_file" and entity["path"] == str(upload)
    assert entity["tags"]["content_sha256"] == data_assets.content_digest(upload)


def test_azure_registration_creates_a_versioned_asset_once_per_content(az, tmp_path):
    folder = tmp_path / "parts"
    write_table(folder / "a.csv", rows=10)
    data = FakeData()
    client = type("Client", (), {"data": data})()
    assert data_assets.register_azure(az, "diabetes", folder, client=client) == (
        "azureml:diabetes:1", True)
    assert data_assets.register_azure(az, "diabetes", folder, client=client) == (
        "azureml:diabetes:1", False)
    [entity] = data.created
    assert (entity.name, entity.type, str(entity.path)) == (
        "diabetes", "uri_folder", str(folder))
    # The entity is a valid data asset definition as the SDK reads one.
    definition = tmp_path / "asset.yml"
    definition.write_text(yaml.safe_dump(dict(entity._to_dict())))
    assert load_data(source=definition).type == "uri_folder"


# -- lineage of a local run on a CSV file ---------------------------------------------

def test_train_evaluate_register_on_a_csv_record_the_source(project, settings, client,
                                                            sample_fingerprint):
    write_table(project / "data" / "diabetes.csv")
    backend = LocalBackend(with_data(settings, source="data/diabetes.csv"))
    lineage_id = backend.train()
    assert backend.evaluate(lineage_id).passed
    version = backend.register(lineage_id)
    tags = client.get_model_version(settings.model.name, version).tags
    assert tags["data_source"] == "data/diabetes.csv"
    assert tags["data_fingerprint"] == sample_fingerprint  # the same values as the sample
    lineage = client.get_run(lineage_id).data.tags
    assert lineage["data_source"] == "data/diabetes.csv"
    assert client.get_run(tags["run_id"]).data.tags["data_source"] == "data/diabetes.csv"
    # The data changed under the run: evaluate refuses to judge on other data.
    write_table(project / "data" / "diabetes.csv", rows=300)
    with pytest.raises(MlopsError, match="data/diabetes.csv.*changed"):
        backend.evaluate(lineage_id)


def test_a_registered_local_version_is_named_on_the_model_version(settings, client,
                                                                  tmp_path):
    reference, _ = data_assets.register_local(
        settings, "diabetes", write_table(tmp_path / "diabetes.parquet"))
    backend = LocalBackend(with_data(settings, source=reference))
    backend.train()
    backend.evaluate()
    tags = client.get_model_version(settings.model.name, backend.register()).tags
    assert (tags["data_source"], tags["data_asset_name"], tags["data_asset_version"]) == (
        "data:diabetes:1", "diabetes", "1")


def test_features_that_sample_request_does_not_fit_stop_training_first(
        project, settings, client):
    backend = LocalBackend(with_data(settings, features=("bmi", "bp", "s5")))
    with pytest.raises(MlopsError, match="one value per feature.*3: bmi, bp, s5") as raised:
        backend.train()
    assert "sample-request.json" in str(raised.value)
    assert "use-data FILE --target COLUMN" in str(raised.value)  # writes rows of real data
    assert client.get_experiment_by_name(settings.model.experiment) is None  # nothing ran
