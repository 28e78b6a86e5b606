"""The package layers hold: tools > launch > dassdp > models, pipelines; no import cycle inside launch/.

Every import of every module counts, at module level and inside functions (an import in a function is
still a dependency, only a later one).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANK = {"models": 0, "pipelines": 0, "dassdp": 1, "launch": 2, "tools": 3}
SIDEWAYS = {("pipelines", "models")}  # same rank: allowed one way only (none today)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    tree, here = ast.parse(path.read_text(), str(path)), module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from launch import parts`
    return out


def sources() -> list[Path]:
    return sorted(p for pkg in RANK for p in (ROOT / pkg).rglob("*.py"))


def test_no_upward_imports():
    bad = []
    for path in sources():
        mine = path.relative_to(ROOT).parts[0]
        for name in imports(path):
            top = name.split(".")[0]
            if top not in RANK or top == mine:
                continue
            if RANK[top] > RANK[mine] or (RANK[top] == RANK[mine] and (mine, top) not in SIDEWAYS):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "upward or sideways imports:\n" + "\n".join(sorted(set(bad)))


def test_no_import_cycle_in_launch():
    mods = {module_name(p): p for p in (ROOT / "launch").glob("*.py")}
    graph = {m: {n for n in imports(p) if n in mods and n != m} for m, p in mods.items()}
    graph = {m: deps - {"launch"} for m, deps in graph.items()}  # the package's own empty __init__
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join([*path, m, n])
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
