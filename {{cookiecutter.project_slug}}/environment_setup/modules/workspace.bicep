// Azure ML workspace with its storage account and key vault, and the training
// cluster that scales to zero.

@description('Azure region.')
param location string

@description('Tags of every resource.')
param tags object

@description('Name of the Azure ML workspace.')
param workspaceName string

@description('Name of the workspace storage account (3-24 lowercase letters and digits).')
param storageAccountName string

@description('Name of the workspace key vault (3-24 characters).')
param keyVaultName string

@description('Resource id of the Application Insights component.')
param appInsightsId string

@description('Name of the container registry in this resource group.')
param registryName string

@description('Name of the training cluster (2-16 characters).')
param computeName string

@description('VM size of the training cluster.')
param computeVmSize string

@description('Largest node count of the training cluster.')
param computeMaxNodes int

resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' existing = {
  name: registryName
}

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' = {
  name: storageAccountName
  location: location
  tags: tags
  sku: {
    name: 'Standard_LRS'
  }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // The workspace's default datastores authenticate with the account key.
    allowSharedKeyAccess: true
  }
}

// RBAC authorization rather than access policies: the workspace grants its own
// identity access, and redeploying this template cannot wipe that grant (a
// vault declared with `accessPolicies: []` loses the policies added by others).
resource keyVault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
  }
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' = {
  name: workspaceName
  location: location
  tags: tags
  kind: 'Default'
  identity: {
    type: 'SystemAssigned'
  }
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  properties: {
    friendlyName: workspaceName
    storageAccount: storage.id
    keyVault: keyVault.id
    applicationInsights: appInsightsId
    containerRegistry: registry.id
    publicNetworkAccess: 'Enabled'
    v1LegacyMode: false
  }
}

resource compute 'Microsoft.MachineLearningServices/workspaces/computes@2024-10-01' = {
  parent: workspace
  name: computeName
  location: location
  tags: tags
  // The cluster pulls environment images from a registry without an admin
  // user, so it needs an identity of its own. Azure ML itself grants that identity
  // AcrPull on the workspace's registry; assigning it here as well fails the
  // deployment with RoleAssignmentExists.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    computeType: 'AmlCompute'
    properties: {
      vmSize: computeVmSize
      vmPriority: 'Dedicated'
      osType: 'Linux'
      remoteLoginPortPublicAccess: 'Disabled'
      scaleSettings: {
        minNodeCount: 0
        maxNodeCount: computeMaxNodes
        nodeIdleTimeBeforeScaleDown: 'PT120S'
      }
    }
  }
}

output name string = workspace.name
output id string = workspace.id
output computeName string = compute.name
