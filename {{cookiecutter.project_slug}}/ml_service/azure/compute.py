"""The AmlCompute cluster the training steps run on: its spec, created when missing."""
from ml_service.azure.workspace import Scope, azure_errors
from ml_service.errors import MlopsError


def compute_spec(settings):
    """The AmlCompute cluster the steps run on: 0 nodes when idle."""
    from azure.ai.ml.entities import AmlCompute, IdentityConfiguration

    azure = settings.azure
    return AmlCompute(name=azure.compute_name, size=azure.compute_vm_size, min_instances=0,
                      max_instances=azure.compute_max_nodes, idle_time_before_scale_down=120,
                      tier="dedicated",
                      # Pulls environment images from a registry without an admin user.
                      identity=IdentityConfiguration(type="system_assigned"))


def ensure_compute(client, settings):
    """Use the configured cluster, creating it if it does not exist; return it."""
    from azure.core.exceptions import ResourceNotFoundError

    name = settings.azure.compute_name
    scope = Scope.of(settings)
    with azure_errors(f"look up the compute cluster {name}", scope):
        try:
            compute = client.compute.get(name)
        except ResourceNotFoundError:
            # (If the workspace itself is missing, creating the cluster says so.)
            compute = None
    if compute is not None:
        if str(getattr(compute, "type", "")).lower() != "amlcompute":
            raise MlopsError(f"The compute {name} exists but is a {compute.type}, not an "
                             "AmlCompute cluster.",
                             "Set [azure] compute_name to a compute cluster, or remove it.")
        return compute
    spec = compute_spec(settings)
    print(f"compute: creating the compute cluster {name} ({spec.size}, 0 to "
          f"{spec.max_instances} nodes); this takes a minute or two.")
    with azure_errors(f"create the compute cluster {name}", scope):
        compute = client.compute.begin_create_or_update(spec).result()
    print(f"compute: created {name}. Its identity needs AcrPull on the workspace's "
          "registry to pull environment images (environment_setup/main.bicep grants it to "
          "the cluster it creates).")
    return compute
