"""The package's shape, held by tests (docs/architecture.md): packages depend downward only, imports
inside functions included; only the backends import DeepSpeed, Accelerate, FSDP, DTensor or DCP;
inference stands alone (a generator loaded and sampled, or shards encoded, pull in none of the
training stack); the library never imports the tools folder, the tests or the launchers; every
command line answers `--help` whether started as `python -m mars_dist.X` or `python mars_dist/X.py`."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mars_dist"
CLIS = ["train", "export", "sample", "encode", "eval/report", "evaluate", "torchrun"]

# Layers of the package, bottom up (docs/architecture.md): a package imports only packages of LOWER
# layers, so two packages of one layer (engine and generation; tasks and eval) never import each other.
LAYERS: List[List[str]] = [
    ["errors"],
    ["labels", "io", "audio", "device", "cli", "parallel"],
    ["models", "data"],
    ["engine", "generation"],
    ["tasks", "eval"],
    ["config"],
    ["train", "export", "sample", "encode", "evaluate", "torchrun"],
    ["bench"],
]
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


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


def package_of(module: str) -> str:
    """mars_dist.engine.backends.debug -> engine; mars_dist.train -> train."""
    return module.split(".")[1] if module.count(".") >= 1 else module


def package_graph(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    out: Dict[str, Set[str]] = {}
    for module, imported in graph.items():
        if module == "mars_dist":
            continue
        src = package_of(module)
        out.setdefault(src, set()).update(package_of(i) for i in imported
                                          if i.startswith("mars_dist.") and package_of(i) != src)
    return out


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
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


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_back_through_others():
    assert cycles(import_graph()) == []


def test_the_packages_have_no_import_cycle_imports_inside_functions_included():
    assert cycles(package_graph(import_graph())) == []


def test_every_package_has_a_layer_and_imports_only_lower_layers():
    packages = package_graph(import_graph())
    assert sorted(set(packages) - set(LAYER_OF)) == [], "a new package or top-level module needs its place in LAYERS"
    upward = {f"{src} -> {dst}" for src, targets in packages.items() for dst in targets
              if LAYER_OF[dst] >= LAYER_OF[src]}
    assert sorted(upward) == [], "imports that do not go down a layer (docs/architecture.md)"


def test_the_layer_rule_catches_an_upward_import():
    fake = {"generation": {"engine"}, "engine": set()}
    assert [f"{s} -> {d}" for s, ts in fake.items() for d in ts if LAYER_OF[d] >= LAYER_OF[s]] == ["generation -> engine"]


# Distributed machinery: the strategies' libraries belong to the backends; plain torch.distributed (the
# launcher's process group) to the process-group helpers, the engine and the torchrun launcher.
STRATEGY_LIBRARIES = ("deepspeed", "accelerate", "torch.distributed.fsdp", "torch.distributed.tensor",
                      "torch.distributed.checkpoint", "torch.distributed.device_mesh")
MAY_IMPORT_STRATEGIES = ("mars_dist.engine.backends",)
MAY_IMPORT_TORCH_DISTRIBUTED = ("mars_dist.parallel", "mars_dist.engine", "mars_dist.torchrun")


def _offenders(libraries, owners) -> Dict[str, List[str]]:
    found = {m: sorted(i for i in imported if any(i == lib or i.startswith(lib + ".") for lib in libraries))
             for m, imported in import_graph().items()
             if not any(m == owner or m.startswith(owner + ".") for owner in owners)}
    return {m: i for m, i in found.items() if i}


def test_only_the_backends_import_deepspeed_accelerate_fsdp_dtensor_or_dcp():
    assert _offenders(STRATEGY_LIBRARIES, MAY_IMPORT_STRATEGIES) == {}, \
        "go through the backend's ParallelContext (mars_dist/parallel/context.py) instead"


def test_only_the_process_group_helpers_the_engine_and_the_launcher_import_torch_distributed():
    assert _offenders(("torch.distributed",), MAY_IMPORT_TORCH_DISTRIBUTED) == {}, \
        "use mars_dist.parallel.process_group or the ParallelContext"


def test_the_library_never_imports_the_tools_the_tests_or_the_launchers():
    offenders = {m: sorted(i for i in imported if i.split(".")[0] in ("data_tools", "tests", "launch"))
                 for m, imported in import_graph().items()}
    assert {m: i for m, i in offenders.items() if i} == {}


TRAINING_STACK = ("mars_dist.engine", "mars_dist.tasks", "mars_dist.config", "deepspeed", "accelerate",
                  "torch.distributed.fsdp")

INFERENCE_PROBE = """
import json, sys
from pathlib import Path
import torch
from mars_dist.generation.editing import TimeInpaint, edit_notes
from mars_dist.generation.loaders import load_generator, load_tokenizer
from mars_dist.encode import encode_shards
tok, gen_dir, shards, out = sys.argv[1:5]
tokenizer = load_tokenizer(Path(tok))
gen = load_generator(Path(gen_dir), tokenizer, torch.device("cpu"))
batch = next(gen.generate([{"pitch": 60}], gen.options(), gen.rng(0), batch_size=1))
assert batch.wave_BN.shape[0] == 1
edited = edit_notes(gen, batch.wave_BN, TimeInpaint(1.0, 2.0), [{"pitch": 60}], gen.options(), gen.rng(0))
assert edited.waves["edited"].shape == batch.wave_BN.shape
encode_shards(tok, shards, out, batch_size=4, device="cpu")
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("family", ["next_scale", "next_token", "maskgit"])
def test_inference_loads_samples_edits_and_encodes_without_the_training_stack(family, tiny_shards, tmp_path):
    from tests.ar_exports import tokenizer_export
    from tests.generator_exports import generator_export

    tok = tokenizer_export(tmp_path / "tok")
    gen = generator_export(tmp_path / family, tok, family)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", INFERENCE_PROBE, str(tok), str(gen), tiny_shards["valid"],
                          str(tmp_path / "tokens")], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.splitlines()[-1])
    assert "mars_dist.generation.loaders" in loaded and "mars_dist.encode" in loaded, "the probe ran"
    stack = sorted(m for m in loaded if any(m == s or m.startswith(s + ".") for s in TRAINING_STACK))
    assert stack == [], f"inference imported the training stack: {stack[:10]}"


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
