"""Bake the template once per option combination and share the result."""
import json
import tomllib

import pytest
import yaml

# Independent options are cycled, not multiplied: every value of every option is
# baked at least once. Ids name the combination in test reports.
COMBINATIONS = {
    "both-custom-names": {
        "ci_platform": "both", "python_version": "3.11",
        "project_name": "Churn Forecast", "model_name": "churn_model.v2",
        "azure_workspace_name": "ws_churn-01", "azure_resource_group": "rg.churn(prod)",
        "azure_location": "eastus2",
        "azure_subscription_id": "3f2c9a1e-8b7d-4c6e-9f0a-1b2c3d4e5f60",
    },
    "github-py311": {"ci_platform": "github", "python_version": "3.11"},
    "azure-devops-py312": {"ci_platform": "azure-devops", "python_version": "3.12"},
}
# The slow tests (real scoring servers, replayed CI jobs) take minutes and depend on no
# option but the names and the CI files, so they run in full for the combination with
# unusual names and both CI platforms only.
FULL_SUITE = "both-custom-names"


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle
def pytest_collection_modifyitems(config, items):
    """The full suite's run first, the other slow tests next, each group in the order it
    was (randomly) given; and one fast test where the full suite's worker takes its next.

    The full suite's run is most of the whole run (minutes on workers of its own) and the
    rest fits beside it on the other worker. Shuffled, it started anywhere from first to
    94th of 102, so a run took the full suite's time plus whatever came before it. But
    `--dist loadgroup` gives the n workers two tests each before any ends (tests 0..n-1,
    then n..2n-1), and the full suite's worker holds its second until the suite ends: a
    slow test there (seed 9001: 140 s) ran after everything else, one core idle.
    Each test bakes or runs its own copy, so the order of the groups tests nothing that
    the order within them does not."""
    def rank(item):
        if not item.get_closest_marker("slow"):
            return 2
        params = getattr(item, "callspec", None)
        return 0 if params and params.params.get("combination") == FULL_SUITE else 1
    items.sort(key=rank)
    workers = getattr(config, "workerinput", {}).get("workercount")
    fast = next((index for index, item in enumerate(items) if rank(item) == 2), None)
    if workers and items and rank(items[0]) == 0 and fast is not None and fast > workers:
        items.insert(workers, items.pop(fast))


# What running a project leaves in it (caches, virtualenvs, stores, build contexts):
# never part of what the generator wrote, so never scanned.
WORKING_STATE = {"__pycache__", ".pytest_cache", ".venv", "build", "mlruns", ".mlops", ".git"}

PARSERS = {
    ".py": lambda text, path: compile(text, str(path), "exec"),
    ".json": lambda text, path: json.loads(text),
    ".toml": lambda text, path: tomllib.loads(text),
    ".yml": lambda text, path: list(yaml.safe_load_all(text)),
    ".yaml": lambda text, path: list(yaml.safe_load_all(text)),
}


def parse_structured_files(project):
    """Parse every Python, JSON, TOML and YAML file of `project` (an error names the
    first file that does not parse); return {relative path: parsed content}."""
    parsed = {}
    for path in sorted(project.rglob("*")):
        parse = PARSERS.get(path.suffix)
        if parse and path.is_file():
            relative = path.relative_to(project).as_posix()
            try:
                parsed[relative] = parse(path.read_text(), path)
            except Exception as error:
                raise AssertionError(f"{relative} does not parse: {error}") from error
    return parsed


def files(project):
    """The files the generator wrote in `project` (its working state aside)."""
    return [path for path in project.rglob("*")
            if path.is_file() and not WORKING_STATE & set(path.relative_to(project).parts)]


def changed_files(project, reference):
    """Relative paths of the files that differ between two bakes, or are in one only."""
    def contents(root):
        return {path.relative_to(root).as_posix(): path.read_bytes() for path in files(root)}
    ours, theirs = contents(project), contents(reference)
    return {path for path in ours.keys() | theirs.keys() if ours.get(path) != theirs.get(path)}


def inner_basetemp(checkout):
    """pytest's options for a baked suite run in `checkout`: its temporary folders inside
    the calling test's own (beside the checkout), so they go when that test passes
    (pytest.ini: tmp_path_retention_policy) and stay with it when it fails."""
    return ["--basetemp", str(checkout.parent / f"{checkout.name}-pytest")]


@pytest.fixture(scope="session")
def baked(cookies_session):
    """Return a function giving the baked project folder of a combination (baked once)."""
    projects = {}

    def bake(combination, **overrides):
        """`overrides` replace answers of the combination (a variant baked once too)."""
        key = (combination, tuple(sorted(overrides.items())))
        if key not in projects:
            result = cookies_session.bake(
                extra_context={**COMBINATIONS[combination], **overrides})
            assert result.exit_code == 0, result.exception
            projects[key] = result.project_path
        return projects[key]
    return bake


@pytest.fixture(params=list(COMBINATIONS))
def combination(request):
    return request.param


@pytest.fixture
def project(baked, combination):
    return baked(combination)
