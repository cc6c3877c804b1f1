"""ml_service.client against a real HTTP server on loopback that answers as scoring/score.py
does, or as a script of answers says (429, 503 with Retry-After, 422, a dropped
connection): batching, named columns, retries and errors over real sockets."""
import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from ml_service.client import ScoringClient, ScoringError
from ml_service.errors import MlopsError
from ml_service.monitoring.prediction_log import SMOKE_TEST_HEADER
from tests.conftest import cli_env
from tests.helpers.http_stub import JsonHandler, serving
from tests.helpers.project import PROJECT_ROOT

KEY = "client-test-key-0123456789"


class ScriptedScoring(JsonHandler):
    """Answers each POST with the next scripted (status, headers, body) of its server, or,
    once the script is used up, as score.py would: one prediction per row, here the sum
    of the row's values (so the order of the answers shows)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"rows": body["data"], "headers": dict(self.headers)})
        if self.server.script:
            answer = self.server.script.pop(0)
            if answer == "drop":  # close the connection without an answer
                self.close_connection = True
                return
            status, headers, reply = answer
        else:
            rows = body["data"]
            status, headers = 200, {}
            reply = {"predictions": [sum(row.values() if isinstance(row, dict) else row)
                                     for row in rows], "model_version": "7"}
        self.send_json(status, reply, headers)


@pytest.fixture(scope="module")
def server():
    with serving(ScriptedScoring, requests=[], script=[]) as scoring:
        yield scoring


@pytest.fixture
def scoring(server):
    """(the server with a fresh script and request log, a client of it)."""
    server.requests.clear()
    server.script.clear()
    uri = f"http://127.0.0.1:{server.server_port}/score"
    return server, ScoringClient(uri, max_batch_size=1000, retries=2, backoff=0.01)


def test_large_input_goes_in_batches_of_max_batch_size_and_comes_back_in_order(scoring):
    server, client = scoring
    rows = [[float(index), 1.0] for index in range(2500)]
    assert client.predict(rows) == [index + 1.0 for index in range(2500)]
    assert [len(request["rows"]) for request in server.requests] == [1000, 1000, 500]
    assert server.requests[1]["rows"][0] == [1000.0, 1.0]


def test_a_dataframe_goes_as_named_columns_and_comes_back_as_a_series(scoring):
    server, client = scoring
    frame = pd.DataFrame({"age": [1.0, 2.0, 3.0], "bmi": [10, 20, 30]}, index=[5, 6, 9])
    predictions = client.predict(frame)
    assert server.requests[0]["rows"] == [{"age": 1.0, "bmi": 10}, {"age": 2.0, "bmi": 20},
                                          {"age": 3.0, "bmi": 30}]
    pd.testing.assert_series_equal(
        predictions, pd.Series([11.0, 22.0, 33.0], index=[5, 6, 9], name="prediction"))


def test_a_refusal_is_a_clear_error_with_the_servers_message_and_no_retry(scoring):
    server, client = scoring
    message = "Row 1, column 'bmi': null is not a number; send every feature as a JSON number"
    server.script.append((422, {}, {"error": message}))
    keyed = ScoringClient(client.scoring_uri, KEY, max_batch_size=2, retries=2, backoff=0.01)
    with pytest.raises(ScoringError) as refused:
        keyed.predict([[1.0], [2.0], [3.0], [4.0]])
    assert refused.value.status == 422
    assert message in refused.value.what and "rows 0-1" in refused.value.what
    assert len(server.requests) == 1
    assert isinstance(refused.value, MlopsError)
    assert KEY not in str(refused.value) and KEY not in repr(keyed)


def test_row_numbers_of_a_refusal_are_placed_in_the_input(scoring):
    server, client = scoring
    batches = ScoringClient(client.scoring_uri, max_batch_size=2, retries=0)
    server.script.append((200, {}, {"predictions": [1.0, 2.0], "model_version": "7"}))
    server.script.append((422, {}, {"error": "Row 0, column 'age': true is not a number"}))
    with pytest.raises(ScoringError) as refused:
        batches.predict([[1.0], [2.0], [True], [4.0]])
    assert "refused rows 2-3 with 422: Row 0, column 'age'" in refused.value.what
    assert "starts at row 2 of the input" in refused.value.fix


def test_429_and_a_dropped_connection_are_retried_then_answered(scoring):
    server, client = scoring
    server.script.extend([(429, {}, {"error": "busy"}), "drop"])
    assert client.predict([[1.0, 2.0]]) == [3.0]
    assert len(server.requests) == 3


def test_503_waits_as_long_as_retry_after_says(scoring):
    server, client = scoring
    server.script.append((503, {"Retry-After": "1"}, {"error": "restarting"}))
    started = time.monotonic()
    assert client.predict([[1.0]]) == [1.0]
    assert 1.0 <= time.monotonic() - started < 5
    assert len(server.requests) == 2


def test_retry_after_as_an_http_date_is_honoured(scoring):
    server, client = scoring
    server.script.append((503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, {}))
    assert client.predict([[2.0]]) == [2.0]  # a date already past: asked again at once
    assert len(server.requests) == 2


def test_a_server_error_is_not_retried_and_points_to_the_log(scoring):
    server, client = scoring
    server.script.append((500, {}, {"message": "Internal Server Error"}))
    with pytest.raises(ScoringError) as failed:
        client.predict([[1.0]])
    assert failed.value.status == 500 and "Internal Server Error" in failed.value.what
    assert "server's log" in failed.value.fix
    assert len(server.requests) == 1


def test_still_unavailable_after_the_retries_is_an_error_saying_so(scoring):
    server, client = scoring
    server.script.extend([(503, {}, {"error": "restarting"})] * 3)
    with pytest.raises(ScoringError) as failed:
        client.predict([[1.0]])
    assert failed.value.status == 503
    assert "answered 503 (restarting) for row 0, also after 2 retries" in failed.value.what
    assert len(server.requests) == 3


def test_a_retry_after_beyond_the_limit_is_an_error_not_a_long_wait(scoring):
    server, client = scoring
    server.script.append((429, {"Retry-After": "3600"}, {"error": "quota"}))
    started = time.monotonic()
    with pytest.raises(ScoringError, match="asks to wait 3600 s"):
        client.predict([[1.0]])
    assert time.monotonic() - started < 1


def test_the_key_is_sent_as_a_bearer_token_and_only_when_given(scoring):
    server, client = scoring
    ScoringClient(client.scoring_uri, KEY).predict([[1.0]])
    client.predict([[1.0]])
    with_key, without = (request["headers"] for request in server.requests)
    assert with_key["Authorization"] == f"Bearer {KEY}"
    assert "Authorization" not in without
    assert with_key["Content-Type"] == "application/json"


def test_a_smoke_test_client_marks_its_requests_and_others_do_not(scoring):
    server, client = scoring
    ScoringClient(client.scoring_uri, smoke_test=True).without_key().predict([[1.0]])
    client.predict([[1.0]])
    # Header names are case-insensitive (urllib sends X-mlops-smoke-test).
    smoke, traffic = ({name.lower(): value for name, value in request["headers"].items()}
                      for request in server.requests)
    assert smoke[SMOKE_TEST_HEADER.lower()] == "1"
    assert SMOKE_TEST_HEADER.lower() not in traffic


def test_missing_values_are_refused_before_anything_is_sent(scoring):
    server, client = scoring
    frame = pd.DataFrame({"age": [1.0, 2.0], "bmi": [3.0, float("nan")]})
    with pytest.raises(ScoringError, match=r"Row 1, column 'bmi' is NaN or infinite"):
        client.predict(frame)
    assert server.requests == []


def test_an_answer_without_one_prediction_per_row_is_an_error(scoring):
    server, client = scoring
    server.script.append((200, {}, {"predictions": [1.0]}))
    with pytest.raises(ScoringError, match="answered 2 rows with 1 predictions"):
        client.predict([[1.0], [2.0]])


def test_nothing_listening_is_an_error_without_retries():
    started = time.monotonic()
    with pytest.raises(ScoringError, match="No answer from http://127.0.0.1:9/score"):
        ScoringClient("http://127.0.0.1:9/score", retries=3, backoff=5).predict([[1.0]])
    assert time.monotonic() - started < 2


def test_only_http_urls_are_opened():
    with pytest.raises(MlopsError, match="over http or https only"):
        ScoringClient("file:///etc/passwd").predict([[1.0]])


def test_importing_the_client_loads_neither_pandas_nor_numpy():
    code = ("import sys, ml_service.client; "
            "print(sorted({'pandas', 'numpy', 'mlflow'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, text=True,
                            capture_output=True, env=cli_env(), timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
