"""benchmarks/gpu_check.sh runs only where a GPU is lent (or by hand with --tiny, 1-2 CPU minutes), so
the suite checks what drifts silently: its embedded Python parses, every aent name it imports exists,
and each aent call it makes binds to the callee's current signature."""
import ast
import importlib
import inspect
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def _embedded_python() -> ast.Module:
    text = SCRIPT.read_text()
    start = text.index("<<'PY'\n") + len("<<'PY'\n")
    return ast.parse(text[start:text.index("\nPY\n", start)])


def _aent_imports(tree: ast.Module) -> dict:
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aent_cli"):
            for alias in node.names:
                names[alias.asname or alias.name] = getattr(importlib.import_module(node.module), alias.name)
    return names


def test_every_aent_import_of_the_gpu_check_exists():
    names = _aent_imports(_embedded_python())
    assert {"optimise", "grpo_advantages", "TorchBackend", "HFRollout"} <= set(names)


def test_every_aent_call_of_the_gpu_check_binds_to_the_current_signature():
    tree = _embedded_python()
    names = _aent_imports(tree)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id in names and callable(names[n.func.id])]
    assert len(calls) >= 8
    for call in calls:
        target = names[call.func.id]
        signature = inspect.signature(target)
        args = [None] * sum(not isinstance(a, ast.Starred) for a in call.args)
        kwargs = {k.arg: None for k in call.keywords if k.arg is not None}
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            pytest.fail(f"gpu_check.sh line {call.lineno}: {call.func.id}{signature}: {exc}")
