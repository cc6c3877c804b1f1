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
import hashlib
import json
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
    context_digest: str = ""  # the build context a local process target started from


def context_files(folder):
    """{relative path: sha256 hex} of every file in a build context."""
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(p for p in Path(folder).rglob("*") if p.is_file())}


def context_digest(folder, files=None):
    """sha256 over every file's relative path and content, in a fixed order (paths
    compared part by part, as digests recorded by earlier versions were)."""
    digest = hashlib.sha256()
    for name, content in sorted((files or context_files(folder)).items(),
                                key=lambda item: item[0].split("/")):
        digest.update(name.encode() + b"\0")
        digest.update(bytes.fromhex(content))
    return "sha256:" + digest.hexdigest()


def manifest_path(folder):
    """Where build-image lists the context's files beside it (outside, so the list is not
    part of the digest): what names the changed files when the digest no longer matches."""
    folder = Path(folder)
    return folder.with_name(folder.name + ".files.json")


def verify_context(release):
    """Refuse to serve a build context that is not the one build-image recorded (and
    staging smoke-tested): a file changed, added or removed since."""
    folder = release.context_dir
    files = context_files(folder)
    actual = context_digest(folder, files)
    if not release.context_digest or actual == release.context_digest:
        return
    try:
        recorded = json.loads(manifest_path(folder).read_text())
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict):
        changed = sorted(name for name in files.keys() | recorded.keys()
                         if files.get(name) != recorded.get(name))
        what = "changed since build-image: " + ", ".join(changed[:10]) + (
            f" and {len(changed) - 10} more" if len(changed) > 10 else "")
    else:
        what = f"its digest is {actual}"
    raise MlopsError(
        f"The build context of {release.model_name} version {release.model_version} "
        f"({folder}) is not the one build-image recorded ({release.context_digest}): "
        f"{what}. Nothing was started.",
        f"Rebuild it from the registry and scoring/: `python -m ml_service build-image "
        f"--model-version {release.model_version}`, then deploy and smoke-test it on "
        "staging again before promoting.")


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
