"""training/data.py: CSV, Parquet and folder sources, and the schema check."""
import logging

import numpy as np
import pytest

from training.data import (SAMPLE, SAMPLE_FEATURES, SAMPLE_TARGET, DataError, data_tags,
                           fingerprint, load_dataset)
from tests.helpers.data import write_table


def load(source, features=SAMPLE_FEATURES, target=SAMPLE_TARGET):
    return load_dataset(str(source), features, target)


@pytest.fixture(scope="module")
def sample():
    return load_dataset(SAMPLE, SAMPLE_FEATURES, SAMPLE_TARGET)


def test_the_sample_is_the_diabetes_set(sample):
    features, target = sample
    assert features.shape == (442, 10) and list(features.columns) == list(SAMPLE_FEATURES)
    assert target.name == "target"


@pytest.mark.parametrize("name", ["diabetes.csv", "diabetes.parquet"])
def test_a_file_holding_the_sample_gives_the_samples_data_and_fingerprint(
        tmp_path, sample, name):
    features, target = load(write_table(tmp_path / name))
    assert fingerprint(features, target) == fingerprint(*sample)


def test_a_folder_is_all_its_csv_and_parquet_files_in_name_order(tmp_path, sample):
    frame_rows = len(sample[0])
    write_table(tmp_path / "b.parquet", change=lambda frame: frame.iloc[300:])
    write_table(tmp_path / "a.csv", change=lambda frame: frame.iloc[:300])
    (tmp_path / "notes.txt").write_text("not data")
    features, target = load(tmp_path)
    assert len(features) == frame_rows
    assert np.allclose(features.to_numpy(), sample[0].to_numpy())
    assert fingerprint(features, target) == fingerprint(*sample)


def test_configured_columns_are_taken_and_extra_ones_logged(tmp_path, caplog):
    path = write_table(tmp_path / "d.csv", rows=20,
                       change=lambda frame: frame.assign(patient="p", y=frame["target"]))
    with caplog.at_level(logging.INFO, logger="training.data"):
        features, target = load(path, features=("bmi", "bp"), target="y")
    assert list(features.columns) == ["bmi", "bp"] and target.name == "y"
    assert "age, sex, s1" in caplog.text and "patient" in caplog.text and str(path) in caplog.text


@pytest.mark.parametrize("change, named, fix", [
    (lambda frame: frame.drop(columns=["bmi"]), "no column(s) 'bmi'", "[data] features"),
    (lambda frame: frame.drop(columns=["target"]), "no column(s) 'target'", "target"),
    (lambda frame: frame.assign(sex=frame["sex"].map(lambda v: "f" if v > 0 else "m")),
     "'sex'", "Encode them as numbers"),
    (lambda frame: frame.assign(s3=frame["s3"].where(frame.index % 7 != 0)),
     "'s3' (64 rows)", "Fill or drop"),
])
def test_a_schema_problem_names_the_column_and_the_file(tmp_path, change, named, fix):
    path = write_table(tmp_path / "bad.csv", change=change)
    with pytest.raises(DataError) as raised:
        load(path)
    assert named in raised.value.what and str(path) in raised.value.what
    assert fix in raised.value.fix


@pytest.mark.parametrize("make, complaint", [
    (lambda folder: folder / "missing.csv", "does not exist"),
    (lambda folder: folder, "has no .csv or .parquet file"),
    (lambda folder: (folder / "data.xlsx").write_text("x") and folder / "data.xlsx",
     "neither .csv nor .parquet"),
    (lambda folder: (folder / "broken.parquet").write_text("x") and folder / "broken.parquet",
     "Cannot read the data file"),
])
def test_an_unusable_source_says_what_is_wrong(tmp_path, make, complaint):
    with pytest.raises(DataError, match=complaint):
        load(make(tmp_path))


@pytest.mark.parametrize("source, tags", [
    ("sample", {"data_source": "sample"}),
    ("data/train.csv", {"data_source": "data/train.csv"}),
    ("data:diabetes:2", {"data_source": "data:diabetes:2", "data_asset_name": "diabetes",
                         "data_asset_version": "2"}),
    ("azureml:diabetes-raw:11", {"data_source": "azureml:diabetes-raw:11",
                                 "data_asset_name": "diabetes-raw",
                                 "data_asset_version": "11"}),
])
def test_data_tags_name_a_registered_version(source, tags):
    assert data_tags(source) == tags
