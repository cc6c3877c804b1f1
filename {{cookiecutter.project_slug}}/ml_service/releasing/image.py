"""The scoring image of a model version: its build context, digest, build and push.

The context (score.py, its environment, the Dockerfile and the model files from
the registry) gets a content digest, so the same model version and code always
give the same context. Where Docker can build (an engine answers and the base
image is present or pullable) and [image] build asks for it ("always"; "auto" when
the image is pushed or a target runs images), the image is built (and pushed with
--push, recording the registry digest); otherwise the reason and the exact build
command are printed. The image reference
and digests are recorded on the model version for deploy, promote and rollback.
"""
import json
import shutil
import subprocess

import mlflow
import yaml

from ml_service import report, tracking
from ml_service.config import TARGET_NAMES
from ml_service.errors import MlopsError
from ml_service.release import context_digest, context_files, manifest_path
from ml_service.releasing import registry

SCORING_FILES = ("score.py", "entry_script.py", "server_log.py", "worker.py", "gunicorn.conf.py",
                 "requirements.txt", "conda.yml", "Dockerfile")


def model_problem(model_dir):
    """What makes the MLflow model in `model_dir` unusable (None if nothing): no or an
    empty MLmodel, or a missing or empty model file (a partial download)."""
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file() or mlmodel.stat().st_size == 0:
        return f"no MLmodel file in {model_dir}" if not mlmodel.is_file() else "MLmodel is empty"
    try:
        model_path = yaml.safe_load(mlmodel.read_text())["flavors"]["python_function"][
            "model_path"]
    except (yaml.YAMLError, KeyError, TypeError):
        return "MLmodel names no python_function model_path"
    model_file = model_dir / model_path
    files = [model_file] if model_file.is_file() else list(model_file.rglob("*"))
    if not any(path.is_file() and path.stat().st_size > 0 for path in files):
        return f"the model file {model_path} is missing or empty"
    return None


def _swap_in(assembly, folder):
    """Replace `folder` with the complete `assembly`. A running server has loaded its
    files already; only the moment between the two renames has no `folder`."""
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    assembly.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def base_image(dockerfile):
    """The image the Dockerfile builds FROM (its first FROM line, with the defaults of
    the ARGs declared before it filled in, e.g. FROM ${BASE_IMAGE})."""
    defaults = {}
    for line in dockerfile.read_text().splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "ARG" and "=" in rest:
            name, _, value = rest.strip().partition("=")
            defaults[name] = value.strip('"')
        elif keyword.upper() == "FROM":
            base = rest.split()[0]
            for name, value in defaults.items():
                base = base.replace("${" + name + "}", value).replace("$" + name, value)
            return base
    raise MlopsError(f"{dockerfile} has no FROM line.", "Restore it from the template.")


def build_blocker(settings, dockerfile, push=False):
    """Why no image is built here (None if one is): the settings may ask for the context
    only, or ("auto") for an image only when it is pushed or a target runs one (local
    process targets serve the build context: a 700 MB image nobody runs is minutes of
    waiting); a Docker client alone is not enough, the engine must answer and the base
    image must be present or pullable."""
    if settings.image.build == "context-only":
        return ('[image] build is "context-only" (set it to "auto" or "always", or '
                'MLOPS_IMAGE_BUILD=always, to build)')
    if settings.image.build == "auto" and not push and all(
            settings.target_settings(name).kind == "local" for name in TARGET_NAMES):
        return ("staging and production run as local processes, which serve the build "
                'context (to build the image anyway: [image] build = "always" in '
                "mlops.toml or MLOPS_IMAGE_BUILD=always)")
    if not shutil.which("docker"):
        return "no docker command is installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return "no Docker engine answers (`docker info` failed)"
    base = base_image(dockerfile)
    for command in (["image", "inspect", base], ["pull", "--quiet", base]):
        attempt = subprocess.run(["docker", *command], capture_output=True, text=True,
                                 check=False)
        if attempt.returncode == 0:
            return None
    reason = (attempt.stderr.strip().splitlines() or ["no reason given"])[-1]
    return f"the base image {base} is not on this machine and cannot be pulled ({reason})"


def _docker(*args):
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise MlopsError(f"`docker {' '.join(args)}` failed: {result.stderr.strip()[-800:]}",
                         "Fix the error above; for a push, log in first with "
                         "`az acr login --name <registry>`.")
    return result.stdout


def pushed_digest(image):
    """The registry digest (sha256:...) of `image` after a push: the one of its
    repository among the image's RepoDigests (an image can be in several registries)."""
    repository = image.rpartition(":")[0]
    repo_digests = json.loads(_docker("image", "inspect", image))[0]["RepoDigests"]
    for reference in repo_digests:
        name, _, digest = reference.partition("@")
        if name == repository:
            return digest
    raise MlopsError(f"Docker reports no registry digest of {repository} after the push "
                     f"(it knows {', '.join(repo_digests) or 'none'}).",
                     "Push again; check that the registry answers.")


def build_image(settings, version, push=False):
    """Assemble (and with Docker build, with `push` push) the image; return its Release."""
    client, _ = tracking.connect(settings)
    mv = registry.model_version(client, settings, version)
    folder = registry.context_dir(settings, version)
    # Assembled beside the context a server may run from, and swapped in only when whole.
    assembly = folder.with_name(folder.name + ".partial")
    shutil.rmtree(assembly, ignore_errors=True)
    assembly.mkdir(parents=True)
    for name in SCORING_FILES:
        shutil.copy2(settings.project_root / "scoring" / name, assembly / name)
    mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{settings.model.name}/{version}",
                                        dst_path=str(assembly / "model"))
    problem = model_problem(assembly / "model")
    if problem:
        raise MlopsError(f"The model files of {settings.model.name} version {version} are "
                         f"incomplete ({problem}); {folder} was left as it was.",
                         "Check the version's artifacts in the registry (`make ui`); register "
                         "the model again if they are damaged, then run build-image again.")
    files = context_files(assembly)
    digest = context_digest(assembly, files)
    manifest_path(folder).write_text(json.dumps(files, indent=1) + "\n")
    _swap_in(assembly, folder)
    commit = mv.tags.get("git_commit", "unknown")
    tag = f"{version}-{commit[:7] if commit != 'unknown' else 'local'}"
    image = f"{settings.image.registry}/{settings.model.name.lower()}:{tag}"
    build_command = f"docker build --tag {image} {folder}"
    image_digest = ""
    blocker = build_blocker(settings, folder / "Dockerfile", push)
    if blocker is None:
        print(f"build-image: building {image} (a first build downloads the dependencies: "
              "minutes)", flush=True)
        _docker("build", "--tag", image, str(folder))
        if push:
            _docker("push", image)
            image_digest = pushed_digest(image)
        message = f"built {image}" + (f" and pushed it ({image_digest})" if push else "")
    elif push:
        raise MlopsError(f"--push needs an image built here, but {blocker}.",
                         f"Run on a machine where Docker can build, or build there with: "
                         f"{build_command}")
    else:
        message = (f"the image was not built: {blocker}. Context {folder} "
                   f"({digest}); build it with: {build_command}")
    for key, value in {registry.IMAGE_TAG: image, registry.CONTEXT_DIGEST_TAG: digest,
                       registry.CONTEXT_DIR_TAG: str(folder),
                       registry.IMAGE_DIGEST_TAG: image_digest}.items():
        client.set_model_version_tag(settings.model.name, str(version), key, value)
    report.publish("build-image", message, {"image": image, "image_digest": image_digest,
                                            "context_digest": digest})
    return registry.release_for(client, settings, version)
