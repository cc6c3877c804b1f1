// Container registry for the scoring images (and the Azure ML environment
// images). No admin user: every client signs in with its Entra identity.

@description('Azure region.')
param location string

@description('Tags of every resource.')
param tags object

@description('Registry name: 5-50 letters and digits, globally unique.')
param registryName string

@description('Registry tier.')
@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param sku string

resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' = {
  name: registryName
  location: location
  tags: tags
  sku: {
    name: sku
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

output id string = registry.id
output name string = registry.name
output loginServer string = registry.properties.loginServer
