"""Shared by the scoring tests: a real saved MLflow model and the bad requests to send it."""
import importlib
import importlib.util
import json
import sys

import pytest

from tests.helpers.project import PROJECT_ROOT, kept_unchanged

SCORING_DIR = PROJECT_ROOT / "scoring"
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def save_model(folder):
    """Fit a Ridge on the diabetes data, save it as the pipeline logs it; return (model, X)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    features, target = load_diabetes(return_X_y=True, as_frame=True)
    model = Ridge(alpha=0.1).fit(features, target)
    mlflow.sklearn.save_model(
        model, str(folder), signature=infer_signature(features, model.predict(features)),
        input_example=features.head(3),
        # Explicit requirements, as the pipeline does: inferring them takes ~20 s.
        pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True))
    return model, features


def saved_model(tmp_path_factory):
    """A module fixture's saved model (see save_model), in a folder of its own: yields the
    folder, and fails the module's teardown if a test or server changed it."""
    folder = tmp_path_factory.mktemp("model") / "model"
    save_model(folder)
    with kept_unchanged(folder):
        yield folder


def scoring_on_path():
    """Make scoring/'s modules importable by name, as the server finds them beside
    gunicorn.conf.py."""
    if str(SCORING_DIR) not in sys.path:
        sys.path.append(str(SCORING_DIR))


def import_worker():
    """scoring/worker.py, imported as the server imports it (with score.py by name)."""
    scoring_on_path()
    return importlib.import_module("worker")


def load_score_module():
    """A fresh instance of scoring/score.py (it is a script, not a package module), which
    imports server_log.py beside it as the server does (gunicorn.conf.py)."""
    scoring_on_path()
    spec = importlib.util.spec_from_file_location("score", SCORING_DIR / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def body(data):
    return json.dumps({"data": data})


ROW = [0.01] * len(COLUMNS)
RECORD = dict(zip(COLUMNS, ROW))

# (id, request body, expected status, a fragment the error message must contain)
BAD_REQUESTS = [
    ("empty-body", "", 400, "Empty request body"),
    ("malformed-json", '{"data": [[1, 2', 400, "not valid JSON"),
    ("not-an-object", "[[1, 2]]", 400, '"data" key'),
    ("missing-data", json.dumps({"rows": [ROW]}), 400, '"data" key'),
    ("data-not-a-list", json.dumps({"data": RECORD}), 400, "non-empty list"),
    ("empty-batch", body([]), 400, "non-empty list"),
    ("row-not-a-list", body([5]), 400, "Row 0 is 5.0"),
    ("too-few-features", body([ROW, ROW[:9]]), 400, "Row 1 has 9 values, expected 10"),
    ("too-many-features", body([ROW + [0.0]]), 400, "Row 0 has 11 values"),
    ("missing-column", body([{k: v for k, v in RECORD.items() if k != "bmi"}]), 400,
     "missing columns ['bmi']"),
    ("unknown-column", body([dict(RECORD, weight=1.0)]), 400, "unknown columns ['weight']"),
    ("mixed-forms", body([RECORD, ROW]), 400, "Row 1 is not an object"),
    ("string-value", body([["0.1"] + ROW[1:]]), 422, "column 'age': \"0.1\" is not a number"),
    ("null-value", body([ROW[:2] + [None] + ROW[3:]]), 422, "column 'bmi': null"),
    ("bool-value", body([dict(RECORD, sex=True)]), 422, "column 'sex': true"),
    ("nested-value", body([[[0.1]] + ROW[1:]]), 422, "is not a number"),
    ("nan", '{"data": [[NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0]]}', 422, "Row 0, column 'age' is NaN"),
    ("infinity", body([ROW, ROW[:1] + [float("-inf")] + ROW[2:]]), 422,
     "Row 1, column 'sex' is NaN, infinite"),
    ("overflow", '{"data": [[0, 0, 1e999, 0, 0, 0, 0, 0, 0, 0]]}', 422, "column 'bmi' is NaN"),
    ("oversize-batch", body([ROW] * 1001), 413, "1001 rows is more than the 1000"),
    # An integer literal beyond the float range (OverflowError when converted).
    ("huge-integer", '{"data": [[1%s, 0, 0, 0, 0, 0, 0, 0, 0, 0]]}' % ("0" * 400), 422,
     "column 'age' is NaN, infinite or beyond the float range"),
    # Nesting deeper than Python's recursion limit (RecursionError while parsing).
    ("deep-nesting", '{"data": %s%s}' % ("[" * 100_000, "]" * 100_000), 400, "nested"),
    ("deep-nesting-in-a-row", body([ROW[:9] + [0]]).replace(" 0]]", " %s0%s]]" % (
        "[" * 5000, "]" * 5000)), 400, "nested"),
    ("duplicate-key", '{"data": [%s], "data": [%s]}' % (ROW, ROW), 400,
     'duplicate key "data"'),
    ("duplicate-column", body([RECORD]).replace('"age": 0.01', '"age": 0.01, "age": 0.02'), 400,
     'duplicate key "age"'),
    # Finite inputs whose prediction overflows: the answer must stay strict JSON.
    ("non-finite-prediction", body([ROW, [1e308] * len(COLUMNS)]), 422,
     "prediction for row 1 is not a finite number"),
]
BAD_REQUEST_PARAMS = [pytest.param(*case[1:], id=case[0]) for case in BAD_REQUESTS]


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def strict_json(text):
    """Parse `text` as a strict JSON client would: NaN and Infinity are errors."""
    return json.loads(text, parse_constant=_refuse_constant)
