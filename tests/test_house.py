"""The structure of the package itself: imports only run downward (no cycle), the schema machinery needs no
torch, and the README's layout table names what the tree holds."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hfprune"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(path: Path) -> set[str]:
    """Every hfprune module a file imports, lazily or not, ``TYPE_CHECKING`` blocks included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.startswith("hfprune.")}


def _graph() -> dict[str, set[str]]:
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {module: {target for name in _imports(path) if (target := resolve(name)) not in (None, module, "hfprune")}
            for module, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for target in edges:
                if target not in index:
                    index[target] = low[target] = counter[0]
                    counter[0] += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_import_graph_has_no_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_config_is_schema_machinery_that_imports_no_plug_in():
    graph = _graph()
    config = {module for module in graph if module.startswith("hfprune.config")}
    outside = {target for module in config for target in graph[module]
               if not target.startswith("hfprune.config") and target != "hfprune.errors"}
    assert outside == set(), f"hfprune.config imports {sorted(outside)}"


def test_config_imports_without_torch():
    code = ("import sys; import hfprune.config.schema, hfprune.config.registry; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_layers_import_only_downward():
    """A package imports only packages of lower layers (and its own modules)."""
    layers = [{"errors", "io", "seeding", "secrets", "resources"}, {"config"},
              {"train", "data", "models", "pruning"}, {"evaluation", "records"}, {"report", "export"},
              {"study", "convert", "diagnose"}, {"oneshot"}, {"cli_prune"}, {"cli"}, {"__main__"}]
    layer_of = {package: level for level, packages in enumerate(layers) for package in packages}
    graph = _graph()

    def package(module: str) -> str:
        return module.split(".")[1]

    upward = sorted(f"{module} -> {target}" for module, targets in graph.items() if module != "hfprune"
                    for target in targets if layer_of[package(target)] > layer_of[package(module)])
    assert upward == []
    assert set(layer_of) >= {package(module) for module in graph if module != "hfprune"}, "a package with no layer"


def _layout_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## Layout"):]
    return section[section.index("```") + 3:].split("```", 1)[0]


def test_the_readme_layout_names_only_what_exists():
    block = _layout_block()
    named = re.findall(r"(?:hfprune|recipes|eval|docs|benchmarks|accelerate_configs|tests)/[\w./-]*", block)
    assert named, "the layout block names no paths"
    missing = [path for path in named if not (ROOT / path).exists()]
    assert missing == []


def test_the_readme_layout_names_every_package_and_top_level_module():
    block = _layout_block()
    unnamed = [f"hfprune/{path.name}" + ("/" if path.is_dir() else "") for path in sorted(PACKAGE.iterdir())
               if (path.is_dir() and (path / "__init__.py").exists() and f"hfprune/{path.name}/" not in block)
               or (path.suffix == ".py" and path.stem not in ("__init__", "__main__")
                   and f"hfprune/{path.name}" not in block)]
    subpackages = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.glob("*/*/__init__.py"))]
    unnamed += [name for name in (str(Path(p).parent) for p in subpackages) if f"{Path(name).name}/" not in block]
    assert unnamed == []
