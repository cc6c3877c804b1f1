// Parameters of main.bicep for {{ cookiecutter.project_slug }}. Values not set here take the
// defaults documented in main.bicep. Deploy as described in README.md:
//   az deployment group create -g '{{ cookiecutter.azure_resource_group }}' -f main.bicep -p main.bicepparam
using './main.bicep'

param projectSlug = '{{ cookiecutter.project_slug }}'
param location = '{{ cookiecutter.azure_location }}'
param workspaceName = '{{ cookiecutter.azure_workspace_name }}'
// The CLI pushes images to <registryName>.azurecr.io: change both together.
param registryName = '{{ cookiecutter.project_slug|replace('-', '') }}acr'
param registrySku = 'Standard'

param computeVmSize = 'Standard_DS3_v2'
param computeMaxNodes = 2

param deployAks = true
param aksNodeVmSize = 'Standard_D4ds_v5'
param aksMinNodes = 1
param aksMaxNodes = 3
param aksTier = 'Free'

// GitOps: the HTTPS URL of this repository turns on Flux for production,
// e.g. 'https://github.com/<owner>/{{ cookiecutter.project_slug }}'. For a private repository
// export FLUX_GIT_TOKEN (a read-only token) before deploying. Then set
// [production] mode = "gitops" in mlops.toml (docs/ci-cd.md, GitOps).
param gitRepositoryUrl = ''
param gitBranch = 'main'
param gitHttpsToken = readEnvironmentVariable('FLUX_GIT_TOKEN', '')

// CI sign-in without secrets. GitHub: '<owner>/<name>' of this repository.
// Azure DevOps: add its service connection to extraFederatedCredentials.
param githubRepository = ''
param githubEnvironments = [
  'staging'
  'production'
]
param githubBranches = [
  'main'
]
param extraFederatedCredentials = []

// Your object id (`az ad signed-in-user show --query id -o tsv`) to administer the cluster.
param adminPrincipalId = ''
