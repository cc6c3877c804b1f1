"""scoring/score.py in-process: init() on a real saved MLflow model, run() on each request kind."""
import json
import shutil

import numpy as np
import pytest

from tests.helpers.scoring import (BAD_REQUEST_PARAMS, COLUMNS, ROW, SCORING_DIR, body,
                                   load_score_module, save_model)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model folder, fitted model, features): one real model for the whole module."""
    folder = tmp_path_factory.mktemp("azureml-model") / "model"
    model, features = save_model(folder)
    return folder, model, features


@pytest.fixture(scope="module")
def score(saved):
    """score.py initialised on the saved model with the default settings."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AZUREML_MODEL_DIR", str(saved[0]))
        patch.delenv("SCORING_MAX_BATCH_SIZE", raising=False)
        patch.delenv("MODEL_VERSION", raising=False)
        module = load_score_module()
        module.init()
    return module


def fresh_score(monkeypatch, model_dir, **env):
    """A separate score.py instance initialised with extra environment variables."""
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    module = load_score_module()
    module.init()
    return module


def test_positional_rows_predict_like_the_model(score, saved):
    _, model, features = saved
    rows = features.head(20)
    result = score.run(body(rows.to_numpy().tolist()))
    assert result["model_version"] is None
    np.testing.assert_allclose(result["predictions"], model.predict(rows), rtol=1e-12)


def test_named_records_in_any_key_order_predict_like_the_model(score, saved):
    _, model, features = saved
    rows = features.tail(5)
    records = [dict(reversed(list(record.items()))) for record in rows.to_dict("records")]
    result = score.run(body(records))
    np.testing.assert_allclose(result["predictions"], model.predict(rows), rtol=1e-12)


def test_integers_are_numbers(score):
    assert len(score.run(body([[0] * len(COLUMNS)]))["predictions"]) == 1


def test_response_is_json_serialisable(score):
    result = score.run(body([ROW, ROW]))
    assert json.loads(json.dumps(result)) == result


@pytest.mark.parametrize("request_body, status, message", BAD_REQUEST_PARAMS)
def test_bad_request_gets_4xx_and_a_json_error(score, request_body, status, message):
    response = score.run(request_body)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert message in response.get_json()["error"]
    assert score.run(body([ROW]))["predictions"], "a bad request must not break the next one"


def test_empty_body_with_form_content_type_gets_415(score):
    # What azmlinfsrv hands run() for `curl -d` without -H 'Content-Type: application/json'.
    response = score.run("", {"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.get_json()["error"]


def test_batch_limit_and_model_version_come_from_the_environment(monkeypatch, saved):
    score = fresh_score(monkeypatch, saved[0], SCORING_MAX_BATCH_SIZE="3", MODEL_VERSION="7")
    result = score.run(body([ROW] * 3))
    assert len(result["predictions"]) == 3
    assert result["model_version"] == "7"
    response = score.run(body([ROW] * 4))
    assert response.status_code == 413
    assert "4 rows is more than the 3 allowed" in response.get_json()["error"]


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_invalid_batch_limit_fails_init(monkeypatch, saved, value):
    with pytest.raises(ValueError, match="SCORING_MAX_BATCH_SIZE"):
        fresh_score(monkeypatch, saved[0], SCORING_MAX_BATCH_SIZE=value)


def test_model_one_folder_down_is_found(monkeypatch, saved, tmp_path):
    # Azure ML may mount the model under a folder named after it.
    shutil.copytree(saved[0], tmp_path / "my-model")
    score = fresh_score(monkeypatch, tmp_path)
    assert len(score.run(body([ROW]))["predictions"]) == 1


def test_missing_model_fails_init_with_a_hint(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="No MLmodel file"):
        fresh_score(monkeypatch, tmp_path)
    monkeypatch.delenv("AZUREML_MODEL_DIR")
    with pytest.raises(RuntimeError, match="--model_dir"):
        load_score_module().init()


def test_conda_env_pins_the_same_packages_as_requirements():
    import yaml

    def pins(lines):
        return sorted(line.strip() for line in lines
                      if line.strip() and not line.strip().startswith("#"))
    conda = yaml.safe_load((SCORING_DIR / "conda.yml").read_text())
    pip_list = next(item["pip"] for item in conda["dependencies"] if isinstance(item, dict))
    requirements = pins((SCORING_DIR / "requirements.txt").read_text().splitlines())
    assert pins(pip_list) == requirements
    assert all("==" in line for line in requirements), "the scoring image pins exact versions"


def test_models_without_the_sklearn_flavor_are_served_through_pyfunc(monkeypatch, saved,
                                                                     tmp_path):
    import mlflow.sklearn
    from mlflow.models import Model, infer_signature

    # A model with only the python_function flavor, as other libraries' models look to
    # score.py. (Pickle format: the pyfunc loader reads a skops file only via the sklearn
    # flavor's settings.)
    _, model, features = saved
    folder = tmp_path / "model"
    mlflow.sklearn.save_model(model, str(folder), serialization_format="cloudpickle",
                              signature=infer_signature(features, model.predict(features)),
                              pip_requirements=["scikit-learn"])
    meta = Model.load(str(folder / "MLmodel"))
    del meta.flavors["sklearn"]
    meta.save(str(folder / "MLmodel"))
    score = fresh_score(monkeypatch, folder)
    rows = features.head(4)
    np.testing.assert_allclose(score.run(body(rows.to_numpy().tolist()))["predictions"],
                               model.predict(rows), rtol=1e-12)
