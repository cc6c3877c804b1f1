"""Known vulnerabilities in the installed packages (pip-audit), or a plain "NOT CHECKED".

pip-audit prints "No known vulnerabilities found" and exits 0 even when its
vulnerability service could not answer for the packages (it skips them), so its
exit code cannot tell "checked and clean" from "not checked". This script first
asks the same service about a release with a published advisory (the canary) and
trusts the audit only if the service reports it.

    python tools/dependency_audit.py                   # the packages of this Python
    python tools/dependency_audit.py -r pinned.txt     # a pinned list (pip freeze)

Outcomes, also written to the CI job summary and as a CI warning or error:
  exit 0  checked: no known vulnerabilities;
  exit 1  checked: vulnerable packages, each with its advisories and fixed versions;
  exit 0  NOT CHECKED, with the reason (service unreachable, or it did not know the
          canary's advisory, or it could not answer for any package). A job never
          looks clean when nothing was checked, and a registry outage does not fail it.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# requests 2.19.0: CVE-2018-18074 (PYSEC-2018-28), published 2018; fixed in 2.20.0.
CANARY = "requests==2.19.0"
AUDIT_TIMEOUT = 900


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--requirement", action="append", default=[], metavar="FILE",
                        help="audit this pinned requirements file instead of the installed "
                             "packages (may be repeated)")
    parser.add_argument("--vulnerability-service", choices=["pypi", "osv"], default="pypi",
                        help="where pip-audit looks advisories up (default: pypi)")
    parser.add_argument("--osv-url", help="an OSV query endpoint (implies the osv service)")
    parser.add_argument("--timeout", type=int, default=15, help="seconds per request")
    return parser.parse_args(argv)


def pip_audit(service, targets):
    """pip-audit's JSON report for `targets`, or (None, why) if it produced none."""
    command = [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner",
               "off", *service, *targets]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=AUDIT_TIMEOUT,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"pip-audit did not finish in {AUDIT_TIMEOUT} s"
    try:
        return json.loads(result.stdout), None
    except ValueError:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return None, f"pip-audit failed (exit {result.returncode}): " + (
            lines[-1] if lines else "no output")


def pinned_targets(files):
    # Pinned lists need no resolver (and so no package index): one query per line.
    return ["--no-deps", "--disable-pip", *[part for file in files for part in ("-r", file)]]


def canary_problem(service):
    """Why the service cannot be trusted, or None if it reports the canary's advisory."""
    with tempfile.TemporaryDirectory() as folder:
        canary = Path(folder, "canary.txt")
        canary.write_text(CANARY + "\n")
        report, failure = pip_audit(service, pinned_targets([str(canary)]))
    if failure:
        return failure
    dependencies = report.get("dependencies", [])
    if any(dependency.get("vulns") for dependency in dependencies):
        return None
    reasons = [dependency["skip_reason"] for dependency in dependencies
               if dependency.get("skip_reason")]
    return (f"the vulnerability service did not report the published advisory of {CANARY}"
            + (f" ({reasons[0]})" if reasons else ""))


def audit(args):
    """(exit code, report lines, CI annotation or None)."""
    service = ["--vulnerability-service", "osv" if args.osv_url else args.vulnerability_service,
               "--timeout", str(args.timeout)]
    if args.osv_url:
        service += ["--osv-url", args.osv_url]
    where = args.osv_url or args.vulnerability_service
    problem = canary_problem(service)
    if problem is None:
        targets = (pinned_targets(args.requirement) if args.requirement
                   else ["--skip-editable"])
        report, problem = pip_audit(service, targets)
    if problem:
        return not_checked(f"{problem}. Service: {where}.")
    dependencies = report.get("dependencies", [])
    skipped = [dependency for dependency in dependencies if dependency.get("skip_reason")]
    checked = len(dependencies) - len(skipped)
    if checked == 0:
        return not_checked(f"the service answered for none of the {len(dependencies)} "
                           f"packages ({skipped[0]['skip_reason'] if skipped else 'none found'}). "
                           f"Service: {where}.")
    vulnerable = [dependency for dependency in dependencies if dependency.get("vulns")]
    lines = [f"Checked {checked} packages against {where}."]
    lines += [f"- not checked: {dependency['name']} ({dependency['skip_reason']})"
              for dependency in skipped]
    if not vulnerable:
        return 0, lines + ["No known vulnerabilities."], None
    for dependency in vulnerable:
        for vulnerability in dependency["vulns"]:
            fixed = ", ".join(vulnerability.get("fix_versions", [])) or "no fixed release yet"
            lines.append(f"- {dependency['name']} {dependency['version']}: "
                         f"{vulnerability['id']} (fixed in: {fixed})")
    names = ", ".join(dependency["name"] for dependency in vulnerable)
    return 1, lines, ("error", f"Known vulnerabilities in {names}: upgrade them (see the "
                               "fixed versions) or record why an advisory does not apply.")


def not_checked(reason):
    message = (f"Dependencies NOT CHECKED for known vulnerabilities: {reason} "
               "Run `make audit` where the service is reachable.")
    return 0, [message], ("warning", message)


def publish(code, lines, annotation):
    """Print the result; in CI, also as a job summary and an annotation."""
    title = "Dependency audit (pip-audit)"
    print("\n".join(lines))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as handle:
            handle.write(f"### {title}\n\n" + "\n".join(lines) + "\n")
    if annotation is None:
        return
    level, message = annotation
    if os.environ.get("GITHUB_ACTIONS") == "true":
        print(f"::{level} title={title}::{message}")
    if os.environ.get("TF_BUILD"):
        print(f"##vso[task.logissue type={level}]{message}")
        if level == "warning":
            # Azure Pipelines shows the step as "succeeded with issues", not green.
            print("##vso[task.complete result=SucceededWithIssues;]not checked")


def main(argv=None):
    code, lines, annotation = audit(parse_arguments(argv))
    publish(code, lines, annotation)
    return code


if __name__ == "__main__":
    sys.exit(main())
