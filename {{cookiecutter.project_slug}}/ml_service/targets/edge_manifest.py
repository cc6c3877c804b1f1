"""The IoT Edge deployment manifest of the edge target: rendered, checked and read back.

deploy/edge/deployment.json is the edge target's desired state (desired_state.py reads
and writes it through this module): the manifest `az iot edge set-modules` applies to
the device, committed so that git records what the device should run, as the kustomize
overlays do for staging and production.

No secret is ever in it: the registry credentials and the scoring key are references
("$ACR_USERNAME", ...) that `filled` replaces from the environment only in the copy
sent to IoT Hub (targets/edge.py). The manifest is checked against the official JSON
schemas vendored in deploy/edge/schemas/ (when jsonschema is installed; it comes with
requirements-azure.txt) and against the rules the schemas cannot express: createOptions
is a JSON *string*, at most 4 KB per chunk (createOptions, createOptions01, ...).
"""
import json
from pathlib import Path

from ml_service.config import EDGE_TARGET
from ml_service.errors import MlopsError
from ml_service.release import Release, key_variable, pinned_image

MANIFEST = Path("deploy") / "edge" / "deployment.json"
SCHEMA_DIR = Path("deploy") / "edge" / "schemas"
# (schema file, the part of the manifest it validates: None for the whole manifest)
SCHEMAS = (("azure-iot-edge-deployment-2.0.json", None),
           ("azure-iot-edgeagent-deployment-1.1.json", "$edgeAgent"),
           ("azure-iot-edgehub-deployment-1.2.json", "$edgeHub"))
AGENT_SCHEMA_VERSION = "1.1"
HUB_SCHEMA_VERSION = "1.2"
RUNTIME_IMAGES = {"edgeAgent": "mcr.microsoft.com/azureiotedge-agent:1.5",
                  "edgeHub": "mcr.microsoft.com/azureiotedge-hub:1.5"}
CONTAINER_PORT = 5001  # scoring/Dockerfile: EXPOSE 5001
# The device pulls from the registry with these (an ACR token or a service principal
# with AcrPull: IoT Edge cannot pull with a managed identity); read at apply time only.
REGISTRY_USERNAME = "ACR_USERNAME"
REGISTRY_PASSWORD = "ACR_PASSWORD"  # pragma: allowlist secret
# A module twin's string values are limited to 4 KB: edgeAgent joins createOptions,
# createOptions01, ... createOptions07 back into one JSON text.
CREATE_OPTIONS_CHUNK = 4096
CREATE_OPTIONS_MAX_CHUNKS = 8
STORE_AND_FORWARD_SECONDS = 7200
# Environment variables the pipeline sets; [edge] env may add others, not change these.
RELEASE_VARIABLES = ("MODEL_NAME", "MODEL_VERSION", "MODEL_IMAGE", "IMAGE_DIGEST",
                     "SCORING_KEY")


def reference(variable):
    """How the manifest names a value that is filled in only at apply time."""
    return f"${variable}"


def references():
    """The variables `filled` takes from the environment, in the order it asks for them."""
    return (REGISTRY_USERNAME, REGISTRY_PASSWORD, key_variable(EDGE_TARGET))


def manifest_path(settings):
    return settings.project_root / MANIFEST


def create_options(options):
    """The createOptions settings of `options` (Docker's container create body): a JSON
    string, split into 4 KB chunks named createOptions, createOptions01, ..."""
    text = json.dumps(options, separators=(",", ":"), sort_keys=True)  # ASCII: chars = bytes
    chunks = [text[start:start + CREATE_OPTIONS_CHUNK]
              for start in range(0, len(text), CREATE_OPTIONS_CHUNK)]
    if len(chunks) > CREATE_OPTIONS_MAX_CHUNKS:
        raise MlopsError(f"The module's createOptions are {len(text)} bytes; IoT Edge takes "
                         f"at most {CREATE_OPTIONS_MAX_CHUNKS} chunks of "
                         f"{CREATE_OPTIONS_CHUNK} bytes.",
                         "Move settings out of createOptions (e.g. [edge] env).")
    return {("createOptions" if index == 0 else f"createOptions{index:02d}"): chunk
            for index, chunk in enumerate(chunks)}


def joined_create_options(module_settings):
    """The createOptions of a module's settings as one parsed object (chunks joined)."""
    names = sorted(name for name in module_settings if name.lower().startswith("createoptions"))
    text = "".join(module_settings[name] for name in names)
    return json.loads(text) if text else {}


def _image_reference(model_version, image, image_digest):
    if image_digest:
        return pinned_image(Release("", model_version, image, image_digest, "", Path()))
    if image.startswith("<"):  # a dry run's placeholder for a registry it cannot read
        return image
    raise MlopsError(
        f"Version {model_version} has no pushed image digest ({image} was built but not "
        "pushed): an IoT Edge device pulls its image from the registry, by digest.",
        f"Push it: `python -m ml_service build-image --model-version {model_version} "
        "--push` (to [image] registry, which the device must reach), then deploy again.")


def _module_env(settings, model_version, image, image_digest):
    extra = settings.edge.env
    clashes = sorted(set(extra) & set(RELEASE_VARIABLES))
    if clashes:
        raise MlopsError(f"[edge] env sets {', '.join(clashes)}, which deploy sets itself.",
                         "Remove them from [edge] env in mlops.toml.")
    variables = {
        "WORKER_COUNT": str(settings.serving.workers),
        "SCORING_MAX_BATCH_SIZE": str(settings.serving.max_batch_size),
        **extra,
        "MODEL_NAME": settings.model.name,
        "MODEL_VERSION": model_version,
        # The tag reference, so the manifest alone says which build the digest is.
        "MODEL_IMAGE": image,
        "IMAGE_DIGEST": image_digest or "none",
        "SCORING_KEY": reference(key_variable(EDGE_TARGET)),
    }
    return {name: {"value": value} for name, value in variables.items()}


def render(settings, model_version, image, image_digest):
    """The deployment manifest that runs `image` (by `image_digest`) on the device."""
    options = settings.edge
    reference_of_image = _image_reference(model_version, image, image_digest)
    # A dry run's placeholder names no registry: the one build-image pushes to, then.
    registry = settings.image.registry if image.startswith("<") else image.split("/", 1)[0]
    port = f"{CONTAINER_PORT}/tcp"
    scoring_options = {
        "ExposedPorts": {port: {}},
        # No "Healthcheck": the image's HEALTHCHECK (scoring/Dockerfile) stays in force,
        # which restartPolicy on-unhealthy acts on.
        "HostConfig": {"PortBindings": {port: [{"HostPort": str(options.port)}]},
                       "LogConfig": {"Type": "json-file",
                                     "Config": {"max-size": "10m", "max-file": "3"}}},
        "Labels": {"model_name": settings.model.name, "model_version": model_version},
    }
    hub_ports = {f"{number}/tcp": [{"HostPort": str(number)}] for number in (5671, 8883, 443)}
    agent = {
        "schemaVersion": AGENT_SCHEMA_VERSION,
        "runtime": {"type": "docker", "settings": {"registryCredentials": {
            # The name is only a key (no dots allowed); the address is what counts.
            "modelregistry": {"address": registry,
                              "username": reference(REGISTRY_USERNAME),
                              "password": reference(REGISTRY_PASSWORD)}}}},
        "systemModules": {
            "edgeAgent": {"type": "docker", "settings": {
                "image": RUNTIME_IMAGES["edgeAgent"], **create_options({})}},
            "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                        "settings": {"image": RUNTIME_IMAGES["edgeHub"], **create_options(
                            {"HostConfig": {"PortBindings": hub_ports}})}},
        },
        "modules": {options.module_name: {
            "version": model_version,
            "type": "docker",
            "status": "running",
            "restartPolicy": options.restart_policy,
            "imagePullPolicy": "on-create",
            "settings": {"image": reference_of_image,
                         **create_options(scoring_options)},
            "env": _module_env(settings, model_version, image, image_digest),
        }},
    }
    hub = {
        "schemaVersion": HUB_SCHEMA_VERSION,
        "routes": {f"{options.module_name}ToUpstream":
                   f"FROM /messages/modules/{options.module_name}/outputs/* INTO $upstream"},
        "storeAndForwardConfiguration": {"timeToLiveSecs": STORE_AND_FORWARD_SECONDS},
    }
    return {"modulesContent": {"$edgeAgent": {"properties.desired": agent},
                               "$edgeHub": {"properties.desired": hub}}}


def _modules(manifest):
    agent = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    return {**agent["systemModules"], **agent["modules"]}


def _check_create_options(manifest):
    """What the schemas leave out: createOptions chunks are JSON strings of <= 4 KB."""
    for name, module in _modules(manifest).items():
        module_settings = module.get("settings", {})
        for key, value in module_settings.items():
            if key.lower().startswith("createoptions") and (
                    not isinstance(value, str) or len(value.encode()) > CREATE_OPTIONS_CHUNK):
                raise MlopsError(f"Module {name}: {key} must be a JSON string of at most "
                                 f"{CREATE_OPTIONS_CHUNK} bytes.",
                                 "Render the manifest with ml_service (create_options).")
        try:
            joined_create_options(module_settings)
        except ValueError as error:
            raise MlopsError(f"Module {name}: its createOptions are not JSON ({error}).",
                             "Render the manifest with ml_service (create_options).") from None


def validate(settings, manifest, require_schema=False):
    """Check `manifest` against the vendored schemas and the createOptions rule; return
    whether the schemas were checked (False: jsonschema is not installed, which
    `require_schema` turns into an error)."""
    _check_create_options(manifest)
    try:
        import jsonschema
    except ImportError:
        if require_schema:
            raise MlopsError("The IoT Edge manifest cannot be validated: the Python package "
                             "jsonschema is not installed.",
                             "Install the Azure dependencies: `pip install -r "
                             "requirements-azure.txt` (jsonschema comes with them).") from None
        return False
    problems = []
    for file_name, part in SCHEMAS:
        schema = json.loads((settings.project_root / SCHEMA_DIR / file_name).read_text())
        document = manifest if part is None else {part: manifest["modulesContent"][part]}
        for error in jsonschema.Draft4Validator(schema).iter_errors(document):
            where = "/".join(map(str, error.absolute_path)) or "(top)"
            problems.append(f"{where}: {error.message} ({file_name})")
    if problems:
        raise MlopsError("The IoT Edge deployment manifest does not match its schema: "
                         + "; ".join(problems[:5]) + ".",
                         "Fix the [edge] settings in mlops.toml (or the renderer in "
                         "ml_service/targets/edge_manifest.py).")
    return True


def text(manifest):
    return json.dumps(manifest, indent=2) + "\n"


def write(settings, model_version, image, image_digest):
    """Render, validate and write deploy/edge/deployment.json; return its path."""
    manifest = render(settings, model_version, image, image_digest)
    validate(settings, manifest)
    path = manifest_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text(manifest))
    return path


def read(settings):
    """The committed (or edited) manifest, or None before the first edge deployment."""
    path = manifest_path(settings)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise MlopsError(f"{path} is not valid JSON ({error}).",
                         "Restore it from git (`git checkout -- deploy/edge`) or deploy "
                         "again with --model-version.") from None


def scoring_module(settings, manifest):
    """The scoring module's entry in `manifest`."""
    modules = manifest.get("modulesContent", {}).get("$edgeAgent", {}).get(
        "properties.desired", {}).get("modules", {})
    if settings.edge.module_name not in modules:
        raise MlopsError(f"{manifest_path(settings)} has no module "
                         f"{settings.edge.module_name!r} ([edge] module_name).",
                         "Deploy again with --model-version N to rewrite the manifest.")
    return modules[settings.edge.module_name]


def deployed(settings, manifest):
    """(model version, image repository:tag, image digest) that `manifest` runs."""
    env = {name: entry["value"] for name, entry in
           scoring_module(settings, manifest).get("env", {}).items()}
    digest = env.get("IMAGE_DIGEST", "none")
    return env.get("MODEL_VERSION", "unknown"), env.get("MODEL_IMAGE", ""), \
        "" if digest == "none" else digest


def filled(manifest, environ):
    """A copy of `manifest` with every reference replaced by its environment value, and
    the values used (to mask them in anything shown); an error names what is unset."""
    values = {name: environ.get(name, "") for name in references()}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise MlopsError(f"Applying the IoT Edge manifest needs {', '.join(missing)} in the "
                         "environment (the manifest only references them).",
                         f"Set {REGISTRY_USERNAME}/{REGISTRY_PASSWORD} to an ACR token or "
                         "service principal with pull rights and "
                         f"{key_variable(EDGE_TARGET)} to the module's scoring key (CI "
                         "secrets; docs/edge.md).")
    by_reference = {reference(name): value for name, value in values.items()}

    def fill(node):
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value) for value in node]
        if isinstance(node, str):
            return by_reference.get(node, node)
        return node

    return fill(manifest), list(values.values())
