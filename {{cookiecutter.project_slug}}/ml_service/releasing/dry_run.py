"""--dry-run of deploy, promote and rollback: what they would do, with nothing changed.

A plan reads the desired state in git (deploy/overlays/) and the model registry where
that needs no sign-in: the local backend's MLflow store. Azure ML's registry needs a
sign-in, so with the azureml backend a plan shows a placeholder `<...>` wherever a
registry value would be read, and runs on a laptop without `az login`, as
`train --dry-run` does. Whatever a target's plan shows (the ACI request, the AKS
manifests, the local server command) comes from the target itself (`Target.plan`).
"""
from ml_service import desired_state, tracking
from ml_service.config import DEPLOY_TARGETS
from ml_service.release import Release
from ml_service.releasing import canary, registry
from ml_service.targets import get_target


def placeholder(what):
    return f"<{what}: read from the Azure ML registry at run time>"


class Registry:
    """The registry's answers a plan needs, or placeholders when reading needs a sign-in."""

    def __init__(self, settings):
        self.settings = settings
        self.signed_in_only = settings.pipeline.backend == "azureml"
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client, _ = tracking.connect(self.settings)
        return self._client

    def release(self, version):
        """The Release of `version`: from the registry, or from a desired state in git that
        holds it (image and digest as deployed), or a placeholder."""
        if not self.signed_in_only:
            return registry.release_for(self.client, self.settings, version)
        context = registry.context_dir(self.settings, version)
        for target in DEPLOY_TARGETS:
            state = desired_state.read(self.settings, target)
            if state.model_version == version:
                return Release(self.settings.model.name, version, state.image,
                               state.image_digest, "", context)
        return Release(self.settings.model.name, version,
                       placeholder(f"image of version {version}"), "", "", context)

    def tag(self, version, name):
        if self.signed_in_only:
            return placeholder(f"tag {name} of version {version}")
        return registry.model_version(self.client, self.settings, version).tags.get(name)


def deploy_plan(settings, target_name, version=None):
    """What `deploy --target <target_name> [--model-version <version>]` would do."""
    state = desired_state.read(settings, target_name)
    version = version or state.model_version
    if version == desired_state.UNSET_VERSION:
        return (f"deploy (dry run): nothing to deploy; the desired state of {target_name} "
                "holds no model version. Pass --model-version N.")
    return get_target(target_name, settings).plan(Registry(settings).release(version))


def promote_plan(settings):
    """What `promote --approve` would do."""
    models = Registry(settings)
    staging = desired_state.read(settings, "staging")
    production = desired_state.read(settings, "production")
    overlay = desired_state.overlay_file(settings, "production").relative_to(
        settings.project_root)
    if not staging.is_set:
        return ("promote (dry run): nothing to promote; staging's desired state holds no "
                "model version.")
    version = staging.model_version
    before = production.model_version if production.is_set else "nothing"
    lines = [
        "promote (dry run: nothing is changed)",
        f"  staging runs   version {version} ({staging.image})",
        f"  requires       --approve, and {registry.smoke_tag('staging')}=passed on version "
        f"{version} (now: {models.tag(version, registry.smoke_tag('staging')) or 'not run'})",
        f"  commits        {overlay}: version {before} -> {version}",
        f"  then           {promotion_steps(settings, production)}, rolls back to {before} "
        "(another commit)",
        *canary_plan(settings, production, version),
        "",
        get_target("production", settings).plan(models.release(version)),
    ]
    return "\n".join(lines)


def promotion_steps(settings, production):
    """How production comes to serve the new release, up to what makes it roll back."""
    if settings.production.strategy == "canary" and production.is_set:
        return ("runs the canary (its steps below), then production serves it alone and is "
                "smoke-tested; if a step or the smoke test fails")
    return "deploys it and smoke-tests production; if that fails"


def canary_plan(settings, production, version):
    """The canary's lines of the promote plan (strategy = "canary" on a local process or
    container target; on AKS, the target's plan shows Flagger's)."""
    if settings.production.strategy != "canary" or \
            settings.production.kind not in canary.SPLIT_KINDS:
        return []
    if not production.is_set:
        return ["  canary         none: no release in production to compare with, so "
                "production takes this one directly"]
    return [f"  {canary.plan(settings, production.model_version, version)}"]


def rollback_plan(settings):
    """What `rollback` would do."""
    models = Registry(settings)
    current = desired_state.read(settings, "production")
    if not current.is_set:
        return "rollback (dry run): production's desired state holds no model version."
    previous = models.tag(current.model_version, registry.PREVIOUS_PRODUCTION_TAG)
    if previous is None or registry.same_version(previous, current.model_version):
        return (f"rollback (dry run): version {current.model_version} in production has no "
                "earlier version to roll back to.")
    overlay = desired_state.overlay_file(settings, "production").relative_to(
        settings.project_root)
    lines = [
        "rollback (dry run: nothing is changed)",
        f"  production     version {current.model_version}; before it: {previous}",
        f"  commits        {overlay}: version {current.model_version} -> {previous}",
    ]
    if models.signed_in_only:
        lines.append("  then           deploys that version to production")
    else:
        lines += ["", get_target("production", settings).plan(models.release(previous))]
    return "\n".join(lines)
