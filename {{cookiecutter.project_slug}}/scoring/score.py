"""Azure ML scoring script: `init()` loads the MLflow model once, `run()` answers one request.

Request: `POST /score`, `Content-Type: application/json`, and when a key is configured
(SCORING_KEY or SCORING_KEY_FILE) `Authorization: Bearer <key>`. Body, at most
SCORING_MAX_BATCH_SIZE rows (default 1000), either form:
    {"data": [[0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]]}
    {"data": [{"age": 0.038, "sex": 0.051, "bmi": 0.062, "bp": 0.022, "s1": -0.044, ...}]}
Positional rows follow the column order of the model signature (see README.md).

Success (200):  {"predictions": [151.3, ...], "model_version": "3"}
                (model_version is the MODEL_VERSION environment variable; null when unset)
Error (4xx):    {"error": "what was wrong and how to fix it"}
    400 the body is not the documented JSON shape, 401 no valid key, 405 not a POST,
    408 the body did not arrive within SCORING_BODY_TIMEOUT, 413 too many rows or bytes,
    415 not application/json, 422 a value, or a prediction, is not a finite number.
Every response body is strict JSON (never NaN or Infinity).

Prediction log (for `python -m ml_service monitor`): after a successful prediction, a share
MLOPS_PREDICTION_LOG_SAMPLE (0..1, default 1) of the requests is recorded as one JSON line
    {"mlops_prediction_log": 1, "time": "...Z", "model_version": "3", "rows": 2,
     "inputs": {"age": [0.038, ...], ...}, "predictions": [151.3, ...]}
(at most MLOPS_PREDICTION_LOG_MAX_ROWS rows of a request, default 100, drawn uniformly from a
larger one; "request_rows" says how many it had; a record over 16 KB is split into lines
of its rows with "request_id", "part" and "parts", as log collectors cut longer lines;
a request with the header X-MLOPS-Smoke-Test, which the pipeline's own checks send, has
"smoke_test": true, and `monitor` leaves it out):
appended to the file MLOPS_PREDICTION_LOG, rotated at MLOPS_PREDICTION_LOG_MAX_BYTES (default
10 MB) with MLOPS_PREDICTION_LOG_BACKUPS old files (default 3), or, when that is unset,
printed on stdout, where Container Insights (AKS) and ACI's Log Analytics collect it. Neither
the key nor any header's value is recorded, and a failure to record never fails the
request: recording resumes by itself after a failed write (a full disk, a deleted folder),
and the failures meanwhile are counted in MLOPS_PREDICTION_LOG + ".failed" (its time of
change: when they began), which `monitor` reports.
"""
import contextlib
import datetime
import hmac
import json
import logging
import os
import random
import socket
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import yaml  # a dependency of mlflow-skinny
from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse
from server_log import SharedRotatingFileHandler

MAX_BATCH_ENV = "SCORING_MAX_BATCH_SIZE"
DEFAULT_MAX_BATCH = 1000
MAX_BODY_ENV = "SCORING_MAX_BODY_BYTES"
# The default body limit fits the largest batch written generously: named values with long
# column names, 17 significant digits and indentation, plus the envelope.
BYTES_PER_VALUE = 64
ENVELOPE_BYTES = 64 * 1024
BODY_TIMEOUT_ENV = "SCORING_BODY_TIMEOUT"
DEFAULT_BODY_TIMEOUT = 10.0
# How much of a refused body is read and thrown away (within the body timeout) before the
# answer: closing a connection with unread bytes resets it, and a client that sends the
# whole body before reading (Python's urllib, requests) then loses the answer. Above
# this the read side is shut at once; about a second of loopback reading.
DISCARD_LIMIT_BYTES = 64 * 1024 * 1024
DISCARD_CHUNK_BYTES = 1024 * 1024
KEY_ENV = "SCORING_KEY"
KEY_FILE_ENV = "SCORING_KEY_FILE"
MIN_KEY_LENGTH = 16
KEY_HINT = ("set it to at least %d printable ASCII characters without spaces, e.g. the output "
            "of: python -c 'import secrets; print(secrets.token_urlsafe(32))'" % MIN_KEY_LENGTH)
# Integers are parsed as floats (see _parse_json), and bool is not float: exact types only.
_FLOAT = frozenset((float,))

PREDICTION_LOG_ENV = "MLOPS_PREDICTION_LOG"
PREDICTION_LOG_SAMPLE_ENV = "MLOPS_PREDICTION_LOG_SAMPLE"
PREDICTION_LOG_MAX_BYTES_ENV = "MLOPS_PREDICTION_LOG_MAX_BYTES"
PREDICTION_LOG_BACKUPS_ENV = "MLOPS_PREDICTION_LOG_BACKUPS"
PREDICTION_LOG_MAX_ROWS_ENV = "MLOPS_PREDICTION_LOG_MAX_ROWS"
# Container Insights (AKS) cuts a log line at 16 KB, leaving invalid JSON the monitor
# drops: a larger record is written in parts (the newline counts).
PREDICTION_LOG_MAX_LINE_BYTES = 16 * 1024 - 1
# The key that marks a record among the container's other stdout lines (the monitor's
# Log Analytics query looks for it).
PREDICTION_LOG_MARKER = "mlops_prediction_log"
# Sent by the smoke test (ml_service.client): its requests are recorded marked, so that
# `monitor` does not take them for traffic.
SMOKE_TEST_HEADER = "X-MLOPS-Smoke-Test"

logger = logging.getLogger("azmlinfsrv.score")
_state = {}


class RequestError(Exception):
    """A client error: its HTTP status, a message telling the caller what to fix, and any
    response headers the status needs."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


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


def _positive_setting(name, default, kind):
    """The environment variable `name` as a positive `kind` (int or float), else `default`."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if not number > 0:  # also refuses NaN
        raise ValueError(f"{name}={value!r}: expected a positive "
                         f"{'integer' if kind is int else 'number'}")
    return number


def _scoring_key():
    """(the key /score requires as bytes, where it came from), or (None, None) for no key."""
    value, key_file = os.environ.get(KEY_ENV), os.environ.get(KEY_FILE_ENV)
    if value is not None and key_file is not None:
        raise RuntimeError(f"Both {KEY_ENV} and {KEY_FILE_ENV} are set: set only one")
    source = KEY_ENV
    if key_file is not None:
        source = f"{KEY_FILE_ENV} ({key_file})"
        try:
            # Secret files often end with a newline that is not part of the key.
            value = Path(key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise RuntimeError(f"{KEY_FILE_ENV}={key_file}: the key cannot be read ({error}); "
                               "mount the secret there or unset the variable") from None
    if value is None:
        return None, None
    # Never show the key itself: say only what is wrong with it.
    if len(value) < MIN_KEY_LENGTH or not (value.isascii() and value.isprintable()) \
            or " " in value:
        raise RuntimeError(f"The scoring key from {source} is unusable ({len(value)} "
                           f"characters): {KEY_HINT}; unset it to serve without a key")
    return value.encode(), source


def read_model_file(model_dir):
    """(flavors, input columns or None) of the MLflow model in `model_dir`, read from its
    MLmodel file as mlflow.models.Model.load reads them: the columns are the signature's
    input names, None when it declares none (no signature, or unnamed tensors).

    Read directly: importing mlflow costs about 1 CPU-second per server start, and a
    scikit-learn model needs nothing else of it (load_sklearn_model).
    """
    meta = yaml.safe_load((Path(model_dir) / "MLmodel").read_text(encoding="utf-8"))
    inputs = json.loads((meta.get("signature") or {}).get("inputs") or "[]")
    # As mlflow's Schema: named when its first input is, an unnamed one by its position.
    if not inputs or inputs[0].get("name") is None:
        return meta["flavors"], None
    return meta["flavors"], [spec.get("name") or index for index, spec in enumerate(inputs)]


def load_sklearn_model(model_dir, flavor):
    """The estimator of an MLflow model's sklearn `flavor` (its MLmodel settings), loaded
    as mlflow.sklearn.load_model loads a local model folder.

    A skops file (what the project logs) is loaded here, trusting only skops' defaults and
    the model's `skops_trusted_types`, without mlflow (see read_model_file). Anything else
    is mlflow's to load, with its own rules: a pickle or cloudpickle file (code that runs
    as it loads: mlflow's switch MLFLOW_ALLOW_PICKLE_DESERIALIZATION decides), a model with
    code of its own to put on sys.path, a format this function does not know.
    """
    if flavor.get("serialization_format") != "skops" or flavor.get("code") \
            or "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in os.environ:
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(model_dir))
    import skops.io

    return skops.io.load(Path(model_dir) / flavor["pickled_model"],
                         trusted=flavor.get("skops_trusted_types"))


def _load_predict(model_dir, flavors, columns):
    """A function from a 2-D float array (signature column order) to a 1-D prediction array."""
    if "sklearn" in flavors:
        import sklearn

        # Calling the estimator on a numpy array skips pyfunc's pandas conversion and schema
        # enforcement (about 2.4 ms per request); run() validates the input itself.
        estimator = load_sklearn_model(model_dir, flavors["sklearn"])
        fitted = [str(name) for name in getattr(estimator, "feature_names_in_", columns)]
        if fitted != columns:
            raise RuntimeError(f"The model was fitted on columns {fitted} but its signature "
                               f"declares {columns}: log it with a matching signature")
        # The estimator was fitted on a DataFrame and checks the names of what it predicts
        # on, warning about arrays that have none; the order was just checked, so forget the
        # names (a pipeline's first step keeps them: its warning is ignored).
        if "feature_names_in_" in vars(estimator):
            del estimator.feature_names_in_
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

        def predict(features):
            # parse_request() refused every NaN and infinity already: scikit-learn need not
            # look again. Per call: scikit-learn's settings belong to the thread that sets
            # them, and gunicorn's threads start after init().
            with sklearn.config_context(assume_finite=True):
                return estimator.predict(features)
        return _linear_predict(estimator, predict, len(columns)) or predict

    # Any other flavor: the generic, slower pyfunc path with a named DataFrame.
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(str(model_dir))
    return lambda features: np.asarray(model.predict(pd.DataFrame(features, columns=columns)))


def _linear_predict(estimator, predict, width):
    """For a linear regressor (LinearRegression, Ridge, Lasso, ...): its prediction as the one
    matrix product it is, else None.

    scikit-learn's predict() checks its input's type, shape and names first: about 0.1 ms,
    most of a one-row request's time in the model, for what run() has checked already. Only
    an estimator whose predict() gives exactly features @ coef_.T + intercept_ on random
    rows at load is served this way (a classifier, or a model with a link function such as
    PoissonRegressor, keeps `predict`, its own predict() with the checks).
    """
    coef, intercept = getattr(estimator, "coef_", None), getattr(estimator, "intercept_", None)
    if not isinstance(coef, np.ndarray) or coef.shape[-1] != width or intercept is None:
        return None
    rows = np.random.default_rng(0).normal(size=(8, width))
    with np.errstate(all="ignore"):
        expected = np.asarray(predict(rows))
        if expected.shape != (rows @ coef.T).shape or not np.allclose(
                rows @ coef.T + intercept, expected, rtol=1e-12, atol=0):
            return None
    return lambda features: features @ coef.T + intercept


def init():
    """Load the model under AZUREML_MODEL_DIR, read its input columns and the settings."""
    root = os.environ.get("AZUREML_MODEL_DIR")
    if not root:
        raise RuntimeError("AZUREML_MODEL_DIR is not set: set it to the folder of the MLflow "
                           "model (azmlinfsrv: --model_dir)")
    model_dir = find_model_dir(root)
    flavors, columns = read_model_file(model_dir)
    if columns is None:
        raise RuntimeError(f"The model in {model_dir} has no signature with named inputs: "
                           "log it with signature=infer_signature(features, predictions)")
    max_batch = _positive_setting(MAX_BATCH_ENV, DEFAULT_MAX_BATCH, int)
    key, key_source = _scoring_key()
    _state.update(
        columns=columns,
        # %-formatting: the JSON braces would need doubling in an f-string.
        usage='send {"data": [[%d numbers], ...]} or {"data": [{"%s": number, ...}, ...]} '
              "with columns %s" % (len(columns), columns[0], columns),
        column_set=frozenset(columns),
        max_batch=max_batch,
        max_body=_positive_setting(
            MAX_BODY_ENV, max_batch * len(columns) * BYTES_PER_VALUE + ENVELOPE_BYTES, int),
        body_timeout=_positive_setting(BODY_TIMEOUT_ENV, DEFAULT_BODY_TIMEOUT, float),
        key=key,
        model_version=os.environ.get("MODEL_VERSION"),
        predict=_load_predict(model_dir, flavors, columns),
        prediction_log=_prediction_log(),
    )
    if key is None:
        logger.warning("No scoring key configured (%s or %s): /score answers anyone who can "
                       "reach it", KEY_ENV, KEY_FILE_ENV)
    else:
        logger.info("Scoring key required on /score (from %s)", key_source)


@rawhttp
def run(request):
    """Answer one request to /score (a Flask request); see the module docstring."""
    sock = request.environ.get("gunicorn.socket")
    try:
        check_request(request.method, request.headers, request.content_length)
    except RequestError as error:
        _discard_body(request, sock)
        return _error_response(error)
    try:
        return predictions_for(_read_body(request, sock), SMOKE_TEST_HEADER in request.headers)
    except RequestError as error:
        return _error_response(error)


def answer(method, headers, body):
    """run()'s answer to a request read whole by the server's own loop (worker.py's fast
    path, which skips the Flask app): (status, headers to add, the JSON body as a dict).
    `headers` maps lower-case names to values; `body` is the bytes of the whole body."""
    try:
        check_request(method, headers, len(body))
        return 200, {}, predictions_for(body, SMOKE_TEST_HEADER.lower() in headers)
    except RequestError as error:
        return error.status, error.headers, {"error": str(error)}


def predictions_for(body, smoke_test=False):
    """The answer to a request's whole body (bytes): the predictions and the model version;
    the request is recorded in the prediction log (smoke_test: marked as the pipeline's own)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(400, f"The body is not UTF-8 text ({error}): send JSON encoded "
                                "as UTF-8") from None
    features = parse_request(text)
    # A non-finite prediction is answered below; numpy's overflow warning would only add noise.
    with np.errstate(over="ignore", invalid="ignore"):
        predictions = _state["predict"](features)
    if predictions.dtype.kind in "fc":
        finite = np.isfinite(predictions).reshape(len(predictions), -1).all(axis=1)
        if not finite.all():
            rows = np.flatnonzero(~finite).tolist()
            raise RequestError(
                422, f"The model's prediction for row{'s' * (len(rows) > 1)} "
                     f"{', '.join(map(str, rows[:10]))} is not a finite number: the inputs are "
                     "far outside the range of the training data; send values of that scale")
    predicted = predictions.tolist()
    _record_prediction(features, predicted, smoke_test)
    return {"predictions": predicted, "model_version": _state["model_version"]}


class _PredictionLogFile(SharedRotatingFileHandler):
    """The prediction log file, shared by the gunicorn workers (server_log.py). While its
    writes fail (a full disk, a deleted folder), the failures are counted in `<file>.failed`
    (JSON: since, records, error; `monitor` reports it, best effort as the disk may be full)
    and in a warning at most once a minute; the first record written again removes it."""

    WARN_EVERY_S = 60

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failed_path = self.baseFilename + ".failed"
        self._warned_at = 0.0

    def failed(self, failure):
        with contextlib.suppress(OSError):
            Path(self.failed_path).write_text(json.dumps(failure))
        # Also as the file's time, which needs no space: on a full disk the text may not
        # fit, and `monitor` still knows since when.
        began = datetime.datetime.fromisoformat(failure["since"].replace("Z", "+00:00"))
        with contextlib.suppress(OSError):
            os.utime(self.failed_path, (began.timestamp(), began.timestamp()))
        if time.monotonic() - self._warned_at >= self.WARN_EVERY_S:
            self._warned_at = time.monotonic()
            logger.warning("Prediction log %s: recording failed since %s (%d record(s) lost; "
                           "retried with every request): %s", self.baseFilename,
                           failure["since"], failure["records"], failure["error"])

    def resumed(self, failure):
        logger.warning("Prediction log %s: recording resumed (%d record(s) were lost "
                       "since %s)", self.baseFilename, failure["records"], failure["since"])
        with contextlib.suppress(OSError):
            os.unlink(self.failed_path)


class _PredictionLogStdout:
    """The prediction log on stdout, one whole line at a time (a worker's threads share it)."""

    def __init__(self):
        self._lock = threading.Lock()

    def write_line(self, line):
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def _prediction_log():
    """The prediction log's settings and handler, or None when nothing is recorded."""
    value = os.environ.get(PREDICTION_LOG_SAMPLE_ENV, "1")
    try:
        sample = float(value)
    except ValueError:
        sample = -1.0
    if not 0 <= sample <= 1:  # also refuses NaN
        raise ValueError(f"{PREDICTION_LOG_SAMPLE_ENV}={value!r}: expected a share of the "
                         "requests to record, from 0 to 1")
    if sample == 0:
        return None
    path = os.environ.get(PREDICTION_LOG_ENV)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # What a previous server failed to record is not this one's to report: its own
        # failures, if any, are counted anew.
        Path(path + ".failed").unlink(missing_ok=True)
        handler = _PredictionLogFile(
            path, maxBytes=_positive_setting(PREDICTION_LOG_MAX_BYTES_ENV, 10_000_000, int),
            backupCount=_positive_setting(PREDICTION_LOG_BACKUPS_ENV, 3, int), delay=True,
            encoding="utf-8")
    else:
        handler = _PredictionLogStdout()
    return {"sample": sample, "handler": handler,
            "max_rows": _positive_setting(PREDICTION_LOG_MAX_ROWS_ENV, 100, int)}


def _record_prediction(features, predictions, smoke_test=False):
    """Record a sampled request's inputs and predictions; never raise."""
    log = _state.get("prediction_log")
    if log is None or random.random() >= log["sample"]:
        return
    try:
        # A uniform sample of a large request's rows, in request order: its first rows
        # alone would skew the record whenever a client sends sorted batches.
        count = len(features)
        if count > log["max_rows"]:
            kept = sorted(random.sample(range(count), log["max_rows"]))
            features, predictions = features[kept], [predictions[index] for index in kept]
        record = {
            PREDICTION_LOG_MARKER: 1,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "model_version": _state["model_version"],
            "rows": len(features),
            "request_rows": count,
            "inputs": dict(zip(_state["columns"], features.T.tolist())),
            "predictions": predictions,
            **({"smoke_test": True} if smoke_test else {}),
        }
        for line in _record_lines(record):
            log["handler"].write_line(line)
    except Exception:  # the answer matters more than its record
        logger.warning("The prediction could not be recorded", exc_info=True)


def _record_lines(record, max_bytes=PREDICTION_LOG_MAX_LINE_BYTES):
    """`record` as JSON lines of at most `max_bytes` each: one line when it fits, else its
    rows in consecutive parts, each a whole record with the same request_id, its `part`
    (from 0) and the number of `parts`. A single row longer than `max_bytes` stays whole."""
    whole = json.dumps(record, allow_nan=False)
    if len(whole.encode()) <= max_bytes:
        return [whole]
    count, request_id = record["rows"], uuid.uuid4().hex
    parts = -(-len(whole.encode()) // max_bytes)
    while True:
        size = -(-count // parts)
        chunks = [slice(start, start + size) for start in range(0, count, size)]
        lines = [json.dumps({
            **record, "request_id": request_id, "part": part, "parts": len(chunks),
            "rows": len(record["predictions"][chunk]),
            "inputs": {column: values[chunk] for column, values in record["inputs"].items()},
            "predictions": record["predictions"][chunk],
        }, allow_nan=False) for part, chunk in enumerate(chunks)]
        if size == 1 or max(len(line.encode()) for line in lines) <= max_bytes:
            return lines
        parts += 1


def _error_response(error):
    response = AMLResponse({"error": str(error)}, error.status, json_str=True)
    # Set here, not passed to AMLResponse: it splits header values at commas.
    response.headers.update(error.headers)
    return response


def check_request(method, headers, content_length):
    """Refuse what the method and headers alone show to be wrong (nothing of the body is read).
    `headers`: a mapping that finds lower-case names (Flask's finds any case);
    `content_length`: the body's declared length, None when unknown (chunked)."""
    if method != "POST":
        raise RequestError(405, f"{method} is not allowed on /score: send a POST with "
                                "the JSON body", {"Allow": "POST"})
    if _state["key"] is not None:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise RequestError(401, "This endpoint needs a key: send the header "
                                    "'Authorization: Bearer <key>'",
                               {"WWW-Authenticate": 'Bearer realm="scoring"'})
        # Constant time: the answer must not reveal how much of a guess was right.
        if not hmac.compare_digest(given.strip().encode(), _state["key"]):
            raise RequestError(401, "The key in the Authorization header is not valid: send "
                                    "the key of this endpoint",
                               {"WWW-Authenticate": 'Bearer realm="scoring", '
                                                    'error="invalid_token"'})
    content_type = headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise RequestError(415, f"Content-Type {content_type or 'unset'} is not JSON: "
                                "send the body with the header 'Content-Type: application/json'")
    if content_length is not None and content_length > _state["max_body"]:
        raise RequestError(413, _too_large(content_length))


def _too_large(length=None):
    size = f"{length} bytes, more than" if length is not None else "longer than"
    return (f"The body is {size} the {_state['max_body']} bytes allowed: send at most "
            f"{_state['max_batch']} rows per request")


def _stop_reading(sock):
    """Shut the read side of the client's connection.

    Reads of the body then return at once (a blocked one included), so neither score.py nor
    the server waits for bytes that would be thrown away, and the server closes the
    connection after the answer. Bytes already received can still be read.
    """
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)


def _discard_body(request, sock):
    """Before a refusal is answered: read and throw away the rest of the body, up to
    DISCARD_LIMIT_BYTES within the body timeout, so that the client can read the answer
    and the connection stays usable; else stop reading it (_stop_reading). A client that
    asked `Expect: 100-continue` has sent no body yet, and will not once refused."""
    length = request.content_length
    if request.headers.get("Expect", "").lower() == "100-continue" or \
            (length is not None and length > DISCARD_LIMIT_BYTES):
        _stop_reading(sock)
        return
    read = 0
    # Past the deadline the watch shuts the read side: the read returns b"" at once.
    with _body_deadlines.watch(sock, _state["body_timeout"]):
        with contextlib.suppress(Exception):  # a broken body: nothing more to read
            while read <= DISCARD_LIMIT_BYTES:
                chunk = request.stream.read(DISCARD_CHUNK_BYTES)
                if not chunk:
                    return
                read += len(chunk)
    _stop_reading(sock)  # too long, too slow or broken


def _read_body(request, sock):
    """The body (bytes): 413 past the size limit, 408 past the body timeout."""
    limit, seconds = _state["max_body"], _state["body_timeout"]
    with _body_deadlines.watch(sock, seconds) as watch:
        try:
            data = request.stream.read(limit + 1)
        except Exception as error:  # the server's own errors for a broken chunked body
            if not watch.expired:
                raise RequestError(400, f"The request body could not be read ({error}): send "
                                        "it whole, with a correct Content-Length") from None
            data = b""
    if watch.expired:
        raise RequestError(408, f"The body did not arrive within {seconds:g} s: send the whole "
                                "request at once")
    if len(data) > limit:
        _discard_body(request, sock)
        raise RequestError(413, _too_large())
    return data


class _BodyDeadlines:
    """Stops body reads that go on past their deadline.

    The server reads a body with blocking socket reads and no time limit, so a client that
    sends it at a trickle, or stops halfway, would hold a server thread for as long as it
    likes. One background thread per process checks the reads in progress every TICK seconds
    and shuts the read side of those past their deadline: the blocked read returns at once
    and the request is answered with 408.
    """

    TICK = 0.25

    class Watch:
        __slots__ = ("sock", "deadline", "expired")

        def __init__(self, sock, deadline):
            self.sock, self.deadline, self.expired = sock, deadline, False

    def __init__(self):
        self._lock = threading.Lock()
        self._watches = set()
        self._owner_pid = None  # threads do not survive fork: one per process

    @contextlib.contextmanager
    def watch(self, sock, seconds):
        watch = self.Watch(sock, time.monotonic() + seconds)
        if sock is None:  # not served by gunicorn: nothing to shut down
            yield watch
            return
        with self._lock:
            if self._owner_pid != os.getpid():
                self._owner_pid = os.getpid()
                threading.Thread(target=self._expire, name="body-deadlines", daemon=True).start()
            self._watches.add(watch)
        try:
            yield watch
        finally:
            with self._lock:
                self._watches.discard(watch)

    def _expire(self):
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            # Under the lock, so a read that just finished is never cut (its connection
            # may already carry the next request).
            with self._lock:
                for watch in self._watches:
                    if not watch.expired and now >= watch.deadline:
                        watch.expired = True
                        _stop_reading(watch.sock)


_body_deadlines = _BodyDeadlines()


def _show(value):
    if isinstance(value, (list, dict)):  # never serialise a nested value (it may be deep)
        return "a list" if isinstance(value, list) else "an object"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _object_without_duplicate_keys(pairs):
    found = dict(pairs)
    if len(found) != len(pairs):
        seen = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise RequestError(400, f"The body has the duplicate key {json.dumps(duplicate)} in an "
                                "object: send each key once")
    return found


def _parse_json(text):
    """The JSON value of `text`: integers as floats (an integer literal beyond the float
    range becomes infinity and is refused with the other non-finite values) and objects
    with a duplicate key refused (JSON leaves their meaning open)."""
    try:
        return json.loads(text, parse_int=float,
                          object_pairs_hook=_object_without_duplicate_keys)
    except RecursionError:
        raise RequestError(400, "The body is nested too deeply: send "
                                + _state["usage"]) from None
    except ValueError as error:
        raise RequestError(400, f"Body is not valid JSON ({error}): {_state['usage']}") from None


def parse_request(text):
    """Validate a request body; return its rows as a float array in signature column order."""
    columns, max_batch, usage = _state["columns"], _state["max_batch"], _state["usage"]
    if not text.strip():
        raise RequestError(400, f"Empty request body: {usage}")
    # NaN and Infinity parse as floats (Python's json accepts them); the finiteness check
    # below refuses them together with numbers beyond the float range.
    body = _parse_json(text)
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
        if not _FLOAT.issuperset(map(type, row)):
            position, value = next((position, value) for position, value in enumerate(row)
                                   if type(value) is not float)
            raise RequestError(422, f"Row {index}, column {columns[position]!r}: {_show(value)} is "
                                    "not a number; send every feature as a JSON number")
        matrix.append(row)

    features = np.array(matrix, dtype=np.float64)
    if not np.isfinite(features).all():
        index, position = np.argwhere(~np.isfinite(features))[0]
        raise RequestError(422, f"Row {index}, column {columns[position]!r} is NaN, infinite "
                                "or beyond the float range: send finite numbers")
    return features
