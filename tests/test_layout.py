"""The layout rules of the project (docs/ARCHITECTURE.md), checked by parsing the source with `ast`.

- `modeling_celltosg` (the Hugging Face remote-code model) imports nothing from the rest of the project;
  `dataset_script` never imports `omnicelltosg`.
- No import cycle between the project's modules, counting imports inside functions too.
- No source file over 600 lines; no function over 80 lines of code (its docstring not counted) unless
  the line above its `def` is a comment starting `# One function:` that says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("modeling_celltosg", "dataset_script", "omnicelltosg")
FORBIDDEN = {"modeling_celltosg": {"dataset_script", "omnicelltosg"}, "dataset_script": {"omnicelltosg"}}
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
LONG_FUNCTION_REASON = "# One function:"


def _source_files() -> dict[str, Path]:
    """Module name → file, for every module of the three packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(module: str, path: Path, modules: set[str]) -> set[str]:
    """Project modules that `module` imports anywhere in its body (relative imports resolved; `from
    package import name` counts `package.name` when that is a module, else `package`)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in modules and name != module:
                found.add(name)
    return found


def _import_graph() -> nx.DiGraph:
    files = _source_files()
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for module, path in files.items():
        graph.add_edges_from((module, target) for target in _imports(module, path, set(files)))
    return graph


def test_import_direction_between_packages():
    graph = _import_graph()
    wrong = sorted((a, b) for a, b in graph.edges
                   if b.split(".")[0] in FORBIDDEN.get(a.split(".")[0], set()))
    assert not wrong, f"imports against the layer order (module -> imported module): {wrong}"


def test_no_import_cycles():
    graph = _import_graph()
    cycles = [c for c in nx.simple_cycles(graph) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path):
    """The checker itself: a function-level relative import that closes a cycle is found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import g\n    return g\n")
    modules = {"pkg", "pkg.a", "pkg.b"}
    graph = nx.DiGraph()
    for m in ("pkg.a", "pkg.b"):
        graph.add_edges_from((m, t) for t in _imports(m, pkg / f"{m.split('.')[1]}.py", modules))
    assert set(graph.edges) == {("pkg.a", "pkg.b"), ("pkg.b", "pkg.a")}


def _code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    lines = fn.end_lineno - fn.lineno + 1
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


@pytest.mark.parametrize("package", [*PACKAGES, "benchmarks"])
def test_file_and_function_sizes(package):
    too_long_files, too_long_functions = [], []
    for path in sorted((ROOT / package).rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MAX_FILE_LINES:
            too_long_files.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > MAX_FUNCTION_LINES:
                first_line = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                above = lines[first_line - 2].strip() if first_line >= 2 else ""
                if not above.startswith(LONG_FUNCTION_REASON):
                    too_long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                                              f"({_code_lines(node)} lines)")
    assert not too_long_files, f"files over {MAX_FILE_LINES} lines: {too_long_files}"
    assert not too_long_functions, f"functions over {MAX_FUNCTION_LINES} lines without a reason: {too_long_functions}"
