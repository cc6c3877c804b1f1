"""The scoring image on a real Docker engine and a real registry: build-image builds it
from the unmodified Dockerfile and pushes it, and the container targets run it by digest.

Three images are built once per run, by the first of pytest-xdist's workers to need them
(versions 1 and 2 of the model, and 3: version 2 with scoring code that fails on part of
the traffic; the later builds reuse the dependency layers) and pushed to the registry of
scripts/container-engine.sh on 127.0.0.1:5050. Every test then works on its own copy of
that project, on its own ports, and removes its containers at the end. Without an
engine, a registry or the base image, the tests skip and say which is missing (`make
engine` provides all three where the machine allows it).
"""
import fcntl
import json
import os
import shutil
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest

from ml_service import tracking
from ml_service.backends.local import LocalBackend
from ml_service.config import load_settings
from ml_service.errors import MlopsError
from ml_service.monitoring import records
from ml_service.monitoring.prediction_log import log_folder
from ml_service.release import Release
from ml_service import desired_state
from ml_service.releasing import registry
from ml_service.releasing.canary import CANARY_TAG
from ml_service.releasing.deployment import deploy
from ml_service.releasing.dry_run import promote_plan
from ml_service.releasing.image import base_image, build_blocker, build_image
from ml_service.releasing.promotion import promote, rollback
from ml_service.releasing.smoke import smoke_test
from ml_service.stages.pipeline import container_settings as pipeline_container_settings
from ml_service.targets import get_target, stop
from ml_service.targets.container import (LABEL_PROJECT, LABEL_TARGET, LABEL_VERSION,
                                          LOCAL_REGISTRY, ContainerTarget, docker,
                                          engine_blocker, registry_blocker)
from tests.helpers.canary import BROKEN_ON_PART_OF_THE_TRAFFIC, CANARY, Probe
from tests.helpers.project import (PROJECT_ROOT, copy_checkout, copy_project, free_port, git,
                                   kept_unchanged)
from tests.helpers.scoring import BAD_REQUESTS

CONTAINERS = {"MLOPS_IMAGE_REGISTRY": LOCAL_REGISTRY, "MLOPS_STAGING_KIND": "container",
              "MLOPS_PRODUCTION_KIND": "container"}
# The layers scoring/Dockerfile adds to its base (the dependencies, score.py, the model)
# measured 380 MB: a bound a little above, so a heavier dependency set is noticed.
ADDED_LAYERS_MAX_MB = 420


def real_containers(test):
    """Builds, pushes and runs real images: slow, and selectable alone (-m container)."""
    return pytest.mark.slow(pytest.mark.container(test))


def blocker(settings):
    return (engine_blocker() or registry_blocker(LOCAL_REGISTRY)
            or build_blocker(settings, PROJECT_ROOT / "scoring" / "Dockerfile"))


@pytest.fixture(scope="session")
def pushed(tmp_path_factory, migrated_database):
    """A git checkout with versions 1 (alpha 1.0), 2 (alpha 0.1) and 3 (alpha 0.1, scoring
    broken on part of the traffic) registered, their images built and pushed to the local
    registry. Nothing runs. Tests copy it.

    Built once per run: `--dist worksteal` can give this module's tests to two workers,
    and each built all three (about 9 s of a worker, twice in one measured run). The
    first worker builds it in the run's temporary folder, under a lock; the others wait
    for it and share it, read-only as within one worker."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    with open(shared / "containers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        root = shared / "containers" / "project"
        if not (shared / "containers" / "built").exists():
            shutil.rmtree(shared / "containers", ignore_errors=True)  # a build that failed
            build_pushed(root, migrated_database)
            (shared / "containers" / "built").touch()
    with kept_unchanged(root):
        yield root


def build_pushed(root, migrated_database):
    """Make `pushed` at `root` (or skip, saying what is missing)."""
    copy_project(root, migrated_database, image_build="auto")
    reason = blocker(load_settings(root / "mlops.toml", environ=CONTAINERS))
    if reason:
        pytest.skip(f"no container tests: {reason}. `make engine` provides what it can (a "
                    "stand-in base image where the official one cannot be pulled: Python "
                    "3.11 only)")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")
    score = root / "scoring" / "score.py"
    healthy = score.read_text()
    for alpha, scoring_code in (("1.0", healthy), ("0.1", healthy),
                                ("0.1", healthy + BROKEN_ON_PART_OF_THE_TRAFFIC)):
        score.write_text(scoring_code)
        settings = load_settings(root / "mlops.toml",
                                 environ={**CONTAINERS, "MLOPS_TRAINING_ALPHA": alpha})
        build_image(settings, LocalBackend(settings).train_gate_register(), push=True)
    score.write_text(healthy)


@pytest.fixture
def container_settings(pushed, tmp_path):
    """Settings of this test's own copy of `pushed`, on free ports; every container it
    starts is removed at the end."""
    root = copy_checkout(pushed, tmp_path / "project")
    environ = {**CONTAINERS, "MLOPS_STAGING_PORT": str(free_port()),
               "MLOPS_PRODUCTION_PORT": str(free_port()), "MLOPS_SERVING_WORKERS": "1"}

    def settings(**overrides):
        return load_settings(root / "mlops.toml", environ={**environ, **overrides})
    yield settings
    stop(settings())


def recorded(settings, version):
    return registry.release_for(tracking.connect(settings)[0], settings, version)


def versions_running(target):
    """The model versions of the containers this project runs for `target`."""
    listed = docker("ps", "--quiet", "--filter", f"label={LABEL_PROJECT}={target.project}",
                    "--filter", f"label={LABEL_TARGET}={target.name}").stdout.split()
    return sorted(info["Config"]["Labels"][LABEL_VERSION]
                  for info in json.loads(docker("inspect", *listed).stdout or "[]"))


def inspect(target):
    return json.loads(docker("inspect", target.container_name).stdout)[0]


def post(uri, payload):
    request = urllib.request.Request(uri, data=payload.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def registry_digest(image):
    """The digest the registry itself gives the pushed manifest of `image` (repo:tag)."""
    repository, _, tag = image.removeprefix(f"{LOCAL_REGISTRY}/").rpartition(":")
    request = urllib.request.Request(
        f"http://{LOCAL_REGISTRY}/v2/{repository}/manifests/{tag}", method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Docker-Content-Digest"]


@real_containers
def test_image_is_pushed_and_its_registry_digest_recorded(container_settings):
    settings = container_settings()
    release = recorded(settings, "2")
    assert release.image.startswith(f"{LOCAL_REGISTRY}/{settings.model.name.lower()}:2-")
    assert release.image_digest == registry_digest(release.image)
    assert release.image_digest != recorded(settings, "1").image_digest


@real_containers
def test_image_holds_the_pinned_packages_and_stays_small(container_settings):
    settings = container_settings()
    reference = ContainerTarget("staging", settings).reference(recorded(settings, "2"))
    pins = dict(line.split("==") for line in
                (PROJECT_ROOT / "scoring" / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    script = ("import importlib.metadata as m, json, sys; "
              "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
    ran = docker("run", "--rm", "--entrypoint", "python", reference, "-c", script, *pins)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == pins
    image, base = (json.loads(docker("image", "inspect", name).stdout)[0]
                   for name in (reference, base_image(PROJECT_ROOT / "scoring" / "Dockerfile")))
    assert (image["Size"] - base["Size"]) / 1e6 < ADDED_LAYERS_MAX_MB


@real_containers
def test_container_runs_non_root_read_only_limited_and_turns_healthy(container_settings):
    settings = container_settings()
    deployment = deploy(settings, "staging", "2")
    assert deployment.healthy and deployment.model_version == "2"
    target = get_target("staging", settings)
    info = inspect(target)
    assert info["State"]["Health"]["Status"] == "healthy"  # the image's own HEALTHCHECK
    assert docker("exec", target.container_name, "id", "-u").stdout.strip() == "10001"
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["HostConfig"]["Memory"] == settings.serving.container_memory_mb * 2 ** 20
    assert info["HostConfig"]["NanoCpus"] == settings.serving.container_cpus * 1e9
    assert info["Config"]["Image"] == f"{recorded(settings, '2').image.rpartition(':')[0]}@" \
                                      f"{recorded(settings, '2').image_digest}"


@real_containers
def test_score_answers_and_a_bad_request_gets_its_4xx(container_settings):
    settings = container_settings()
    uri = deploy(settings, "staging", "1").scoring_uri
    sample = (settings.project_root / "scoring" / "sample-request.json").read_text()
    status, body = post(uri, sample)
    assert status == 200 and body["model_version"] == "1" and len(body["predictions"]) == 2
    for _, payload, expected, message in BAD_REQUESTS[:3] + BAD_REQUESTS[-3:]:
        status, body = post(uri, payload)
        assert status == expected and message in body["error"]
    # The read-only container recorded the one answered request in the mounted folder.
    [record] = records.read_log_files(log_folder(settings, "staging"))
    assert record["model_version"] == "1" and record["rows"] == 2


@real_containers
def test_promotion_runs_the_recorded_digest_in_staging_and_production(container_settings):
    settings = container_settings()
    deploy(settings, "staging", "2")
    smoke_test(settings, "staging")
    promote(settings, approved=True)
    digest = recorded(settings, "2").image_digest
    running = {name: get_target(name, settings).status() for name in ("staging", "production")}
    assert {name: (d.healthy, d.image_digest) for name, d in running.items()} == {
        "staging": (True, digest), "production": (True, digest)}
    images = {inspect(get_target(name, settings))["Image"] for name in running}
    assert len(images) == 1  # one image, two containers


@real_containers
def test_rollback_returns_production_to_the_previous_digest(container_settings):
    settings = container_settings()
    deploy(settings, "production", "1")
    deploy(settings, "staging", "2")
    smoke_test(settings, "staging")
    promote(settings, approved=True)
    production = get_target("production", settings)
    assert production.status().image_digest == recorded(settings, "2").image_digest
    assert rollback(settings) == "1"
    assert production.status().image_digest == recorded(settings, "1").image_digest
    smoke_test(settings, "production")


@real_containers
def test_container_canary_promotes_a_good_release_and_rolls_back_a_bad_one(container_settings):
    """One front (the traffic split) serves each container target's port throughout:
    a new container starts on a private port and takes traffic once it is healthy, all
    of it (deploy) or step by step (a canary). Version 2 goes through every step; then
    version 3, which answers errors on part of the traffic, is rolled back at the first
    step. No request fails, also not while staging is redeployed (2, then 3)."""
    settings = container_settings(**CANARY)
    root = settings.project_root
    production = get_target("production", settings)
    deploy(settings, "production", "1")
    deploy(settings, "staging", "2")
    smoke_test(settings, "staging")
    assert "canary: version 2 takes 10 %, then 50 %, then 100 % of production's traffic " \
           "beside version 1" in promote_plan(settings)
    with Probe(settings) as probe:
        promote(settings, approved=True)
    print(f"version 2: answers {dict(probe.answers)}")
    assert probe.failures == []
    assert set(probe.answers) == {("200", "1"), ("200", "2")}
    assert (production.status().healthy, production.status().model_version) == (True, "2")
    assert versions_running(production) == ["2"]
    tags = tracking.connect(settings)[0].get_model_version(settings.model.name, "2").tags
    assert tags[CANARY_TAG] == "passed: 10 %, 50 %, 100 %"

    with Probe(settings, "staging") as probe:
        deploy(settings, "staging", "3")
    print(f"staging redeploy: answers {dict(probe.answers)}")
    assert probe.failures == []
    assert {version for status, version in probe.answers if status == "200"} == {"2", "3"}
    smoke_test(settings, "staging")
    promoted = git(root, "rev-parse", "HEAD")
    with Probe(settings) as probe:
        with pytest.raises(MlopsError, match="canary of version 3 failed: error rate.* at "
                                             "the 10 % step"):
            promote(settings, approved=True)
    served = probe.served()
    print(f"version 3: answers {dict(probe.answers)}")
    assert probe.failures == []
    assert (production.status().healthy, production.status().model_version) == (True, "2")
    assert versions_running(production) == ["2"]
    assert desired_state.read(settings, "production").model_version == "2"
    log = git(root, "log", "--format=%s", f"{promoted}..HEAD").splitlines()
    assert log[0].startswith("Revert the canary of version 3: error rate")
    assert log[1].startswith(f"Promote {settings.model.name} version 3 to production")
    assert 0 < (served["3"] + served["error"]) / sum(served.values()) < 0.2, served


@real_containers
def test_rebuilt_image_is_not_promoted_untested(container_settings):
    settings = container_settings()
    deploy(settings, "staging", "2")
    smoke_test(settings, "staging")
    client = tracking.connect(settings)[0]
    client.set_model_version_tag(settings.model.name, "2", registry.IMAGE_DIGEST_TAG,
                                 recorded(settings, "1").image_digest)
    with pytest.raises(MlopsError, match="rebuilt after the smoke test"):
        promote(settings, approved=True)
    assert get_target("production", settings).status() is None


@real_containers
def test_port_in_use_is_refused_and_nothing_is_left_running(container_settings):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = container_settings(MLOPS_STAGING_PORT=str(port))
        with pytest.raises(MlopsError, match=f"(?i)port {port} for staging is already in use"):
            deploy(settings, "staging", "1")
    assert get_target("staging", settings).status() is None


@real_containers
def test_deploy_takes_over_the_port_restarts_a_dead_front_and_stop_removes_only_ours(
        container_settings, request):
    settings = container_settings()
    target = get_target("staging", settings)
    # A container as this project started them before the front existed, publishing the
    # target's port itself: deploy replaces it (the port is unserved for a moment, once).
    reference = target.reference(recorded(settings, "1"))
    earlier = docker("run", "--detach", "--label", f"{LABEL_PROJECT}={target.project}",
                     "--label", f"{LABEL_TARGET}=staging", "--label", f"{LABEL_VERSION}=1",
                     "--publish", f"127.0.0.1:{target.port}:5001", reference).stdout.strip()
    assert deploy(settings, "staging", "1").healthy
    assert versions_running(target) == ["1"]
    assert earlier not in docker("ps", "--all", "--no-trunc").stdout
    # The front that serves the port is supervised: killed, status says so, and deploy
    # starts it again in front of the running container.
    container, front = inspect(target)["Id"], target.front()
    os.killpg(front.pid, signal.SIGKILL)
    while front.is_running():
        time.sleep(0.05)
    assert "no front serves port" in target.status().detail
    assert deploy(settings, "staging").healthy
    assert inspect(target)["Id"] == container
    # Another project's staging container, labelled like ours but for another folder.
    other = docker("run", "--detach", "--label", "mlops.project=/elsewhere",
                   "--label", "mlops.target=staging", "--entrypoint", "sleep",
                   reference, "300").stdout.strip()
    request.addfinalizer(lambda: docker("rm", "--force", other))
    stop(settings, "staging")
    assert target.status() is None and target.front() is None
    assert json.loads(docker("inspect", other).stdout)[0]["State"]["Running"] is True


@real_containers
def test_demo_pipeline_runs_production_and_staging_as_containers_of_one_digest(
        pushed, project, run_cli, request):
    """What `make demo` runs, on a fresh checkout: the pipeline picks containers, pushes
    the image and leaves staging and production running it by digest, non-root."""
    git(project, "init", "-q")
    ports = {"MLOPS_STAGING_PORT": str(free_port()), "MLOPS_PRODUCTION_PORT": str(free_port()),
             "MLOPS_SERVING_WORKERS": "1"}
    settings = load_settings(project / "mlops.toml", environ={**CONTAINERS, **ports})
    request.addfinalizer(lambda: stop(settings))
    result = run_cli("pipeline", "--approve", "--prefer-containers", **ports)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"containers mode: staging and production run the image pushed to {LOCAL_REGISTRY}" \
        in result.stdout
    digest = recorded(settings, "1").image_digest
    assert f"{settings.model.name.lower()}:1-" in result.stdout and digest in result.stdout
    targets = [get_target(name, settings) for name in ("staging", "production")]
    assert [(t.status().healthy, t.status().image_digest) for t in targets] == \
        [(True, digest)] * 2
    assert len({inspect(target)["Image"] for target in targets}) == 1
    assert {docker("exec", t.container_name, "id", "-u").stdout.strip() for t in targets} == \
        {"10001"}


def test_unpushed_release_is_refused_with_the_push_command(settings):
    release = Release(model_name="m", model_version="3", image="r/m:3-abc",
                      image_digest="", context_digest="", context_dir=PROJECT_ROOT)
    with pytest.raises(MlopsError, match="--model-version 3 --push"):
        ContainerTarget("staging", settings).reference(release)


def test_the_container_writes_its_prediction_log_to_the_targets_folder(settings):
    release = Release(model_name="m", model_version="3", image="r/m:3-abc",
                      image_digest="sha256:" + "ab" * 32, context_digest="",
                      context_dir=PROJECT_ROOT)
    plan = ContainerTarget("staging", settings).plan(release)
    folder = log_folder(settings, "staging")
    assert f"--volume {folder}:/var/log/mlops:rw" in plan
    assert "--env MLOPS_PREDICTION_LOG=/var/log/mlops/predictions.jsonl" in plan
    assert f"--env MLOPS_PREDICTION_LOG_SAMPLE={settings.monitoring.sample_rate}" in plan


def test_pipeline_falls_back_to_processes_without_docker(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker command at all
    assert pipeline_container_settings(settings) == (None, "no docker command is installed")
