"""Stage results for people and for CI.

Each stage prints one line per result. Under GitHub Actions the results also
become step outputs ($GITHUB_OUTPUT) and a job summary ($GITHUB_STEP_SUMMARY);
under Azure Pipelines (TF_BUILD) they become output variables. CI steps can
then pass e.g. the model version to the next job without parsing text.
"""
import os


def publish(stage, message, outputs=None, environ=None):
    """Print `message` and hand `outputs` (name -> value) to the CI system, if any."""
    environ = os.environ if environ is None else environ
    outputs = {name: "" if value is None else str(value) for name, value in (outputs or {}).items()}
    print(f"{stage}: {message}", flush=True)
    if environ.get("GITHUB_OUTPUT"):
        with open(environ["GITHUB_OUTPUT"], "a") as handle:
            handle.writelines(f"{name}={value}\n" for name, value in outputs.items())
    if environ.get("GITHUB_STEP_SUMMARY"):
        with open(environ["GITHUB_STEP_SUMMARY"], "a") as handle:
            handle.write(f"### {stage}\n\n{message}\n\n")
            handle.writelines(f"- **{name}**: `{value}`\n" for name, value in outputs.items())
            handle.write("\n")
    if environ.get("TF_BUILD"):
        for name, value in outputs.items():
            print(f"##vso[task.setvariable variable={name};isOutput=true]{value}", flush=True)
