"""The compute cluster the training steps run on."""
import pytest

from ml_service.azure import compute
from ml_service.errors import MlopsError
from tests.helpers.azure_fakes import azure_settings
from tests.helpers.azureml_fakes import COMPUTE, client_with
from tests.helpers.project import PROJECT_ROOT


@pytest.fixture
def az(settings):
    """Settings of the real project (its components), with the Azure keys filled in."""
    return azure_settings(settings, project_root=PROJECT_ROOT)


def test_compute_of_another_kind_is_refused(az):
    client, _ = client_with(az, [("GET", COMPUTE, (200, {"name": "cpu-cluster", "properties": {
        "computeType": "ComputeInstance", "properties": {"vmSize": "STANDARD_DS3_V2"}}}))])
    with pytest.raises(MlopsError, match="not an AmlCompute cluster"):
        compute.ensure_compute(client, az)
