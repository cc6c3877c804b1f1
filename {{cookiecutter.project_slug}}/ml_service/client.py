"""Python access to a deployed model: the client of scoring/score.py's /score.

From a notebook (the scoring URI and key of a target, or given directly):

    from ml_service.client import ScoringClient
    from ml_service.config import load_settings

    client = ScoringClient.for_target(load_settings(), "production")
    # or: ScoringClient("https://<host>/score", key=os.environ["PRODUCTION_SCORING_KEY"])
    frame["prediction"] = client.predict(frame)   # a DataFrame: a Series, same index

`predict` takes a pandas DataFrame (sent as rows of named columns), a list of dicts
(named columns) or a list of row lists (the model signature's column order), splits it
into requests of at most `max_batch_size` rows (the server's SCORING_MAX_BATCH_SIZE,
[serving] max_batch_size) and returns the predictions in input order. A busy or
restarting server (429, 502, 503, 504, a reset connection) is asked again with
exponential backoff, honouring its Retry-After; any other refusal raises ScoringError
at once with the server's own message and status. The key is sent as
`Authorization: Bearer <key>` and never shown (not in repr, logs or errors).

This module needs only the standard library (pandas only when given a DataFrame), so
importing it is cheap; requests go through ml_service.http_client (http and https only).
"""
import dataclasses
import email.utils
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request

from ml_service import http_client
from ml_service.errors import MlopsError
from ml_service.monitoring.prediction_log import SMOKE_TEST_HEADER
from ml_service.release import key_headers, scoring_key

# Statuses that say "not now" rather than "not this": the server (or the gateway in
# front of it: AKS's load balancer, a restarting pod) may answer the same request later.
# Scoring has no side effects, so asking again is safe.
RETRY_STATUSES = frozenset((429, 502, 503, 504))
# A server asking for a longer pause than this gets an error, not a silent wait.
MAX_RETRY_AFTER = 60.0
PREDICTION_COLUMN = "prediction"

logger = logging.getLogger(__name__)


class ScoringError(MlopsError):
    """The endpoint refused or could not answer a request. `status` is the HTTP status
    (None when nothing answered); the message carries the server's own explanation."""

    def __init__(self, what, fix, status=None):
        super().__init__(what, fix)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Scores:
    """The predictions for all rows, in input order, and the model versions that made
    them (one, unless the target was redeployed while the batches were sent)."""

    predictions: object   # a list, or a pandas Series when given a DataFrame
    model_versions: tuple


@dataclasses.dataclass(frozen=True)
class ScoringClient:
    scoring_uri: str
    key: str | None = dataclasses.field(default=None, repr=False)
    max_batch_size: int = 1000
    timeout: float = 30.0     # seconds per request
    retries: int = 3          # further attempts after a retryable answer
    backoff: float = 0.5      # seconds before the first retry, doubled for each next one
    # Marks the requests as the pipeline's own checks (the smoke test): the servers record
    # them marked, and `monitor` does not take them for traffic.
    smoke_test: bool = False

    def __post_init__(self):
        for name, value, low in (("max_batch_size", self.max_batch_size, 1),
                                 ("timeout", self.timeout, 1e-3), ("retries", self.retries, 0),
                                 ("backoff", self.backoff, 0)):
            if not value >= low:
                raise ValueError(f"ScoringClient {name}={value!r}: must be at least {low}")

    @classmethod
    def for_target(cls, settings, target_name, **options):
        """The client of what target `target_name` (staging, production) serves now:
        its scoring URI from the target, its key from the target's variable
        (<TARGET>_SCORING_KEY), the batch size from [serving] max_batch_size."""
        from ml_service.targets import get_target

        deployment = get_target(target_name, settings).status()
        if deployment is None:
            raise MlopsError(f"Nothing is deployed to {target_name}.",
                             f"Run `python -m ml_service deploy --target {target_name}` first.")
        if not deployment.healthy:
            raise ScoringError(
                f"{target_name} (version {deployment.model_version}) is not healthy: "
                f"{deployment.detail}.",
                f"Redeploy with `python -m ml_service deploy --target {target_name}` or see "
                "the server's log.")
        return cls.for_deployment(settings, deployment, **options)

    @classmethod
    def for_deployment(cls, settings, deployment, **options):
        """The client of `deployment` (what a target's status() reported)."""
        return cls(deployment.scoring_uri, scoring_key(deployment.target, os.environ),
                   **{"max_batch_size": settings.serving.max_batch_size, **options})

    def without_key(self):
        """The same client sending no key (to check that the endpoint wants one)."""
        return dataclasses.replace(self, key=None)

    @property
    def headers(self):
        """The headers of every scoring request."""
        return {"Content-Type": "application/json", **key_headers(self.key),
                **({SMOKE_TEST_HEADER: "1"} if self.smoke_test else {})}

    def predict(self, data):
        """The predictions for `data` in input order: a pandas Series (the frame's index,
        named "prediction") for a DataFrame, else a list."""
        return self.score(data).predictions

    def score(self, data):
        """Scores (predictions and the model versions that answered) for `data`."""
        rows = _rows(data)
        predictions, versions = [], {}
        for start in range(0, len(rows), self.max_batch_size):
            answer = self.score_batch(rows[start:start + self.max_batch_size], first_row=start)
            predictions.extend(answer["predictions"])
            versions[answer.get("model_version")] = None
        if _is_frame(data):
            import pandas as pd

            predictions = pd.Series(predictions, index=data.index, name=PREDICTION_COLUMN,
                                    dtype=None if predictions else float)
        return Scores(predictions, tuple(versions))

    def encode(self, rows, first_row=0):
        """The request body for `rows` (strict JSON: NaN and infinity are refused here,
        as the server would refuse them)."""
        try:
            return json.dumps({"data": rows}, allow_nan=False, default=_plain).encode()
        except ValueError:
            row, column = _first_non_finite(rows)
            raise ScoringError(
                f"Row {first_row + row}, column {column!r} is NaN or infinite: the model "
                "scores finite numbers only.",
                "Fill or drop the missing values (e.g. frame.dropna()) before scoring.") from None

    def score_batch(self, rows, first_row=0):
        """Send `rows` as one request; return the server's answer ({"predictions": [...],
        "model_version": ...}). `first_row`: their position in the caller's input, for
        error messages."""
        request = urllib.request.Request(self.scoring_uri, data=self.encode(rows, first_row),
                                         method="POST", headers=self.headers)
        where = (f"rows {first_row}-{first_row + len(rows) - 1}" if len(rows) > 1
                 else f"row {first_row}")
        for attempt in range(self.retries + 1):
            delay = self.backoff * 2 ** attempt
            try:
                with http_client.urlopen(request, timeout=self.timeout) as response:
                    return self._checked(response.read(), rows)
            except urllib.error.HTTPError as error:
                try:
                    message = _server_message(error)
                finally:
                    error.close()
                if error.code not in RETRY_STATUSES:
                    raise self._refusal(error.code, message, where, first_row) from None
                problem, status = f"answered {error.code} ({message})", error.code
                delay = _retry_after(error.headers, delay)
            except urllib.error.URLError as error:
                if not isinstance(error.reason, ConnectionResetError):
                    raise self._unreachable(error.reason) from None
                problem, status = f"reset the connection ({error.reason})", None
            except ConnectionResetError as error:  # also a server closing without answer
                problem, status = f"reset the connection ({error})", None
            except (OSError, http.client.HTTPException) as error:  # e.g. a read timeout
                raise self._unreachable(error) from None
            if attempt == self.retries:
                break
            if delay > MAX_RETRY_AFTER:
                raise ScoringError(
                    f"{self.scoring_uri} {problem} for {where} and asks to wait {delay:.0f} s "
                    "before asking again.",
                    "Try again later, or send fewer requests at once.", status)
            logger.warning("%s %s; retrying in %.1f s (retry %d of %d)", self.scoring_uri,
                           problem, delay, attempt + 1, self.retries)
            time.sleep(delay)
        raise ScoringError(
            f"{self.scoring_uri} {problem} for {where}, also after {self.retries} "
            f"retr{'y' if self.retries == 1 else 'ies'}.",
            "The endpoint is overloaded or restarting: try again later, send smaller "
            "batches, or check the deployment (`python -m ml_service smoke-test`).", status)

    def _checked(self, body, rows):
        try:
            answer = json.loads(body)
            predictions = answer["predictions"]
        except (ValueError, TypeError, KeyError):
            answer = predictions = None
        if not isinstance(predictions, list) or len(predictions) != len(rows):
            got = (f"{len(predictions)} predictions" if isinstance(predictions, list)
                   else "no list of predictions")
            raise ScoringError(
                f"{self.scoring_uri} answered {len(rows)} rows with {got}: it is not a "
                "scoring endpoint of this project.",
                "Check the scoring URI: it is the target's, ending in /score.", 200)
        return answer

    def _refusal(self, status, message, where, first_row):
        fixes = {
            401: "Send the endpoint's key: ScoringClient(..., key=...), or for a target "
                 "its variable STAGING_SCORING_KEY or PRODUCTION_SCORING_KEY.",
            404: "Check the scoring URI: it is the target's, ending in /score.",
            413: f"Send fewer rows per request: max_batch_size (now {self.max_batch_size}) "
                 "at most the server's SCORING_MAX_BATCH_SIZE ([serving] max_batch_size).",
        }
        fix = fixes.get(status) or (
            "The server's log has the details (`python -m ml_service smoke-test` checks the "
            "deployment)." if status >= 500 else
            "Fix the input as the server says" + (
                f"; it counts rows from 0 within the request, which starts at row "
                f"{first_row} of the input." if first_row else "."))
        return ScoringError(f"{self.scoring_uri} refused {where} with {status}: {message}",
                            fix, status)

    def _unreachable(self, reason):
        return ScoringError(
            f"No answer from {self.scoring_uri} ({reason}).",
            "Check that the target is deployed and reachable from here (`python -m "
            "ml_service deploy`), or raise the client's timeout for large batches.")


def _is_frame(data):
    return hasattr(data, "columns") and hasattr(data, "to_dict")


def _rows(data):
    """`data` as a list of rows: dicts for named columns, lists in signature order."""
    if _is_frame(data):
        return data.to_dict(orient="records")
    if hasattr(data, "tolist"):  # a NumPy array
        data = data.tolist()
    if isinstance(data, (str, bytes, dict)):
        raise ScoringError(f"Cannot score a {type(data).__name__}: rows are expected.",
                           "Pass a DataFrame, a list of dicts or a list of row lists.")
    return [row if isinstance(row, dict) else list(row) for row in data]


def _plain(value):
    """JSON for the NumPy scalars and arrays that rows built by hand may hold."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not a number")


def _first_non_finite(rows):
    for index, row in enumerate(rows):
        values = row.items() if isinstance(row, dict) else enumerate(row)
        for column, value in values:
            if isinstance(value, (str, bytes)):
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if number - number != 0:  # NaN or infinity
                return index, column
    return 0, "?"


def _server_message(error):
    """The explanation in an error answer: score.py's {"error": ...}, the server's own
    {"message": ...}, or the start of the text."""
    text = error.read(4096).decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error", body.get("message")), str):
        return body.get("error", body.get("message"))
    return text.strip()[:200] or error.reason


def _retry_after(headers, default):
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), else `default`."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    return max(seconds, 0.0) if seconds == seconds else default
