"""Where a release runs: the deployment targets behind `deploy`, `smoke-test`,
`promote` and `rollback`.

A target is chosen by name (staging, production) and configured by kind in
mlops.toml: `local` runs the scoring server as a process on this machine;
`container` runs the pushed image by digest on this machine's Docker engine;
`aci` (staging) and `aks` (production) are the Azure targets. Stages only use
the Target interface below, so there is no `if azure:` anywhere else.
"""
import dataclasses
import urllib.error
from pathlib import Path
from typing import Protocol

from ml_service import http_client


@dataclasses.dataclass(frozen=True)
class Release:
    """One deployable unit: a registered model version in one scoring image."""

    model_name: str
    model_version: str
    image: str            # <registry>/<repository>:<tag>
    image_digest: str     # sha256:... of the pushed image, or "" before a push
    context_digest: str   # sha256:... of the build context (score.py, env, model files)
    context_dir: Path     # the build context on this machine (used by the local target)


@dataclasses.dataclass(frozen=True)
class Deployment:
    """What a target reports it is running, asked from the target itself."""

    target: str
    model_version: str
    scoring_uri: str
    healthy: bool
    detail: str = ""
    image_digest: str = ""   # the digest a container target runs ("" for other kinds)


class Target(Protocol):
    name: str

    def deploy(self, release: Release) -> Deployment:
        """Make the target run `release`; raise MlopsError and leave the old release
        serving if the new one does not become healthy."""

    def status(self) -> Deployment | None:
        """Ask the target what it runs now; None if nothing is deployed."""

    def request_headers(self) -> dict:
        """Headers a scoring request needs (e.g. the endpoint key)."""

    def stop(self) -> None:
        """Remove the deployment (local: stop the process)."""

    def plan(self, release: Release) -> str:
        """What deploy(release) would do, for --dry-run; sends nothing."""


def http_status(url, timeout=5):
    """The HTTP status of GET `url`, or None when nothing answers (for health checks)."""
    try:
        with http_client.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def get_target(name, settings):
    """The Target configured for `name` (staging or production) in mlops.toml."""
    kind = settings.target(name).kind
    # Imported on use: the Azure SDKs take seconds to import and are optional locally.
    if kind == "aci":
        from ml_service.azure.aci import AciTarget
        return AciTarget(name, settings)
    if kind == "aks":
        from ml_service.azure.aks import AksTarget
        return AksTarget(name, settings)
    if kind == "container":
        from ml_service.targets.container import ContainerTarget
        return ContainerTarget(name, settings)
    from ml_service.targets.local import LocalTarget
    return LocalTarget(name, settings)
