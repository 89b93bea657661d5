"""The simulator's module layout: imports point one way, and its config is a light leaf.

Imports are read from the source (every ``import`` statement, also those inside functions), so a
lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIM = REPO / "sglbench" / "sim"
PACKAGE = "sglbench.sim"


def _modules() -> dict[str, Path]:
    return {f"{PACKAGE}.{p.stem}": p for p in SIM.glob("*.py") if p.stem != "__init__"}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every module of ``known`` that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # from pkg import module
    return found & known


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_sees_a_lazy_import_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles_in_the_simulator() -> None:
    graph = _graph()
    assert f"{PACKAGE}.server" in graph[f"{PACKAGE}.cli"]  # the lazy import in main() counts
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_config_imports_only_the_standard_library_and_errors() -> None:
    tree = ast.parse((SIM / "config.py").read_text("utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    outside = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names}
    assert outside == {"sglbench.errors"}


def test_importing_config_loads_no_server_engine_or_tokenizer() -> None:
    probe = (
        "import json, sys; from sglbench.sim import config; config.parse_args([]);"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('sglbench', 'aiohttp',"
        "'tokenizers', 'uvloop', 'transformers')))))"
    )
    argv = [sys.executable, "-c", probe]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO)
    assert json.loads(done.stdout) == ["sglbench", "sglbench.errors", PACKAGE, f"{PACKAGE}.config"]
