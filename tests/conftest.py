"""Bake the template once per option combination and share the result."""
import pytest

# Independent options are cycled, not multiplied: every value of every option is
# baked at least once. Ids name the combination in test reports.
COMBINATIONS = {
    # First: its suite runs in full (minutes), so it should start before the short ones.
    "both-custom-names": {
        "ci_platform": "both", "python_version": "3.11",
        "project_name": "Churn Forecast", "model_name": "churn_model.v2",
        "azure_workspace_name": "ws_churn-01", "azure_resource_group": "rg.churn(prod)",
        "azure_location": "eastus2",
        "azure_subscription_id": "3f2c9a1e-8b7d-4c6e-9f0a-1b2c3d4e5f60",
    },
    "github-py311": {"ci_platform": "github", "python_version": "3.11"},
    "azure-devops-py312": {"ci_platform": "azure-devops", "python_version": "3.12"},
}


@pytest.fixture(scope="session")
def baked(cookies_session):
    """Return a function giving the baked project folder of a combination (baked once)."""
    projects = {}

    def bake(combination):
        if combination not in projects:
            result = cookies_session.bake(extra_context=COMBINATIONS[combination])
            assert result.exit_code == 0, result.exception
            projects[combination] = result.project_path
        return projects[combination]
    return bake


@pytest.fixture(params=list(COMBINATIONS))
def combination(request):
    return request.param


@pytest.fixture
def project(baked, combination):
    return baked(combination)
