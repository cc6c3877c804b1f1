"""A baked project switched to its user's own data, as a new user does it: `use-data` on a
CSV with other columns, then a registered version of it. The project's own tests that
depend on data keep passing (they pin the bundled sample in their copies), and a feature
added while a model is in production is one line at the gate, not a library error."""
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from conftest import inner_basetemp

# Generated test modules that read [data] or scoring/sample-request.json, which a data
# switch used to break; with a registered version, a local train, gate and register (the
# version is resolved from the store: a project copy used to have none).
DATA_DEPENDENT_TESTS = ["tests/test_data_assets.py", "tests/azure/test_pipeline_job.py",
                        "tests/releasing/test_prediction.py"]
REGISTERED_DATA_TESTS = [
    "tests/backends/test_local.py::test_first_run_registers_a_version_with_lineage_tags"]
# A train, evaluate and register with production running version 1, in one interpreter
# (the CLI's own entry point, three verbs: one MLflow import instead of three).
PIPELINE_WITH_CHAMPION = textwrap.dedent("""
    from ml_service import desired_state
    from ml_service.cli import main
    from ml_service.config import load_settings

    for verb in ("train", "evaluate", "register"):
        assert main([verb]) == 0, verb
    settings = load_settings("mlops.toml")
    desired_state.write(settings, "production", desired_state.DesiredState(
        model_version="1", image="example.azurecr.io/model:1", image_digest=""))
    assert main(["use-data", "houses-v2.csv", "--target", "price"]) == 0
    for verb in ("train", "evaluate"):
        assert main([verb]) == 0, verb
""")


def houses(rows, extra_feature=False):
    """A house-price table: numeric features, a text column and the price."""
    generator = np.random.default_rng(7)
    frame = pd.DataFrame({
        "rooms": generator.integers(1, 8, rows).astype(float),
        "area": generator.normal(100, 30, rows),
        "age_years": generator.uniform(0, 80, rows),
        "neighborhood": generator.choice(["east", "west"], rows),
    })
    if extra_feature:
        frame["garage"] = generator.integers(0, 2, rows).astype(float)
    frame["price"] = (frame.rooms * 10 + frame.area * 2 - frame.age_years
                      + generator.normal(0, 5, rows))
    return frame


def run(checkout, *command):
    return subprocess.run([sys.executable, *command], cwd=checkout, capture_output=True,
                          text=True, timeout=600)


def own_suite(checkout, modules):
    result = run(checkout, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                 "-n", "0", "-m", "not slow", *inner_basetemp(checkout), *modules)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


@pytest.mark.slow
def test_own_data_keeps_the_suite_green_and_a_feature_change_is_one_gate_line(
        baked, tmp_path):
    checkout = tmp_path / "houses"
    shutil.copytree(baked("github-py311"), checkout)
    houses(300).to_csv(checkout / "houses.csv", index=False)
    houses(300, extra_feature=True).to_csv(checkout / "houses-v2.csv", index=False)

    chosen = run(checkout, "-m", "ml_service", "use-data", "houses.csv", "--target", "price")
    assert chosen.returncode == 0, chosen.stderr
    assert "features = rooms, area, age_years" in chosen.stdout
    assert "left out 'neighborhood': not numeric" in chosen.stdout
    assert "next: python -m ml_service train" in chosen.stdout
    own_suite(checkout, DATA_DEPENDENT_TESTS)

    registered = run(checkout, "-m", "ml_service", "register-data", "--name", "houses",
                     "--path", "houses.csv")
    assert registered.returncode == 0, registered.stderr
    assert "Local only" in registered.stdout
    config = checkout / "mlops.toml"
    config.write_text(config.read_text().replace('source = "houses.csv"',
                                                 'source = "data:houses:1"'))
    own_suite(checkout, REGISTERED_DATA_TESTS)

    pipeline = run(checkout, "-c", PIPELINE_WITH_CHAMPION)
    assert pipeline.returncode == 0, pipeline.stdout[-3000:] + pipeline.stderr[-3000:]
    assert ("evaluate: gate PASSED - schema change: the champion (version 1) was trained on "
            "other features (added garage), so it cannot be scored on the same rows; "
            "decided on the R2 floor alone") in pipeline.stdout, pipeline.stdout
    assert "Traceback" not in pipeline.stderr
