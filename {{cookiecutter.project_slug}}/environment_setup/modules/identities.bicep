// The identity CI signs in with (OIDC federation: no secret to store or rotate),
// with the least privilege each pipeline step needs, and the identity ACI
// container groups pull the scoring image with.
//
//   step                          role                                   scope
//   train / evaluate / register   AzureML Data Scientist                 workspace
//   build-image (docker push)     AcrPush                                registry
//   deploy to ACI                 Azure Container Instances Contributor  resource group
//                                 Managed Identity Operator              ACI pull identity
//   deploy to AKS                 (aks.bicep: the cluster's roles and the Flux read
//                                 Role need this identity first)
//
// Not Contributor on the resource group: that would also let CI change or
// delete the workspace, the registry and the cluster. The ACI role covers only
// Microsoft.ContainerInstance, and has to sit on the resource group because the
// container groups do not exist before CI creates them.

@description('Azure region.')
param location string

@description('Tags of every resource.')
param tags object

@description('Name of the CI identity.')
param ciIdentityName string

@description('Name of the identity ACI container groups pull images with.')
param aciPullIdentityName string

@description('Name of the Azure ML workspace.')
param workspaceName string

@description('Name of the Log Analytics workspace the scoring logs go to.')
param logAnalyticsName string

@description('Name of the container registry.')
param registryName string


@description('GitHub repository owner/name; empty for none.')
param githubRepository string

@description('GitHub environments whose jobs may sign in.')
param githubEnvironments array

@description('Branches whose jobs may sign in without an environment.')
param githubBranches array

@description('More federated credentials: [{ name, issuer, subject }].')
param extraFederatedCredentials array

var githubIssuer = 'https://token.actions.githubusercontent.com'
var githubEnvironmentCredentials = [for env in githubEnvironments: {
  name: 'github-env-${env}'
  issuer: githubIssuer
  subject: 'repo:${githubRepository}:environment:${env}'
}]
var githubBranchCredentials = [for branch in githubBranches: {
  name: 'github-branch-${replace(branch, '/', '-')}'
  issuer: githubIssuer
  subject: 'repo:${githubRepository}:ref:refs/heads/${branch}'
}]
var githubCredentials = concat(githubEnvironmentCredentials, githubBranchCredentials)
var federatedCredentials = concat(empty(githubRepository) ? [] : githubCredentials, extraFederatedCredentials)

var roleIds = {
  amlDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121' // AzureML Data Scientist
  acrPush: '8311e382-0749-4cb8-b61a-304f252e45ec' // AcrPush
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d' // AcrPull
  aciContributor: '5d977122-f97e-4b4d-a52f-6b43003ddb4d' // Azure Container Instances Contributor Role
  identityOperator: 'f1a07417-d97a-45cb-824c-7a7467783830' // Managed Identity Operator
  logAnalyticsContributor: '92aaf0da-9dab-42b6-94a3-d43ce8d16293' // Log Analytics Contributor
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' existing = {
  name: registryName
}

resource ciIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: ciIdentityName
  location: location
  tags: tags
}

// One at a time: Azure rejects concurrent writes of federated credentials
// under the same identity.
@batchSize(1)
resource federation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2024-11-30' = [for credential in federatedCredentials: {
  parent: ciIdentity
  name: credential.name
  properties: {
    issuer: credential.issuer
    subject: credential.subject
    audiences: [
      'api://AzureADTokenExchange'
    ]
  }
}]

resource aciPullIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: aciPullIdentityName
  location: location
  tags: tags
}

resource ciDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, ciIdentity.id, roleIds.amlDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.amlDataScientist)
    principalId: ciIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource ciAcrPush 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, ciIdentity.id, roleIds.acrPush)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.acrPush)
    principalId: ciIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource ciAciContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, ciIdentity.id, roleIds.aciContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.aciContributor)
    principalId: ciIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource ciIdentityOperator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(aciPullIdentity.id, ciIdentity.id, roleIds.identityOperator)
  scope: aciPullIdentity
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.identityOperator)
    principalId: ciIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource aciAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, aciPullIdentity.id, roleIds.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.acrPull)
    principalId: aciPullIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// `python -m ml_service monitor` reads the scoring servers' records from Log Analytics, and
// the ACI deployment reads the workspace key its container group sends logs with
// (sharedKeys/action, which Log Analytics Reader lacks); scoped to this workspace only.
resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2025-07-01' existing = {
  name: logAnalyticsName
}

resource ciLogAnalytics 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(logAnalytics.id, ciIdentity.id, roleIds.logAnalyticsContributor)
  scope: logAnalytics
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.logAnalyticsContributor)
    principalId: ciIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

output ciClientId string = ciIdentity.properties.clientId
output ciIdentityId string = ciIdentity.id
output ciPrincipalId string = ciIdentity.properties.principalId
output aciPullIdentityId string = aciPullIdentity.id
