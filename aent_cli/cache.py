"""Where aent keeps what it builds once per machine: the warm-started tiny model and compiled kernels."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$AENT_CACHE_DIR, else $XDG_CACHE_HOME/aent, else ~/.cache/aent."""
    base = os.environ.get("AENT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "aent")
    return Path(base)
