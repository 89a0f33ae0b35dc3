"""Imports point one way (docs/architecture.md "Imports point one way"): no circles, no import running
back up the layers, and the project's own imports at the top of a module unless a reason is given.

The graph is read from the source (ast) of every module in src/longtail, components and pipelines,
module-level and function-level imports alike. Importing `a.b.c` also runs the packages `a.b` and
`a` above it, so those count as imported too (unless the importer is inside them). An import under
`if TYPE_CHECKING:` counts for the layers and the circles (a type named is a dependency), though it
never runs. Not counted: an `if __name__ == "__main__":` block, which runs only when the file is run
as a script, as `__main__`.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
# Where each package's source lives (pyproject.toml's package-dir).
PACKAGE_DIRS = {"longtail": REPO / "src" / "longtail", "longtail.components": REPO / "components",
                "longtail.pipelines": REPO / "pipelines"}

# The layers, top to bottom. A module may import its own layer and the layers below it, never one
# above. A module is in the layer whose longest prefix names it (`longtail.tracking` names the
# package and every module in it); a library module no layer names is in "library".
LIBRARY = "library"
DATA_MODEL = "data model"
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("CLI", ("longtail.cli", "longtail.commands")),
    # longtail.katib writes the search's Katib Experiment, the cluster's other spec beside the pipelines,
    # wired as they are (their ConfigMap, Secrets and step image).
    ("pipelines", ("longtail.pipelines", "longtail.katib")),
    ("components", ("longtail.components",)),
    ("use cases", ("longtail.post_run", "longtail.sweep_run", "longtail.tune", "longtail.tune_trials", "longtail.trial_run")),
    (LIBRARY, ()),
    # The MLflow adapter: it records the data model below (configs, model directories, splits).
    ("tracking", ("longtail.tracking",)),
    # These and every library module they import (layers_of): what tracking reads and records.
    (DATA_MODEL, ("longtail.config", "longtail.model_dir", "longtail.preprocessing", "longtail.splits")),
    # Constants and the smallest building blocks, shared by every layer; `longtail` is the package's
    # own __init__ (its version).
    ("leaves", ("longtail", "longtail.errors", "longtail.credentials", "longtail.atomic_file", "longtail.image_size",
                "longtail.ingest_report", "longtail.data_folder", "longtail.seed", "longtail.tracking.names",
                "longtail.disk_full")),
]
LAYER_NAMES = [name for name, _ in LAYERS]

# What is slow to import: a module that imports one of these, at its top or through the project
# modules it imports at their top, may be imported inside a function without a comment.
SLOW_LIBRARIES = {"tensorflow", "keras", "mlflow", "kfp", "cv2", "h5py"}
SLOW_TO_IMPORT = {
    "longtail.datasets",  # OpenCV
    "longtail.decode_worker",  # OpenCV
    "longtail.input_pipeline",  # TensorFlow
    "longtail.models.fused_batch_norm",  # TensorFlow
    "longtail.pipelines.local",  # kfp, through the pipelines
    "longtail.splits",  # h5py
    "longtail.training.callbacks",  # Keras
    "longtail.training.ema",  # Keras
}
# Comments that are directives to a tool, not a reason.
PRAGMAS = ("noqa", "type:", "pragma")


class Import(NamedTuple):
    importer: str
    target: str  # a project module, or a top-level third-party name
    line: int
    where: str  # "top", "type-checking" (not run) or "function"
    reason: str  # the comment on its lines, or above it (or above the run of imports it ends); "" if none
    in_component: bool  # inside a kfp component's function, which kfp runs alone in a container


def module_names() -> dict[str, Path]:
    """Every project module, by dotted name, with its file."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _comments(source: str) -> dict[int, str]:
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if text and not text.startswith(PRAGMAS):
                comments[token.start[0]] = text
    return comments


def _is_main_block(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_component(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in node.decorator_list:
        call = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = call.attr if isinstance(call, ast.Attribute) else getattr(call, "id", "")
        if name in ("component", "container_component"):
            return True
    return False


def _resolve(name: str, modules: Iterable[str]) -> str:
    """The project module `name` (a.b.c, or a.b.attr) loads: the longest module prefix of it."""
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def parse_imports(module: str, source: str, modules: set[str]) -> list[Import]:
    """Every import `module` makes; project imports resolved to their module (plus the packages above it)."""
    tree = ast.parse(source)
    comments = _comments(source)
    import_lines = {line for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                    for line in range(node.lineno, node.end_lineno + 1)}
    found: list[Import] = []

    def reason(node: ast.stmt) -> str:
        own = [comments[line] for line in range(node.lineno, node.end_lineno + 1) if line in comments]
        above = node.lineno - 1
        while above in import_lines:  # the run of imports this one ends: its comment is above the first
            above -= 1
        return (own or [comments.get(above, "")])[0]

    def add(node: ast.stmt, names: list[str], where: str, in_component: bool) -> None:
        why = reason(node)
        for name in names:
            if name != "longtail" and not name.startswith("longtail."):
                found.append(Import(module, name.partition(".")[0], node.lineno, where, why, in_component))
                continue
            target = _resolve(name, modules)
            # Importing a module runs the packages above it first: those the importer is not inside.
            for package in [target, *(target.rsplit(".", i)[0] for i in range(1, target.count(".") + 1))]:
                if package in modules and package != module and not module.startswith(package + "."):
                    found.append(Import(module, package, node.lineno, where, why, in_component))

    def visit(nodes: list[ast.stmt], where: str, in_component: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                add(node, [alias.name for alias in node.names], where, in_component)
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0 and node.module, f"{module}:{node.lineno}: a relative import"
                add(node, [f"{node.module}.{alias.name}" for alias in node.names], where, in_component)
            elif isinstance(node, ast.If) and _is_main_block(node):
                visit(node.orelse, where, in_component)
            elif isinstance(node, ast.If) and _is_type_checking(node) and where == "top":
                visit(node.body, "type-checking", in_component)
                visit(node.orelse, where, in_component)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(node.body, "function", in_component or _is_component(node))
            else:
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    children = getattr(node, field, [])
                    visit([c for c in children if isinstance(c, ast.stmt)], where, in_component)
                    for child in children:
                        if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                            visit(child.body, where, in_component)

    visit(tree.body, "top", False)
    return found


def project_graph(imports: Iterable[Import], modules: set[str]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        if imp.target in modules:
            graph[imp.importer].add(imp.target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each circle of imports, as a path (a, b, ..., a): in every group of modules that import each other,
    the shortest way from each of them back to itself (a circle found twice is listed once)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for group in groups:  # through each module of the group, the shortest way back to it
        members = set(group)
        for start in group:
            cycle = _shortest_cycle(graph, start, members)
            i = cycle.index(min(cycle[:-1]))  # one way to write each circle: from its first module
            cycle = cycle[i:-1] + cycle[:i] + [cycle[i]]
            if cycle not in cycles:
                cycles.append(cycle)
    return cycles


def _shortest_cycle(graph: dict[str, set[str]], start: str, members: set[str]) -> list[str]:
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"{start} is in no cycle")


def named_layer(module: str) -> str | None:
    """The layer whose longest prefix names `module`, or None (a library module)."""
    best = None
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if prefix == "longtail":  # the package's own __init__ only, not everything under it
                matches = module == prefix
            else:
                matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), name)
    return best and best[1]


def layers_of(graph: dict[str, set[str]]) -> dict[str, str]:
    """Each module's layer; the data model is its roots and every unnamed module they import."""
    layer = {m: named_layer(m) for m in graph}
    roots = [m for m in graph if layer[m] == DATA_MODEL]
    while roots:
        for target in graph[roots.pop()]:
            if layer[target] is None:
                layer[target] = DATA_MODEL
                roots.append(target)
    return {m: name or LIBRARY for m, name in layer.items()}


def upward_imports(graph: dict[str, set[str]], layer: dict[str, str]) -> list[str]:
    """`importer -> imported (its layer -> the layer above)` for every import against the direction."""
    rank = {name: i for i, name in enumerate(LAYER_NAMES)}
    return [f"{a} -> {b} ({layer[a]} -> {layer[b]})" for a in sorted(graph) for b in sorted(graph[a])
            if rank[layer[b]] < rank[layer[a]]]


def unexplained_lazy_imports(imports: Iterable[Import], modules: set[str], slow: set[str]) -> list[str]:
    """`importer:line -> imported` for each project module imported inside a function with no reason:
    not slow to import, not in a kfp component, and no comment on it or above it."""
    return sorted({f"{i.importer}:{i.line} -> {i.target}" for i in imports
                   if i.where == "function" and i.target in modules and i.target not in slow
                   and not i.in_component and not i.reason})


def slow_libraries_reached(module: str, imports: list[Import], modules: set[str]) -> set[str]:
    """The slow libraries importing `module` loads: its own top-level imports and theirs, transitively."""
    top: dict[str, set[str]] = {}
    for i in imports:
        if i.where == "top":
            top.setdefault(i.importer, set()).add(i.target)
    seen, todo, reached = set(), [module], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for target in top.get(current, ()):
            if target in modules:
                todo.append(target)
            elif target in SLOW_LIBRARIES:
                reached.add(target)
    return reached


@pytest.fixture(scope="module")
def project():
    files = module_names()
    modules = set(files)
    imports = [i for m, path in files.items() for i in parse_imports(m, path.read_text(), modules)]
    return modules, imports, project_graph(imports, modules)


def test_no_module_imports_itself_back_in_a_circle(project):
    _, _, graph = project
    cycles = find_cycles(graph)
    for cycle in cycles:
        print("cycle:", " -> ".join(cycle))
    assert cycles == []


def test_no_import_runs_back_up_the_layers(project):
    _, _, graph = project
    upward = upward_imports(graph, layers_of(graph))
    for arrow in upward:
        print("upward:", arrow)
    assert upward == []


def test_the_tracking_layer_sits_above_the_data_model_it_records(project):
    """The layers are what docs/architecture.md says: tracking reads config, model directories (their
    preprocessing through ModelDir) and splits; the rest of the library (training, evaluation, prediction)
    writes through it."""
    _, _, graph = project
    layer = layers_of(graph)
    tracking_reads = {b for a in graph if layer[a] == "tracking" for b in graph[a]}
    assert {"longtail.config", "longtail.model_dir", "longtail.splits"} <= tracking_reads
    assert layer["longtail.preprocessing"] == DATA_MODEL
    assert {layer[m] for m in ("longtail.prediction", "longtail.evaluation.run", "longtail.training.fit")} == {LIBRARY}


def test_the_projects_own_imports_are_at_the_top_unless_a_reason_is_given(project):
    modules, imports, _ = project
    lazy = unexplained_lazy_imports(imports, modules, SLOW_TO_IMPORT)
    for where in lazy:
        print("imported inside a function, with no reason:", where)
    assert lazy == []


def test_the_library_imports_no_kfp(project):
    """Only the CLI, the pipelines and the components know kfp; the library runs without it."""
    _, imports, graph = project
    layer = layers_of(graph)
    below_components = LAYER_NAMES[LAYER_NAMES.index("components") + 1:]
    assert [f"{i.importer}:{i.line}" for i in imports if i.target == "kfp" and layer[i.importer] in below_components] == []


@pytest.mark.parametrize("module", sorted(SLOW_TO_IMPORT))
def test_each_module_listed_slow_to_import_is(project, module):
    modules, imports, _ = project
    assert module in modules
    assert slow_libraries_reached(module, imports, modules), f"{module} imports none of {sorted(SLOW_LIBRARIES)}"


def test_the_tracking_package_re_exports_nothing():
    """One way to import a tracking name: from the module that defines it (longtail.tracking.store, ...)."""
    tree = ast.parse((PACKAGE_DIRS["longtail"] / "tracking" / "__init__.py").read_text())
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)  # the docstring


# The checks above can fail: each is fed a small graph or source that breaks its rule.

def test_a_circle_is_found_and_printed_as_a_path():
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": {"b"}, "e": {"f"}, "f": {"e"}, "g": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["b", "d", "b"], ["e", "f", "e"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_an_import_up_the_layers_is_named():
    graph = {"longtail.errors": {"longtail.cli"}, "longtail.cli": {"longtail.errors"},
             "longtail.tracking.store": {"longtail.scoring"}, "longtail.scoring": {"longtail.tracking.store"},
             "longtail.config": {"longtail.class_weights"}, "longtail.class_weights": {"longtail.tracking.runs"},
             "longtail.tracking.runs": {"longtail.config"}}
    layer = layers_of(graph)
    assert layer["longtail.class_weights"] == DATA_MODEL  # imported by the data model: part of it
    assert upward_imports(graph, layer) == [
        "longtail.class_weights -> longtail.tracking.runs (data model -> tracking)",
        "longtail.errors -> longtail.cli (leaves -> CLI)",
        "longtail.tracking.store -> longtail.scoring (tracking -> library)",
    ]


def test_a_lazy_import_needs_a_reason_unless_slow_or_in_a_component():
    modules = {"longtail.a", "longtail.b", "longtail.slow"}
    source = '''
from kfp import dsl


def plain():
    from longtail.b import thing
    return thing


def explained():
    # lazy: only a run needs it
    import os
    from longtail.b import thing
    return thing, os


def slow():
    from longtail.slow import thing
    return thing


@dsl.component(base_image="x")
def step():
    from longtail.b import thing
    return thing


if __name__ == "__main__":
    from longtail.b import main
'''
    imports = parse_imports("longtail.a", source, modules)
    assert unexplained_lazy_imports(imports, modules, {"longtail.slow"}) == ["longtail.a:6 -> longtail.b"]
    assert [i.line for i in imports if i.target == "longtail.b"] == [6, 13, 24]  # not the __main__ block
    assert [i.target for i in imports if i.where == "top"] == ["kfp"]
