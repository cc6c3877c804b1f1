"""GitOps desired state: what each environment should run, kept in git.

The state is the `images:` entry and the `scoring-model` literals between the
desired-state markers of deploy/overlays/<target>/kustomization.yaml (format in
deploy/README.md). It is edited line by line, so comments and layout survive and
a promotion's git diff shows exactly what changed.

The edge target (an IoT Edge device) has no overlay: its desired state is the
deployment manifest deploy/edge/deployment.json (targets/edge_manifest.py), which
`az iot edge set-modules` applies as it is, committed the same way.
"""
import dataclasses
import json
import re

import yaml

from ml_service import git
from ml_service.config import EDGE_TARGET
from ml_service.errors import MlopsError
from ml_service.targets import edge_manifest

BEGIN = "# --- desired state"
END = "# --- end of desired state"
UNSET_VERSION = "none"


@dataclasses.dataclass(frozen=True)
class DesiredState:
    model_version: str   # "none" before the first deployment
    image: str           # repository:tag
    image_digest: str    # "" when the image was not pushed (local runs)

    @classmethod
    def of_release(cls, release):
        """The desired state that runs `release` (a ml_service.release.Release)."""
        return cls(model_version=release.model_version, image=release.image,
                   image_digest=release.image_digest)

    @property
    def is_set(self):
        return self.model_version != UNSET_VERSION


def overlay_file(settings, target):
    """The file holding `target`'s desired state (edge: its deployment manifest)."""
    if target == EDGE_TARGET:
        return edge_manifest.manifest_path(settings)
    return settings.project_root / "deploy" / "overlays" / target / "kustomization.yaml"


def _block(text, path):
    try:
        start = text.index(BEGIN)
        end = text.index(END, start)
    except ValueError:
        raise MlopsError(f"{path} has no desired-state markers ('{BEGIN}' ... '{END}').",
                         "Restore them from the template; see deploy/README.md.") from None
    return start, end


def read(settings, target):
    """The desired state of `target`, as committed (or edited) in its overlay."""
    if target == EDGE_TARGET:
        manifest = edge_manifest.read(settings)
        if manifest is None:
            return DesiredState(UNSET_VERSION, "", "")
        return DesiredState(*edge_manifest.deployed(settings, manifest))
    path = overlay_file(settings, target)
    if not path.exists():
        raise MlopsError(f"Overlay {path} does not exist.",
                         "Restore deploy/ from the template; see deploy/README.md.")
    document = yaml.safe_load(path.read_text())
    image = document["images"][0]
    literals = dict(item.split("=", 1)
                    for item in document["configMapGenerator"][0]["literals"])
    return DesiredState(model_version=literals["MODEL_VERSION"],
                        image=f"{image['newName']}:{image['newTag']}",
                        image_digest=image.get("digest") or "")


def write(settings, target, state):
    """Rewrite the desired-state keys of `target`'s overlay; return the file path."""
    if target == EDGE_TARGET:
        return edge_manifest.write(settings, state.model_version, state.image,
                                   state.image_digest)
    path = overlay_file(settings, target)
    text = path.read_text()
    start, end = _block(text, path)
    name, _, tag = state.image.rpartition(":")
    # Quoted: YAML reads an unquoted tag such as 20261205 or 1.10 as a number, which
    # kustomize refuses (newTag must be a string) and read() would misquote.
    values = {
        "newName": json.dumps(name),
        "newTag": json.dumps(tag),
        "digest": json.dumps(state.image_digest),
        "MODEL_VERSION": state.model_version,
        "IMAGE_DIGEST": state.image_digest or UNSET_VERSION,
    }
    block = text[start:end]
    for key, value in values.items():
        separator = "=" if key.isupper() else ": "
        block, count = re.subn(rf"(?m)^(\s*-?\s*{key}{separator}).*$",
                               lambda match: match.group(1) + value, block)
        if count != 1:
            raise MlopsError(f"{path}: expected one '{key}' in the desired-state block.",
                             "Restore the block from the template; see deploy/README.md.")
    path.write_text(text[:start] + block + text[end:])
    return path


def commit(settings, path, message):
    """Commit the overlay change: the commit is the record of the deployment.

    Outside a git checkout the file is written but nothing is committed, which is
    said plainly. Returns the commit id or None.
    """
    root = settings.project_root
    committed = git.commit_file(root, path, message)
    if committed is None:
        print(f"note: {root} is not a git checkout; {path.name} was updated "
              "but not committed.")
        return None
    commit_id, made = committed
    if made:
        # Said every time: the commit lands on the user's own branch, and pushed to main it
        # tells CD that this is what the environment runs.
        branch = git.run(root, "branch", "--show-current").stdout.strip()
        print(f"note: committed {commit_id[:12]} \"{message.splitlines()[0]}\" on branch "
              f"{branch}: the record of what runs (`git log deploy/`). Push it only if CD "
              "should run the same; drop a local trial before pushing (README: Release flow "
              "and GitOps).")
    return commit_id


def clear(settings, target):
    """Set `target`'s desired state back to no model version, as the template ships it
    (same image repository, tag "unset"); return the file path."""
    image_name = read(settings, target).image.rpartition(":")[0]
    return write(settings, target, DesiredState(model_version=UNSET_VERSION,
                                                image=f"{image_name}:unset", image_digest=""))
