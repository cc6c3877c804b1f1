"""The release model: what is deployed, what a target says it runs, and what a target is.

A Release is one registered model version in one scoring image; a Deployment is a
target's own report of what it serves; Target is the interface every kind of
deployment target implements (targets/local.py, targets/container.py, targets/aci.py,
targets/aks.py).
Nothing here talks to MLflow or Azure: releasing/ reads Releases from the registry
and moves them between targets.
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
