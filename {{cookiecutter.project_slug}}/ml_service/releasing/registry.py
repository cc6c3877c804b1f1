"""Releases: a registered model version together with its scoring image, and its history.

`build-image` records the image on the model version as tags; everything after
it (deploy, promote, rollback) reads a release back from those tags, so every
environment runs exactly what was built.

What each environment runs is git's desired state (ml_service/desired_state.py);
the registry holds only history, as version tags (image, smoke results, the
previous production version), which every MLflow registry supports. Aliases may
mirror the desired state where the registry has them (`mirror_alias`), but nothing
reads them: Azure ML's MLflow registry has no aliases and no tag-filtered searches.
"""
import logging
from pathlib import Path

from mlflow.exceptions import MlflowException

from ml_service.errors import MlopsError
from ml_service.release import Release

log = logging.getLogger(__name__)

IMAGE_TAG = "image"
IMAGE_DIGEST_TAG = "image_digest"
CONTEXT_DIGEST_TAG = "context_digest"
CONTEXT_DIR_TAG = "context_dir"
# On a promoted version: the version production ran before it (what rollback returns to).
PREVIOUS_PRODUCTION_TAG = "previous_production"
# How a registry says it has no such API or feature (Azure ML's answer to alias calls).
UNSUPPORTED_ERROR_CODES = {"ENDPOINT_NOT_FOUND", "FEATURE_DISABLED", "NOT_IMPLEMENTED"}


def smoke_tag(target_name):
    """The version tag holding the smoke test result on `target_name` (passed/failed)."""
    return f"smoke_test.{target_name}"


def same_version(first, second):
    """Model versions compared as versions: "9" and 9 are the same version (text that
    is not a number, such as a dry run's placeholder, is compared as text)."""
    first, second = str(first).strip(), str(second).strip()
    if first.isdigit() and second.isdigit():
        return int(first) == int(second)
    return first == second


def mirror_alias(client, settings, target_name, version):
    """Point the alias `target_name` at `version` where the registry has aliases.

    A convenience for people browsing the registry, never the record, and called after the
    deploy succeeded: any refusal is logged and the deploy goes on. Azure ML documents no
    alias support, and mlflow turns the refusals into many codes (a non-JSON 404 into
    ENDPOINT_NOT_FOUND, a JSON body without error_code into INTERNAL_ERROR, ...).
    """
    try:
        client.set_registered_model_alias(settings.model.name, target_name, str(version))
    except MlflowException as error:
        expected = error.error_code in UNSUPPORTED_ERROR_CODES \
            or "not supported" in error.message.lower()
        log.log(logging.DEBUG if expected else logging.WARNING,
                "The registry did not take the model alias %r (%s: %s); %s runs version %s "
                "per its git desired state.", target_name, error.error_code,
                error.message[:300], target_name, version)


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
