"""The package's shape: no import cycles, the library never imports the tools folder, and every
command line answers `--help` whether started as `python -m mars_dist.X` or `python mars_dist/X.py`."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mars_dist"
CLIS = ["train", "export", "sample", "encode", "eval/report", "evaluate"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: Set[str]) -> Set[str]:
    """Every module this file imports (at any depth of the file: lazy imports count too)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    return found


def import_graph() -> Dict[str, Set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, known) for f in files}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), among the package's modules."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v] & graph.keys():
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_the_tools_folder():
    offenders = {m: sorted(i for i in imported if i.split(".")[0] == "data_tools")
                 for m, imported in import_graph().items()}
    assert {m: i for m, i in offenders.items() if i} == {}


# Distributed machinery belongs to the engine; the torchrun wrapper is a launcher, not library code.
BACKEND_LIBRARIES = ("deepspeed", "accelerate", "torch.distributed")
MAY_IMPORT_BACKEND_LIBRARIES = ("mars_dist.engine", "mars_dist.torchrun")


def test_only_the_engine_imports_distributed_machinery():
    graph = import_graph()
    offenders = {m: sorted(i for i in imported if any(i == lib or i.startswith(lib + ".") for lib in BACKEND_LIBRARIES))
                 for m, imported in graph.items()
                 if not any(m == owner or m.startswith(owner + ".") for owner in MAY_IMPORT_BACKEND_LIBRARIES)}
    assert {m: i for m, i in offenders.items() if i} == {}, "use mars_dist.engine (distributed, full_params) instead"


def test_no_top_level_module_shadows_the_standard_library():
    """`python mars_dist/X.py` puts mars_dist/ first on sys.path. `io` is safe there: the interpreter
    imports the standard library's io before any script path exists."""
    names = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert sorted(names & set(sys.stdlib_module_names) - {"io"}) == []


@pytest.mark.parametrize("cli", CLIS)
def test_every_cli_answers_help_as_a_module_and_as_a_file(cli):
    for command in ([sys.executable, "-m", f"mars_dist.{cli.replace('/', '.')}", "--help"],
                    [sys.executable, str(PACKAGE / f"{cli}.py"), "--help"]):
        env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout, whatever the venv's editable install points at
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0 and "usage:" in result.stdout, (command, result.stderr[-2000:])
