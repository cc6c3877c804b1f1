"""Azure ML bindings checked offline: every reference in a pipeline job must point at
something that exists.

Azure ML's local validation does not check that `parent.jobs.<step>` exists, nor
that a command's `inputs.<name>` is declared; a typo would only fail in the cloud.
No Azure import here: the check reads the job as a dict.
"""
import re

BINDING = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def shown(expression):
    """`expression` as written in a YAML file, inside Azure ML's binding braces."""
    return "$" + "{" * 2 + expression + "}" * 2


def binding_problems(job_dict):
    """Every Azure ML binding (dollar sign, two braces) in a job dict that refers to nothing."""
    steps = job_dict.get("jobs", {})
    parent_inputs = set(job_dict.get("inputs", {}))
    parent_outputs = set(job_dict.get("outputs", {}))
    problems = []

    def check(text, where, component=None):
        for expression in BINDING.findall(text):
            parts = expression.split(".")
            if parts[0] == "parent" and len(parts) >= 3 and parts[1] == "jobs":
                step = parts[2]
                if step not in steps:
                    problems.append(f"{where}: {shown(expression)} names no step "
                                    f"(steps: {', '.join(steps)})")
                    continue
                side = parts[3] if len(parts) > 3 else ""
                declared = steps[step].get("component", {}).get(side, {})
                if len(parts) != 5 or parts[3] not in ("inputs", "outputs") or (
                        parts[4] not in declared):
                    problems.append(f"{where}: {shown(expression)} is not an input or "
                                    f"output of step {step}")
            elif parts[0] == "parent" and len(parts) == 3 and parts[1] in ("inputs", "outputs"):
                known = parent_inputs if parts[1] == "inputs" else parent_outputs
                if parts[2] not in known:
                    problems.append(f"{where}: {shown(expression)} is not a pipeline "
                                    f"{parts[1][:-1]}")
            elif parts[0] in ("inputs", "outputs") and len(parts) == 2 and component is not None:
                if parts[1] not in component.get(parts[0], {}):
                    problems.append(f"{where}: {shown(expression)} is not declared in the "
                                    f"component's {parts[0]}")
            else:
                problems.append(f"{where}: {shown(expression)} is not a binding this "
                                "pipeline uses")

    def walk(value, where, component=None):
        if isinstance(value, str):
            check(value, where, component)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}", component)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]", component)

    for name, step in steps.items():
        component = step.get("component", {})
        walk(step.get("inputs", {}), f"jobs.{name}.inputs")
        walk(step.get("outputs", {}), f"jobs.{name}.outputs")
        walk(component.get("command", ""), f"jobs.{name}.component.command", component)
    return problems
