// AKS cluster for the scoring service: Entra ID sign-in with Azure RBAC (no
// local accounts), OIDC issuer and workload identity, pulling from the registry
// with its kubelet identity, and Flux for GitOps.

@description('Azure region.')
param location string

@description('Tags of every resource.')
param tags object

@description('Name of the cluster.')
param clusterName string

@description('Name of the resource group AKS creates for the nodes.')
param nodeResourceGroupName string

@description('Pricing tier: Free or Standard.')
@allowed([
  'Free'
  'Standard'
])
param tier string

@description('Kubernetes version; empty for the AKS default.')
param kubernetesVersion string

@description('VM size of the nodes.')
param nodeVmSize string

@description('Smallest node count.')
param minNodes int

@description('Largest node count.')
param maxNodes int

@description('Resource id of the Log Analytics workspace Container Insights sends the logs to.')
param logAnalyticsWorkspaceId string

@description('Name of the container registry the cluster pulls from.')
param registryName string

@description('Object id granted AKS RBAC Cluster Admin; empty for none.')
param adminPrincipalId string

@description('Resource id of the CI identity (names its role assignments).')
param ciIdentityId string

@description('Object id of the CI identity: AKS roles, and the Flux read Role in deploy/flux/ci-access.')
param ciPrincipalId string

@description('Name of the Flux configuration.')
param fluxConfigurationName string

@description('HTTPS URL of the git repository Flux follows; empty: no Flux configuration.')
param gitRepositoryUrl string

@description('Branch Flux follows.')
param gitBranch string

@description('User name for gitHttpsToken.')
param gitHttpsUser string

@description('Token for a private repository; empty for a public one.')
@secure()
param gitHttpsToken string

var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d'
var clusterAdminRoleId = 'b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b' // Azure Kubernetes Service RBAC Cluster Admin
var clusterUserRoleId = '4abbcc35-e782-43d8-92c5-2d3f1bd2253f' // Azure Kubernetes Service Cluster User Role
var rbacWriterRoleId = 'a7ffa36f-339b-4b5c-8bdf-e2c188b2c0eb' // Azure Kubernetes Service RBAC Writer

resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' existing = {
  name: registryName
}

resource cluster 'Microsoft.ContainerService/managedClusters@2025-10-01' = {
  name: clusterName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  sku: {
    name: 'Base'
    tier: tier
  }
  properties: {
    kubernetesVersion: empty(kubernetesVersion) ? null : kubernetesVersion
    dnsPrefix: clusterName
    nodeResourceGroup: nodeResourceGroupName
    enableRBAC: true
    disableLocalAccounts: true
    aadProfile: {
      managed: true
      enableAzureRBAC: true
    }
    oidcIssuerProfile: {
      enabled: true
    }
    securityProfile: {
      workloadIdentity: {
        enabled: true
      }
    }
    // Container Insights: the containers' stdout (the scoring servers' prediction records,
    // which `python -m ml_service monitor` queries) goes to Log Analytics, signed in with
    // the cluster's managed identity (no workspace key), per the data collection rule below.
    addonProfiles: {
      omsagent: {
        enabled: true
        config: {
          logAnalyticsWorkspaceResourceID: logAnalyticsWorkspaceId
          useAADAuth: 'true'
        }
      }
    }
    autoUpgradeProfile: {
      upgradeChannel: 'patch'
      nodeOSUpgradeChannel: 'NodeImage'
    }
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        type: 'VirtualMachineScaleSets'
        osType: 'Linux'
        osSKU: 'AzureLinux'
        vmSize: nodeVmSize
        count: minNodes
        enableAutoScaling: true
        minCount: minNodes
        maxCount: maxNodes
      }
    ]
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
      networkDataplane: 'cilium'
      networkPolicy: 'cilium'
      loadBalancerSku: 'standard'
    }
  }
}

// What Container Insights collects: the default group, container logs in ContainerLogV2.
resource containerInsightsRule 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: take('MSCI-${location}-${clusterName}', 64)
  location: location
  tags: tags
  kind: 'Linux'
  properties: {
    dataSources: {
      extensions: [
        {
          name: 'ContainerInsightsExtension'
          extensionName: 'ContainerInsights'
          streams: [
            'Microsoft-ContainerInsights-Group-Default'
          ]
          extensionSettings: {
            dataCollectionSettings: {
              interval: '1m'
              namespaceFilteringMode: 'Off'
              enableContainerLogV2: true
            }
          }
        }
      ]
    }
    destinations: {
      logAnalytics: [
        {
          name: 'workspace'
          workspaceResourceId: logAnalyticsWorkspaceId
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          'Microsoft-ContainerInsights-Group-Default'
        ]
        destinations: [
          'workspace'
        ]
      }
    ]
  }
}

resource containerInsightsAssociation 'Microsoft.Insights/dataCollectionRuleAssociations@2023-03-11' = {
  name: 'ContainerInsightsExtension'
  scope: cluster
  properties: {
    dataCollectionRuleId: containerInsightsRule.id
  }
}

resource kubeletAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, cluster.id, acrPullRoleId)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPullRoleId)
    principalId: cluster.properties.identityProfile.kubeletidentity.objectId
    principalType: 'ServicePrincipal'
  }
}

resource adminAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(adminPrincipalId)) {
  name: guid(cluster.id, adminPrincipalId, clusterAdminRoleId)
  scope: cluster
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', clusterAdminRoleId)
    principalId: adminPrincipalId
  }
}

// CI: the kubeconfig (Cluster User) and the namespaced objects it deploys (RBAC Writer,
// which covers no Flux resources: the read gitops promotion needs is the Role below).
// Names as when these lived in identities.bicep, so a redeploy finds the same assignments.
resource ciClusterUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(cluster.id, ciIdentityId, clusterUserRoleId)
  scope: cluster
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', clusterUserRoleId)
    principalId: ciPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource ciClusterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(cluster.id, ciIdentityId, rbacWriterRoleId)
  scope: cluster
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', rbacWriterRoleId)
    principalId: ciPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource flux 'Microsoft.KubernetesConfiguration/extensions@2024-11-01' = {
  name: 'flux'
  scope: cluster
  properties: {
    extensionType: 'microsoft.flux'
    autoUpgradeMinorVersion: true
    releaseTrain: 'Stable'
    scope: {
      cluster: {
        releaseNamespace: 'flux-system'
      }
    }
  }
}

// The same GitRepository + Kustomization as deploy/flux/, managed by Azure:
// Flux applies deploy/overlays/production whenever the branch changes.
resource fluxConfiguration 'Microsoft.KubernetesConfiguration/fluxConfigurations@2025-04-01' = if (!empty(gitRepositoryUrl)) {
  name: fluxConfigurationName
  scope: cluster
  dependsOn: [
    flux
  ]
  properties: {
    scope: 'cluster'
    namespace: 'flux-system'
    sourceKind: 'GitRepository'
    suspend: false
    gitRepository: {
      url: gitRepositoryUrl
      repositoryRef: {
        branch: gitBranch
      }
      httpsUser: empty(gitHttpsToken) ? null : gitHttpsUser
      syncIntervalInSeconds: 60
      timeoutInSeconds: 180
    }
    configurationProtectedSettings: empty(gitHttpsToken) ? {} : {
      httpsKey: base64(gitHttpsToken)
    }
    kustomizations: {
      production: {
        path: './deploy/overlays/production'
        prune: true
        wait: true
        syncIntervalInSeconds: 300
        retryIntervalInSeconds: 60
        timeoutInSeconds: 600
      }
      // Kubernetes RBAC (evaluated beside Azure RBAC): CI may get the two Flux objects
      // `promote` checks before committing (targets/aks.py check_ready), nothing more.
      access: {
        path: './deploy/flux/ci-access'
        prune: true
        syncIntervalInSeconds: 600
        retryIntervalInSeconds: 60
        timeoutInSeconds: 120
        postBuild: {
          substitute: {
            CI_PRINCIPAL_ID: ciPrincipalId
          }
        }
      }
    }
  }
}

output name string = cluster.name
output oidcIssuerUrl string = cluster.properties.oidcIssuerProfile.issuerURL
output kubeletObjectId string = cluster.properties.identityProfile.kubeletidentity.objectId
