import pytest

from ml_service.config import load_settings
from ml_service.errors import ConfigError


def test_defaults_load_with_types(project):
    settings = load_settings(project / "mlops.toml", environ={})
    assert isinstance(settings.training.alpha, float)
    assert isinstance(settings.training.random_seed, int)
    assert settings.tracking.uri == f"sqlite:///{project}/mlruns/mlflow.db"
    assert settings.tracking.artifact_root == str(project / "mlruns" / "artifacts")


def test_environment_overrides_the_file(project):
    settings = load_settings(project / "mlops.toml", environ={
        "MLOPS_TRAINING_ALPHA": "0.5", "MLFLOW_TRACKING_URI": "http://mlflow.example:5000"})
    assert settings.training.alpha == 0.5
    assert settings.tracking.uri == "http://mlflow.example:5000"


def rewrite(project, old, new):
    path = project / "mlops.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize("old, new, named", [
    ("random_seed = 42", 'random_seed = "42"', "[training] random_seed"),
    ("alpha = 0.1", "alpha = true", "[training] alpha"),
    ("test_size = 0.2", "test_size = 1.5", "[training] test_size"),
    ("min_r2 = 0.3\n", "", "[gate] min_r2"),
    ("alpha = 0.1", "alpha = 0.1\nalhpa = 2", "alhpa"),
    ("[gate]", "[gates]", "gates"),
    ('build = "context-only"', 'build = "sometimes"', "[image] build"),
    ("alpha = 0.1", "alpha = ", "not valid TOML"),
])
def test_bad_file_values_name_the_key(project, old, new, named):
    with pytest.raises(ConfigError) as raised:
        load_settings(rewrite(project, old, new), environ={})
    assert named in str(raised.value)


@pytest.mark.parametrize("name", ["m..x", "Model.v1-", "x_", "churn model", "m" * 64])
def test_model_name_must_suit_the_registry_and_the_image(project, name):
    default = load_settings(project / "mlops.toml", environ={}).model.name
    with pytest.raises(ConfigError) as raised:
        load_settings(rewrite(project, f'name = "{default}"', f'name = "{name}"'), environ={})
    assert f"[model] name is {name!r}" in str(raised.value)
    assert "Docker's image naming rule" in str(raised.value)


@pytest.mark.parametrize("environ", [
    {"MLOPS_PRODUCTION_PORT": "5101"},
    {"MLOPS_STAGING_PORT": "5200", "MLOPS_PRODUCTION_PORT": "5200",
     "MLOPS_STAGING_KIND": "container"},
])
def test_staging_and_production_on_this_machine_need_two_ports(project, environ):
    with pytest.raises(ConfigError) as raised:
        load_settings(project / "mlops.toml", environ=environ)
    assert "both serve on port" in str(raised.value)
    assert "MLOPS_STAGING_PORT" in str(raised.value)


def test_a_port_shared_with_a_cloud_target_is_no_conflict(project):
    settings = load_settings(project / "mlops.toml", environ={
        "MLOPS_PRODUCTION_PORT": "5101", "MLOPS_PRODUCTION_KIND": "aks"})
    assert settings.production.port == settings.staging.port


def test_bad_environment_value_names_the_variable(project):
    with pytest.raises(ConfigError, match="MLOPS_TRAINING_RANDOM_SEED") as raised:
        load_settings(project / "mlops.toml", environ={"MLOPS_TRAINING_RANDOM_SEED": "forty"})
    assert raised.value.exit_code == 2


def test_missing_file_says_how_to_point_at_one(tmp_path):
    with pytest.raises(ConfigError, match="MLOPS_CONFIG"):
        load_settings(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize("variable, closest", [
    ("MLOPS_STAGNG_PORT", "MLOPS_STAGING_PORT"),
    ("MLOPS_STAGING_PROT", "MLOPS_STAGING_PORT"),
    ("MLOPS_TRAINING_APLHA", "MLOPS_TRAINING_ALPHA"),
])
def test_unknown_mlops_variable_names_the_closest_known_one(project, variable, closest):
    with pytest.raises(ConfigError, match=rf"{variable} is not a setting.*{closest}") as raised:
        load_settings(project / "mlops.toml", environ={variable: "5000"})
    assert "MLOPS_X_" in raised.value.fix


def test_variables_of_the_users_own_and_of_the_server_are_accepted(project):
    load_settings(project / "mlops.toml", environ={
        "MLOPS_X_FEATURE_FLAG": "on", "MLOPS_PREDICTION_LOG_SAMPLE": "0.5",
        "MLOPS_CONFIG": str(project / "mlops.toml")})


@pytest.mark.parametrize("variable, value", [
    ("MLOPS_GATE_MIN_R2", "nan"), ("MLOPS_GATE_MIN_R2", "2"),
    ("MLOPS_TRAINING_ALPHA", "inf"), ("MLOPS_TRAINING_ALPHA", "nan"),
    ("MLOPS_TRAINING_RANDOM_SEED", "-1"), ("MLOPS_TRAINING_RANDOM_SEED", str(2 ** 32)),
    ("MLOPS_SERVING_STARTUP_TIMEOUT", "inf"), ("MLOPS_MONITORING_SAMPLE_RATE", "nan"),
])
def test_non_finite_and_out_of_range_numbers_are_refused_at_load(project, variable, value):
    with pytest.raises(ConfigError, match=rf"{variable} \(overrides .*\) is "):
        load_settings(project / "mlops.toml", environ={variable: value})


def test_non_finite_numbers_in_the_file_are_refused(project):
    with pytest.raises(ConfigError, match=r"\[gate\] min_r2 is nan"):
        load_settings(rewrite(project, "min_r2 = 0.3", "min_r2 = nan"), environ={})
