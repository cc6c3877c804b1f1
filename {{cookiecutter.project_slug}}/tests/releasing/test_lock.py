"""One release operation per environment at a time: a second one is refused with who
holds the lock; a lock whose holder was killed is taken over with a note."""
import signal
import subprocess
import sys

import pytest

from ml_service.errors import MlopsError
from ml_service.releasing.deployment import deploy
from ml_service.releasing.lock import environment_lock
from ml_service.releasing.promotion import promote, rollback
from ml_service.targets import stop
from tests.conftest import cli_env

HOLD = """
import sys, time
from ml_service.config import load_settings
from ml_service.releasing.lock import environment_lock
settings = load_settings(sys.argv[1] + "/mlops.toml", environ={})
with environment_lock(settings, sys.argv[2], "promote"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(project):
    """Start a process holding an environment's lock; it is killed after the test."""
    processes = []

    def hold(environment):
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(project), environment],
                                   env=cli_env(), stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process
    yield hold
    for process in processes:
        process.kill()
        process.wait()


@pytest.mark.parametrize("operation", [
    lambda settings: promote(settings, approved=True),
    lambda settings: rollback(settings),
    lambda settings: deploy(settings, "production", "1"),
    lambda settings: stop(settings, "production"),
    lambda settings: stop(settings),
], ids=["promote", "rollback", "deploy", "stop", "stop-all"])
def test_second_operation_on_an_environment_is_refused(settings, holder, operation):
    process = holder("production")
    with pytest.raises(MlopsError, match=rf"A promote of production is in progress by PID "
                                         rf"{process.pid} \(`.*-c"):
        operation(settings)


def test_other_environment_is_not_blocked(settings, holder):
    holder("production")
    with environment_lock(settings, "staging", "deploy"):
        pass


def test_lock_of_a_killed_holder_is_taken_over_with_a_note(settings, holder, capsys):
    process = holder("production")
    process.send_signal(signal.SIGKILL)
    process.wait()
    with environment_lock(settings, "production", "deploy"):
        pass
    assert (f"took over the lock of production ({settings.project_root}/.mlops/"
            f"production.lock) left by PID {process.pid}") in capsys.readouterr().out


def test_released_lock_leaves_no_note(settings, capsys):
    for _ in range(2):
        with environment_lock(settings, "production", "deploy"):
            pass
    assert "took over" not in capsys.readouterr().out
