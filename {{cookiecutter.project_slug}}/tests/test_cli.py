import subprocess
import sys

import argparse

import pytest

from ml_service import desired_state
from ml_service.cli import build_parser, program_name
from ml_service.config import load_settings
from tests.conftest import cli_env
from tests.helpers.data import write_table
from tests.helpers.project import PROJECT_ROOT, free_port, git, push_to_new_remote


def test_stages_hand_over_between_processes_as_in_ci(run_cli, tmp_path):
    outputs = tmp_path / "github_output"
    for stage in ("train", "evaluate", "register", "register"):
        result = run_cli(stage, GITHUB_OUTPUT=str(outputs))
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    published = outputs.read_text().splitlines()
    assert "gate=passed" in published
    # The second register finds the version the first one made: one version per run.
    assert published.count("model_version=1") == 2


@pytest.mark.slow
def test_pipeline_goes_to_production_with_approval(run_cli, project):
    """On a CSV file ([data] source), as a project's own data would be."""
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    write_table(project / "data" / "diabetes.csv")
    ports = {"MLOPS_STAGING_PORT": str(free_port()), "MLOPS_PRODUCTION_PORT": str(free_port()),
             "MLOPS_SERVING_WORKERS": "1", "MLOPS_DATA_SOURCE": "data/diabetes.csv"}
    result = run_cli("pipeline", "--approve", "--stop-servers", **ports)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("register: ", "build-image: ", "deploy: staging serves",
                 "smoke-test: production version 1 passed", "promote: production serves",
                 "sample prediction", "stop: production stopped"):
        assert line in result.stdout
    again = run_cli("pipeline", "--approve", "--stop-servers", **ports)
    assert again.returncode == 0, again.stdout + again.stderr
    # Same data and code: the gate rejects the retrained twin, nothing is redeployed.
    assert "gate REJECTED" in again.stdout
    assert "nothing was built or deployed" in again.stdout


def test_register_data_prints_the_reference_and_is_idempotent(run_cli, project, tmp_path):
    upload = write_table(tmp_path / "diabetes.csv", rows=50)
    outputs = tmp_path / "github_output"
    for _ in range(2):
        result = run_cli("register-data", "--name", "diabetes", "--path", str(upload),
                         GITHUB_OUTPUT=str(outputs))
        assert result.returncode == 0, result.stderr
    assert 'set [data] source = "data:diabetes:1"' in result.stdout
    assert "same content as before" in result.stdout
    assert outputs.read_text().splitlines().count("data_source=data:diabetes:1") == 2
    assert (project / "mlruns" / "data" / "assets" / "diabetes.json").is_file()


def test_stage_before_train_exits_1_with_advice(run_cli):
    result = run_cli("evaluate")
    assert result.returncode == 1
    assert "python -m ml_service train" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_error_exits_2_and_names_the_key(run_cli):
    result = run_cli("train", MLOPS_GATE_MIN_R2="high")
    assert result.returncode == 2
    assert "MLOPS_GATE_MIN_R2" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_store_is_reported_not_traced(run_cli, project):
    (project / "mlruns" / "mlflow.db").write_bytes(b"this is not a database" * 100)
    result = run_cli("train")
    assert result.returncode == 1
    assert "Cannot use the MLflow tracking store" in result.stderr
    assert "mv mlruns" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_store_is_reported_not_traced(run_cli):
    result = run_cli("train", MLFLOW_TRACKING_URI="http://127.0.0.1:9",
                     MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    assert result.returncode == 1
    assert "Cannot use the MLflow tracking store at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_stage_is_a_usage_error(run_cli):
    result = run_cli("deploy-everything")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_azure_pipeline_dry_run_plans_without_credentials(run_cli, project):
    result = run_cli("--backend", "azureml", "--dry-run", "pipeline")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "python -m training.components.prep_data" in result.stdout
    assert "only the Azure ML training job can be planned" in result.stdout
    assert (project / "build" / "azureml" / "training-pipeline.yml").is_file()


@pytest.mark.parametrize("debug", [False, True])
def test_without_sign_in_only_the_projects_error_shows_unless_debug(run_cli, debug,
                                                                    monkeypatch):
    # No Azure sign-in, quickly: only the environment credential, and it is not configured.
    for variable in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                     "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME"):
        monkeypatch.delenv(variable, raising=False)
    result = run_cli(*(["--debug"] if debug else []), "--backend", "azureml", "evaluate",
                     AZURE_TOKEN_CREDENTIALS="EnvironmentCredential")
    assert result.returncode != 0
    assert ("WARNING azure.identity" in result.stderr) == debug, result.stderr
    if not debug:
        assert result.stderr.startswith("error: Could not list the pipeline jobs: no Azure "
                                        "sign-in is available"), result.stderr
        assert "repository variables AZURE_CLIENT_ID" in result.stderr


def verbs(parser):
    return parser._subparsers._group_actions[0].choices


def test_every_option_of_every_verb_has_help():
    parser = build_parser()
    undocumented = [f"{name} {'/'.join(action.option_strings)}"
                    for name, verb in {"": parser, **verbs(parser)}.items()
                    for action in verb._actions
                    if not action.help and not isinstance(action, argparse._HelpAction)]
    assert undocumented == []


def test_usage_names_the_command_the_user_typed(run_cli):
    assert program_name("/home/me/project/.venv/bin/mlops") == "mlops"
    assert program_name("/home/me/project/ml_service/__main__.py") == "python -m ml_service"
    assert build_parser("mlops").format_usage().startswith("usage: mlops ")
    result = run_cli("deploy")  # without its required --target
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m ml_service deploy "), result.stderr


def test_global_options_are_accepted_after_the_verb_too(run_cli):
    before = build_parser().parse_args(["--debug", "--config", "a.toml", "train"])
    after = build_parser().parse_args(["train", "--debug", "--config", "a.toml"])
    assert vars(before) == vars(after)
    # Given before the verb and not after it: the value before the verb stays.
    kept = build_parser().parse_args(["--backend", "azureml", "--dry-run", "train"])
    assert (kept.backend, kept.dry_run, kept.debug) == ("azureml", True, False)
    # --debug after the verb shows the traceback of an error (here a missing config file).
    result = run_cli("train", "--debug", "--config", "missing.toml")
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "missing.toml does not exist" in result.stderr


def test_help_imports_none_of_the_heavy_packages():
    """Every CI step starts the CLI: a verb pays for MLflow, scikit-learn, pandas or the
    Azure SDKs only when it runs, and `--help` for none of them."""
    code = ("import sys; from ml_service import cli; cli.build_parser().format_help(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'mlflow', 'sklearn', 'pandas', 'azure', 'training'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, text=True,
                            capture_output=True, env=cli_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_stage_process_collects_the_oldest_generation_rarely():
    """A stage's process runs Python's full garbage collections 10 times more rarely than
    Python would (cli.collect_less_often): set before the arguments are read, so for every
    verb, a usage error included."""
    code = ("import gc\nfrom ml_service.cli import main\n"
            "print(gc.get_threshold()[2])\n"
            "try:\n    main(['no-such-verb'])\nexcept SystemExit:\n    pass\n"
            "print(gc.get_threshold()[2])")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, text=True,
                            capture_output=True, env=cli_env(), timeout=60)
    assert result.stdout.split() == ["10", "100"], result.stderr


def test_stop_clear_desired_state_resets_production_and_commits_it(run_cli, project):
    """The documented way out when production's version cannot be rolled back from (the
    oldest release) nor be the gate's champion: production names no version again."""
    settings = load_settings(project / "mlops.toml", environ={})
    desired_state.write(settings, "production", desired_state.DesiredState(
        model_version="3", image="example.azurecr.io/model:3", image_digest=""))
    push_to_new_remote(project, project.parent / "remote.git")
    result = run_cli("stop", "--target", "production", "--clear-desired-state")
    assert result.returncode == 0, result.stderr
    assert "stop: production's desired state cleared (deploy/overlays/production/" \
           "kustomization.yaml)" in result.stdout
    state = desired_state.read(settings, "production")
    assert (state.model_version, state.image) == ("none", "example.azurecr.io/model:unset")
    assert git(project, "log", "-1", "--format=%s") == \
        "Clear production's desired state (no model version)"
    assert git(project, "status", "--porcelain") == ""
    refused = run_cli("stop", "--target", "edge", "--clear-desired-state")
    assert refused.returncode == 1 and "deploy/edge/deployment.json" in refused.stderr
