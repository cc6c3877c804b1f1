"""The IoT Edge target: the scoring module on one Azure IoT Edge device (kind = "edge").

`deploy --target edge --model-version N` writes and commits deploy/edge/deployment.json
(edge_manifest.py: the scoring image by the digest staging and production use, its port
binding, environment and restart policy), then `deploy` here applies that committed
manifest with `az iot edge set-modules` (Azure CLI extension azure-iot, signed in with
`az login`; `--auth-type login` needs only the IoT Hub Data Contributor role). The
device's edgeAgent pulls the image and starts the module whenever the device is online;
IoT Hub accepting the manifest is all deploy can see, so `smoke-test --target edge`
(at [edge] scoring_uri) is the check that the device runs the version.

Secrets reach only IoT Hub: the registry credentials and the scoring key are filled from
the environment into a private temporary copy of the manifest, removed after the call,
and az's output (which echoes the applied configuration) is discarded.

The edge device is not part of promote; `stop` leaves it running (see stop()).
"""
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from ml_service.errors import MlopsError
from ml_service.release import Deployment, http_status, key_headers, key_variable, scoring_key
from ml_service.targets import edge_manifest

EXTENSION = "azure-iot"
# IoT Hub hostnames in Azure public cloud (<hub>.azure-devices.net).
HUB_DOMAIN = "azure-devices.net"


def _masked(text, secrets):
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class EdgeTarget:
    def __init__(self, name, settings, run=subprocess.run, http_get=http_status, environ=None):
        self.name = name
        self.settings = settings
        self.options = settings.target_settings(name)
        self.run = run
        self.http_get = http_get
        self.environ = os.environ if environ is None else environ
        self.manifest_file = edge_manifest.manifest_path(settings)

    # -- az -------------------------------------------------------------------------

    def hub_hostname(self):
        """The hub's hostname: the azure-iot extension resolves a --hub-name containing a dot
        as the hostname directly; a bare name is looked up through ARM, which IoT Hub Data
        Contributor (a data-plane role) may not do (azext_iot/common/base_discovery.py)."""
        return f"{self.options.iot_hub}.{HUB_DOMAIN}"

    def set_modules_command(self, content):
        return ["az", "iot", "edge", "set-modules", "--hub-name", self.hub_hostname(),
                "--device-id", self.options.device_id, "--content", str(content),
                "--auth-type", "login", "--output", "none"]

    def _az(self, command, secrets=(), timeout=300, check=True):
        shown = shlex.join(command)
        try:
            result = self.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
        except FileNotFoundError:
            raise MlopsError("`az` (the Azure CLI) is not installed.",
                             "Install it (https://aka.ms/azcli), then `az extension add "
                             f"--name {EXTENSION}` and `az login`.") from None
        except subprocess.TimeoutExpired:
            raise MlopsError(f"`{shown}` did not finish within {timeout} s.",
                             "Check that the IoT Hub is reachable and run again.") from None
        if check and result.returncode != 0:
            output = _masked(" ".join((result.stderr or result.stdout).split())[-600:],
                             secrets)
            lowered = output.lower()
            if "az login" in lowered or "authorization" in lowered or "forbidden" in lowered:
                fix = ("Sign in with `az login` (CI: azure/login with OIDC) as an identity "
                       f"with the IoT Hub Data Contributor role on {self.options.iot_hub}.")
            elif "not found" in lowered or "does not exist" in lowered:
                fix = (f"Check that the hub {self.hub_hostname()} ([edge] iot_hub) exists and "
                       f"that device {self.options.device_id} ([edge] device_id) is an IoT "
                       "Edge device in it (`az iot hub device-identity show`, docs/edge.md).")
            else:
                fix = "Run the command yourself to see its whole output."
            raise MlopsError(f"`{_masked(shown, secrets)}` failed: {output or '(no output)'}",
                             fix)
        return result

    def _require_extension(self):
        found = self._az(["az", "extension", "show", "--name", EXTENSION, "--output", "none"],
                         timeout=60, check=False)
        if found.returncode != 0:
            raise MlopsError(f"The Azure CLI extension {EXTENSION} (`az iot`) is not installed.",
                             f"Install it: `az extension add --name {EXTENSION}`.")

    # -- the Target interface ---------------------------------------------------------

    def check_ready(self):
        """Deploying needs no setup beyond what deploy itself checks."""

    def request_headers(self):
        return key_headers(scoring_key(self.name, self.environ))

    def status(self):
        """What the committed manifest says the device runs, and whether the module
        answers at [edge] scoring_uri (IoT Hub's own view needs a sign-in: see
        docs/edge.md for `az iot hub module-twin show`)."""
        manifest = edge_manifest.read(self.settings)
        if manifest is None:
            return None
        version, _, digest = edge_manifest.deployed(self.settings, manifest)
        uri = self.options.scoring_uri
        if not uri:
            return Deployment(self.name, version, "", False,
                              "[edge] scoring_uri is not set, so the module cannot be reached "
                              "from here (set it to http://<device address>:"
                              f"{self.options.port}/score)", image_digest=digest)
        health = uri[:-len("score")]
        answer = self.http_get(health)
        detail = "" if answer == 200 else (
            f"GET {health} answered {answer or 'nothing'} (the device may be offline or "
            "still pulling the image)")
        return Deployment(self.name, version, uri, answer == 200, detail, image_digest=digest)

    def _committed_manifest(self, release):
        manifest = edge_manifest.read(self.settings)
        if manifest is None or edge_manifest.deployed(self.settings, manifest)[::2] != (
                release.model_version, release.image_digest):
            raise MlopsError(
                f"{self.manifest_file} does not hold version {release.model_version} "
                f"({release.image_digest or 'no digest'}).",
                f"Deploy through `python -m ml_service deploy --target {self.name} "
                f"--model-version {release.model_version}`, which writes it first.")
        return manifest

    def deploy(self, release):
        manifest = self._committed_manifest(release)
        edge_manifest.validate(self.settings, manifest, require_schema=True)
        scoring_key(self.name, self.environ, required=True)  # refuses an unusable key
        sent, secrets = edge_manifest.filled(manifest, self.environ)
        self._require_extension()
        folder = Path(tempfile.mkdtemp(prefix="edge-manifest-"))  # mode 0700
        try:
            content = folder / "deployment.json"
            descriptor = os.open(content, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(edge_manifest.text(sent))
            self._az(self.set_modules_command(content), secrets)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"deploy: IoT Hub {self.hub_hostname()} accepted the manifest for device "
              f"{self.options.device_id}; its edgeAgent pulls "
              f"{edge_manifest.scoring_module(self.settings, manifest)['settings']['image']} "
              f"when the device is online. Check it with `python -m ml_service smoke-test "
              f"--target {self.name}`.", flush=True)
        return self.status()

    def stop(self):
        """The device keeps its module: a field device is not switched off by a pipeline
        clean-up. Say how to remove it on purpose."""
        print(f"stop: {self.name} (IoT Edge device {self.options.device_id}) is left "
              f"running. To remove the module on purpose, apply a manifest without "
              f"modules.{self.options.module_name} (`az iot edge set-modules --hub-name "
              f"{self.hub_hostname()} --device-id {self.options.device_id} --content "
              "<file>`) and delete deploy/edge/deployment.json in git.")

    def plan(self, release):
        """The manifest and the commands deploy would run, for --dry-run."""
        manifest = edge_manifest.render(self.settings, release.model_version, release.image,
                                        release.image_digest)
        validated = edge_manifest.validate(self.settings, manifest)
        relative = edge_manifest.MANIFEST
        module = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][
            self.options.module_name]
        references = ", ".join(f"${name}" for name in edge_manifest.references())
        lines = [
            f"IoT Edge {self.name} deployment (dry run: nothing is sent to IoT Hub)",
            f"  device           {self.options.device_id} in IoT Hub {self.options.iot_hub}",
            f"  module           {self.options.module_name}: {module['settings']['image']}",
            f"  restart policy   {self.options.restart_policy} (the image's HEALTHCHECK kept)",
            f"  port             device port {self.options.port} -> module port "
            f"{edge_manifest.CONTAINER_PORT}",
            f"  endpoint         {self.options.scoring_uri or '[edge] scoring_uri is not set'}",
            f"  calls need       Authorization: Bearer ${key_variable(self.name)}",
            "  schema           " + (f"valid against {edge_manifest.SCHEMA_DIR}/" if validated
                                     else "not checked: jsonschema is not installed (pip "
                                     "install -r requirements-azure.txt)"),
            "  commands",
            f"    write and commit {relative} (the manifest below)",
            f"    az extension show --name {EXTENSION}",
            "    " + shlex.join(self.set_modules_command(
                f"<private temporary copy of {relative} with {references} filled in from "
                "the environment>")),
            "",
            f"{relative}:",
            edge_manifest.text(manifest),
        ]
        return "\n".join(lines)
