"""The Azure side: the Azure ML workspace, its training pipeline, and the ACI and AKS targets.

    workspace.py      MLClient, the workspace's MLflow tracking URI, Azure errors in plain words
    pipeline_job.py   the training pipeline job (prep_data -> train -> evaluate -> register)
                      built from training/components/*.yml, and its retraining schedule
    aci.py            AciTarget: staging on Azure Container Instances
    aks.py            AksTarget: production on AKS, by kubectl apply (push) or by Flux (gitops)
    infra.py          environment_setup/main.bicep through `az deployment group what-if/create`

Azure packages are imported inside functions, never at module level: importing
azure.ai.ml alone takes about 7 s, which the local path must not pay.
"""
