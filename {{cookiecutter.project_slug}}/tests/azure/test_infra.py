"""environment_setup through `az deployment group what-if/create`, with az replaced."""
import json
import shlex
import subprocess

import pytest

from ml_service.azure import infra
from ml_service.errors import MlopsError
from tests.helpers.azure_fakes import azure_settings
from tests.helpers.project import PROJECT_ROOT


@pytest.fixture
def az(settings):
    return azure_settings(settings, project_root=PROJECT_ROOT)


class FakeAz:
    def __init__(self, outputs=None, fail=None):
        self.calls = []
        self.outputs = outputs or {}
        self.fail = fail or {}

    def __call__(self, command, **kwargs):
        self.calls.append((command, kwargs))
        verb = command[3]
        if verb in self.fail:
            return subprocess.CompletedProcess(command, 1, None, self.fail[verb])
        stdout = json.dumps({k: {"type": "String", "value": v}
                             for k, v in self.outputs.items()}) if verb == "show" else None
        return subprocess.CompletedProcess(command, 0, stdout, "")


def test_the_template_files_the_commands_name_exist(az):
    assert (PROJECT_ROOT / infra.TEMPLATE).is_file()
    assert (PROJECT_ROOT / infra.PARAMETERS).is_file()
    assert f"var computeName = '{infra.BICEP_COMPUTE_NAME}'" in (
        PROJECT_ROOT / infra.TEMPLATE).read_text()


def test_bicepparam_and_mlops_toml_agree_as_baked(az):
    params = infra.bicep_parameters(az)
    assert params["workspaceName"] == az.azure.workspace_name
    assert isinstance(params["computeMaxNodes"], int) and params["deployAks"] is True
    assert infra.mismatches(az) == []


def test_a_disagreement_is_named(settings):
    az = azure_settings(settings, project_root=PROJECT_ROOT, azure={"compute_max_nodes": 8})
    [line] = infra.mismatches(az)
    assert "computeMaxNodes = 2" in line and "[azure] compute_max_nodes = 8" in line


def test_dry_run_prints_the_exact_commands(az, capsys):
    fake = FakeAz()
    assert infra.deploy_infrastructure(az, what_if=False, dry_run=True, run=fake) is None
    out = capsys.readouterr().out
    assert fake.calls == []
    assert ("az deployment group what-if --subscription "
            f"{az.azure.subscription_id} --resource-group {shlex.quote(az.azure.resource_group)} "
            "--name environment-setup --template-file environment_setup/main.bicep "
            "--parameters environment_setup/main.bicepparam") in out
    assert "az deployment group create" in out and "--query properties.outputs" in out


def test_what_if_alone_changes_nothing(az, capsys):
    fake = FakeAz()
    infra.deploy_infrastructure(az, run=fake)
    assert [command[3] for command, _ in fake.calls] == ["what-if"]
    assert fake.calls[0][1]["cwd"] == PROJECT_ROOT
    assert "nothing was changed" in capsys.readouterr().out


def test_apply_runs_what_if_then_create_and_checks_the_outputs(az, capsys):
    fake = FakeAz(outputs={"workspaceName": az.azure.workspace_name,
                           "computeName": "cpu-cluster",
                           "registryLoginServer": "otheracr.azurecr.io",
                           "ciClientId": "1111-2222"})
    outputs = infra.deploy_infrastructure(az, what_if=False, run=fake)
    assert [command[3] for command, _ in fake.calls] == ["what-if", "create", "show"]
    assert outputs["ciClientId"] == "1111-2222"
    out = capsys.readouterr().out
    assert "registryLoginServer is 'otheracr.azurecr.io'" in out
    assert "set [image] registry = 'otheracr.azurecr.io'" in out


@pytest.mark.parametrize("stderr, fix", [
    ("ERROR: Please run 'az login' to setup account.", "az login"),
    ("ERROR: (ResourceGroupNotFound) Resource group 'rg' could not be found.",
     "az group create"),
    ("ERROR: (AuthorizationFailed) The client does not have authorization", "Owner"),
])
def test_az_failures_are_explained(az, stderr, fix):
    with pytest.raises(MlopsError) as raised:
        infra.deploy_infrastructure(az, what_if=False, run=FakeAz(fail={"what-if": stderr}))
    assert fix in raised.value.fix
    assert "what-if" in raised.value.what


def test_without_the_azure_cli(az):
    def no_az(command, **kwargs):
        raise FileNotFoundError(command[0])

    with pytest.raises(MlopsError, match="Azure CLI"):
        infra.deploy_infrastructure(az, run=no_az)
