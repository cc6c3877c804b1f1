"""The Azure side: the Azure ML workspace, the training pipeline job and the infrastructure.

    workspace.py      MLClient, the workspace's MLflow tracking URI, Azure errors in plain words
    pipeline_job.py   the training pipeline job (prep_data -> train -> evaluate -> register)
                      built from training/components/*.yml, its plan and definition file
    bindings.py       the offline check of every binding between the job's steps
    compute.py        the AmlCompute cluster the steps run on, created when missing
    job_runs.py       a submitted job followed to its end, and its results read back
    schedule.py       the retraining schedule: the same job on a cron trigger
    infra.py          environment_setup/main.bicep through `az deployment group what-if/create`

The Azure targets are in ml_service/targets/ (aci.py, aks.py), the Azure ML backend
in ml_service/backends/azureml.py. Azure packages are imported inside functions,
never at module level: importing azure.ai.ml alone takes about 7 s, which the
local path must not pay.
"""
