"""scoring/score.py in-process: init() on a real saved MLflow model, run() on real Flask
requests of each kind."""
import importlib.metadata
import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flask import Request
from packaging.requirements import Requirement
from werkzeug.test import EnvironBuilder

from ml_service.targets.local import server_command
from tests.helpers.project import kept_unchanged
from tests.helpers.scoring import (BAD_REQUEST_PARAMS, COLUMNS, ROW, SCORING_DIR, body,
                                   load_score_module, save_model, strict_json)

KEY = "in-process-key-0123456789"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model folder, fitted model, features): one real model for the whole module."""
    folder = tmp_path_factory.mktemp("azureml-model") / "model"
    model, features = save_model(folder)
    with kept_unchanged(folder):
        yield folder, model, features


@pytest.fixture(scope="module")
def score(saved):
    """score.py initialised on the saved model with the default settings."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AZUREML_MODEL_DIR", str(saved[0]))
        for name in SETTINGS:
            patch.delenv(name, raising=False)
        module = load_score_module()
        module.init()
    return module


SETTINGS = ("MODEL_VERSION", "SCORING_MAX_BATCH_SIZE", "SCORING_MAX_BODY_BYTES",
            "SCORING_BODY_TIMEOUT", "SCORING_KEY", "SCORING_KEY_FILE")


def fresh_score(monkeypatch, model_dir, **env):
    """A separate score.py instance initialised with extra environment variables."""
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    module = load_score_module()
    module.init()
    return module


def post(score, payload, content_type="application/json", method="POST", headers=None):
    """run() on a real Flask request; return (status, JSON body, response headers)."""
    environ = EnvironBuilder(path="/score", method=method, data=payload,
                             content_type=content_type, headers=headers).get_environ()
    result = score.run(Request(environ))
    if isinstance(result, dict):  # the server sends it as JSON with status 200
        return 200, strict_json(json.dumps(result)), {}
    assert result.mimetype == "application/json"
    return result.status_code, strict_json(result.get_data(as_text=True)), result.headers


def predictions(score, payload):
    status, result, _ = post(score, payload)
    assert status == 200, result
    return result


def test_positional_rows_predict_like_the_model(score, saved):
    _, model, features = saved
    rows = features.head(20)
    result = predictions(score, body(rows.to_numpy().tolist()))
    assert result["model_version"] is None
    np.testing.assert_allclose(result["predictions"], model.predict(rows), rtol=1e-12)


def test_named_records_in_any_key_order_predict_like_the_model(score, saved):
    _, model, features = saved
    rows = features.tail(5)
    records = [dict(reversed(list(record.items()))) for record in rows.to_dict("records")]
    result = predictions(score, body(records))
    np.testing.assert_allclose(result["predictions"], model.predict(rows), rtol=1e-12)


def test_integers_are_numbers(score):
    assert len(predictions(score, body([[0] * len(COLUMNS)]))["predictions"]) == 1


@pytest.mark.parametrize("request_body, status, message", BAD_REQUEST_PARAMS)
def test_bad_request_gets_4xx_and_a_json_error(score, request_body, status, message):
    got_status, result, _ = post(score, request_body)
    assert got_status == status
    assert message in result["error"]
    assert predictions(score, body([ROW]))["predictions"], \
        "a bad request must not break the next one"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_body_without_json_content_type_gets_415(score, content_type):
    status, result, _ = post(score, body([ROW]), content_type=content_type)
    assert status == 415
    assert "Content-Type: application/json" in result["error"]


def test_get_with_the_data_in_the_query_gets_405(score):
    status, result, headers = post(score, None, method="GET")
    assert (status, headers["Allow"]) == (405, "POST")
    assert "GET is not allowed" in result["error"]


def test_batch_limit_and_model_version_come_from_the_environment(monkeypatch, saved):
    score = fresh_score(monkeypatch, saved[0], SCORING_MAX_BATCH_SIZE="3", MODEL_VERSION="7")
    result = predictions(score, body([ROW] * 3))
    assert len(result["predictions"]) == 3
    assert result["model_version"] == "7"
    status, result, _ = post(score, body([ROW] * 4))
    assert status == 413
    assert "4 rows is more than the 3 allowed" in result["error"]


def test_body_limit_follows_the_batch_limit(monkeypatch, saved):
    # 3 rows of 10 columns at 64 bytes per value, plus 64 KiB for the envelope.
    score = fresh_score(monkeypatch, saved[0], SCORING_MAX_BATCH_SIZE="3")
    limit = 3 * len(COLUMNS) * 64 + 65536
    assert post(score, body([ROW]) + " " * (limit - len(body([ROW]))))[0] == 200
    status, result, _ = post(score, body([ROW]) + " " * (limit + 1 - len(body([ROW]))))
    assert status == 413
    assert f"{limit + 1} bytes, more than the {limit} bytes allowed" in result["error"]
    assert "at most 3 rows per request" in result["error"]


def test_body_limit_can_be_set(monkeypatch, saved):
    score = fresh_score(monkeypatch, saved[0], SCORING_MAX_BODY_BYTES="100")
    assert post(score, body([ROW]))[0] == 200  # 72 bytes
    assert post(score, body([ROW, ROW]))[0] == 413  # 134 bytes


@pytest.mark.parametrize("name", ["SCORING_MAX_BATCH_SIZE", "SCORING_MAX_BODY_BYTES",
                                  "SCORING_BODY_TIMEOUT"])
@pytest.mark.parametrize("value", ["0", "-1", "many", "nan"])
def test_invalid_limit_fails_init(monkeypatch, saved, name, value):
    with pytest.raises(ValueError, match=f"{name}={value!r}: expected a positive"):
        fresh_score(monkeypatch, saved[0], **{name: value})


def test_key_from_the_environment_is_required(monkeypatch, saved):
    score = fresh_score(monkeypatch, saved[0], SCORING_KEY=KEY)
    status, result, headers = post(score, body([ROW]))
    assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="scoring"')
    assert "Authorization: Bearer <key>" in result["error"]
    status, _, headers = post(score, body([ROW]), headers={"Authorization": "Bearer x" + KEY})
    assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert post(score, body([ROW]), headers={"Authorization": f"bearer {KEY}"})[0] == 200


def test_key_from_a_secret_file_is_required(monkeypatch, saved, tmp_path):
    (tmp_path / "key").write_text(KEY + "\n")  # secret files often end with a newline
    score = fresh_score(monkeypatch, saved[0], SCORING_KEY_FILE=str(tmp_path / "key"))
    assert post(score, body([ROW]))[0] == 401
    assert post(score, body([ROW]), headers={"Authorization": f"Bearer {KEY}"})[0] == 200


def test_key_is_checked_before_the_request_itself(monkeypatch, saved):
    score = fresh_score(monkeypatch, saved[0], SCORING_KEY=KEY)
    assert post(score, "not json", content_type="text/plain")[0] == 401


@pytest.mark.parametrize("settings, problem", [
    ({"SCORING_KEY": ""}, "unusable (0 characters)"),
    ({"SCORING_KEY": "short-key"}, "unusable (9 characters)"),
    ({"SCORING_KEY": "a key with spaces in it"}, "unusable"),
    ({"SCORING_KEY": KEY, "SCORING_KEY_FILE": "/run/secrets/key"}, "set only one"),
    ({"SCORING_KEY_FILE": "/nonexistent/scoring-key"}, "cannot be read"),
])
def test_unusable_key_fails_init_without_showing_it(monkeypatch, saved, settings, problem):
    with pytest.raises(RuntimeError, match=re.escape(problem)) as failure:
        fresh_score(monkeypatch, saved[0], **settings)
    key = settings.get("SCORING_KEY")
    assert not key or key not in str(failure.value)


def test_model_one_folder_down_is_found(monkeypatch, saved, tmp_path):
    # Azure ML may mount the model under a folder named after it.
    shutil.copytree(saved[0], tmp_path / "my-model")
    score = fresh_score(monkeypatch, tmp_path)
    assert len(predictions(score, body([ROW]))["predictions"]) == 1


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
    np.testing.assert_allclose(predictions(score, body(rows.to_numpy().tolist()))["predictions"],
                               model.predict(rows), rtol=1e-12)


def _saved_as(folder, serialization, alpha=0.1):
    """A Ridge saved in the sklearn flavor's `serialization` format; "project": as the
    pipeline saves its models (training/lineage.py). Returns the folder."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_diabetes

    from training import lineage
    from training.model import train_model

    features, target = load_diabetes(return_X_y=True, as_frame=True)
    model = train_model(features, target, alpha)
    if serialization == "project":
        lineage.save_model(model, features, folder)
    else:
        mlflow.sklearn.save_model(model, str(folder), serialization_format=serialization,
                                  signature=infer_signature(features, model.predict(features)),
                                  pip_requirements=["scikit-learn"])
    return folder


@pytest.mark.parametrize("serialization", ["project", "skops", "cloudpickle"])
def test_sklearn_models_load_without_mlflow_as_mlflow_loads_them(tmp_path, serialization):
    """score.py reads the MLmodel file and a skops estimator itself (mlflow's import is
    about 1 CPU-s per server start; pickle formats are mlflow's to load): the columns and
    the estimator, to its last fitted value, are mlflow's own."""
    import mlflow.sklearn
    from mlflow.models import Model

    score = load_score_module()
    folder = _saved_as(tmp_path / "model", serialization)
    flavors, columns = score.read_model_file(folder)
    meta = Model.load(str(folder / "MLmodel"))
    assert (flavors, columns) == (meta.flavors, meta.signature.inputs.input_names())
    # The whole state, compared as pickle's bytes: type, parameters and fitted arrays.
    loaded = pickle.dumps(score.load_sklearn_model(folder, flavors["sklearn"]))
    assert loaded == pickle.dumps(mlflow.sklearn.load_model(str(folder)))
    # ...which tell models apart that differ in one setting.
    other = _saved_as(tmp_path / "other", serialization, alpha=0.2)
    assert loaded != pickle.dumps(mlflow.sklearn.load_model(str(other)))


def test_serving_a_sklearn_model_imports_no_mlflow(monkeypatch, saved):
    # A module set to None in sys.modules fails its import.
    for name in [name for name in sys.modules if name.split(".")[0] == "mlflow"]:
        monkeypatch.setitem(sys.modules, name, None)
    score = fresh_score(monkeypatch, saved[0])
    _, model, features = saved
    np.testing.assert_allclose(predictions(score, body(features.head(3).to_numpy().tolist()))[
        "predictions"], model.predict(features.head(3)), rtol=1e-12)


def test_mlflows_switch_against_deserializing_models_is_obeyed(monkeypatch, saved):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        fresh_score(monkeypatch, saved[0], MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false")


def test_model_without_a_signature_fails_init_with_a_hint(monkeypatch, saved, tmp_path):
    import mlflow.sklearn

    mlflow.sklearn.save_model(saved[1], str(tmp_path / "model"),
                              pip_requirements=["scikit-learn"])
    with pytest.raises(RuntimeError, match="no signature with named inputs: log it with "
                                           r"signature=infer_signature"):
        fresh_score(monkeypatch, tmp_path / "model")


@pytest.mark.parametrize("estimator", ["LinearRegression", "PoissonRegressor", "Pipeline"])
def test_every_sklearn_model_predicts_as_its_own_predict(monkeypatch, tmp_path, estimator):
    """Linear regressors are served by their matrix product, which a model with a link
    function (PoissonRegressor: exp) or several steps must not be."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn import linear_model
    from sklearn.datasets import load_diabetes
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, target = load_diabetes(return_X_y=True, as_frame=True)
    model = (make_pipeline(StandardScaler(), linear_model.Ridge()) if estimator == "Pipeline"
             else getattr(linear_model, estimator)()).fit(features, target)
    mlflow.sklearn.save_model(model, str(tmp_path / "model"),
                              signature=infer_signature(features, model.predict(features)),
                              pip_requirements=["scikit-learn"])
    score = fresh_score(monkeypatch, tmp_path / "model")
    rows = features.head(5)
    np.testing.assert_allclose(predictions(score, body(rows.to_numpy().tolist()))["predictions"],
                               model.predict(rows), rtol=1e-12)


def _pins(path):
    """{package name: Requirement} of a requirements file."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {(req := Requirement(line)).name.lower(): req for line in lines if line}


@pytest.mark.parametrize("package", ["azureml-inference-server-http", "gunicorn"])
def test_local_environment_runs_the_server_versions_of_the_image(package):
    image = _pins(SCORING_DIR / "requirements.txt")[package]
    local = _pins(SCORING_DIR.parent / "requirements.txt")[package]
    assert str(local.specifier) == str(image.specifier)
    assert str(image.specifier).startswith("==")
    installed = importlib.metadata.version(package)
    assert image.specifier.contains(installed), \
        f"{package} {installed} is installed, the image has {image.specifier}: `make install`"


def test_image_packages_are_in_the_ranges_the_project_is_tested_with():
    image = _pins(SCORING_DIR / "requirements.txt")
    local = _pins(SCORING_DIR.parent / "requirements.txt")
    for name, requirement in image.items():
        tested = local.get("mlflow" if name == "mlflow-skinny" else name)
        if tested is not None:
            version = str(requirement.specifier).removeprefix("==")
            assert tested.specifier.contains(version), (name, version, str(tested.specifier))


def test_image_runs_the_server_command_of_the_local_targets_on_all_interfaces():
    dockerfile = (SCORING_DIR / "Dockerfile").read_text()
    image = json.loads(next(line for line in dockerfile.splitlines()
                            if line.startswith("CMD "))[len("CMD "):])
    local, settings = server_command(SCORING_DIR, "/var/azureml-app/model", 5001, 2)
    # Same program and settings file; the image binds all interfaces of its container.
    assert [Path(local[0]).name, local[1], Path(local[2]).name, local[3]] == image[:4]
    assert (local[4], image[4]) == ("127.0.0.1:5001", "0.0.0.0:5001")
    assert f"AZUREML_MODEL_DIR={settings['AZUREML_MODEL_DIR']}" in dockerfile
    assert "COPY score.py entry_script.py server_log.py worker.py gunicorn.conf.py ./" in dockerfile


def test_the_server_settings_collect_garbage_again_once_the_app_is_loaded(tmp_path):
    """gunicorn.conf.py turns collection off while the app loads and on in when_ready,
    before any fork, with the loaded objects frozen: a server left without collection
    would never free a reference cycle. Read in a process of its own, as gunicorn reads it
    (it takes over the process's output: the answer goes to a file)."""
    check = ("import gc, pathlib, runpy, sys\n"
             "settings = runpy.run_path(sys.argv[1])\n"
             "off = gc.isenabled()\n"
             "settings['when_ready'](None)\n"
             "pathlib.Path(sys.argv[2]).write_text(\n"
             "    f'{off} {gc.isenabled()} {gc.get_freeze_count() > 0}')\n")
    answer = tmp_path / "answer"
    result = subprocess.run([sys.executable, "-c", check, str(SCORING_DIR / "gunicorn.conf.py"),
                             str(answer)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert answer.read_text().split() == ["False", "True", "True"]
