import os

import pytest

from ml_service.backends.local import LocalBackend
from ml_service.config import load_settings
from ml_service.errors import MlopsError
from ml_service.releasing.image import build_image


@pytest.fixture
def docker_that_cannot_pull(tmp_path, monkeypatch):
    """A `docker` on PATH whose engine answers but can neither find nor pull the base
    image, as on a machine with Docker and no registry access; it logs every call."""
    calls = tmp_path / "docker-calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
case "$1" in
  info) exit 0 ;;
  image) echo "Error: No such image: $3" >&2; exit 1 ;;
  pull) echo 'Error response from daemon: lookup registry-1.docker.io: no such host' >&2
        exit 1 ;;
  *) exit 99 ;;
esac
""")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return calls


def registered_version(settings):
    backend = LocalBackend(settings)
    backend.train()
    backend.evaluate()
    return backend.register()


def test_build_image_prepares_the_context_and_says_why_when_docker_cannot_build(
        project, capsys, docker_that_cannot_pull):
    settings = load_settings(project / "mlops.toml", environ={"MLOPS_IMAGE_BUILD": "always"})
    version = registered_version(settings)
    release = build_image(settings, version)
    out = capsys.readouterr().out
    assert "the image was not built" in out
    assert "cannot be pulled (Error response from daemon: lookup registry-1.docker.io" in out
    assert (release.context_dir / "Dockerfile").is_file()
    commands = [line.split()[0] for line in docker_that_cannot_pull.read_text().splitlines()]
    assert "build" not in commands
    with pytest.raises(MlopsError, match="--push needs an image built here, but the base"):
        build_image(settings, version, push=True)


def test_partial_model_download_is_refused_and_the_built_context_kept(settings):
    backend = LocalBackend(settings)
    version = backend.train_gate_register()
    release = build_image(settings, version)
    served = {path: path.read_bytes() for path in release.context_dir.rglob("*")
              if path.is_file()}
    # The registry's copy of the model file is damaged (e.g. an interrupted upload).
    model_file, = (settings.project_root / "mlruns").rglob("model.skops")
    model_file.write_bytes(b"")
    with pytest.raises(MlopsError, match=r"incomplete \(the model file model.skops is missing "
                                         r"or empty\).*left as it was"):
        build_image(settings, version)
    assert {path: path.read_bytes() for path in release.context_dir.rglob("*")
            if path.is_file()} == served


def test_context_only_never_calls_docker(settings, capsys, docker_that_cannot_pull):
    release = build_image(settings, registered_version(settings))
    assert '[image] build is "context-only"' in capsys.readouterr().out
    assert (release.context_dir / "Dockerfile").is_file()
    assert release.image_digest == ""
    assert not docker_that_cannot_pull.exists()


def test_auto_builds_no_image_for_local_processes_and_says_how_to(
        project, capsys, docker_that_cannot_pull):
    # Both targets are local processes by default: they serve the build context.
    settings = load_settings(project / "mlops.toml", environ={"MLOPS_IMAGE_BUILD": "auto"})
    release = build_image(settings, registered_version(settings))
    out = capsys.readouterr().out
    assert "the image was not built: staging and production run as local processes" in out
    assert 'MLOPS_IMAGE_BUILD=always' in out
    assert (release.context_dir / "Dockerfile").is_file()
    assert not docker_that_cannot_pull.exists()  # docker was never asked
    # A target that runs images needs one: then auto tries to build it.
    settings = load_settings(project / "mlops.toml", environ={
        "MLOPS_IMAGE_BUILD": "auto", "MLOPS_PRODUCTION_KIND": "container"})
    build_image(settings, release.model_version)
    assert "cannot be pulled" in capsys.readouterr().out
    assert docker_that_cannot_pull.exists()
