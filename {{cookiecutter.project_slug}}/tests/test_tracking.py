"""Faults of the local MLflow store: each is one clear error naming the store, and a
missing store is never silently recreated while git deploys versions from it."""
import os

import pytest

from ml_service import desired_state, tracking
from ml_service.errors import MlopsError


def store(settings):
    return settings.project_root / "mlruns" / "mlflow.db"


def test_missing_store_is_not_recreated_while_git_deploys_its_versions(settings):
    state = desired_state.read(settings, "production")
    desired_state.write(settings, "production", desired_state.DesiredState(
        "9", state.image, state.image_digest))
    store(settings).unlink()
    with pytest.raises(MlopsError, match=rf"store {store(settings)} does not exist.*"
                                         r"production: version 9.*Restore"):
        tracking.connect(settings)
    assert not store(settings).exists()


def test_missing_store_is_created_when_nothing_is_deployed(settings):
    store(settings).unlink()
    tracking.connect(settings)
    assert store(settings).exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_read_only_store_is_refused(settings):
    store(settings).chmod(0o444)
    with pytest.raises(MlopsError, match=rf"store {store(settings)} is read-only.*chmod u\+w"):
        tracking.connect(settings)


def test_corrupt_store_is_one_clear_error(settings):
    store(settings).write_bytes(b"not a database" * 100)
    with pytest.raises(MlopsError, match=rf"Cannot use the MLflow tracking store at "
                                         rf"sqlite:///{store(settings)}.*file is not a database"):
        tracking.connect(settings)
