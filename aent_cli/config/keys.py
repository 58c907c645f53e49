"""What the schema knows about a dotted key: whether it exists, its expected type, the closest known key.

Used by `compose.py` to refuse typos (also those written with Hydra's `+`, which would otherwise add
the key silently) and to say which type a bad value should have, before Hydra composes anything.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig

from aent_cli.config.schema import AentConfig

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string"}


def _hints(cls) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp) -> Tuple[Any, bool]:
    """(inner type, optional?) for Optional[X]; (tp, False) otherwise."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return (inner[0] if len(inner) == 1 else Any), True
    return tp, False


def _open(tp) -> bool:
    """A node that takes any key below it (Dict fields, `Any`)."""
    return tp is Any or typing.get_origin(tp) in (dict, Dict)


def known_keys(cls=AentConfig, prefix: str = "") -> List[str]:
    """Every dotted key the schema declares, sections and leaves (`trainer`, `trainer.steps`, ...)."""
    out = []
    for name, tp in _hints(cls).items():
        key = f"{prefix}{name}"
        out.append(key)
        inner, _ = _unwrap_optional(tp)
        if dataclasses.is_dataclass(inner):
            out += known_keys(inner, key + ".")
    return out


def lookup(key: str) -> Tuple[str, Any]:
    """("known", type) for a declared key, ("open", None) for a key under a free-form node (a Dict field
    such as eval.sources, or `notes`), ("unknown", None) for a key the schema does not have, and
    ("outside", None) for a key that is not under any schema section (e.g. `hydra.*`)."""
    node: Any = AentConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = _hints(node)
        if part not in fields:
            return ("outside", None) if depth == 0 and part == "hydra" else ("unknown", None)
        tp, _ = _unwrap_optional(fields[part])
        if _open(tp):
            return ("open", None) if depth < len(parts) - 1 else ("known", tp)
        if depth == len(parts) - 1:
            return "known", fields[part]
        if not dataclasses.is_dataclass(tp):
            return "unknown", None  # a key below a leaf (trainer.steps.x)
        node = tp
    return "known", node


def closest(key: str, candidates: Optional[List[str]] = None) -> Optional[str]:
    """The known key most like `key` (`trainer.stpes` -> `trainer.steps`), or None if nothing is close.
    Keys in the same section are preferred: the leaf names are compared there first."""
    candidates = candidates if candidates is not None else known_keys()
    section, _, leaf = key.rpartition(".")
    siblings = [c for c in candidates if c.rpartition(".")[0] == section] if section else []
    if siblings and leaf:
        match = difflib.get_close_matches(leaf, [c.rpartition(".")[2] for c in siblings], n=1, cutoff=0.6)
        if match:
            return f"{section}.{match[0]}"
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_key_message(key: str) -> str:
    guess = closest(key)
    hint = f": did you mean {guess}?" if guess else " (aent config show lists every key)"
    return f"unknown key {key}{hint}"


def type_name(tp) -> str:
    """`trainer.steps` -> "an integer"; Optional types add "or null"; lists say what they hold."""
    inner, optional = _unwrap_optional(tp)
    origin = typing.get_origin(inner)
    if origin in (list, List):
        args = typing.get_args(inner)
        name = "a list" + ({int: " of integers", float: " of numbers", str: " of strings"}.get(args[0], "")
                           if args else "")
    elif origin in (dict, Dict) or dataclasses.is_dataclass(inner):
        name = "a mapping (set its keys one by one)" if dataclasses.is_dataclass(inner) else "a mapping"
    else:
        name = _TYPE_NAMES.get(inner, getattr(inner, "__name__", str(inner)))
    return name + (" or null" if optional else "")


def extra_keys(cfg: DictConfig, cls=AentConfig, prefix: str = "") -> List[str]:
    """Keys of a composed config that the schema does not declare (added by `+key=` or a preset)."""
    out = []
    fields = _hints(cls)
    for name in cfg.keys():
        key = f"{prefix}{name}"
        if name not in fields:
            out.append(key)
            continue
        tp, _ = _unwrap_optional(fields[name])
        value = cfg[name] if name in cfg else None
        if dataclasses.is_dataclass(tp) and isinstance(value, DictConfig):
            out += extra_keys(value, tp, key + ".")
    return out
