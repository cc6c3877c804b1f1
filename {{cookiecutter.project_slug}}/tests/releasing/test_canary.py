"""Canary promotion on a local target, with real servers, a real traffic split and real
traffic: a probe sends production a steady stream of requests while promote runs.

`canary_project` holds versions 1 (in production in each test), 2 (a good successor),
3 (trained on a shifted target: its predictions diverge) and 4 (its scoring code fails
on every row whose first feature is below -0.03, about a third of the sample's rows but
none of the smoke test's: errors on part of the traffic). Each test
works on its own copy, with its own ports.
"""
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from ml_service import desired_state
from ml_service.backends.local import LocalBackend
from ml_service.config import load_settings
from ml_service.errors import MlopsError
from ml_service.releasing.canary import CANARY_TAG
from ml_service.releasing.deployment import deploy
from ml_service.releasing.dry_run import promote_plan
from ml_service.releasing.image import build_image
from ml_service.releasing.promotion import promote
from ml_service.releasing.smoke import smoke_test
from ml_service.targets import get_target
from tests.conftest import cli_env
from tests.helpers.project import (copy_checkout, copy_project, free_port, git, kept_unchanged,
                                   kill_local_servers)
from tests.helpers.canary import BROKEN_ON_PART_OF_THE_TRAFFIC, CANARY, Probe
from training.data import SAMPLE_TARGET, sample_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def canary_project(tmp_path_factory, migrated_database):
    root = copy_project(tmp_path_factory.mktemp("canary") / "project", migrated_database)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")
    shifted = root.parent / "shifted.csv"
    table = sample_table()
    table.assign(**{SAMPLE_TARGET: table[SAMPLE_TARGET] + 300}).to_csv(shifted, index=False)
    score = root / "scoring" / "score.py"
    healthy = score.read_text()
    for environ, scoring_code in (({"MLOPS_TRAINING_ALPHA": "1.0"}, healthy),
                                  ({"MLOPS_TRAINING_ALPHA": "0.1"}, healthy),
                                  ({"MLOPS_DATA_SOURCE": str(shifted)}, healthy),
                                  ({"MLOPS_TRAINING_ALPHA": "0.1"},
                                   healthy + BROKEN_ON_PART_OF_THE_TRAFFIC)):
        score.write_text(scoring_code)
        settings = load_settings(root / "mlops.toml", environ=environ)
        build_image(settings, LocalBackend(settings).train_gate_register())
    score.write_text(healthy)
    with kept_unchanged(root):
        yield root


@pytest.fixture
def production(canary_project, tmp_path):
    """This test's copy, version 1 in production (deployed there directly: one server
    fewer than a promotion through staging), and its settings with the canary strategy."""
    root = copy_checkout(canary_project, tmp_path / "project")
    ports = {"MLOPS_STAGING_PORT": str(free_port()), "MLOPS_PRODUCTION_PORT": str(free_port()),
             "MLOPS_SERVING_WORKERS": "1"}
    direct = load_settings(root / "mlops.toml", environ=ports)
    deploy(direct, "production", "1")
    settings = load_settings(root / "mlops.toml", environ={**ports, **CANARY})
    yield root, settings
    kill_local_servers(settings)


def staged(settings, version):
    deploy(settings, "staging", version)
    smoke_test(settings, "staging")


def test_a_good_release_goes_through_every_step_and_serves_all_traffic(production):
    root, settings = production
    staged(settings, "2")
    # First what would happen (in this test: it needs production and staging running).
    plan = promote_plan(settings)
    assert "canary: version 2 takes 10 %, then 50 %, then 100 % of production's traffic " \
           "beside version 1" in plan
    assert "error rate above 0.01" in plan
    assert "then           runs the canary (its steps below), then production serves it " \
           "alone and is smoke-tested; if a step or the smoke test fails, rolls back to 1" in plan

    with Probe(settings) as probe:
        promote(settings, approved=True)

    assert probe.failures == []
    assert set(probe.answers) == {("200", "1"), ("200", "2")}
    assert get_target("production", settings).status().model_version == "2"
    assert desired_state.read(settings, "production").model_version == "2"
    tags = MlflowClient(settings.tracking.uri).get_model_version(settings.model.name, "2").tags
    assert tags[CANARY_TAG] == "passed: 10 %, 50 %, 100 %"
    report = (root / ".mlops" / "production-canary.md").read_text()
    assert "**Promoted**" in report and report.count("| passed |") == 3
    assert get_target("production", settings).split_processes() == []


def test_a_bad_release_is_rolled_back_at_the_first_step(production):
    """Version 3's predictions diverge, version 4 fails on part of the traffic: each is
    rolled back at the first step, one after the other on the same production."""
    root, settings = production
    for version, failed_check in (("3", "predictions diverge: KS statistic"),
                                  ("4", "error rate")):
        staged(settings, version)
        promoted = git(root, "rev-parse", "HEAD")
        with Probe(settings) as probe:
            with pytest.raises(MlopsError, match=f"canary of version {version} failed: "
                                                 f"{failed_check}.* at the 10 % step"):
                promote(settings, approved=True)
        served = probe.served()
        print(f"version {version}: answers {dict(probe.answers)}")
        assert probe.failures == []
        assert get_target("production", settings).status().model_version == "1"
        assert get_target("production", settings).split_processes() == []
        assert desired_state.read(settings, "production").model_version == "1"
        # Two commits: the promotion, then the revert naming the check and its value.
        log = git(root, "log", "--format=%s", f"{promoted}..HEAD").splitlines()
        assert log[0].startswith(f"Revert the canary of version {version}: {failed_check}")
        assert log[1].startswith(f"Promote {settings.model.name} version {version} to "
                                 "production")
        # About the first step's share of the traffic reached the new version (10 %).
        canary_share = (served[version] + served["error"]) / sum(served.values())
        assert 0 < canary_share < 0.2, served
        tags = MlflowClient(settings.tracking.uri).get_model_version(settings.model.name,
                                                                     version).tags
        assert tags[CANARY_TAG].startswith(f"failed: {failed_check}")


def test_an_interrupted_canary_ends_on_the_current_release(production):
    """SIGTERM (a cancelled CI job; the CLI unwinds it as Ctrl-C) to promote during the
    canary's first step: the current release serves alone again, git names it, the split
    is gone and the version says why. Not SIGINT: an xdist worker ignores it, and its
    children inherit that."""
    root, settings = production
    staged(settings, "2")
    environ = {"MLOPS_STAGING_PORT": str(settings.staging.port),
               "MLOPS_PRODUCTION_PORT": str(settings.production.port),
               "MLOPS_SERVING_WORKERS": "1",
               **CANARY, "MLOPS_PRODUCTION_CANARY_STEP_SECONDS": "60"}
    production_target = get_target("production", settings)
    with Probe(settings) as probe:
        promoting = subprocess.Popen(
            [sys.executable, "-m", "ml_service", "promote", "--approve"], cwd=root,
            env=cli_env(**environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        try:
            deadline = time.monotonic() + 120
            # In the first step: the canary has answered.
            while ("200", "2") not in probe.answers and time.monotonic() < deadline:
                time.sleep(0.1)
            promoting.send_signal(signal.SIGTERM)
            output, _ = promoting.communicate(timeout=120)
        finally:
            promoting.kill()
    assert promoting.returncode == 130, output
    assert probe.failures == []
    assert production_target.split_processes() == []
    assert production_target.status().model_version == "1"
    assert desired_state.read(settings, "production").model_version == "1"
    assert git(root, "status", "--porcelain", "deploy") == ""
    tags = MlflowClient(settings.tracking.uri).get_model_version(settings.model.name, "2").tags
    assert tags[CANARY_TAG] == "stopped: the promotion was interrupted"
