"""The predict verb: input files read and refused, predictions written; and end to end
through ml_service.client against a real local production target with a key and a
small max batch size."""
import itertools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ml_service.client import ScoringClient, Scores
from ml_service.config import load_settings
from ml_service.data_assets import sample_request_path
from ml_service.errors import MlopsError
from ml_service.release import Release
from ml_service.releasing.image import SCORING_FILES
from ml_service.releasing.prediction import (csv_chunks, default_output, predict_file,
                                             read_rows, write_predictions)
from ml_service.targets.local import LocalTarget
from tests.conftest import cli_env
from tests.helpers.project import PROJECT_ROOT, free_port, kept_unchanged, pin_sample_data
from tests.helpers.scoring import SCORING_DIR, save_model

KEY = "production-key-for-predict-tests"


def test_csv_rows_are_named_columns_and_the_output_appends_a_prediction_column(tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text("age,bmi\n0.5,1e-2\n\n-1,2\n")
    columns, rows, cells = read_rows(source)
    assert (columns, rows) == (["age", "bmi"], [{"age": 0.5, "bmi": 0.01},
                                                {"age": -1.0, "bmi": 2.0}])
    output = default_output(source)
    assert output.name == "rows.predictions.csv"
    write_predictions(output, columns, cells, Scores([1.5, 2.25], ("3",)))
    # The input's cells as they were written, then the predictions.
    assert output.read_text() == "age,bmi,prediction\n0.5,1e-2,1.5\n-1,2,2.25\n"


def test_json_input_as_the_sample_request_or_a_list(tmp_path):
    (tmp_path / "mlops.toml").write_text("[data]\n[next]\n")
    columns, rows, _ = read_rows(pin_sample_data(tmp_path))
    assert columns is None and len(rows) == 2 and len(rows[0]) == 10
    named = tmp_path / "named.json"
    named.write_text(json.dumps([{"age": 1.0, "bmi": 2.0}]))
    columns, rows, cells = read_rows(named)
    assert columns == ["age", "bmi"] and rows == [{"age": 1.0, "bmi": 2.0}]
    output = tmp_path / "out.json"
    write_predictions(output, columns, cells, Scores([0.5], ("3",)))
    assert json.loads(output.read_text()) == {"predictions": [0.5], "model_versions": ["3"]}


@pytest.mark.parametrize("name, text, message", [
    ("rows.csv", "age,bmi\n0.1,abc\n", "line 2, column 'bmi': 'abc' is not a finite number"),
    ("rows.csv", "age,bmi\n0.1,\n", "line 2, column 'bmi': '' is not a finite number"),
    ("rows.csv", "age,bmi\n\n0.1,nan\n", "line 3, column 'bmi': 'nan' is not a finite"),
    ("rows.csv", "age,bmi\n0.1\n", "line 2: 1 cells, but the header has 2 columns"),
    ("rows.csv", "age,age\n0.1,0.2\n", "names the columns ['age'] more than once"),
    ("rows.csv", "age,bmi\n", "has no rows to score"),
    ("rows.json", '{"rows": []}', "holds no list of rows"),
    ("rows.json", '{"data": [[0.1]', "is not valid JSON"),
    ("rows.txt", "0.1", "is neither .csv nor .json"),
])
def test_bad_input_is_refused_with_where_and_how_to_fix(tmp_path, name, text, message):
    source = tmp_path / name
    source.write_text(text)
    with pytest.raises(MlopsError) as refused:
        read_rows(source)
    assert message in refused.value.what
    assert refused.value.fix


def special_file(folder, kind):
    path = folder / "rows.csv"
    if kind == "fifo":
        os.mkfifo(path)  # opening it would wait for a writer forever
    else:
        path.symlink_to("/dev/zero")  # reading it would never end
    return path


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-symlink"])
def test_only_regular_files_are_read(tmp_path, kind):
    path = special_file(tmp_path, kind)
    with pytest.raises(MlopsError, match="is not a regular file") as refused:
        read_rows(path)
    assert "--input" in refused.value.fix
    settings = load_settings(PROJECT_ROOT / "mlops.toml", environ={})
    with pytest.raises(MlopsError, match="is not a regular file"):
        predict_file(settings, "production", path)  # refused before any target is asked


def test_columns_that_are_not_features_are_kept_but_not_sent(tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text("id,age,neighborhood,bmi\n7,0.5,east,1e-2\n8,-1,west,2\n")
    columns, rows, cells = read_rows(source, features=("age", "bmi"))
    assert columns == ["id", "age", "neighborhood", "bmi"]
    assert rows == [{"age": 0.5, "bmi": 0.01}, {"age": -1.0, "bmi": 2.0}]
    assert cells[0] == ["7", "0.5", "east", "1e-2"]
    # No header column is a feature (another model's file?): every column is read as
    # given, so the first non-number is named, as without [data] features.
    with pytest.raises(MlopsError, match="column 'neighborhood': 'east' is not a finite"):
        read_rows(source, features=("s1",))


def test_a_csv_is_read_in_chunks_as_it_goes(tmp_path):
    """Each chunk is yielded before the rest of the file is read: a bad line after the
    first chunk is reported only when reading reaches it."""
    source = tmp_path / "rows.csv"
    source.write_text("age,bmi\n" + "0.1,0.2\n" * 5 + "0.1,oops\n")
    chunks = csv_chunks(source, ("age", "bmi"), chunk_rows=2)
    assert [len(rows) for _, _, rows, _ in itertools.islice(chunks, 2)] == [2, 2]
    with pytest.raises(MlopsError, match="line 7, column 'bmi': 'oops'"):
        list(chunks)


@pytest.mark.parametrize("input_name, output_name, message", [
    ("rows.csv", "rows.csv", "is the input file"),
    ("rows.txt", None, "The input file"),
    ("rows.csv", "rows.parquet", "The output file"),
])
def test_files_are_checked_before_any_target_is_asked(tmp_path, input_name, output_name,
                                                      message):
    source = tmp_path / input_name
    source.write_text("age\n1\n")
    with pytest.raises(MlopsError, match=message):
        predict_file(None, "production", source, output_name and tmp_path / output_name)


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    """(project, its environment, the fitted model, its features): a project folder (all
    that predict reads of it is mlops.toml) whose production target (local) runs a model
    with a key and a max batch of 4 rows."""
    root = tmp_path_factory.mktemp("predict")
    shutil.copy(PROJECT_ROOT / "mlops.toml", root)
    pin_sample_data(root)
    context = root / "build" / "images" / "model-v1"
    context.mkdir(parents=True)
    for name in SCORING_FILES:
        shutil.copy2(SCORING_DIR / name, context / name)
    fitted, features = save_model(context / "model")
    environ = {"MLOPS_PRODUCTION_PORT": str(free_port()), "MLOPS_SERVING_WORKERS": "1",
               "MLOPS_SERVING_MAX_BATCH_SIZE": "4", "PRODUCTION_SCORING_KEY": KEY}
    target = LocalTarget("production", load_settings(root / "mlops.toml", environ=environ),
                         environ=environ)
    target.deploy(Release("model", "1", "image:1", "", "", context))
    with kept_unchanged(context):  # tests write their rows and predictions in tmp_path
        yield root, environ, fitted, features
    target.stop()


def predict(project, *args, **environ):
    return subprocess.run([sys.executable, "-m", "ml_service", "predict", "--target",
                           "production", *args], cwd=project, env=cli_env(**environ),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_notebook_scores_a_dataframe_on_the_target(production, monkeypatch):
    project, environ, fitted, features = production
    monkeypatch.setenv("PRODUCTION_SCORING_KEY", KEY)
    client = ScoringClient.for_target(load_settings(project / "mlops.toml", environ=environ),
                                      "production")
    assert (client.key, client.max_batch_size) == (KEY, 4)
    rows = features.iloc[3:14]  # 11 rows: 3 requests, named columns
    scores = client.score(rows)
    pd.testing.assert_index_equal(scores.predictions.index, rows.index)
    np.testing.assert_allclose(scores.predictions, fitted.predict(rows), rtol=1e-12)
    assert scores.model_versions == ("1",)


@pytest.mark.slow
def test_predict_writes_the_predictions_of_a_csv_through_the_client(production, tmp_path):
    project, environ, fitted, features = production
    rows = features.head(10)  # more than the server's 4 rows per request: 3 batches
    # A column the model does not take (as training ignores it): kept, not sent.
    rows.assign(ward=["east"] * 10).to_csv(tmp_path / "rows.csv", index=False)
    result = predict(project, "--input", str(tmp_path / "rows.csv"), **environ)
    assert result.returncode == 0, result.stderr
    output = tmp_path / "rows.predictions.csv"
    note, done = result.stdout.splitlines()
    assert note.startswith("predict: note: ") and note.endswith(
        "rows.csv's column(s) 'ward' are not [data] features: not sent to the model, kept "
        "in the output")
    assert done == f"predict: 10 rows -> {output} (production, model version 1)"
    written = pd.read_csv(output)
    assert list(written.columns) == [*features.columns, "ward", "prediction"]
    np.testing.assert_allclose(written["prediction"], fitted.predict(rows), rtol=1e-12)


@pytest.mark.slow
def test_predict_from_the_sample_request_to_json(production, tmp_path):
    project, environ, fitted, _ = production
    request = sample_request_path(project)
    result = predict(project, "--input", str(request), "--output", str(tmp_path / "answers.json"),
                     **environ)
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "answers.json").read_text())
    sample = json.loads(request.read_text())["data"]
    assert written["model_versions"] == ["1"]
    np.testing.assert_allclose(written["predictions"],
                               fitted.predict(np.array(sample)), rtol=1e-12)


@pytest.mark.slow
def test_predict_without_the_key_says_so_and_writes_nothing(production, tmp_path):
    project, environ, _, features = production
    features.head(2).to_csv(tmp_path / "keyless.csv", index=False)
    environ = {name: value for name, value in environ.items()
               if name != "PRODUCTION_SCORING_KEY"}
    result = predict(project, "--input", str(tmp_path / "keyless.csv"), **environ)
    assert result.returncode == 1
    assert "refused rows 0-1 with 401" in result.stderr
    assert "PRODUCTION_SCORING_KEY" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "keyless.predictions.csv").exists()
