"""The local target's scoring key, with real servers on loopback.

The server gets the target's own key (STAGING_SCORING_KEY) and nothing else: a
SCORING_KEY or SCORING_KEY_FILE in the caller's shell must not reach it, since it
would lock the endpoint with a key nobody sends, or stop it from starting.
"""
import json
import shutil
import urllib.error
import urllib.request

import pytest

from ml_service.config import load_settings
from ml_service.errors import MlopsError
from ml_service.release import Release
from ml_service.releasing.image import SCORING_FILES
from ml_service.targets.local import LocalTarget
from tests.helpers.project import free_port, kept_unchanged
from tests.helpers.scoring import ROW, SCORING_DIR, save_model

pytestmark = pytest.mark.slow

KEY = "staging-key-for-local-tests"
SHELL_KEY = "a-key-left-in-the-callers-shell"


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """A build context as build-image assembles it: the scoring files and model/."""
    folder = tmp_path_factory.mktemp("local-target") / "context"
    folder.mkdir()
    for name in SCORING_FILES:
        shutil.copy2(SCORING_DIR / name, folder / name)
    save_model(folder / "model")
    with kept_unchanged(folder):
        yield folder


@pytest.fixture
def staging(project):
    """A local staging target factory on a free port; its server stops after the test."""
    settings = load_settings(project / "mlops.toml", environ={
        "MLOPS_STAGING_PORT": str(free_port()), "MLOPS_SERVING_WORKERS": "1"})
    made = []

    def make(environ):
        made.append(LocalTarget("staging", settings, environ=environ))
        return made[-1]

    yield make
    for target in made:
        target.stop()


def status_of(target, headers):
    request = urllib.request.Request(
        target.scoring_uri, data=json.dumps({"data": [ROW]}).encode(), method="POST",
        headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_targets_key_is_enforced_and_the_shells_is_not_passed(
        staging, context, monkeypatch):
    monkeypatch.setenv("SCORING_KEY", SHELL_KEY)
    target = staging({"STAGING_SCORING_KEY": KEY})
    assert target.deploy(Release("model", "4", "image", "", "", context)).healthy
    assert target.request_headers() == {"Authorization": f"Bearer {KEY}"}
    assert status_of(target, {}) == 401
    assert status_of(target, {"Authorization": f"Bearer {SHELL_KEY}"}) == 401
    assert status_of(target, target.request_headers()) == 200


def test_without_a_target_key_it_runs_open_whatever_the_shell_holds(
        staging, context, monkeypatch, tmp_path):
    # Both set would stop the server at start-up, if they reached it.
    monkeypatch.setenv("SCORING_KEY", SHELL_KEY)
    monkeypatch.setenv("SCORING_KEY_FILE", str(tmp_path / "absent"))
    target = staging({})
    assert target.deploy(Release("model", "4", "image", "", "", context)).healthy
    assert target.request_headers() == {}
    assert status_of(target, {}) == 200


def test_plan_masks_the_key(staging, context):
    text = staging({"STAGING_SCORING_KEY": KEY}).plan(
        Release("model", "4", "image", "", "", context))
    assert "SCORING_KEY=***" in text and KEY not in text


def test_an_unusable_key_is_refused_before_anything_starts(staging, context):
    target = staging({"STAGING_SCORING_KEY": "short"})
    with pytest.raises(MlopsError, match="STAGING_SCORING_KEY is unusable") as raised:
        target.deploy(Release("model", "4", "image", "", "", context))
    assert "openssl rand -hex 32" in raised.value.fix
    assert target.status() is None
