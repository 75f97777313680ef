"""The package's layering, checked on the source: no import cycles and no import from a higher layer, counting the
imports inside functions too (a lazy import hides a cycle from Python, not from whoever reads the code)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "yolo_opt"
# Lower layers never import higher ones (DESIGN.md: data flows one way). Same-rank packages may import each other
# as long as no module cycle forms.
LAYERS = [
    ("errors",), ("options",), ("arch",), ("io",), ("data",), ("validation",), ("quant",), ("prune", "distill"),
    ("deploy", "bench"), ("training",), ("tuning",), ("pipeline",), ("cli",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the yolo_opt modules it imports anywhere in its file (top level, functions, TYPE_CHECKING)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("yolo_opt"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("yolo_opt"))
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package facade `yolo_opt` itself


def test_every_package_has_a_layer():
    assert {_layer(m) for m in import_graph()} - {None} <= set(RANK)


def test_no_import_from_a_higher_layer():
    upward = []
    for module, deps in import_graph().items():
        if _layer(module) is None:
            continue  # the lazy facade exposes every layer's verbs
        for dep in deps:
            if _layer(dep) is not None and RANK[_layer(dep)] > RANK[_layer(module)]:
                upward.append(f"{module} -> {dep}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    """No cycle among modules (a package's __init__ re-exporting its modules is not a dependency of them)."""
    graph = import_graph()
    packages = {m for m in graph if (ROOT.parent / m.replace(".", "/") / "__init__.py").exists()}
    edges = {m: {d for d in deps if d not in packages} for m, deps in graph.items() if m not in packages}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _functions_and_calls():
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Call)):
                yield path.relative_to(ROOT.parent), node


def test_long_signatures_are_keyword_only():
    """No function takes more than 8 parameters without a `*`: past that, a positional call is unreadable."""
    long = [f"{path}:{node.lineno} {node.name}" for path, node in _functions_and_calls()
            if not isinstance(node, ast.Call) and not node.args.kwonlyargs and node.args.vararg is None
            and len(node.args.posonlyargs) + len(node.args.args) > 8]
    assert not long, "more than 8 parameters and no `*`:\n" + "\n".join(long)


def test_no_call_of_ours_passes_more_than_four_positional_arguments():
    """Calls of yolo_opt's own functions name what they pass after the fourth argument (library calls such as
    cv2's drawing functions keep their own conventions)."""
    ours = {node.name for _, node in _functions_and_calls() if not isinstance(node, ast.Call)}
    long = []
    for path, node in _functions_and_calls():
        if isinstance(node, ast.Call) and len(node.args) > 4:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            # a module's attribute (cv2.ellipse, nn.Conv2d) is a library's, unless it is one of our modules
            library = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and \
                func.value.id in {"cv2", "nn", "np", "torch", "F"}
            if name in ours and not library:
                long.append(f"{path}:{node.lineno} {ast.unparse(func)}")
    assert not long, "calls with more than 4 positional arguments:\n" + "\n".join(long)
