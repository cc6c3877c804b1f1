"""The house rules of the code, read from its imports (every import statement, also
those inside functions, which load on use but are dependencies all the same).

- imports go one way: no module reaches, however indirectly, back to itself;
- a stage (one CLI verb) never imports another stage: what two verbs share lives
  below them, in backends/, releasing/, targets/ or azure/;
- training/ never imports ml_service or Azure, so the Azure ML steps run without them.
"""
import ast

from tests.helpers.project import PROJECT_ROOT

PACKAGES = ("ml_service", "training")


def module_name(path):
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return {module_name(path): path for package in PACKAGES
            for path in (PROJECT_ROOT / package).rglob("*.py")}


def imported(path, known):
    """Every module `path` imports (`from a import b` is a.b when that is a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                names.add(candidate if candidate in known else node.module)
    return names


def import_graph():
    known = modules()
    return {name: imported(path, known) for name, path in known.items()}


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(name, trail):
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                return trail[trail.index(target):] + [target]
            if target in graph and target not in state:
                found = visit(target, trail + [target])
                if found:
                    return found
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "os"}, "b": set()}) is None


def test_imports_go_one_way():
    assert find_cycle(import_graph()) is None


def test_stages_do_not_import_stages():
    graph = import_graph()
    stages = {name for name in graph if name.startswith("ml_service.stages.")}
    calls = {stage: sorted(graph[stage] & stages) for stage in stages if graph[stage] & stages}
    assert calls == {}


def test_training_needs_neither_ml_service_nor_azure():
    found = {name: sorted(target for target in targets
                          if target.split(".")[0] in ("ml_service", "azure", "azureml"))
             for name, targets in import_graph().items() if name.startswith("training")}
    assert {name: targets for name, targets in found.items() if targets} == {}
