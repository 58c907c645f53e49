"""Name -> function registries, so a config string selects an estimator or a loss."""
from __future__ import annotations

from typing import Callable, Dict

ADVANTAGES: Dict[str, Callable] = {}
POLICY_LOSSES: Dict[str, Callable] = {}
AGGREGATIONS: Dict[str, Callable] = {}
KL_ESTIMATORS: Dict[str, Callable] = {}


def register(table: Dict[str, Callable], name: str) -> Callable[[Callable], Callable]:
    def wrap(fn: Callable) -> Callable:
        if name in table:
            raise KeyError(f"'{name}' is registered twice")
        table[name] = fn
        return fn

    return wrap


def lookup(table: Dict[str, Callable], name: str, kind: str) -> Callable:
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"unknown {kind} '{name}'; known: {', '.join(sorted(table))}") from None
