"""Where a release runs: one module per kind of deployment target.

A target is chosen by name (staging, production) and configured by kind in
mlops.toml: `local` (local.py) runs the scoring server as a process on this
machine; `container` (container.py) runs the pushed image by digest on this
machine's Docker engine; `aci` (aci.py, staging) and `aks` (aks.py, production)
are the Azure targets; `edge` (edge.py) is an Azure IoT Edge device, deployed
explicitly and never promoted to. Each implements the Target interface of ml_service/release.py, and
nothing above this package asks which kind it has.
"""
from ml_service.config import TARGET_NAMES


def get_target(name, settings):
    """The Target configured for `name` (staging, production or edge) in mlops.toml."""
    kind = settings.target_settings(name).kind
    # Imported on use: a command loads only the kind of target it talks to.
    if kind == "aci":
        from ml_service.targets.aci import AciTarget
        return AciTarget(name, settings)
    if kind == "aks":
        from ml_service.targets.aks import AksTarget
        return AksTarget(name, settings)
    if kind == "edge":
        from ml_service.targets.edge import EdgeTarget
        return EdgeTarget(name, settings)
    if kind == "container":
        from ml_service.targets.container import ContainerTarget
        return ContainerTarget(name, settings)
    from ml_service.targets.local import LocalTarget
    return LocalTarget(name, settings)


def stop(settings, target_name="all"):
    """Stop the deployment of one target, or of all staging and production (local: the
    server processes); an edge device is stopped only when named. Each under the
    target's release lock: a stop during a promote would be undone by its rollback."""
    from ml_service.releasing.lock import environment_lock

    for name in TARGET_NAMES if target_name == "all" else [target_name]:
        with environment_lock(settings, name, "stop"):
            get_target(name, settings).stop()
        print(f"stop: {name} stopped")
