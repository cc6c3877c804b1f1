"""What the CI tests share: a freshly generated project and its empty remote."""
import pytest

from tests.helpers.project import copy_project, push_to_new_remote


@pytest.fixture
def repository(tmp_path, migrated_database):
    """A freshly generated project pushed as the first commit of an empty remote."""
    source = copy_project(tmp_path / "source", migrated_database)
    return source, push_to_new_remote(source, tmp_path / "remote.git")
