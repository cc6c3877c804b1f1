"""Stage results for people and for CI.

Each stage prints one line per result. Under GitHub Actions the results also
become step outputs ($GITHUB_OUTPUT) and a job summary ($GITHUB_STEP_SUMMARY);
under Azure Pipelines (TF_BUILD) they become output variables. CI steps can
then pass e.g. the model version to the next job without parsing text.
A stage's markdown document (e.g. the gate report) goes to the same places people
look: the GitHub job summary, or the Azure Pipelines run's summary tab.
"""
import os
from pathlib import Path


def publish(stage, message, outputs=None, environ=None):
    """Print `message` and hand `outputs` (name -> value) to the CI system, if any."""
    environ = os.environ if environ is None else environ
    outputs = {name: "" if value is None else str(value) for name, value in (outputs or {}).items()}
    print(f"{stage}: {message}", flush=True)
    if environ.get("GITHUB_OUTPUT"):
        with open(environ["GITHUB_OUTPUT"], "a") as handle:
            handle.writelines(f"{name}={value}\n" for name, value in outputs.items())
    _append_to_job_summary(environ, f"### {stage}\n\n{message}\n\n" + "".join(
        f"- **{name}**: `{value}`\n" for name, value in outputs.items()) + "\n")
    if environ.get("TF_BUILD"):
        for name, value in outputs.items():
            print(f"##vso[task.setvariable variable={name};isOutput=true]{value}", flush=True)


def publish_document(stage, path, environ=None):
    """Say where the markdown file at `path` is, and show it on the CI run's summary."""
    environ = os.environ if environ is None else environ
    path = Path(path).resolve()
    print(f"{stage}: report {path}", flush=True)
    _append_to_job_summary(environ, path.read_text().rstrip("\n") + "\n\n")
    if environ.get("TF_BUILD"):
        # Azure Pipelines attaches the file itself (by absolute path) to the summary tab.
        print(f"##vso[task.uploadsummary]{path}", flush=True)


def _append_to_job_summary(environ, markdown):
    if environ.get("GITHUB_STEP_SUMMARY"):
        with open(environ["GITHUB_STEP_SUMMARY"], "a") as handle:
            handle.write(markdown)
