// Everything {{ cookiecutter.project_slug }} needs in one resource group: the Azure ML workspace
// and its compute, the container registry, the AKS cluster with Flux, and the
// identity CI signs in with. Deploy with main.bicepparam (see README.md).
targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

@description('Project slug: the prefix of every resource name. Lowercase letters, digits and hyphens.')
@minLength(3)
@maxLength(30)
param projectSlug string

@description('Azure region of every resource.')
param location string = resourceGroup().location

@description('Name of the Azure ML workspace.')
@minLength(3)
@maxLength(33)
param workspaceName string

@description('Name of the container registry (globally unique, 5-50 letters and digits). The CLI pushes the scoring image to <registryName>.azurecr.io.')
@minLength(5)
@maxLength(50)
param registryName string

@description('Registry tier. Basic is enough for one project; Premium adds private endpoints and geo-replication.')
@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param registrySku string = 'Standard'

@description('VM size of the Azure ML training cluster.')
param computeVmSize string = 'Standard_DS3_v2'

@description('Largest node count of the training cluster. It scales to zero when idle.')
@minValue(1)
@maxValue(100)
param computeMaxNodes int = 2

@description('Create the AKS cluster (false: Azure ML and ACI only).')
param deployAks bool = true

@description('VM size of the AKS nodes.')
param aksNodeVmSize string = 'Standard_D4ds_v5'

@description('Smallest number of AKS nodes.')
@minValue(1)
@maxValue(100)
param aksMinNodes int = 1

@description('Largest number of AKS nodes.')
@minValue(1)
@maxValue(100)
param aksMaxNodes int = 3

@description('AKS pricing tier: Free, or Standard for the uptime SLA production needs.')
@allowed([
  'Free'
  'Standard'
])
param aksTier string = 'Free'

@description('Kubernetes version, e.g. 1.33. Empty: the AKS default version.')
param kubernetesVersion string = ''

@description('HTTPS URL of this git repository. Empty: Flux is installed but syncs nothing (GitOps off).')
param gitRepositoryUrl string = ''

@description('Branch Flux follows.')
param gitBranch string = 'main'

@description('Read-only access token for a private repository (empty for a public one). Never stored in a file: main.bicepparam reads it from the FLUX_GIT_TOKEN environment variable.')
@secure()
param gitHttpsToken string = ''

@description('User name that goes with gitHttpsToken (any non-empty value for a GitHub token).')
param gitHttpsUser string = 'git'

@description('GitHub repository "owner/name" whose workflows may sign in as the CI identity. Empty: no GitHub federated credential.')
param githubRepository string = ''

@description('GitHub environments whose jobs may sign in (subject repo:<owner>/<name>:environment:<env>).')
param githubEnvironments array = [
  'staging'
  'production'
]

@description('Branches whose jobs may sign in without an environment (subject repo:<owner>/<name>:ref:refs/heads/<branch>).')
param githubBranches array = [
  'main'
]

@description('More federated credentials of the CI identity, e.g. an Azure DevOps service connection: [{ name, issuer, subject }].')
param extraFederatedCredentials array = []

@description('Object id of the person or group that administers the cluster (AKS RBAC Cluster Admin). Empty: none.')
param adminPrincipalId string = ''

@description('Tags of every resource.')
param tags object = {
  project: projectSlug
}

// ---------------------------------------------------------------------------
// Names. Each fits its Azure rule for every valid projectSlug (3-30 characters):
// tests/environment_setup/test_bicep.py evaluates them with the longest slug.
// Globally unique names carry a hash of the resource group id.
// ---------------------------------------------------------------------------

var compactSlug = toLower(replace(projectSlug, '-', ''))
var suffix = uniqueString(resourceGroup().id)
var logAnalyticsName = 'log-${projectSlug}'
var appInsightsName = 'appi-${projectSlug}'
var storageAccountName = 'st${take(compactSlug, 9)}${suffix}'
var keyVaultName = 'kv${take(compactSlug, 9)}${suffix}'
var computeName = 'cpu-cluster'
var aksName = 'aks-${projectSlug}'
var aksNodeResourceGroupName = 'mc-${projectSlug}-${suffix}'
var fluxConfigurationName = projectSlug
var ciIdentityName = 'id-${projectSlug}-ci'
var aciPullIdentityName = 'id-${projectSlug}-aci-pull'

// ---------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    logAnalyticsName: logAnalyticsName
    appInsightsName: appInsightsName
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  params: {
    location: location
    tags: tags
    registryName: registryName
    sku: registrySku
  }
}

module workspace 'modules/workspace.bicep' = {
  name: 'workspace'
  params: {
    location: location
    tags: tags
    workspaceName: workspaceName
    storageAccountName: storageAccountName
    keyVaultName: keyVaultName
    appInsightsId: monitoring.outputs.appInsightsId
    registryName: registry.outputs.name
    computeName: computeName
    computeVmSize: computeVmSize
    computeMaxNodes: computeMaxNodes
  }
}

module aks 'modules/aks.bicep' = if (deployAks) {
  name: 'aks'
  params: {
    location: location
    tags: tags
    clusterName: aksName
    nodeResourceGroupName: aksNodeResourceGroupName
    tier: aksTier
    kubernetesVersion: kubernetesVersion
    nodeVmSize: aksNodeVmSize
    minNodes: aksMinNodes
    maxNodes: aksMaxNodes
    registryName: registry.outputs.name
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
    adminPrincipalId: adminPrincipalId
    ciIdentityId: identities.outputs.ciIdentityId
    ciPrincipalId: identities.outputs.ciPrincipalId
    fluxConfigurationName: fluxConfigurationName
    gitRepositoryUrl: gitRepositoryUrl
    gitBranch: gitBranch
    gitHttpsUser: gitHttpsUser
    gitHttpsToken: gitHttpsToken
  }
}

module identities 'modules/identities.bicep' = {
  name: 'identities'
  params: {
    location: location
    tags: tags
    ciIdentityName: ciIdentityName
    aciPullIdentityName: aciPullIdentityName
    workspaceName: workspace.outputs.name
    registryName: registry.outputs.name
    logAnalyticsName: monitoring.outputs.logAnalyticsName
    githubRepository: githubRepository
    githubEnvironments: githubEnvironments
    githubBranches: githubBranches
    extraFederatedCredentials: extraFederatedCredentials
  }
}

// ---------------------------------------------------------------------------
// Outputs: what mlops.toml and the CI secrets need
// ---------------------------------------------------------------------------

output workspaceName string = workspace.outputs.name
output computeName string = workspace.outputs.computeName
output registryLoginServer string = registry.outputs.loginServer
output aksName string = deployAks ? aksName : ''
output aksOidcIssuerUrl string = deployAks ? aks.outputs.oidcIssuerUrl : ''
output ciClientId string = identities.outputs.ciClientId
output aciPullIdentityId string = identities.outputs.aciPullIdentityId
output tenantId string = tenant().tenantId
output subscriptionId string = subscription().subscriptionId
