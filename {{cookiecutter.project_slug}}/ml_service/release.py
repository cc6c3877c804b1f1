"""The release model: what is deployed, what a target says it runs, and what a target is.

A Release is one registered model version in one scoring image; a Deployment is a
target's own report of what it serves; Target is the interface every kind of
deployment target implements (targets/local.py, targets/container.py, targets/aci.py,
targets/aks.py,
targets/edge.py).
Nothing here talks to MLflow or Azure: releasing/ reads Releases from the registry
and moves them between targets. Every target takes its scoring key from the deploying
environment the same way (`scoring_key`).
"""
import dataclasses
import urllib.error
from pathlib import Path
from typing import Protocol

from ml_service import http_client
from ml_service.errors import MlopsError

# What scoring/score.py reads: the key itself, or the path of a file holding it.
SERVER_KEY_VARIABLES = ("SCORING_KEY", "SCORING_KEY_FILE")
MIN_KEY_LENGTH = 16  # scoring/score.py refuses shorter keys


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
        """Headers a scoring request needs: `key_headers(scoring_key(...))`."""

    def check_ready(self) -> None:
        """Raise MlopsError if a desired-state commit could not reach the target (e.g. no
        Flux following this repository); called before anything is committed."""

    def stop(self) -> None:
        """Remove the deployment (local: stop the process)."""

    def plan(self, release: Release) -> str:
        """What deploy(release) would do, for --dry-run; sends nothing."""


def pinned_image(release):
    """`repository@sha256:...` when the image was pushed, else `repository:tag`."""
    if not release.image_digest:
        return release.image
    repository = release.image.rpartition(":")[0] if ":" in release.image.rsplit("/", 1)[-1] \
        else release.image
    return f"{repository}@{release.image_digest}"


def http_status(url, timeout=5):
    """The HTTP status of GET `url`, or None when nothing answers (for health checks)."""
    try:
        with http_client.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def key_variable(target_name):
    """The deploying environment's variable (a CI secret) holding a target's scoring key."""
    return f"{target_name.upper()}_SCORING_KEY"


def scoring_key(target_name, environ, required=False):
    """The target's scoring key from `environ`, or None: the server then answers anyone.

    Only the target's own variable counts (STAGING_SCORING_KEY, PRODUCTION_SCORING_KEY),
    never a SCORING_KEY of the caller's shell, so one target's key cannot reach another.
    `required`: the target is a public endpoint, so an unset key is an error too.
    """
    variable = key_variable(target_name)
    key = environ.get(variable, "")
    if not key and not required:
        return None
    if key == f"$({variable})":
        # Azure Pipelines passes `$(NAME)` on as it is when no variable NAME exists.
        problem = "is not defined (the pipeline passed its own reference, unexpanded)"
    elif len(key) < MIN_KEY_LENGTH or not (key.isascii() and key.isprintable()) or " " in key:
        problem = ("is not set" if not key else
                   f"is unusable ({len(key)} characters; at least {MIN_KEY_LENGTH} printable "
                   "ASCII characters without spaces are needed)")
    else:
        return key
    raise MlopsError(
        f"The {target_name} endpoint needs a scoring key: {variable} {problem}.",
        "Create one with `openssl rand -hex 32` and keep it as a secret (CI: the "
        f"{target_name} environment's secret, or the CD pipeline's secret variable, "
        f"{variable}; see docs/ci-cd.md). Deploy gives it to the server, smoke-test sends it.")


def key_headers(key):
    """The headers of a scoring request to a server with `key` (none for an open one)."""
    return {"Authorization": f"Bearer {key}"} if key else {}
