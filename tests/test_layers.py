"""The package's layers, checked from the source with `ast` (nothing is imported):

1. every import of an `aent_cli` module (at module level or inside a function) points down the LAYERS
   table or stays inside its own package: never up, never sideways to a package of the same layer;
2. an import of an `aent_cli` module inside a function must defer a heavy dependency (HEAVY) that its
   module does not already load: `aent --help` and bad-input errors stay fast, optional backends (vllm,
   DeepSpeed) stay optional. Any other one only hides an import cycle or an order, so it fails.
   Exempt: the command modules of cli/, which import a command's library code when the command runs
   (`aent --help` would otherwise load every command's code: +0.4 s). Third-party imports inside
   functions (e.g. `hydra.core.override_parser`) are left to judgement;
3. the modules import no cycle, function-level imports included;
4. MLflow tag names are written only in `tracking/tags.py`.

The README's Architecture section draws the same table.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent / "aent_cli"

# Top to bottom. A module may import from its own package and from packages of LOWER layers only.
# `cache` and `errors` are single modules at the package root.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("cli",),
    ("sweep",),  # runs training jobs
    ("engine",),  # the training loop; validates with eval's runner
    ("config",),  # schema, compose, validation: choices read from the registries below, preflight checks
    ("eval",),  # benchmarks, sampling, avg@k / pass@k / maj@k
    ("rollout",),  # generation backends: they run a model
    ("models", "tracking"),  # models: loading, the tiny model (warm-started on data's arithmetic task)
    ("data",),  # problems and prompts; hub rows read their reference with rewards' \boxed{} parser
    ("rewards",),
    ("algos",),  # pure tensor functions
    ("cache", "errors"),
)
LAYER_OF: Dict[str, int] = {package: depth for depth, row in enumerate(LAYERS) for package in row}
LAYER_OF["__main__"] = -1  # `python -m aent_cli`: above the CLI

# Third-party packages whose import costs seconds or that are optional: an import inside a function is
# justified only when it defers one of these.
HEAVY = {"torch", "transformers", "tokenizers", "mlflow", "vllm", "deepspeed", "hydra", "matplotlib",
         "datasets", "huggingface_hub", "math_verify", "sympy", "PIL", "numpy", "pandas", "scipy"}

LAZY_PACKAGES = {"cli"}  # may import our own modules inside functions (see 2. above)

# A bare tag name ("aent.kind", "aent.override.") or one quoted inside a search filter ("tags.`aent.kind` = ...").
TAG_LITERAL = re.compile(r"^(aent|mlflow)\.\w[\w.]*$|[`\"'](aent|mlflow)\.\w")
TAGS_MODULE = "aent_cli.tracking.tags"


class Import:
    def __init__(self, source: str, target: str, line: int, local: bool):
        self.source, self.target, self.line, self.local = source, target, line, local

    def __repr__(self) -> str:
        where = "function-level " if self.local else ""
        return f"{self.source}:{self.line} {where}imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """`aent_cli.rollout.hf` -> rollout; `aent_cli.cache` -> cache; `aent_cli` -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports_of(source: str, text: str, is_package: bool, known: Set[str]) -> Iterator[Import]:
    """Every import in `text` (the code of module `source`): aent_cli modules by full name (a
    `from pkg import submodule` yields the submodule), third-party ones by their top-level name."""
    tree = ast.parse(text)
    parents: Dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def in_function(node: ast.AST) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return True
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = source.split(".") if is_package else source.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known]
        else:
            continue
        for target in targets:
            yield Import(source, target, node.lineno, in_function(node))


def scan(sources: Dict[str, Tuple[str, bool]]) -> List[Import]:
    """{module: (code, is_package)} -> every import in them."""
    known = set(sources)
    return [imp for module, (text, is_package) in sources.items()
            for imp in imports_of(module, text, is_package, known)]


def package_sources() -> Dict[str, Tuple[str, bool]]:
    return {module_name(path): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
            for path in sorted(ROOT.rglob("*.py"))}


def layer_violations(imports: List[Import]) -> List[str]:
    out = []
    for imp in imports:
        if not imp.target.startswith("aent_cli."):
            continue
        source, target = package_of(imp.source), package_of(imp.target)
        if not source or source == target:
            continue
        if source not in LAYER_OF or target not in LAYER_OF:
            out.append(f"{imp}: package {source if source not in LAYER_OF else target} is not in LAYERS")
        elif LAYER_OF[target] <= LAYER_OF[source]:
            way = "sideways" if LAYER_OF[target] == LAYER_OF[source] else "up"
            out.append(f"{imp} ({way}: {source} -> {target})")
    return out


def heavy_loads(imports: List[Import], modules: Set[str]) -> Dict[str, Set[str]]:
    """{module: the HEAVY packages that importing it loads}, following module-level imports (and the
    parent packages' __init__ that Python runs first)."""
    direct: Dict[str, Set[str]] = {m: set() for m in modules}
    edges: Dict[str, Set[str]] = {m: set() for m in modules}
    for imp in imports:
        if imp.local:
            continue
        root = imp.target.split(".")[0]
        if root in HEAVY:
            direct[imp.source].add(root)
        elif imp.target in modules:
            edges[imp.source].add(imp.target)
    for module in modules:
        parts = module.split(".")
        edges[module] |= {".".join(parts[:i]) for i in range(1, len(parts))} & modules
    out: Dict[str, Set[str]] = {}
    for module in modules:
        seen, todo = {module}, [module]
        while todo:
            for other in edges[todo.pop()] - seen:
                seen.add(other)
                todo.append(other)
        out[module] = set().union(*(direct[m] for m in seen))
    return out


def needless_deferrals(imports: List[Import], modules: Set[str]) -> List[str]:
    loads = heavy_loads(imports, modules)
    out = []
    for imp in imports:
        if (imp.local and imp.target in modules and package_of(imp.source) not in LAZY_PACKAGES
                and not loads[imp.target] - loads[imp.source]):
            out.append(f"{imp}: defers nothing heavy (move it to the top of the module)")
    return out


def cycles(imports: List[Import], modules: Set[str]) -> List[List[str]]:
    """Import cycles between modules (a package importing its own submodules does not count)."""
    edges: Dict[str, Set[str]] = {m: set() for m in modules}
    for imp in imports:
        if imp.target in modules and imp.target != imp.source and not imp.target.startswith(imp.source + "."):
            edges[imp.source].add(imp.target)
    found, state = [], {}

    def visit(module: str, path: List[str]) -> None:
        state[module] = 1
        for other in sorted(edges[module]):
            if state.get(other) == 1:
                found.append(path[path.index(other):] + [other])
            elif other not in state:
                visit(other, path + [other])
        state[module] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    return found


def tag_literals(sources: Dict[str, Tuple[str, bool]]) -> List[str]:
    """String constants (not docstrings) that name an `aent.*` / `mlflow.*` tag outside tracking/tags.py."""
    out = []
    for module, (text, _) in sources.items():
        if module == TAGS_MODULE:
            continue
        tree = ast.parse(text)
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                    and TAG_LITERAL.search(node.value)):
                out.append(f"{module}:{node.lineno} {node.value[:60]!r}")
    return out


@pytest.fixture(scope="module")
def package():
    sources = package_sources()
    return sources, scan(sources)


def test_every_package_has_a_layer(package):
    sources, _ = package
    assert {package_of(m) for m in sources} - {""} <= set(LAYER_OF)


def test_imports_point_down(package):
    _, imports = package
    assert layer_violations(imports) == []


def test_function_level_imports_defer_something_heavy(package):
    sources, imports = package
    assert needless_deferrals(imports, set(sources)) == []


def test_no_import_cycles(package):
    sources, imports = package
    assert cycles(imports, set(sources)) == []


def test_tag_names_live_in_one_module(package):
    sources, _ = package
    assert tag_literals(sources) == []


# The checks can fail: synthetic modules with each kind of bad import.
def _synthetic(files: Dict[str, str]) -> Tuple[Dict[str, Tuple[str, bool]], List[Import]]:
    sources = {name: (text, False) for name, text in files.items()}
    return sources, scan(sources)


def test_an_upward_and_a_sideways_import_are_caught():
    sources, imports = _synthetic({
        "aent_cli.tracking.bad": "from aent_cli.eval.runner import evaluate_problems\n",
        "aent_cli.rollout.fine": "from aent_cli.models.loading import load_policy\n",
        "aent_cli.data.side": "def f():\n    from aent_cli.rewards.extract import EXTRACTORS\n    import aent_cli.errors\n",
        "aent_cli.models.peer": "import aent_cli.tracking.store\n",
        "aent_cli.eval.runner": "", "aent_cli.models.loading": "", "aent_cli.rewards.extract": "",
        "aent_cli.errors": "", "aent_cli.tracking.store": "",
    })
    found = layer_violations(imports)
    assert found == ["aent_cli.tracking.bad:1 imports aent_cli.eval.runner (up: tracking -> eval)",
                     "aent_cli.models.peer:1 imports aent_cli.tracking.store (sideways: models -> tracking)"]


def test_a_needless_function_level_import_and_a_cycle_are_caught():
    sources, imports = _synthetic({
        "aent_cli.models.a": "import torch\ndef f():\n    from aent_cli.models.b import g\n",
        "aent_cli.models.b": "import torch\nfrom aent_cli.models.a import f\n",
        "aent_cli.models.c": "def f():\n    from aent_cli.models.b import g\n",  # defers torch: fine
        "aent_cli.models.d": "import torch\ndef f():\n    from aent_cli.models.e import g\n",  # defers vllm: fine
        "aent_cli.models.e": "import vllm\n",
    })
    modules = set(sources)
    assert needless_deferrals(imports, modules) == [
        "aent_cli.models.a:3 function-level imports aent_cli.models.b: defers nothing heavy (move it to the top "
        "of the module)"]
    assert cycles(imports, modules) == [["aent_cli.models.a", "aent_cli.models.b", "aent_cli.models.a"]]


def test_a_tag_literal_outside_the_tags_module_is_caught():
    sources = {"aent_cli.sweep.x": ('"""Sets aent.kind."""\nTAGS = {"aent.kind": "sweep"}\n'
                                    'F = f"tags.`mlflow.parentRunId` = 1"\nimport mlflow.entities\n'
                                    'HELP = "Record the run (aent.kind=report) in sqlite:///mlflow.db"\n', False)}
    assert tag_literals(sources) == ["aent_cli.sweep.x:2 'aent.kind'", "aent_cli.sweep.x:3 'tags.`mlflow.parentRunId` = 1'"]


def test_the_readme_draws_the_same_layers():
    """README "Architecture": the fenced block after "Imports point down these layers", one row per line
    (the packages in its first 20 columns; indented lines continue the row above)."""
    text = (ROOT.parent / "README.md").read_text(encoding="utf-8")
    block = text.split("Imports point down these layers", 1)[1].split("```", 2)[1]
    rows = [tuple(line[:20].split()) for line in block.splitlines() if line[:1].strip()]
    assert tuple(rows) == LAYERS
