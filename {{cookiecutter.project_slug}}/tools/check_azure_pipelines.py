"""Check Azure Pipelines files against check-jsonschema's vendored Azure Pipelines schema,
completed with the tasks it does not define yet.

check-jsonschema's own `check-azure-pipelines` hook reads Microsoft's schema from the
network (its vendored copy only when offline), so its verdict changes with the day and
the connection; the vendored copy names PublishCodeCoverageResults@2, which ci.yml uses,
but defines no inputs for it, so every use fails. This script runs the same checker with
the same options on the vendored schema plus the inputs Microsoft documents for those
tasks: the pre-commit hook and the tests judge with one schema, offline.

    python tools/check_azure_pipelines.py .azure-pipelines/ci.yml .azure-pipelines/cd.yml
"""
import json
import subprocess
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

# Tasks newer than the vendored schema, with the inputs Microsoft documents for them
# (Azure Pipelines task reference).
TASKS_MISSING_FROM_THE_SCHEMA = {
    "PublishCodeCoverageResults@2": {
        "type": "object",
        "properties": {"summaryFileLocation": {"type": "string"},
                       "pathToSources": {"type": "string"},
                       "failIfCoverageEmpty": {"type": "boolean"}},
        "additionalProperties": False,
        "required": ["summaryFileLocation"],
    },
}
# The options of check-jsonschema's check-azure-pipelines hook, with Python's regex
# engine: the schema's patterns crash the default one.
CHECK_OPTIONS = ("--data-transform", "azure-pipelines", "--regex-variant", "python")


def write_schema(folder):
    """Write the vendored schema plus TASKS_MISSING_FROM_THE_SCHEMA into `folder`;
    return its path."""
    vendored = files("check_jsonschema.builtin_schemas.vendor") / "azure-pipelines.json"
    schema = json.loads(vendored.read_text())
    branches = schema["definitions"]["task"]["anyOf"]
    defined = {branch.get("properties", {}).get("task", {}).get("pattern") for branch in branches}
    for task, inputs in TASKS_MISSING_FROM_THE_SCHEMA.items():
        if f"^{task}$" not in defined:
            branches.append({"properties": {"task": {"pattern": f"^{task}$"}, "inputs": inputs},
                             "required": ["task", "inputs"]})
    path = Path(folder) / "azure-pipelines.schema.json"
    path.write_text(json.dumps(schema))
    return path


def check(paths):
    """Run check-jsonschema on `paths`; return its completed process (output captured)."""
    with tempfile.TemporaryDirectory() as folder:
        return subprocess.run(
            [sys.executable, "-m", "check_jsonschema", "--schemafile", str(write_schema(folder)),
             *CHECK_OPTIONS, *map(str, paths)], capture_output=True, text=True)


def main(paths):
    try:
        result = check(paths)
    except ImportError:
        print("check-jsonschema is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
