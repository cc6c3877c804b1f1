"""Releases: a registered model version together with its scoring image.

`build-image` records the image on the model version as tags; everything after
it (deploy, promote, rollback) reads a release back from those tags, so every
environment runs exactly what was built.
"""
from pathlib import Path

from mlflow.exceptions import MlflowException

from ml_service.errors import MlopsError
from ml_service.release import Release

IMAGE_TAG = "image"
IMAGE_DIGEST_TAG = "image_digest"
CONTEXT_DIGEST_TAG = "context_digest"
CONTEXT_DIR_TAG = "context_dir"


def context_dir(settings, version):
    return settings.project_root / "build" / "images" / f"{settings.model.name}-v{version}"


def model_version(client, settings, version):
    """The registered model version, or an error that says which versions exist."""
    try:
        return client.get_model_version(settings.model.name, str(version))
    except MlflowException:
        existing = sorted(int(mv.version) for mv in
                          client.search_model_versions(f"name='{settings.model.name}'"))
        raise MlopsError(
            f"Model {settings.model.name} has no version {version!r} "
            f"(registered versions: {', '.join(map(str, existing)) or 'none'}).",
            "Pass one of the registered versions, or run `python -m ml_service pipeline`.",
        ) from None


def release_for(client, settings, version):
    """The Release built for `version`; an error if build-image has not run for it."""
    tags = model_version(client, settings, version).tags
    if IMAGE_TAG not in tags:
        raise MlopsError(f"No scoring image was built for {settings.model.name} "
                         f"version {version}.",
                         f"Run `python -m ml_service build-image --model-version {version}`.")
    return Release(model_name=settings.model.name, model_version=str(version),
                   image=tags[IMAGE_TAG], image_digest=tags.get(IMAGE_DIGEST_TAG, ""),
                   context_digest=tags[CONTEXT_DIGEST_TAG],
                   context_dir=Path(tags.get(CONTEXT_DIR_TAG) or context_dir(settings, version)))
