"""Azure ML scoring script: `init()` loads the MLflow model once, `run()` scores one request.

Request body (JSON, either form; at most SCORING_MAX_BATCH_SIZE rows, default 1000):
    {"data": [[0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]]}
    {"data": [{"age": 0.038, "sex": 0.051, "bmi": 0.062, "bp": 0.022, "s1": -0.044, ...}]}
Positional rows follow the column order of the model signature (see README.md).

Success (200):  {"predictions": [151.3, ...], "model_version": "3"}
                (model_version is the MODEL_VERSION environment variable; null when unset)
Error (4xx):    {"error": "what was wrong and how to fix it"}
    400 the body is not the documented JSON shape, 413 too many rows,
    415 empty body sent with a non-JSON Content-Type, 422 a value is not a finite number.
"""
import json
import os
import warnings
from pathlib import Path

import numpy as np
from azureml_inference_server_http.api.aml_response import AMLResponse

MAX_BATCH_ENV = "SCORING_MAX_BATCH_SIZE"
DEFAULT_MAX_BATCH = 1000
# JSON numbers arrive as int or float; bool subclasses int, so compare exact types.
_NUMBER_TYPES = frozenset((int, float))

_state = {}


class RequestError(Exception):
    """A client error: its HTTP status and a message telling the caller what to fix."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def find_model_dir(root):
    """The folder holding the MLmodel file: `root` itself or the one subfolder that has it.

    Azure ML mounts a registered model either directly or one level down (under the
    model's folder name), so search rather than assume.
    """
    root = Path(root)
    if (root / "MLmodel").is_file():
        return root
    found = sorted(root.rglob("MLmodel"), key=lambda path: len(path.parts))
    if not found:
        raise FileNotFoundError(f"No MLmodel file under {root}: point AZUREML_MODEL_DIR "
                                "(azmlinfsrv --model_dir) at the MLflow model folder")
    if len(found) > 1 and len(found[1].parts) == len(found[0].parts):
        raise RuntimeError(f"Several MLflow models under {root}: {[str(p) for p in found]}")
    return found[0].parent


def _max_batch_size():
    value = os.environ.get(MAX_BATCH_ENV, str(DEFAULT_MAX_BATCH))
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"{MAX_BATCH_ENV}={value!r}: expected a positive integer")
    return size


def _load_predict(model_dir, flavors, columns):
    """A function from a 2-D float array (signature column order) to a 1-D prediction array."""
    if "sklearn" in flavors:
        import mlflow.sklearn

        # Calling the estimator on a numpy array skips pyfunc's pandas conversion and schema
        # enforcement (about 2.4 ms per request); run() validates the input itself.
        estimator = mlflow.sklearn.load_model(str(model_dir))
        fitted = [str(name) for name in getattr(estimator, "feature_names_in_", columns)]
        if fitted != columns:
            raise RuntimeError(f"The model was fitted on columns {fitted} but its signature "
                               f"declares {columns}: log it with a matching signature")
        # The estimator was fitted on a DataFrame and warns about arrays without column
        # names; the order was just checked, so the warning would be noise on every request.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        return estimator.predict

    # Any other flavor: the generic, slower pyfunc path with a named DataFrame.
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(str(model_dir))
    return lambda features: np.asarray(model.predict(pd.DataFrame(features, columns=columns)))


def init():
    """Load the model under AZUREML_MODEL_DIR and read its input columns from the signature."""
    from mlflow.models import Model

    root = os.environ.get("AZUREML_MODEL_DIR")
    if not root:
        raise RuntimeError("AZUREML_MODEL_DIR is not set: start azmlinfsrv with "
                           "--model_dir <folder of the MLflow model>")
    model_dir = find_model_dir(root)
    meta = Model.load(str(model_dir / "MLmodel"))
    if meta.signature is None or not meta.signature.inputs.has_input_names():
        raise RuntimeError(f"The model in {model_dir} has no signature with named inputs: "
                           "log it with signature=infer_signature(features, predictions)")
    columns = meta.signature.inputs.input_names()
    _state.update(
        columns=columns,
        # %-formatting: the JSON braces would need doubling in an f-string.
        usage='send {"data": [[%d numbers], ...]} or {"data": [{"%s": number, ...}, ...]} '
              "with columns %s" % (len(columns), columns[0], columns),
        column_set=frozenset(columns),
        max_batch=_max_batch_size(),
        model_version=os.environ.get("MODEL_VERSION"),
        predict=_load_predict(model_dir, meta.flavors, columns),
    )


def run(raw_data, request_headers=None):
    """Score one request body (a JSON string); see the module docstring for the format."""
    try:
        features = parse_request(raw_data, request_headers)
    except RequestError as error:
        return AMLResponse({"error": str(error)}, error.status, json_str=True)
    predictions = _state["predict"](features)
    return {"predictions": predictions.tolist(), "model_version": _state["model_version"]}


def _show(value):
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_request(raw_data, request_headers=None):
    """Validate a request body; return its rows as a float array in signature column order."""
    columns, max_batch, usage = _state["columns"], _state["max_batch"], _state["usage"]
    if not raw_data or not raw_data.strip():
        content_type = (request_headers or {}).get("Content-Type", "")
        if request_headers is not None and "json" not in content_type.lower():
            # The server drops form-encoded bodies (curl -d without -H): say so.
            raise RequestError(415, f"Empty body with Content-Type {content_type or 'unset'}: "
                                    "send the JSON with header 'Content-Type: application/json'")
        raise RequestError(400, f"Empty request body: {usage}")
    try:
        # NaN and Infinity parse as floats (Python's json accepts them); the finiteness
        # check below refuses them together with numbers beyond the float range.
        body = json.loads(raw_data)
    except ValueError as error:
        raise RequestError(400, f"Body is not valid JSON ({error}): {usage}") from None
    if not isinstance(body, dict) or "data" not in body:
        raise RequestError(400, f'Body must be a JSON object with a "data" key: {usage}')
    rows = body["data"]
    if not isinstance(rows, list) or not rows:
        raise RequestError(400, f'"data" must be a non-empty list of rows: {usage}')
    if len(rows) > max_batch:
        raise RequestError(413, f"{len(rows)} rows is more than the {max_batch} allowed per "
                                "request: split the batch into several requests")

    named = type(rows[0]) is dict
    matrix = []
    for index, row in enumerate(rows):
        if named:
            if type(row) is not dict:
                raise RequestError(400, f"Row {index} is not an object like row 0: use one form "
                                        "for all rows")
            if row.keys() != _state["column_set"]:
                missing = [name for name in columns if name not in row]
                unknown = sorted(name for name in row if name not in _state["column_set"])
                problems = (["missing columns %s" % missing] if missing else []) + (
                    ["unknown columns %s" % unknown] if unknown else [])
                raise RequestError(400, f"Row {index}: {', '.join(problems)}; expected exactly "
                                        f"the columns {columns}")
            row = [row[name] for name in columns]
        elif type(row) is not list:
            raise RequestError(400, f"Row {index} is {_show(row)}: {usage}")
        elif len(row) != len(columns):
            raise RequestError(400, f"Row {index} has {len(row)} values, expected "
                                    f"{len(columns)} in the order {columns}")
        if not _NUMBER_TYPES.issuperset(map(type, row)):
            position, value = next((position, value) for position, value in enumerate(row)
                                   if type(value) not in _NUMBER_TYPES)
            raise RequestError(422, f"Row {index}, column {columns[position]!r}: {_show(value)} is "
                                    "not a number; send every feature as a JSON number")
        matrix.append(row)

    features = np.array(matrix, dtype=np.float64)
    if not np.isfinite(features).all():
        index, position = np.argwhere(~np.isfinite(features))[0]
        raise RequestError(422, f"Row {index}, column {columns[position]!r} is NaN, infinite "
                                "or beyond the float range: send finite numbers")
    return features
