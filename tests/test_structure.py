"""The package's import graph: no cycles, the library never imports the lab, no imports hidden
inside functions (where they would dodge a cycle rather than remove it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "imbalance"


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package under ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _resolve(target: str, known: dict[str, Path]) -> str | None:
    """The package module an imported name lives in (``a.b.func`` -> ``a.b``)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def imports(name: str, path: Path, known: dict[str, Path],
            tree: ast.Module | None = None) -> list[tuple[str, ast.AST]]:
    """Every package module ``name`` imports, anywhere in the file, with the import node."""
    tree = tree or ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            module = _resolve(target, known) if target.startswith("imbalance") else None
            if module is not None and module != name:
                out.append((module, node))
    return out


def graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (a package's ``__init__`` counts as a module)."""
    return {name: {m for m, _ in imports(name, path, known)} for name, path in known.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``) or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                return [*stack[stack.index(v):], v]
            if v not in state and (cycle := visit(v)):
                return cycle
        stack.pop()
        state[u] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_none_where_there_is_none() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_a_cycle_through_a_package_init_is_seen(tmp_path: Path) -> None:
    pkg = tmp_path / "imbalance"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "experiments.py").write_text("def f():\n    from imbalance.train import fit\n")
    (pkg / "train" / "__init__.py").write_text("from imbalance.train.live import x\n")
    (pkg / "train" / "live.py").write_text("from imbalance.experiments import CONFIGS\n")
    cycle = find_cycle(graph(modules(pkg)))
    assert cycle is not None and set(cycle) == {"imbalance.experiments", "imbalance.train",
                                                "imbalance.train.live"}


def test_the_package_has_no_import_cycle() -> None:
    known = modules()
    assert len(known) > 30 and "imbalance.lab.snapshot" in known
    assert find_cycle(graph(known)) is None


def test_the_library_never_imports_the_lab() -> None:
    known = modules()
    offenders = [(name, target) for name, targets in graph(known).items()
                 if not name.startswith("imbalance.lab") for target in targets
                 if target.startswith("imbalance.lab")]
    assert offenders == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_package_import_inside_a_function(name: str) -> None:
    known = modules()
    tree = ast.parse(known[name].read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    hidden = [ast.unparse(node) for _, node in imports(name, known[name], known, tree)
              if id(node) not in top and not _under_type_checking(tree, node)]
    assert hidden == [], f"{name} imports inside a function or block: {hidden}"


def _under_type_checking(tree: ast.Module, node: ast.AST) -> bool:
    return any(isinstance(s, ast.If) and ast.unparse(s.test).endswith("TYPE_CHECKING")
               and any(n is node for n in ast.walk(s)) for s in tree.body)
