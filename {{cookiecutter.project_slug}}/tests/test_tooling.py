"""The developer tooling: pre-commit hooks, scanners, coverage, the dependency audit,
`make help`, the console script and Dependabot.

pre-commit itself needs the network to install its hooks, so what each hook checks is
run here directly with the tools the dev requirements install, on a git copy of the
project (detect-secrets, bandit, YAML/JSON/TOML, whitespace); the CI-file hooks
(check-jsonschema, actionlint) are what tests/ci/test_definitions.py runs, and the local
hooks (actionlint, the Azure Pipelines check) run here as pre-commit runs them.
"""
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from ml_service.targets.loopback import free_port
from tests.helpers.http_stub import JsonHandler, serving

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
PRE_COMMIT = yaml.safe_load((PROJECT_ROOT / ".pre-commit-config.yaml").read_text())
AUDIT_SCRIPT = PROJECT_ROOT / "tools" / "dependency_audit.py"
# What git would not track (.gitignore) and need not be copied.
NOT_TRACKED = (".git", ".venv", "mlruns", "build", ".mlops", "__pycache__", ".pytest_cache",
               "*.egg-info", "test-results", "htmlcov", ".coverage*")
# Hook repositories whose tool the dev requirements also install: CI runs that one.
HOOK_PACKAGES = {
    "https://github.com/PyCQA/flake8": "flake8",
    "https://github.com/Yelp/detect-secrets": "detect-secrets",  # pragma: allowlist secret
    "https://github.com/PyCQA/bandit": "bandit",
    "https://github.com/python-jsonschema/check-jsonschema": "check-jsonschema",
}


def run(*command, cwd=PROJECT_ROOT, env=None, timeout=300):
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def dev_requirements():
    lines = (PROJECT_ROOT / "requirements-dev.txt").read_text().splitlines()
    requirements = [Requirement(line) for line in lines if line.strip()
                    and not line.startswith(("#", "-"))]
    return {requirement.name.lower(): requirement for requirement in requirements}


@pytest.fixture
def checkout(tmp_path):
    """A git copy of the project with what a clone would have: tests change only it."""
    copy = tmp_path / "checkout"
    shutil.copytree(PROJECT_ROOT, copy, ignore=shutil.ignore_patterns(*NOT_TRACKED))
    git = ["git", "-c", "user.name=tests", "-c", "user.email=tests@localhost"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "checkout"]):
        subprocess.run([*git, *command], cwd=copy, check=True, capture_output=True)
    return copy


def tracked_files(checkout, *listing):
    """The files of `checkout` git lists: all it tracks, or those of `listing` (a git
    command printing file names, e.g. the staged ones)."""
    names = run("git", *(listing or ("ls-files",)), "-z", cwd=checkout).stdout.split("\0")
    return [checkout / name for name in names if name]


# --- pre-commit ------------------------------------------------------------------------

def hooks():
    for repo in PRE_COMMIT["repos"]:
        for hook in repo["hooks"]:
            yield repo, hook


def test_pre_commit_config_is_valid():
    result = run(sys.executable, "-m", "pre_commit", "validate-config",
                 ".pre-commit-config.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hook_is_pinned():
    for repo in PRE_COMMIT["repos"]:
        if repo["repo"] == "local":
            for hook in repo["hooks"]:
                for dependency in hook.get("additional_dependencies", []):
                    assert re.fullmatch(r"[\w.-]+==[\w.]+", dependency), (
                        f"hook {hook['id']}: pin {dependency} with ==")
        else:
            assert re.fullmatch(r"v?\d+\.\d+\.\d+|[0-9a-f]{40}", str(repo["rev"])), (
                f"{repo['repo']}: rev {repo['rev']} is not a release tag or commit SHA")


def test_hook_versions_are_the_ones_ci_installs():
    """The pre-commit hook and CI's own run use the same release of each tool."""
    requirements = dev_requirements()
    pinned = {HOOK_PACKAGES[repo["repo"]]: str(repo["rev"]).removeprefix("v")
              for repo in PRE_COMMIT["repos"] if repo["repo"] in HOOK_PACKAGES}
    for _, hook in hooks():
        for dependency in hook.get("additional_dependencies", []):
            requirement = Requirement(dependency)
            if requirement.name.lower() in requirements:
                pinned[requirement.name.lower()] = str(requirement.specifier).removeprefix("==")
    assert {"flake8", "detect-secrets", "bandit"} <= set(pinned)
    for package, version in pinned.items():
        allowed = requirements[package].specifier
        assert allowed.contains(version), (
            f"pre-commit runs {package} {version}, requirements-dev.txt allows {allowed}: "
            "move both together")


def test_ci_file_hooks_are_there_exactly_for_the_ci_files(checkout):
    """Hooks for GitHub or Azure Pipelines files exist only where those files do, and a
    hook's `files` pattern matches at least one file (else it would check nothing)."""
    ids = {hook["id"] for _, hook in hooks()}
    github = (PROJECT_ROOT / ".github").is_dir()
    azure = (PROJECT_ROOT / ".azure-pipelines").is_dir()
    assert ({"check-github-workflows", "check-dependabot", "actionlint"} <= ids) == github
    assert bool({"check-github-workflows", "check-dependabot", "actionlint"} & ids) == github
    assert ("check-azure-pipelines" in ids) == azure
    names = [str(path.relative_to(checkout)) for path in tracked_files(checkout)]
    for _, hook in hooks():
        if "files" in hook:
            assert any(re.search(hook["files"], name) for name in names), (
                f"hook {hook['id']}: `files: {hook['files']}` matches no file")


def test_local_hooks_pass_on_the_project(checkout):
    """The `repo: local` hooks (their tools are dev requirements, so they run here as
    pre-commit would run them): entry, args and the tracked files `files` selects."""
    local = [hook for repo, hook in hooks() if repo["repo"] == "local"]
    assert local
    names = [path.relative_to(checkout).as_posix() for path in tracked_files(checkout)]
    # pre-commit puts the hook's environment first on PATH; here it is this interpreter's.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for hook in local:
        selected = [name for name in names if re.search(hook["files"], name)]
        result = run(*shlex.split(hook["entry"]), *hook.get("args", []), *selected,
                     cwd=checkout, env=env)
        assert result.returncode == 0, f"hook {hook['id']}: {result.stdout}{result.stderr}"


def test_yaml_json_and_toml_files_parse(checkout):
    """What check-yaml, check-json and check-toml check."""
    parsers = {".yml": lambda text: list(yaml.safe_load_all(text)),
               ".yaml": lambda text: list(yaml.safe_load_all(text)),
               ".json": json.loads, ".toml": tomllib.loads}
    checked = 0
    for path in tracked_files(checkout):
        if path.suffix in parsers:
            parsers[path.suffix](path.read_text())
            checked += 1
    assert checked > 20


def test_text_files_end_with_one_newline_and_no_trailing_whitespace(checkout):
    """What end-of-file-fixer and trailing-whitespace would otherwise rewrite."""
    for path in tracked_files(checkout):
        data = path.read_bytes()
        if not data or b"\0" in data:
            continue
        name = path.relative_to(checkout)
        assert data.endswith(b"\n") and not data.endswith(b"\n\n"), f"{name}: end of file"
        lines = data.decode().splitlines()
        trailing = [number for number, line in enumerate(lines, 1) if line != line.rstrip()]
        assert trailing == [], f"{name}: trailing whitespace on line(s) {trailing}"


# --- detect-secrets and bandit ---------------------------------------------------------

def detect_secrets(checkout, files):
    return run(sys.executable, "-m", "detect_secrets.pre_commit_hook", "--baseline",
               ".secrets.baseline", *map(str, files), cwd=checkout)


def test_no_secret_beyond_the_baseline(checkout):
    baseline = (checkout / ".secrets.baseline").read_text()
    result = detect_secrets(checkout, tracked_files(checkout))  # pre-commit run --all-files
    assert result.returncode == 0, result.stdout + result.stderr
    assert (checkout / ".secrets.baseline").read_text() == baseline, "baseline rewritten"
    assert json.loads(baseline)["results"] == {}, "no accepted finding: mark false positives"


def test_detect_secrets_stops_a_new_secret(checkout):
    token = "".join(("q8Zr3XbP0vLk", "2mN9sT4wYc7Ua1Hd5Jf6"))  # apart: not a finding here
    (checkout / "settings_local.py").write_text(f'API_TOKEN = "{token}"\n')
    subprocess.run(["git", "add", "settings_local.py"], cwd=checkout, check=True)
    # What pre-commit passes the hook at `git commit`: the staged files (the whole tree
    # is scanned above, as `pre-commit run --all-files` does).
    result = detect_secrets(checkout, tracked_files(checkout, "diff", "--cached", "--name-only"))
    assert result.returncode != 0
    assert "settings_local.py" in result.stdout


def bandit(*targets, cwd=PROJECT_ROOT):
    result = run(sys.executable, "-m", "bandit", "-c", str(PROJECT_ROOT / "pyproject.toml"),
                 "--severity-level", "medium", "--format", "json", "--quiet", "-r", *targets,
                 cwd=cwd)
    return result, json.loads(result.stdout)["results"]


def test_bandit_finds_no_medium_or_high_issue():
    result, findings = bandit(".")
    assert findings == [], [f"{f['filename']}:{f['line_number']} {f['test_id']} "
                            f"{f['issue_text']}" for f in findings]
    assert result.returncode == 0


def test_bandit_flags_an_unchecked_urlopen(tmp_path):
    (tmp_path / "fetch.py").write_text(
        "import urllib.request\n\n\ndef fetch(url):\n"
        "    return urllib.request.urlopen(url).read()\n")
    result, findings = bandit(".", cwd=tmp_path)
    assert [finding["test_id"] for finding in findings] == ["B310"]
    assert result.returncode == 1


def test_every_nosec_names_the_check_and_says_why():
    for path in PROJECT_ROOT.rglob("*.py"):
        if set(path.relative_to(PROJECT_ROOT).parts) & {"tests", ".venv", "build"}:
            continue
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if "nosec" in line and not line.lstrip().startswith("#"):
                where = f"{path.relative_to(PROJECT_ROOT)}:{number + 1}"
                assert re.search(r"# nosec B\d{3}$", line), f"{where}: `# nosec BXXX`"
                assert lines[number - 1].lstrip().startswith("#"), (
                    f"{where}: the comment line above says why it is safe")


# --- coverage and test results ---------------------------------------------------------

def test_coverage_and_junit_reports_come_from_pyproject_settings(tmp_path):
    """The CI command (pytest --cov ... --junitxml) with [tool.coverage] of pyproject.toml
    measures the project's packages, branches included."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("from ml_service.errors import MlopsError\n\n\n"
                     "def test_probe():\n    assert MlopsError('what', 'fix').fix == 'fix'\n")
    coverage_xml, junit = tmp_path / "coverage.xml", tmp_path / "junit.xml"
    env = {**os.environ, "COVERAGE_FILE": str(tmp_path / ".coverage")}
    result = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                 "-c", "pyproject.toml", "--rootdir", ".", "--cov",
                 f"--cov-report=xml:{coverage_xml}", f"--junitxml={junit}", str(probe),
                 env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = coverage_xml.read_text()
    measured = set(re.findall(r'filename="([^"]+)"', report))
    assert "ml_service/errors.py" in measured and "training/model.py" in measured
    assert {name.split("/")[0] for name in measured} <= {"ml_service", "training", "scoring"}
    assert re.search(r'<coverage [^>]*branches-valid="[1-9]', report), "branch coverage"
    assert 'tests="1"' in junit.read_text() and 'failures="0"' in junit.read_text()


def test_a_run_keeps_the_temporary_folders_of_failed_tests_only(tmp_path):
    """What a run leaves in the temporary folder (each test copies the project and its
    store): a passed test's folder goes, a failed test's stays for a look."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("def test_passes(tmp_path):\n    (tmp_path / 'written').write_text('x')\n\n\n"
                     "def test_fails(tmp_path):\n    (tmp_path / 'written').write_text('x')\n"
                     "    assert False\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                 "-p", "no:randomly", "-c", "pyproject.toml", "--rootdir", ".", str(probe),
                 env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode == 1, result.stdout + result.stderr  # the one failure
    kept = sorted(path.parent.name for path in scratch.rglob("written"))
    assert kept == ["test_fails0"], kept


# --- the dependency audit --------------------------------------------------------------

class OsvStub(JsonHandler):
    """The OSV query API on loopback: the server's `advisories` maps (name, version) to
    advisory ids."""

    def do_POST(self):
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name, version = query["package"]["name"], query["version"]
        ids = self.server.advisories.get((name, version), [])
        self.send_json(200, {"vulns": [{
            "id": advisory, "summary": f"{advisory} in {name}",
            "affected": [{"package": {"name": name, "ecosystem": "PyPI"}, "ranges": [
                {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "99.0"}]}]}],
        } for advisory in ids]} if ids else {})


@pytest.fixture
def osv_service():
    """Start a vulnerability service knowing the given advisories; yield its URL."""
    with contextlib.ExitStack() as servers:
        def start(advisories):
            server = servers.enter_context(serving(OsvStub, advisories=advisories))
            return f"http://127.0.0.1:{server.server_port}/v1/query"
        yield start


CANARY = ("requests", "2.19.0")


def audit(tmp_path, *arguments, ci="github"):
    """Run tools/dependency_audit.py as a CI step of `ci` would; (result, summary)."""
    summary = tmp_path / "summary.md"
    summary.touch()
    env = {key: value for key, value in os.environ.items()
           if key not in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "TF_BUILD")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    if ci == "github":
        env.update(GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary))
    else:
        env.update(TF_BUILD="True")
    result = run(sys.executable, str(AUDIT_SCRIPT), "--timeout", "5", *arguments, env=env)
    return result, summary.read_text()


@pytest.fixture
def pinned(tmp_path):
    requirements = tmp_path / "pinned.txt"
    requirements.write_text("pyyaml==6.0.1\nclick==8.1.7\n")
    return str(requirements)


def test_audit_reports_not_checked_when_the_service_is_unreachable(tmp_path, pinned):
    url = f"http://127.0.0.1:{free_port()}/v1/query"
    result, summary = audit(tmp_path, "--osv-url", url, "-r", pinned)
    assert result.returncode == 0, result.stderr
    assert "NOT CHECKED" in result.stdout and "NOT CHECKED" in summary
    assert "::warning title=Dependency audit (pip-audit)::" in result.stdout
    assert "No known vulnerabilities" not in result.stdout + summary


def test_audit_reports_not_checked_when_the_service_misses_a_known_advisory(
        tmp_path, pinned, osv_service):
    url = osv_service({})  # answers, but knows nothing: its "clean" means nothing
    result, summary = audit(tmp_path, "--osv-url", url, "-r", pinned, ci="azure")
    assert result.returncode == 0
    assert "NOT CHECKED" in result.stdout and "requests==2.19.0" in result.stdout
    assert "##vso[task.logissue type=warning]" in result.stdout
    assert "##vso[task.complete result=SucceededWithIssues;]" in result.stdout


def test_audit_passes_what_a_trusted_service_finds_clean(tmp_path, pinned, osv_service):
    url = osv_service({CANARY: ["PYSEC-2018-28"]})
    result, summary = audit(tmp_path, "--osv-url", url, "-r", pinned)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Checked 2 packages" in summary and "No known vulnerabilities." in summary
    assert "::warning" not in result.stdout and "::error" not in result.stdout


def test_audit_fails_on_a_known_vulnerability(tmp_path, pinned, osv_service):
    url = osv_service({CANARY: ["PYSEC-2018-28"], ("pyyaml", "6.0.1"): ["GHSA-test-0001"]})
    result, summary = audit(tmp_path, "--osv-url", url, "-r", pinned)
    assert result.returncode == 1
    assert "pyyaml 6.0.1: GHSA-test-0001 (fixed in: 99.0)" in summary
    assert "::error title=Dependency audit (pip-audit)::" in result.stdout


# --- make help and the console script --------------------------------------------------

def test_make_lists_every_target_with_its_help():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # As a top-level make, even when this suite itself runs under make (a sub-make prints
    # "Entering directory" lines).
    env = {key: value for key, value in os.environ.items()
           if key not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    default, help_ = run("make", env=env), run("make", "help", env=env)
    assert default.returncode == 0 and default.stdout == help_.stdout
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:((?:.*\\\n)*.*)$", makefile, re.M).group(1)
    targets = phony.replace("\\\n", " ").split()
    listed = {}
    for line in default.stdout.splitlines():
        names, text = re.fullmatch(r"\s+(.+?)\s{2,}(.+)", line).groups()
        listed.update(dict.fromkeys(names.split(), text))
    assert sorted(listed) == sorted(targets)
    assert all(listed.values()), [name for name, text in listed.items() if not text]


def console_script(*arguments):
    """Run the [project.scripts] entry point exactly as the script pip writes does."""
    (name, target), = PYPROJECT["project"]["scripts"].items()
    wrapper = ("import sys; from importlib.metadata import EntryPoint; "
               f"sys.exit(EntryPoint({name!r}, {target!r}, 'console_scripts').load()())")
    return run(sys.executable, "-c", wrapper, *arguments)


def test_console_script_is_the_cli_with_its_exit_codes():
    assert PYPROJECT["project"]["scripts"] == {"mlops": "ml_service.cli:main"}
    help_ = console_script("--help")
    assert help_.returncode == 0 and "promote" in help_.stdout
    missing = console_script("--config", "no-such-file.toml", "train")
    assert missing.returncode == 2, missing.stderr
    assert "no-such-file.toml does not exist" in missing.stderr


def test_installed_console_script_runs():
    """Where the project is installed (pip install -e '.[dev]', as in CI), `mlops` is."""
    script = shutil.which("mlops", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the project is not installed in this environment")
    result = run(script, "--config", "no-such-file.toml", "train")
    assert result.returncode == 2 and "does not exist" in result.stderr


# --- Dependabot ------------------------------------------------------------------------

@pytest.mark.skipif(not (PROJECT_ROOT / ".github").is_dir(),
                    reason="no .github/ in this project (ci_platform=azure-devops)")
def test_dependabot_matches_its_schema_and_covers_actions_and_requirements():
    path = PROJECT_ROOT / ".github" / "dependabot.yml"
    checker = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert checker, "install the dev requirements (check-jsonschema)"
    result = run(checker, "--builtin-schema", "vendor.dependabot", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    updates = yaml.safe_load(path.read_text())["updates"]
    ecosystems = {(update["package-ecosystem"], update["directory"]) for update in updates}
    assert {("github-actions", "/"), ("pip", "/"), ("pip", "/scoring")} <= ecosystems
    for _, directory in ecosystems:
        assert (PROJECT_ROOT / directory.lstrip("/")).is_dir(), directory
