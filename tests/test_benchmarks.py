"""The template's own benchmark scripts run and print what they measure."""
import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import suite_cpu  # noqa: E402 (a script folder, no package)


def process_accounting_allowed(tmp_path):
    """Whether this test may turn accounting on and off: allowed (root), and not used by
    the machine itself (turning it off would end that)."""
    if suite_cpu.system_accounting():
        return False
    probe = tmp_path / "probe.pacct"
    probe.touch()
    try:
        suite_cpu.process_accounting(probe)
    except SystemExit:  # not allowed: its message says why
        return False
    suite_cpu.process_accounting(None)
    return True


def test_suite_cpu_counts_each_process_by_what_it_was_and_leaves_nothing_behind(tmp_path):
    if os.environ.get("SUITE_CPU_RUNNING"):
        pytest.skip("this run is measured by suite_cpu.py: accounting is taken")
    if not sys.platform.startswith("linux") or not process_accounting_allowed(tmp_path):
        pytest.skip("process accounting (acct) needs Linux, root, and the machine's own "
                    "accounting off")
    # Accounting counts the whole machine's processes (other tests' too): what is
    # asserted is what only this command runs, a module and a program of its own name.
    program = tmp_path / "suitecpuprobe"
    shutil.copy("/bin/true", program)
    command = ("import os, subprocess, sys\n"
               "os.environ['PYTEST_CURRENT_TEST'] = 'probe.py::test_probe (call)'\n"
               "for _ in range(3):\n"
               "    subprocess.run([sys.executable, '-m', 'json.tool', '--help'],"
               " capture_output=True)\n"
               f"subprocess.run([{str(program)!r}])\n"
               "sys.exit(3)\n")
    result = subprocess.run([sys.executable, str(BENCHMARKS / "suite_cpu.py"),
                             "--reference-runs", "1", "--", sys.executable, "-c", command],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr  # the command's own exit code
    # CPU-s, share, processes, CPU-s each, what
    rows = {what: int(processes) for processes, what in re.findall(
        r"(?m)^ *[\d.]+ +[\d.]+% +(\d+) +[\d.]+  (.+)$", result.stdout)}
    assert rows["python: -m json.tool --help"] == 3, result.stdout
    assert rows["other: suitecpuprobe"] == 1, result.stdout
    # The three interpreters the "test" started, by its node id (the program is no Python:
    # accounting names no test for it).
    assert re.search(r"(?m)^ *[\d.]+ +[\d.]+% +3  probe\.py::test_probe$", result.stdout), \
        result.stdout
    assert "(the command exited 3)" in result.stdout
    before, after = map(float, re.search(r"reference: ([\d.]+) CPU-s before, ([\d.]+) after",
                                         result.stdout).groups())
    assert before > 0.1 and after > 0.1, result.stdout  # an interpreter importing scikit-learn
    packages = Path(site.getsitepackages()[0])
    assert not list(packages.glob("zz_suite_cpu_*.pth")), "the argv recorder was left installed"


def test_suite_cpu_names_a_cli_process_by_its_verb_past_the_options_before_it():
    assert suite_cpu.cli_verb(["--backend", "azureml", "--dry-run", "pipeline"]) == "pipeline"
    assert suite_cpu.cli_verb(["--config", "other.toml", "train", "--x"]) == "train"
    assert suite_cpu.cli_verb(["deploy", "--target", "staging"]) == "deploy"
    assert suite_cpu.cli_verb(["--debug"]) == ""


def test_suite_cpu_names_a_process_by_its_program_not_by_the_paths_it_is_given():
    python = "/venv/bin/python"
    pytest_kind = "pytest and its xdist workers (tests run in-process)"
    assert suite_cpu.kind([python, "-m", "pytest", "-q"], False, "python") == pytest_kind
    assert suite_cpu.kind([python, "/venv/bin/pytest", "-x"], False, "python") == pytest_kind
    assert suite_cpu.kind([python, "-u", "-c", "import sys;exec(eval(sys.stdin.readline()))"],
                          False, "python") == pytest_kind
    scan = [python, "-m", "detect_secrets.pre_commit_hook", "--baseline", ".secrets.baseline",
            "/tmp/pytest-of-root/pytest-3/test_no_secret0/checkout/cd.yml"]
    assert suite_cpu.kind(scan, False, "python").startswith("python: -m detect_secrets")
    server = [python, "/venv/bin/gunicorn", "--config", "scoring/gunicorn.conf.py"]
    assert suite_cpu.kind(server, False, "python") == "scoring server: gunicorn master"
    assert suite_cpu.kind(server, True, "python") == "scoring server: gunicorn worker (fork)"
    probe = [python, "-c", "import runpy, sys; runpy.run_path(sys.argv[1])",
             "scoring/gunicorn.conf.py"]
    assert suite_cpu.kind(probe, False, "python").startswith("python: -c import runpy")
    assert suite_cpu.kind([python, "-m", "ml_service", "--debug", "train"], False,
                          "python") == "CLI: python -m ml_service train"
    split = [python, "/p/ml_service/targets/traffic_split.py", "--port", "8000"]
    assert suite_cpu.kind(split, False, "python") == "traffic split (canary front)"
    tail = [python, "-m", "flake8", "ml_service/targets/traffic_split.py"]
    assert suite_cpu.kind(tail, False, "python").startswith("python: -m flake8")
