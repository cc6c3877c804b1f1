"""What many tests need: the project's root folder, a fresh copy of it, a test's own copy
of a shared one, a guard on shared folders, a free port, a git command, a push to a new remote
and a quick end to the local servers a test started."""
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from ml_service import desired_state
from ml_service.data_assets import sample_request_path
from ml_service.config import EDGE_TARGET, TARGET_NAMES, load_settings
from ml_service.targets.local import LocalTarget
# The tests choose their servers' ports as the targets choose theirs.
from ml_service.targets.loopback import free_port  # noqa: F401
from training.data import SAMPLE, SAMPLE_FEATURES, SAMPLE_TARGET, sample_table

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What running the project leaves behind (stores, servers' state, build contexts,
# caches): never copied into a test's project, so tests judge the code, not a used tree.
WORKING_STATE = ("mlruns", ".mlops", "build", ".venv", ".git", "__pycache__",
                 ".pytest_cache", "*.egg-info")
# The [data] section of every test's project copy: the bundled sample.
SAMPLE_DATA_SECTION = (f'[data]\nsource = "{SAMPLE}"\ntarget = "{SAMPLE_TARGET}"\n'
                       f'features = {json.dumps(list(SAMPLE_FEATURES))}\n\n')


def copy_project(destination, database, image_build="context-only"):
    """Copy this project's files into `destination` as a fresh checkout would have them:
    without working state, with an empty MLflow store (`database` copied) and with no
    model version in any environment's desired state (a promotion here, e.g. by
    `make demo`, must not change what tests see). The copy trains on the bundled sample
    and sends its rows (pin_sample_data): the tests pass whatever data the project
    itself is set to.

    `image_build` is written as [image] build: "context-only" by default, so a test
    that is not about the image never starts a docker build, even where an engine runs;
    the container tests pass "auto"."""
    shutil.copytree(PROJECT_ROOT, destination, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(*WORKING_STATE))
    config = destination / "mlops.toml"
    text, count = re.subn(r'(?m)^build = "auto"$', f'build = "{image_build}"',
                          config.read_text())
    assert count == 1, "mlops.toml must set [image] build = \"auto\" (the template's default)"
    config.write_text(text)
    pin_sample_data(destination)
    (destination / "mlruns").mkdir()
    shutil.copy(database, destination / "mlruns" / "mlflow.db")
    settings = load_settings(destination / "mlops.toml", environ={})
    for target in TARGET_NAMES:
        desired_state.clear(settings, target)
    # The edge device's desired state is its manifest: none before a deployment.
    desired_state.overlay_file(settings, EDGE_TARGET).unlink(missing_ok=True)
    return destination


def copy_checkout(source, destination):
    """A test's own copy of `source`, a project folder a module or session fixture
    prepared (git repository, MLflow store, build contexts): what the test records lands
    in the copy, never in the folder the module's other tests copy too.

    The store names its artifact folder by absolute path (experiments, runs, model
    versions): rewritten to the copy's, so the test's runs and models are stored there."""
    shutil.copytree(source, destination, symlinks=True)
    database = destination / "mlruns" / "mlflow.db"
    if database.exists():
        with contextlib.closing(sqlite3.connect(database)) as store, store:
            tables = [row[0] for row in store.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for column in store.execute(f'PRAGMA table_info("{table}")').fetchall():
                    name, kind = column[1], column[2].upper()
                    if "CHAR" in kind or "TEXT" in kind:
                        store.execute(f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?)',
                                      (str(source), str(destination)))
    return destination


def _files(folder):
    """{relative path: (size, modification time)} of the files under `folder`, bytecode
    caches aside (a server importing score.py writes them; no test reads them)."""
    return {path.relative_to(folder).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in folder.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts}


@contextlib.contextmanager
def kept_unchanged(folder):
    """Hand out `folder`, shared by the tests of a module or session fixture, and fail
    at its end if a test wrote to it: then a test's result would depend on the tests that
    ran before it (the order is random). Tests write to their own copy (copy_checkout)."""
    before = _files(folder)
    yield folder
    after = _files(folder)
    changed = sorted(path for path in before.keys() | after.keys()
                     if before.get(path) != after.get(path))
    assert not changed, (f"tests wrote to the shared folder {folder}, so they depend on "
                         f"each other's order: {changed[:10]}")


def pin_sample_data(project):
    """Set the [data] of `project`'s mlops.toml to the bundled sample and its columns, and
    write scoring/sample-request.json from the sample's first rows (its path is returned):
    what the tests assert (columns, row counts, predictions) is about that data, not the
    project's own."""
    config = project / "mlops.toml"
    text, count = re.subn(r"(?ms)^\[data\]\n.*?(?=^\[)", lambda _: SAMPLE_DATA_SECTION,
                          config.read_text())
    assert count == 1, "mlops.toml must have a [data] section followed by another section"
    config.write_text(text)
    request = sample_request_path(project)
    request.parent.mkdir(exist_ok=True)
    rows = sample_table()[list(SAMPLE_FEATURES)].head(2).round(6).values.tolist()
    request.write_text(json.dumps({"data": rows}) + "\n")
    return request


def git(folder, *args):
    """Run git in `folder`; return its output (a failing command fails the test)."""
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True,
                          text=True).stdout.strip()


def push_to_new_remote(project, remote):
    """Make `project` a git checkout whose first commit on main is pushed to `remote`, a
    new bare repository that becomes its upstream (origin/main); return `remote`."""
    git(remote.parent, "init", "--quiet", "--bare", "--initial-branch", "main", str(remote))
    git(project, "init", "--quiet", "--initial-branch", "main")
    git(project, "config", "user.name", "t")
    git(project, "config", "user.email", "t@example.com")
    git(project, "add", "-A")
    git(project, "commit", "--quiet", "-m", "init")
    git(project, "remote", "add", "origin", str(remote))
    git(project, "push", "--quiet", "-u", "origin", "main")
    return remote


def kill_local_servers(settings, timeout=30):
    """Kill the servers of `settings`' local targets at once (SIGKILL to each process
    group) and wait until they are gone: a test's cleanup, seconds faster than
    `ml_service.targets.stop`, which stops them gracefully one after the other (that stop
    is tested in tests/targets/test_local.py)."""
    servers = [server for name in TARGET_NAMES
               if settings.target_settings(name).kind == "local"
               for target in [LocalTarget(name, settings)]
               # and a canary's traffic split, if a test stopped during one
               for server in [*target.servers(), *target.split_processes()]]
    for server in servers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for server in servers:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(server.pid, 0)  # a server deploy() started in this process
        while server.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)  # a server a CLI subprocess started: init reaps it
