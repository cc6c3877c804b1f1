"""The IoT Edge target: the manifest against the official schemas, and deploy with only
the Azure CLI replaced.

A real MLflow store holds a model version whose image was pushed (the digest tag
build-image --push records); the CLI runs as CI runs it, in a git checkout. A fake `az`
first on PATH records its arguments and a copy of the manifest it was given: the one
place the credentials may appear.
"""
import json
import os
import stat
import sys

import pytest

from ml_service import desired_state
from ml_service.config import load_settings
from ml_service.errors import ConfigError, MlopsError
from ml_service.releasing import deployment, dry_run, registry, smoke
from ml_service.targets import edge_manifest, get_target
from tests.helpers.http_stub import JsonHandler, serving
from tests.helpers.project import PROJECT_ROOT, git

# Names come from the baked mlops.toml: the template bakes projects under other names.
BAKED = load_settings(PROJECT_ROOT / "mlops.toml", environ={})
IMAGE = f"{BAKED.image.registry}/{BAKED.model.name.lower()}"
HUB, DEVICE = f"{BAKED.edge.iot_hub}.azure-devices.net", BAKED.edge.device_id
DIGEST = "sha256:" + "5" * 64
SECRETS = {"ACR_USERNAME": "edge-pull-token-name",
           "ACR_PASSWORD": "acr-password-that-must-stay-secret",  # pragma: allowlist secret
           "EDGE_SCORING_KEY": "edge-scoring-key-of-the-device-0123"}

FAKE_AZ = f"""#!{sys.executable}
import json, os, shutil, sys
log = os.environ["FAKE_AZ_LOG"]
record = dict(argv=sys.argv[1:])
if "--content" in sys.argv:
    content = sys.argv[sys.argv.index("--content") + 1]
    record["content"] = open(content).read()
    record["mode"] = oct(os.stat(content).st_mode & 0o777)
with open(log, "a") as file:
    file.write(json.dumps(record) + "\\n")
if sys.argv[1:3] == ["extension", "show"] and os.environ.get("FAKE_AZ_NO_EXTENSION"):
    sys.exit("ERROR: The extension azure-iot is not installed.")
# The azure-iot extension (azext_iot/common/base_discovery.py, get_target) uses a
# --hub-name containing a dot as the hostname; a bare name is looked up through ARM,
# which the CI identity's IoT Hub Data Contributor role cannot read: "not found".
if "--hub-name" in sys.argv and "." not in sys.argv[sys.argv.index("--hub-name") + 1]:
    sys.exit("ERROR: Target IoT Hub could not be found with the provided name.")
if os.environ.get("FAKE_AZ_NO_DEVICE") and "set-modules" in sys.argv:
    sys.exit("ERROR: Device 'x' not found.")
# What the real command prints: the applied configuration, credentials included.
if "set-modules" in sys.argv:
    print(open(content).read())
"""


@pytest.fixture
def pushed(project, settings, client):
    """The project as a git checkout whose store has version 1 with a pushed image."""
    client.create_registered_model(settings.model.name)
    client.create_model_version(settings.model.name, source=str(project / "model"), tags={
        registry.IMAGE_TAG: f"{IMAGE}:1-0123abc", registry.IMAGE_DIGEST_TAG: DIGEST,
        registry.CONTEXT_DIGEST_TAG: "sha256:" + "0" * 64})
    client.create_model_version(settings.model.name, source=str(project / "model"), tags={
        registry.IMAGE_TAG: f"{IMAGE}:2-0123abc",
        registry.CONTEXT_DIGEST_TAG: "sha256:" + "0" * 64})  # built, never pushed
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")
    return project


@pytest.fixture
def fake_az(tmp_path):
    """The fake `az` first on PATH (for this process and the CLI's); its calls."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "az"
    script.write_text(FAKE_AZ)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "az.log"
    environment = {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}",
                   "FAKE_AZ_LOG": str(log)}

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] \
            if log.exists() else []

    return environment, calls


@pytest.fixture
def deploy_edge(pushed, fake_az, monkeypatch):
    """`deploy --target edge` in this process, with the fake az and `environ` set."""
    environment, _ = fake_az
    settings = load_settings(pushed / "mlops.toml", environ={})

    def run(version=None, **environ):
        for name, value in {**environment, **SECRETS, **environ}.items():
            monkeypatch.setenv(name, value)
        return deployment.deploy(settings, "edge", version)

    return run


def rendered(settings, version="1", digest=DIGEST):
    return edge_manifest.render(settings, version, f"{IMAGE}:{version}-0123abc", digest)


def scoring_module(manifest):
    return manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["scoring"]


# -- the manifest ----------------------------------------------------------------------

def test_manifest_is_valid_and_runs_the_version_by_digest(settings):
    manifest = rendered(settings)
    assert edge_manifest.validate(settings, manifest, require_schema=True) is True
    module = scoring_module(manifest)
    assert module["settings"]["image"] == f"{IMAGE}@{DIGEST}"
    assert (module["status"], module["restartPolicy"]) == ("running", "on-unhealthy")
    options = module["settings"]["createOptions"]
    assert isinstance(options, str)
    parsed = json.loads(options)
    assert parsed["HostConfig"]["PortBindings"] == {"5001/tcp": [{"HostPort": "5001"}]}
    assert "Healthcheck" not in parsed  # the image's HEALTHCHECK stays in force
    assert module["env"]["MODEL_VERSION"] == {"value": "1"}
    assert module["env"]["SCORING_KEY"] == {"value": "$EDGE_SCORING_KEY"}
    credentials = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"][
        "settings"]["registryCredentials"]
    assert list(credentials.values()) == [{"address": BAKED.image.registry,
                                           "username": "$ACR_USERNAME",
                                           "password": "$ACR_PASSWORD"}]
    hub = manifest["modulesContent"]["$edgeHub"]["properties.desired"]
    assert hub["schemaVersion"] == "1.2" and hub["storeAndForwardConfiguration"]


def test_the_schemas_reject_what_iot_edge_would(settings):
    manifest = rendered(settings)
    scoring_module(manifest)["restartPolicy"] = "sometimes"
    with pytest.raises(MlopsError, match="restartPolicy.*'sometimes' is not one of"):
        edge_manifest.validate(settings, manifest)
    manifest = rendered(settings)
    manifest["modulesContent"]["$edgeHub"]["properties.desired"]["schemaVersion"] = "1.0"
    with pytest.raises(MlopsError, match="schemaVersion.*edgehub-deployment-1.2"):
        edge_manifest.validate(settings, manifest)


def test_create_options_must_be_json_strings_of_at_most_4_kb(settings):
    manifest = rendered(settings)
    module_settings = scoring_module(manifest)["settings"]
    module_settings["createOptions"] = json.loads(module_settings["createOptions"])
    with pytest.raises(MlopsError, match="createOptions must be a JSON string"):
        edge_manifest.validate(settings, manifest)
    module_settings["createOptions"] = "{not json"
    with pytest.raises(MlopsError, match="not JSON"):
        edge_manifest.validate(settings, manifest)


def test_long_create_options_are_split_into_numbered_chunks():
    options = {"Labels": {f"label{index}": "x" * 100 for index in range(90)}}
    chunks = edge_manifest.create_options(options)
    assert list(chunks) == ["createOptions", "createOptions01", "createOptions02"]
    assert all(len(chunk) <= 4096 for chunk in chunks.values())
    assert edge_manifest.joined_create_options(chunks) == options
    with pytest.raises(MlopsError, match="at most 8 chunks"):
        edge_manifest.create_options({"Labels": {"big": "x" * 8 * 4096}})


def test_a_version_without_a_pushed_digest_is_refused(settings):
    with pytest.raises(MlopsError, match="no pushed image digest") as error:
        rendered(settings, "2", digest="")
    assert "build-image --model-version 2 --push" in error.value.fix


def test_edge_env_adds_variables_but_cannot_change_the_release(project):
    settings = load_settings(project / "mlops.toml",
                             environ={"MLOPS_EDGE_ENV": '{"LOG_LEVEL": "debug"}'})
    assert scoring_module(rendered(settings))["env"]["LOG_LEVEL"] == {"value": "debug"}
    settings = load_settings(project / "mlops.toml",
                             environ={"MLOPS_EDGE_ENV": '{"MODEL_VERSION": "7"}'})
    with pytest.raises(MlopsError, match="MODEL_VERSION, which deploy sets itself"):
        rendered(settings)
    with pytest.raises(ConfigError, match="not a JSON object"):
        load_settings(project / "mlops.toml", environ={"MLOPS_EDGE_ENV": "LOG_LEVEL=debug"})
    with pytest.raises(ConfigError, match="restart_policy.*'on-unhealthy'"):
        load_settings(project / "mlops.toml", environ={"MLOPS_EDGE_RESTART_POLICY": "maybe"})


def test_references_are_filled_only_in_the_copy_sent(settings):
    manifest = rendered(settings)
    sent, secrets = edge_manifest.filled(manifest, SECRETS)
    assert sorted(secrets) == sorted(SECRETS.values())
    assert scoring_module(sent)["env"]["SCORING_KEY"] == {"value": SECRETS["EDGE_SCORING_KEY"]}
    assert not any(value in json.dumps(manifest) for value in SECRETS.values())
    with pytest.raises(MlopsError, match="needs ACR_PASSWORD in the environment"):
        edge_manifest.filled(manifest, {**SECRETS, "ACR_PASSWORD": ""})


# -- the CLI: dry run, deploy, status, stop --------------------------------------------

def no_secret_in(text, project):
    files = "".join(path.read_text() for path in (project / "deploy" / "edge").rglob("*")
                    if path.is_file())
    return not any(value in text or value in files for value in SECRETS.values())


def test_dry_run_prints_the_manifest_and_the_command_and_changes_nothing(
        run_cli, pushed, fake_az):
    environment, calls = fake_az
    result = run_cli("--dry-run", "deploy", "--target", "edge", "--model-version", "1",
                     **environment, **SECRETS)
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    assert "dry run: nothing is sent to IoT Hub" in text
    assert "valid against deploy/edge/schemas/" in text
    assert (f"az iot edge set-modules --hub-name {HUB} --device-id {DEVICE} --content"
            in text)
    manifest = json.loads(text.split("deploy/edge/deployment.json:\n", 1)[1])
    assert scoring_module(manifest)["settings"]["image"] == f"{IMAGE}@{DIGEST}"
    settings = load_settings(pushed / "mlops.toml", environ={})
    assert edge_manifest.validate(settings, manifest, require_schema=True)
    assert calls() == []
    assert not (pushed / "deploy" / "edge" / "deployment.json").exists()
    assert git(pushed, "status", "--porcelain") == ""
    assert no_secret_in(text + result.stderr, pushed)


def test_dry_run_of_a_version_without_digest_says_how_to_push(settings, pushed):
    with pytest.raises(MlopsError, match="Version 2 has no pushed image digest"):
        dry_run.deploy_plan(settings, "edge", "2")


def test_dry_run_signed_out_of_azure_ml_plans_with_a_placeholder(project):
    settings = load_settings(project / "mlops.toml",
                             environ={"MLOPS_PIPELINE_BACKEND": "azureml"})
    text = dry_run.deploy_plan(settings, "edge", "4")
    assert "module           scoring: <image of version 4: read from the Azure ML" in text
    assert "valid against deploy/edge/schemas/" in text


def test_deploy_commits_the_manifest_and_sends_the_credentials_only_to_az(
        pushed, fake_az, deploy_edge, capsys):
    _, calls = fake_az
    deploy_edge("1")
    extension, set_modules = calls()
    assert extension["argv"][:4] == ["extension", "show", "--name", "azure-iot"]
    argv = set_modules["argv"]
    assert argv[:7] == ["iot", "edge", "set-modules", "--hub-name", HUB, "--device-id", DEVICE]
    assert argv[argv.index("--auth-type") + 1] == "login"
    assert set_modules["mode"] == "0o600"
    content = argv[argv.index("--content") + 1]
    assert not os.path.exists(content)  # the filled copy is gone
    sent = json.loads(set_modules["content"])
    assert scoring_module(sent)["settings"]["image"] == f"{IMAGE}@{DIGEST}"
    assert scoring_module(sent)["env"]["SCORING_KEY"]["value"] == SECRETS["EDGE_SCORING_KEY"]
    assert SECRETS["ACR_PASSWORD"] in set_modules["content"]
    # git holds the manifest with references, committed as the record of the deployment
    assert git(pushed, "status", "--porcelain") == ""
    assert git(pushed, "log", "-1", "--format=%s") == \
        f"Deploy {BAKED.model.name} version 1 to edge"
    settings = load_settings(pushed / "mlops.toml", environ={})
    assert desired_state.read(settings, "edge") == desired_state.DesiredState(
        "1", f"{IMAGE}:1-0123abc", DIGEST)
    output = capsys.readouterr()
    assert f"IoT Hub {HUB} accepted the manifest" in output.out
    assert no_secret_in(output.out + output.err, pushed)


def test_deploy_refuses_before_az_without_credentials_or_extension(fake_az, deploy_edge,
                                                                   capsys):
    _, calls = fake_az
    with pytest.raises(MlopsError, match="needs ACR_USERNAME in the environment"):
        deploy_edge("1", ACR_USERNAME="")
    assert calls() == []
    with pytest.raises(MlopsError, match="EDGE_SCORING_KEY is unusable"):
        deploy_edge(EDGE_SCORING_KEY="short")
    assert calls() == []
    with pytest.raises(MlopsError) as error:
        deploy_edge(FAKE_AZ_NO_EXTENSION="1")
    assert "az extension add --name azure-iot" in error.value.fix
    assert [call["argv"][:2] for call in calls()] == [["extension", "show"]]


def test_a_missing_hub_or_device_names_the_hostname_in_the_fix(fake_az, deploy_edge):
    with pytest.raises(MlopsError, match="not found") as error:
        deploy_edge("1", FAKE_AZ_NO_DEVICE="1")
    assert f"hub {HUB} ([edge] iot_hub)" in error.value.fix
    assert f"device {DEVICE} ([edge] device_id)" in error.value.fix


class Module(JsonHandler):
    """The scoring module as the device exposes it: health on /, keyed /score that
    answers as version 1."""

    def do_GET(self):
        self.send_response(200 if self.path == "/" else 404)
        self.end_headers()

    def do_POST(self):
        rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["data"]
        if self.headers.get("Authorization") != f"Bearer {SECRETS['EDGE_SCORING_KEY']}":
            self.send_response(401)
            self.end_headers()
            return
        self.send_json(200, {"predictions": [150.0] * len(rows), "model_version": "1"})


@pytest.fixture
def device():
    """A stand-in for the scoring module on the device, at its scoring URI."""
    with serving(Module) as server:
        yield f"http://127.0.0.1:{server.server_port}/score"


def test_status_is_the_committed_version_at_the_device_address(project, device, capsys):
    settings = load_settings(project / "mlops.toml", environ={})
    assert get_target("edge", settings).status() is None
    desired_state.write(settings, "edge", desired_state.DesiredState(
        "1", f"{IMAGE}:1-0123abc", DIGEST))
    unreachable = get_target("edge", settings).status()
    assert not unreachable.healthy and "[edge] scoring_uri is not set" in unreachable.detail
    settings = load_settings(project / "mlops.toml", environ={"MLOPS_EDGE_SCORING_URI": device})
    target = get_target("edge", settings)
    running = target.status()
    assert (running.model_version, running.healthy, running.scoring_uri,
            running.image_digest) == ("1", True, device, DIGEST)
    target.stop()
    assert "is left running" in capsys.readouterr().out
    assert target.status().healthy


def test_smoke_test_reaches_the_module_at_the_scoring_uri(pushed, device, client,
                                                          monkeypatch):
    settings = load_settings(pushed / "mlops.toml", environ={"MLOPS_EDGE_SCORING_URI": device})
    desired_state.write(settings, "edge", desired_state.DesiredState(
        "1", f"{IMAGE}:1-0123abc", DIGEST))
    monkeypatch.setenv("EDGE_SCORING_KEY", SECRETS["EDGE_SCORING_KEY"])
    smoke.smoke_test(settings, "edge")
    tags = client.get_model_version(settings.model.name, "1").tags
    assert tags[registry.smoke_tag("edge")] == "passed"
    desired_state.write(settings, "edge", desired_state.DesiredState(
        "2", f"{IMAGE}:2-0123abc", DIGEST))  # the device still answers as version 1
    with pytest.raises(MlopsError, match="serves model version 1, expected 2"):
        smoke.smoke_test(settings, "edge")
