"""Typed settings, read once from mlops.toml plus environment overrides.

Every section of mlops.toml is a frozen dataclass below; the loader checks that
each key exists and has the declared type, so a typo or a wrong value fails
at start-up with the name of the key, never deep inside a stage.
"""
import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
from pathlib import Path

from ml_service.errors import ConfigError

CONFIG_ENV = "MLOPS_CONFIG"
DEFAULT_CONFIG = "mlops.toml"
# MLOPS_ variables that are not settings: the scoring server's own (scoring/score.py; the
# targets set them), and a prefix left to the users' code. Any other MLOPS_ variable is a
# misspelled setting and refused, never silently ignored.
SERVER_VARIABLES = ("MLOPS_SERVER", "MLOPS_PREDICTION_LOG", "MLOPS_PREDICTION_LOG_SAMPLE",
                    "MLOPS_PREDICTION_LOG_MAX_ROWS", "MLOPS_PREDICTION_LOG_MAX_BYTES",
                    "MLOPS_PREDICTION_LOG_BACKUPS", "MLOPS_SERVER_LOG",
                    "MLOPS_SERVER_LOG_MAX_BYTES", "MLOPS_SERVER_LOG_BACKUPS")
USER_PREFIX = "MLOPS_X_"


class Percentages(tuple):
    """The type of a setting that is a list of whole percentages (canary_steps)."""


@dataclasses.dataclass(frozen=True)
class AzureSettings:
    subscription_id: str
    resource_group: str
    workspace_name: str
    location: str
    compute_name: str
    compute_vm_size: str
    compute_max_nodes: int


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    backend: str


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    name: str
    experiment: str


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    test_size: float
    random_seed: int
    alpha: float


@dataclasses.dataclass(frozen=True)
class DataSettings:
    # "sample", a CSV/Parquet file or folder, "data:<name>:<version>" (register-data) or,
    # with the azureml backend, "azureml:<name>:<version>"; resolved by data_assets.py.
    source: str
    target: str
    features: tuple


@dataclasses.dataclass(frozen=True)
class GateSettings:
    min_r2: float
    min_improvement: float


@dataclasses.dataclass(frozen=True)
class TrackingSettings:
    uri: str
    artifact_root: str


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    registry: str
    build: str


@dataclasses.dataclass(frozen=True)
class ServingSettings:
    workers: int
    max_batch_size: int
    startup_timeout: float
    # Limits of each container (kind = "container")
    container_cpus: float
    container_memory_mb: int
    # Rotation of a local server's log, .mlops/<target>.log (scoring/server_log.py)
    server_log_max_bytes: int
    server_log_backups: int


@dataclasses.dataclass(frozen=True)
class TargetSettings:
    """What every deployment target has; the sections below add their kind's keys."""

    kind: str
    port: int
    smoke_max_latency_ms: float


@dataclasses.dataclass(frozen=True)
class StagingSettings(TargetSettings):
    # Azure Container Instances (kind = "aci")
    cpu: float
    memory_gb: float
    dns_label: str
    pull_identity: str


@dataclasses.dataclass(frozen=True)
class ProductionSettings(TargetSettings):
    # AKS (kind = "aks"): "gitops" (Flux applies the committed overlay) or "push"
    mode: str
    cluster: str
    sync_timeout: float
    # How promote moves a release: "commit" (to main, after an environment approval)
    # or "pr" (a pull request whose merge is the approval).
    promotion: str
    # How production switches to it: "direct" (all traffic at once, after the smoke
    # test) or "canary" (a growing share of traffic, analysed at every step;
    # ml_service/releasing/canary.py).
    strategy: str
    canary_steps: Percentages
    canary_step_seconds: float
    canary_min_requests: int
    canary_max_error_rate: float
    canary_max_latency_ratio: float
    canary_latency_floor_ms: float
    canary_max_prediction_ks: float


@dataclasses.dataclass(frozen=True)
class EdgeSettings(TargetSettings):
    """An Azure IoT Edge device (kind = "edge"): deployed explicitly, never promoted to."""

    iot_hub: str
    device_id: str
    module_name: str
    restart_policy: str
    # How smoke tests reach the module: http://<device address>:<port>/score
    scoring_uri: str
    # Extra environment variables of the scoring module
    env: dict


@dataclasses.dataclass(frozen=True)
class MonitoringSettings:
    """[monitoring]: the scoring servers' prediction log and the `monitor` drift check."""

    p_value: float
    min_rows: int
    window_rows: int
    window_hours: float
    sample_rate: float
    log_max_bytes: int
    log_backups: int
    log_analytics_workspace: str


@dataclasses.dataclass(frozen=True)
class Settings:
    project_root: Path
    pipeline: PipelineSettings
    azure: AzureSettings
    model: ModelSettings
    training: TrainingSettings
    data: DataSettings
    gate: GateSettings
    tracking: TrackingSettings
    image: ImageSettings
    serving: ServingSettings
    staging: StagingSettings
    production: ProductionSettings
    edge: EdgeSettings
    monitoring: MonitoringSettings

    def target_settings(self, name) -> TargetSettings:
        """The section of deployment target `name`: [staging], [production] or [edge]."""
        sections = {"staging": self.staging, "production": self.production, "edge": self.edge}
        if name not in sections:
            raise ConfigError(f"There is no deployment target {name!r}.",
                              f"Use one of: {', '.join(sections)}.")
        return sections[name]


# Azure ML model names that are also valid Docker image repositories once lowercased
# (the scoring image is named after the model), at most 63 characters because paths and
# the image reference are built from it. The template's pre-generation hook checks the
# same rule: keep the two identical.
MODEL_NAME_PATTERN = r"(?=.{1,63}\Z)[A-Za-z0-9]+(?:(?:[._]|__|-+)[A-Za-z0-9]+)*"
MODEL_NAME_RULE = (
    "1-63 characters: letters and digits, separated by a single '.' or '_', by '__' or by "
    "hyphens, so it starts and ends with a letter or digit (Azure ML's model naming rule "
    "and Docker's image naming rule: the scoring image is named after the lowercased "
    "model name)"
)

BACKENDS = ("local", "azureml")
IMAGE_BUILDS = ("auto", "always", "context-only")
# The promotion chain: the pipeline deploys staging and promotes it to production.
TARGET_NAMES = ("staging", "production")
# An IoT Edge device: deployed explicitly (`deploy --target edge --model-version N`).
EDGE_TARGET = "edge"
DEPLOY_TARGETS = (*TARGET_NAMES, EDGE_TARGET)
# The kinds that serve on a port of this machine: two targets of these kinds need two.
MACHINE_KINDS = ("local", "container")
TARGET_KINDS = {"staging": ("local", "container", "aci"),
                "production": ("local", "container", "aks"),
                EDGE_TARGET: ("edge",)}
# What edgeAgent accepts as a module's restartPolicy.
EDGE_RESTART_POLICIES = ("never", "on-failure", "on-unhealthy", "always")

SECTIONS = {
    field.name: field.type
    for field in dataclasses.fields(Settings)
    if field.name != "project_root"
}

# Checks beyond the type, as (predicate, rule in words).
CONSTRAINTS = {
    ("training", "test_size"): (lambda v: 0 < v < 1, "a fraction between 0 and 1"),
    ("training", "alpha"): (lambda v: v >= 0, "zero or positive"),
    # numpy's seed range
    ("training", "random_seed"): (lambda v: 0 <= v < 2 ** 32, "between 0 and 4294967295"),
    ("gate", "min_r2"): (lambda v: v <= 1, "at most 1 (the R2 of a perfect model)"),
    ("data", "source"): (lambda v: v.strip() != "", "a path or reference, not empty"),
    ("data", "target"): (lambda v: v.strip() != "", "a column name, not empty"),
    ("data", "features"): (lambda v: v and len(set(v)) == len(v) and all(v),
                           "a non-empty list of distinct column names"),
    ("gate", "min_improvement"): (lambda v: 0 <= v < 1, "a fraction between 0 and 1"),
    ("model", "name"): (lambda v: re.fullmatch(MODEL_NAME_PATTERN, v), MODEL_NAME_RULE),
    ("pipeline", "backend"): (lambda v: v in BACKENDS, " or ".join(map(repr, BACKENDS))),
    ("image", "build"): (lambda v: v in IMAGE_BUILDS, " or ".join(map(repr, IMAGE_BUILDS))),
    ("azure", "compute_max_nodes"): (lambda v: 1 <= v <= 100, "between 1 and 100"),
    ("staging", "cpu"): (lambda v: 0 < v <= 4, "between 0 and 4 cores"),
    ("staging", "memory_gb"): (lambda v: 0 < v <= 16, "between 0 and 16 GB"),
    ("staging", "dns_label"): (lambda v: re.fullmatch(r"[a-z][a-z0-9-]{1,61}[a-z0-9]", v),
                               "3-63 lowercase letters, digits and hyphens"),
    ("production", "mode"): (lambda v: v in ("gitops", "push"), "'gitops' or 'push'"),
    ("production", "sync_timeout"): (lambda v: v > 0, "positive"),
    ("production", "promotion"): (lambda v: v in ("commit", "pr"), "'commit' or 'pr'"),
    ("production", "strategy"): (lambda v: v in ("direct", "canary"), "'direct' or 'canary'"),
    ("production", "canary_steps"): (
        lambda v: v and v[0] >= 1 and v[-1] == 100 and all(a < b for a, b in zip(v, v[1:])),
        "increasing percentages from 1 to 100, ending with 100"),
    ("production", "canary_step_seconds"): (lambda v: v > 0, "positive"),
    ("production", "canary_min_requests"): (lambda v: v >= 1, "at least 1"),
    ("production", "canary_max_error_rate"): (lambda v: 0 <= v < 1, "a share from 0 to 1"),
    ("production", "canary_max_latency_ratio"): (lambda v: v >= 1, "at least 1"),
    ("production", "canary_latency_floor_ms"): (lambda v: v >= 0, "0 or more"),
    ("production", "canary_max_prediction_ks"): (lambda v: 0 < v <= 1, "between 0 and 1"),
    ("serving", "workers"): (lambda v: 1 <= v <= 32, "between 1 and 32"),
    ("serving", "max_batch_size"): (lambda v: v >= 1, "at least 1"),
    ("serving", "startup_timeout"): (lambda v: v > 0, "positive"),
    ("serving", "container_cpus"): (lambda v: 0 < v <= 64, "between 0 and 64 cores"),
    ("serving", "container_memory_mb"): (lambda v: v >= 256, "at least 256 MB"),
    ("serving", "server_log_max_bytes"): (lambda v: v >= 10_000, "at least 10000"),
    ("serving", "server_log_backups"): (lambda v: 1 <= v <= 100, "between 1 and 100"),
    ("monitoring", "p_value"): (lambda v: 0 < v < 1, "a probability between 0 and 1"),
    ("monitoring", "min_rows"): (lambda v: v >= 10, "at least 10"),
    ("monitoring", "window_rows"): (lambda v: v >= 10, "at least 10"),
    ("monitoring", "window_hours"): (lambda v: v > 0, "positive"),
    ("monitoring", "sample_rate"): (lambda v: 0 <= v <= 1, "a share from 0 to 1"),
    ("monitoring", "log_max_bytes"): (lambda v: v >= 10_000, "at least 10000"),
    ("monitoring", "log_backups"): (lambda v: 1 <= v <= 100, "between 1 and 100"),
    **{(target, "kind"): (lambda v, t=target: v in TARGET_KINDS[t],
                          " or ".join(map(repr, TARGET_KINDS[target])))
       for target in DEPLOY_TARGETS},
    **{(target, "port"): (lambda v: 1024 <= v <= 65535, "a port between 1024 and 65535")
       for target in DEPLOY_TARGETS},
    **{(target, "smoke_max_latency_ms"): (lambda v: v > 0, "positive")
       for target in DEPLOY_TARGETS},
    # [edge]: names IoT Hub and the deployment manifest accept.
    ("edge", "iot_hub"): (lambda v: re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{1,48}[A-Za-z0-9]",
                                                 v),
                          "an IoT Hub name: 3-50 letters, digits and hyphens"),
    ("edge", "device_id"): (lambda v: re.fullmatch(r"[A-Za-z0-9\-:.+%_#*?!(),=@$']{1,128}", v),
                            "an IoT Hub device id (1-128 letters, digits and -:.+%_#*?!(),=@$')"),
    ("edge", "module_name"): (lambda v: re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v)
                              and v not in ("edgeAgent", "edgeHub"),
                              "1-64 letters, digits, '_' or '-', not edgeAgent or edgeHub"),
    ("edge", "restart_policy"): (lambda v: v in EDGE_RESTART_POLICIES,
                                 " or ".join(map(repr, EDGE_RESTART_POLICIES))),
    ("edge", "scoring_uri"): (lambda v: v == "" or re.fullmatch(r"https?://\S+/score", v),
                              "empty, or the module's URL: http://<device address>:<port>/score"),
    ("edge", "env"): (lambda v: all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
                                    and isinstance(value, str) for name, value in v.items()),
                      'a table of NAME = "value" strings (names: letters, digits, _)'),
}


def _coerce(raw, kind, key, from_environment):
    """Return `raw` as `kind`; environment variables (always strings) are parsed."""
    if kind is tuple:
        return _string_list(raw, key, from_environment)
    if kind is Percentages:
        return _percentages(raw, key, from_environment)
    if from_environment and kind is dict:
        # A table from the environment is JSON: MLOPS_EDGE_ENV='{"LOG_LEVEL": "debug"}'.
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
        if not isinstance(raw, dict):
            raise ConfigError(f"Setting {key} is not a JSON object.",
                              'Set it to JSON such as {"NAME": "value"}.')
        return raw
    if from_environment and kind is not str:
        try:
            return kind(raw)
        except ValueError:
            raise ConfigError(
                f"Setting {key} is {raw!r}, which is not a valid {kind.__name__}.",
                f"Set it to a {kind.__name__} in mlops.toml or its environment variable.",
            ) from None
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if type(raw) is not kind:
        raise ConfigError(
            f"Setting {key} is {raw!r} ({type(raw).__name__}), but must be a {kind.__name__}.",
            "Fix its value in mlops.toml (strings need quotes, numbers must not have them).",
        )
    return raw


def _string_list(raw, key, from_environment):
    """A list of strings as a tuple; from the environment, comma-separated."""
    if from_environment:
        return tuple(item.strip() for item in raw.split(","))
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ConfigError(f"Setting {key} is {raw!r}, but must be a list of strings.",
                          'Write it as ["a", "b"] in mlops.toml.')
    return tuple(raw)


def _percentages(raw, key, from_environment):
    """A list of whole percentages as a tuple of ints; from the environment,
    comma-separated ("10,50,100")."""
    try:
        values = ([int(item) for item in raw.split(",")] if from_environment else raw)
    except ValueError:
        values = None
    if not isinstance(values, list) or not all(
            isinstance(item, int) and not isinstance(item, bool) for item in values):
        raise ConfigError(f"Setting {key} is {raw!r}, but must be a list of whole "
                          "percentages.", "Write it as [10, 50, 100] in mlops.toml.")
    return Percentages(values)


def _section(name, cls, values, environ):
    if not isinstance(values, dict):
        raise ConfigError(f"Section [{name}] is missing from the config file.",
                          f"Add a [{name}] table; see the template's mlops.toml.")
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"Unknown setting(s) in [{name}]: {', '.join(unknown)}.",
                          "Remove them or check the spelling; known keys: "
                          f"{', '.join(sorted(known))}.")
    parsed = {}
    for field in dataclasses.fields(cls):
        key = f"[{name}] {field.name}"
        env_name = f"MLOPS_{name}_{field.name}".upper()
        from_environment = env_name in environ
        if from_environment:
            raw = environ[env_name]
            key = f"{env_name} (overrides {key})"
        elif field.name in values:
            raw = values[field.name]
        else:
            raise ConfigError(f"Setting {key} is missing.",
                              f"Add `{field.name} = ...` to the [{name}] section of mlops.toml.")
        value = _coerce(raw, field.type, key, from_environment)
        if field.type is float and not math.isfinite(value):
            raise ConfigError(f"Setting {key} is {value!r}, but must be a finite number.",
                              "Fix the value in mlops.toml or its environment variable.")
        check = CONSTRAINTS.get((name, field.name))
        if check and not check[0](value):
            raise ConfigError(f"Setting {key} is {value!r}, but must be {check[1]}.",
                              "Fix the value in mlops.toml or its environment variable.")
        parsed[field.name] = value
    return cls(**parsed)


def check_variables(environ):
    """Refuse an MLOPS_ variable that is no setting, naming the closest one."""
    known = {CONFIG_ENV, *SERVER_VARIABLES,
             *(f"MLOPS_{name}_{field.name}".upper()
               for name, cls in SECTIONS.items() for field in dataclasses.fields(cls))}
    for variable in sorted(environ):
        if variable.startswith("MLOPS_") and not variable.startswith(USER_PREFIX) \
                and variable not in known:
            closest = difflib.get_close_matches(variable, known, n=1)
            raise ConfigError(
                f"{variable} is not a setting" + (f"; did you mean {closest[0]}?"
                                                  if closest else "."),
                "Settings are MLOPS_<SECTION>_<KEY> for the keys of mlops.toml: fix the "
                f"name. A variable of your own code must start with {USER_PREFIX}, which "
                "ml_service leaves alone.")


def resolve_tracking_uri(uri, root):
    """Make a relative sqlite path absolute against the project root."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(root / uri[len(prefix):])
    return uri


def load_settings(path=None, environ=None):
    """Read the config file once and return validated Settings."""
    environ = os.environ if environ is None else environ
    path = Path(path or environ.get(CONFIG_ENV) or DEFAULT_CONFIG).resolve()
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist.",
                          f"Run from the project root, or pass --config / set {CONFIG_ENV}.",
                          ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"Config file {path} is not valid TOML: {error}.",
                          "Fix the syntax at the position shown.") from None
    extra = sorted(set(document) - set(SECTIONS))
    if extra:
        raise ConfigError(f"Unknown section(s) in {path.name}: {', '.join(extra)}.",
                          f"Known sections: {', '.join(SECTIONS)}.")
    check_variables(environ)
    root = path.parent
    sections = {name: _section(name, cls, document.get(name), environ)
                for name, cls in SECTIONS.items()}
    staging, production = (sections[name] for name in TARGET_NAMES)
    if staging.port == production.port and {staging.kind, production.kind} <= set(MACHINE_KINDS):
        raise ConfigError(f"Staging and production would both serve on port {staging.port} "
                          "of this machine.",
                          "Give each its own port: [staging] port and [production] port in "
                          f"{path.name}, or MLOPS_STAGING_PORT and MLOPS_PRODUCTION_PORT.")
    tracking = sections["tracking"]
    sections["tracking"] = TrackingSettings(
        uri=resolve_tracking_uri(environ.get("MLFLOW_TRACKING_URI", tracking.uri), root),
        artifact_root=str(root / tracking.artifact_root),
    )
    return Settings(project_root=root, **sections)
